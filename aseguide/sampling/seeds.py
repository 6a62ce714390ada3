"""Seed structures, fixed formulas and fixed atoms: what the sampler knows before it generates.

Three ways to give :class:`~aseguide.sampling.dynamics.GuidedDiffusion` part of the answer:

* **seeds** — start the reverse process from known crystals noised to a time ``t0``
  with the backend's exact forward kernel (:meth:`~aseguide.models.base.SamplingSession.noise`),
  so small ``t0`` gives close variants of a seed and ``t0 = 1`` forgets it;
* **composition** — the species of every atom are given (``"LiCoO2"`` times
  ``formula_units``); positions and lattice are generated;
* **fixed atoms** — a seed's ``ase.constraints.FixAtoms`` atoms keep their species and
  fractional positions: after every move of the sampler they are replaced by their
  known values noised to the current time (inpainting), and by the clean values at the
  end; ``fix_cell`` does the same with the cell.

:class:`ConstrainedSession` wraps a backend's session to enforce the known parts at every
step (batched: boolean masks and ``torch.where``, no loop over structures);
:func:`seed_batch` and :func:`composition_numbers` build and check the known parts.

The cell of a seed enters as the backend sees data: MatterGen's lattices are the
symmetric polar factor of the cell (its training data are symmetrised so), so a seed's
cell ``L = P U`` (``P`` symmetric, ``U`` a rotation, or a reflection for a left-handed
cell) is given to the model as ``P`` (the crystal rigidly rotated; fractional
coordinates unchanged) and every output cell is turned back by ``U``: an unchanged
seed comes back in its own orientation, and a fixed cell comes back bit for bit.

Examples
--------
>>> from ase.build import bulk
>>> from ase.constraints import FixAtoms
>>> seed = bulk("NaCl", "rocksalt", a=5.6)
>>> seed.set_constraint(FixAtoms(indices=[0]))
>>> known = seed_batch([seed], samples_per_seed=2)
>>> known.batch.n_structures, known.positions.tolist()
(2, [True, False, True, False])
>>> composition_numbers("LiCoO2", formula_units=2)
[3, 3, 27, 27, 8, 8, 8, 8]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms

from aseguide.models.base import SamplingSession, Scores
from aseguide.state import CrystalBatch, wrap_fractional

__all__ = ["KnownParts", "ConstrainedSession", "seed_batch", "composition_numbers", "check_elements",
           "polar_rotation"]


@dataclass
class KnownParts:
    """Known values of a batch (clean, float64, CPU, in the user's frame) and what is fixed.

    Attributes
    ----------
    batch : CrystalBatch
        The known crystals: for seeds their whole structure, for a composition only
        ``numbers`` is meaningful (``frac`` and ``cell`` are placeholders).
    species, positions : torch.Tensor
        ``(N,)`` bool: atoms whose species, and whose fractional positions, are given.
    cell : torch.Tensor
        ``(S,)`` bool: structures whose cell is given.
    atoms : list of ase.Atoms or None
        The seed of every structure (for seeds): a structure entirely known comes back
        as a copy of it, Cartesian positions bit for bit.
    """

    batch: CrystalBatch
    species: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    atoms: list | None = None


def _fixed_indices(atoms: Atoms, index: int) -> np.ndarray:
    """Indices of the ``FixAtoms`` constraints of a seed; any other constraint is refused."""
    fixed: list[int] = []
    for constraint in atoms.constraints:
        if not isinstance(constraint, FixAtoms):
            raise ValueError(f"seed {index} ({atoms.get_chemical_formula()}) carries a {type(constraint).__name__} "
                             "constraint: only ase.constraints.FixAtoms is supported (fixed species and "
                             "fractional positions)")
        fixed.extend(int(i) for i in constraint.get_indices())
    return np.asarray(sorted(set(fixed)), dtype=np.int64)


def seed_batch(seeds: Sequence[Atoms], samples_per_seed: int = 1, *, fix_cell: bool = False) -> KnownParts:
    """The known parts of a batch started from seed crystals.

    Parameters
    ----------
    seeds : sequence of ase.Atoms
        The seed crystals (periodic in 3-D; atom counts may differ). A seed's
        ``FixAtoms`` constraint marks atoms whose species and fractional positions are
        kept; its species are given for those atoms only (the others are regenerated).
    samples_per_seed : int
        Structures generated from each seed; those of seed ``i`` are structures
        ``i * samples_per_seed ... (i + 1) * samples_per_seed - 1`` of the batch.
    fix_cell : bool
        Keep every seed's cell.

    Returns
    -------
    KnownParts
        Fractional coordinates wrapped into [0, 1).

    Raises
    ------
    ValueError
        No seeds, a seed that is not an ``ase.Atoms`` or not a 3-D periodic crystal, or
        a constraint other than ``FixAtoms``, naming the seed.

    Examples
    --------
    >>> from ase.build import bulk
    >>> seed_batch([bulk("Si"), bulk("Cu")], fix_cell=True).cell.tolist()
    [True, True]
    """
    if isinstance(seeds, Atoms):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one ase.Atoms")
    for i, atoms in enumerate(seeds):
        if not isinstance(atoms, Atoms):
            raise ValueError(f"seed {i} is a {type(atoms).__name__}, not an ase.Atoms")
    try:
        one = CrystalBatch.from_atoms(seeds)
    except (ValueError, TypeError) as error:
        raise ValueError(f"bad seed: {error}") from error
    fixed = torch.zeros(one.n_atoms, dtype=torch.bool)
    starts = torch.cumsum(one.num_atoms, 0) - one.num_atoms
    for i, atoms in enumerate(seeds):
        indices = _fixed_indices(atoms, i)
        if len(indices):
            fixed[starts[i] + torch.as_tensor(indices)] = True
    which = torch.repeat_interleave(torch.arange(len(seeds)), samples_per_seed)
    batch = one.replace(frac=wrap_fractional(one.frac)).select(which)
    atom_of = torch.cat([torch.arange(int(starts[i]), int(starts[i] + one.num_atoms[i])) for i in which.tolist()])
    positions = fixed[atom_of]
    cell = torch.full((len(which),), bool(fix_cell))
    return KnownParts(batch=batch, species=positions.clone(), positions=positions, cell=cell,
                      atoms=[seeds[i] for i in which.tolist()])


def composition_numbers(composition: str, formula_units: int | None = None, num_atoms: int | None = None) -> list[int]:
    """Atomic numbers of one structure of a fixed formula, in the order the formula is written.

    Parameters
    ----------
    composition : str
        A formula with integer amounts, e.g. ``"LiCoO2"`` (parsed by pymatgen); as
        written it is one formula unit.
    formula_units : int, optional
        Number of formula units (default 1, or ``num_atoms`` / atoms per unit).
    num_atoms : int, optional
        Total atoms instead of ``formula_units``: a multiple of the atoms of the formula.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        A malformed formula, a fractional amount, an unknown element, non-positive
        counts, or ``num_atoms`` that is not a whole number of formula units (or
        disagrees with ``formula_units``); the message names the value.

    Examples
    --------
    >>> composition_numbers("SiO2", num_atoms=6)
    [14, 14, 8, 8, 8, 8]
    """
    from aseguide.composition import as_composition

    if not isinstance(composition, str) or not composition.strip():
        raise ValueError(f"composition must be a formula such as 'LiCoO2', got {composition!r}")
    try:
        comp = as_composition(composition)
    except (ValueError, TypeError) as error:
        raise ValueError(f"composition {composition!r}: {error}") from error
    amounts = {el.Z: comp[el] for el in comp.elements}
    if any(abs(a - round(a)) > 1e-8 or round(a) < 1 for a in amounts.values()):
        raise ValueError(f"composition {composition!r} has a non-integer amount: write whole atoms (e.g. 'Li2O')")
    per_unit = int(round(sum(amounts.values())))
    units = formula_units
    if units is not None and (isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1):
        raise ValueError(f"formula_units must be an integer >= 1, got {units!r}")
    if num_atoms is not None:
        if isinstance(num_atoms, bool) or not isinstance(num_atoms, (int, np.integer)) or num_atoms < 1:
            raise ValueError(f"with a composition, num_atoms must be one integer >= 1, got {num_atoms!r}")
        if num_atoms % per_unit:
            raise ValueError(f"num_atoms={num_atoms} is not a whole number of formula units of {composition!r} "
                             f"({per_unit} atoms each)")
        if units is not None and units * per_unit != num_atoms:
            raise ValueError(f"num_atoms={num_atoms} disagrees with formula_units={units} of {composition!r} "
                             f"({units * per_unit} atoms)")
        units = num_atoms // per_unit
    units = 1 if units is None else int(units)
    numbers: list[int] = []
    for z, amount in amounts.items():
        numbers += [int(z)] * (int(round(amount)) * units)
    return numbers


def check_elements(numbers, supported: frozenset[int] | None, what: str) -> None:
    """Refuse atomic numbers a model cannot place, naming them and ``what`` holds them.

    Examples
    --------
    >>> check_elements([6, 8], frozenset({6, 8}), "composition 'CO2'")
    >>> check_elements([118], frozenset({6, 8}), "composition 'Og'")
    Traceback (most recent call last):
    ...
    ValueError: composition 'Og' has element(s) the model does not generate: Og
    """
    if supported is None:
        return
    from ase.data import chemical_symbols

    bad = sorted({int(z) for z in np.asarray(numbers).reshape(-1)} - set(supported))
    if bad:
        raise ValueError(f"{what} has element(s) the model does not generate: "
                         f"{', '.join(chemical_symbols[z] for z in bad)}")


def polar_rotation(cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split cells (rows are vectors) as ``cell = P @ U``: ``P`` symmetric positive definite, ``U`` orthogonal.

    ``P`` is MatterGen's symmetric lattice (the crystal rigidly rotated, fractional
    coordinates unchanged).

    Examples
    --------
    >>> cell = torch.tensor([[[0.0, 2.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]], dtype=torch.float64)
    >>> P, U = polar_rotation(cell)
    >>> bool(torch.allclose(P, P.transpose(1, 2))), bool(torch.allclose(P @ U, cell))
    (True, True)
    """
    w, s, vh = torch.linalg.svd(cell)
    symmetric = w @ torch.diag_embed(s) @ w.transpose(1, 2)
    return symmetric, w @ vh


class ConstrainedSession(SamplingSession):
    """A backend session whose known species, positions and cells are enforced at every step.

    After every move of the base session (prior, corrector, predictor, re-noising) the
    fixed positions and cells take their known clean values noised to the new time with
    the exact forward kernel (:meth:`~aseguide.models.base.SamplingSession.noise`;
    the corrector, which stays at the same time, keeps the values it was given); given
    species are set, never sampled. Tweedie estimates and the final mean hold the clean
    known values, so objectives see them. :meth:`to_atoms` returns the crystals in the
    user's frame (see the module doc), with the fixed parts exactly as given.

    Parameters
    ----------
    base : SamplingSession
        The backend's session.
    known : KnownParts
        Known values (user frame, float64) and masks.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.constraints import FixAtoms
    >>> from aseguide.models.analytic import GaussianBackend
    >>> seed = bulk("Si", cubic=True)
    >>> seed.set_constraint(FixAtoms(indices=[0, 1]))
    >>> known = seed_batch([seed])
    >>> session = ConstrainedSession(GaussianBackend().session(known.batch.num_atoms, steps=5, seed=0), known)
    >>> x = session.prior()
    >>> bool(torch.equal(session.tweedie(x, session.timesteps()[:1], session.score(x, session.timesteps()[:1])
    ...                  ).frac[:2], session.known.frac[:2]))
    True
    """

    def __init__(self, base: SamplingSession, known: KnownParts) -> None:
        self.base = base
        self.num_atoms = base.num_atoms
        self.steps = base.steps
        self.device = base.device
        dtype = base.timesteps().dtype
        self.parts = known
        self._species = known.species.to(self.device)
        self._positions = known.positions.to(self.device)[:, None]
        self._cell = known.cell.to(self.device)[:, None, None]
        self._geometry = bool(known.positions.any() or known.cell.any())
        cell = known.batch.cell
        self._rotation = None
        if getattr(base, "symmetric_lattice", False):
            cell, rotation = polar_rotation(cell)
            self._rotation = rotation
        #: the known crystals in the model's frame, on the session's device and dtype
        self.known = known.batch.replace(cell=cell).to(self.device, dtype)
        self._exact = known.batch
        # structures whose every atom, species and cell is given
        whole = torch.zeros(len(known.cell), dtype=torch.long).index_add_(
            0, known.batch.batch, (known.positions & known.species).long())
        self._whole = ((whole == known.batch.num_atoms) & known.cell).tolist()

    # ------------------------------------------------------------------ enforcing the known parts
    def impose(self, x: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        """``x`` with the known parts at time ``t`` (fixed geometry noised to ``t``, given species set)."""
        frac, cell = x.frac, x.cell
        if self._geometry:
            noised = self.base.noise(self.known, t)
            frac = torch.where(self._positions, noised.frac, frac)
            cell = torch.where(self._cell, noised.cell, cell)
        numbers = torch.where(self._species, self.known.numbers, x.numbers)
        return x.replace(frac=frac, cell=cell, numbers=numbers)

    def clean(self, x: CrystalBatch) -> CrystalBatch:
        """``x`` with the known parts at their clean values."""
        return x.replace(frac=torch.where(self._positions, self.known.frac, x.frac),
                         cell=torch.where(self._cell, self.known.cell, x.cell),
                         numbers=torch.where(self._species, self.known.numbers, x.numbers))

    def _keep(self, new: CrystalBatch, old: CrystalBatch) -> CrystalBatch:
        return new.replace(frac=torch.where(self._positions, old.frac, new.frac),
                           cell=torch.where(self._cell, old.cell, new.cell),
                           numbers=torch.where(self._species, self.known.numbers, new.numbers))

    def start(self, t: torch.Tensor) -> CrystalBatch:
        """The known crystals noised to ``t`` (the start of a seeded run), given species set."""
        x = self.base.noise(self.known, t)
        return x.replace(numbers=torch.where(self._species, self.known.numbers, x.numbers))

    def everything_known(self) -> "ConstrainedSession":
        """The same session with every species, position and cell known (a run that takes no step)."""
        parts = self.parts
        full = KnownParts(batch=parts.batch, species=torch.ones_like(parts.species),
                          positions=torch.ones_like(parts.positions), cell=torch.ones_like(parts.cell),
                          atoms=parts.atoms)
        return ConstrainedSession(self.base, full)

    # ------------------------------------------------------------------ the session protocol
    def timesteps(self) -> torch.Tensor:
        return self.base.timesteps()

    @property
    def dt(self) -> float:
        return self.base.dt

    def _all(self, t) -> torch.Tensor:
        return torch.as_tensor(t, device=self.device).reshape(-1).expand(len(self.num_atoms))

    def prior(self) -> CrystalBatch:
        return self.impose(self.base.prior(), self._all(self.timesteps()[0]))

    def score(self, x: CrystalBatch, t: torch.Tensor) -> Scores:
        return self.base.score(x, t)

    def corrector(self, x: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        return self._keep(self.base.corrector(x, t), x)

    def predictor(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        proposal = self.base.predictor(x, t, scores)
        return self.impose(proposal, (t + self.dt).clamp_min(0))

    def last_mean(self) -> CrystalBatch | None:
        mean = self.base.last_mean()
        return None if mean is None else self.clean(mean)

    def marginal(self, field: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.marginal(field, t)

    def tweedie(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        return self.clean(self.base.tweedie(x, t, scores))

    def score_shift(self, x: CrystalBatch, t: torch.Tensor, field: str, delta: torch.Tensor) -> torch.Tensor:
        return self.base.score_shift(x, t, field, delta)

    def renoise(self, x: CrystalBatch, s: torch.Tensor, t: torch.Tensor) -> CrystalBatch:
        return self.impose(self.base.renoise(x, s, t), t)

    def noise(self, x0: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        return self.base.noise(x0, t)

    def to_atoms(self, x: CrystalBatch):
        """The crystals in the user's frame, fixed parts exactly as given (float64)."""
        frac = x.frac.detach().to("cpu", torch.float64)
        cell = x.cell.detach().to("cpu", torch.float64)
        if self._rotation is not None:
            cell = cell @ self._rotation
        exact = self._exact
        user = CrystalBatch(frac=torch.where(self._positions.cpu(), exact.frac, frac),
                            cell=torch.where(self._cell.cpu(), exact.cell, cell),
                            numbers=torch.where(self._species.cpu(), exact.numbers, x.numbers.detach().cpu()),
                            num_atoms=x.num_atoms.detach().cpu())
        images = self.base.to_atoms(user)
        if self.parts.atoms is not None:
            for i, whole in enumerate(self._whole):
                if whole:
                    images[i].positions = self.parts.atoms[i].positions.copy()
        return images

    def __getattr__(self, name: str):
        # backend-specific attributes (mask_token, precision, ...) read through
        base = self.__dict__.get("base")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)
