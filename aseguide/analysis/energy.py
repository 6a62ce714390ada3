"""Step 6: energies with a swappable ASE calculator and energy above a reference hull.

Any ASE calculator works (``EMT``, CHGNet, MatterSim, ...). A hull is any object with
``e_above_hull(atoms_or_composition, energy_per_atom) -> float`` (eV/atom), such as
:class:`aseguide.thermo.ReferenceHull` or :class:`PhaseDiagramHull` below, a reference hull
built from structures whose energies were computed with the same calculator (the paper's
"reference-based convex hull").

Examples
--------
>>> import numpy as np
>>> from ase.build import bulk
>>> from ase.calculators.emt import EMT
>>> from aseguide.analysis import compute_energies, energies_above_hull, PhaseDiagramHull
>>> refs = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08)]
>>> e_refs = compute_energies(refs, EMT())
>>> hull = PhaseDiagramHull.from_structures(refs, e_refs)
>>> alloy = bulk("Cu", "fcc", a=3.7).repeat((2, 1, 1))
>>> alloy[0].symbol = "Au"
>>> e_hull, problems = energies_above_hull([alloy], compute_energies([alloy], EMT()), hull)
>>> bool(np.isfinite(e_hull[0])), problems
(True, [None])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram

from aseguide.composition import as_composition
from aseguide.potentials.energies import compute_energies
from aseguide.thermo import ReferenceHull

__all__ = [
    "HullLike",
    "PhaseDiagramHull",
    "compute_energies",
    "cluster_energies",
    "EnergyWorker",
    "energies_above_hull",
    "filter_references",
    "stored_energies",
]


class HullLike(Protocol):
    """Anything with ``e_above_hull(atoms_or_composition, energy_per_atom)`` in eV/atom."""

    def e_above_hull(self, composition_or_atoms: Any, energy_per_atom: float) -> float: ...


class PhaseDiagramHull(ReferenceHull):
    """The hull of reference energies as the analysis reads it: pymatgen's own query.

    A :class:`~aseguide.thermo.ReferenceHull` that leaves out, instead of refusing,
    the entries containing an element without an elemental (terminal) entry (counted in
    ``n_dropped``; the structures made of such elements are later reported as outside
    the hull), orders the phase diagram's elements as pymatgen does, and answers
    :meth:`e_above_hull` with ``PhaseDiagram.get_e_above_hull`` (negative below the hull).

    Parameters
    ----------
    entries : iterable of PDEntry
        pymatgen ``PDEntry``/``ComputedEntry`` objects (total energies).
    chemical_system, is_formation, name
        As for :class:`~aseguide.thermo.ReferenceHull`.

    Examples
    --------
    >>> hull = PhaseDiagramHull.from_energies({"Cu": -1.0, "Au": -2.0})
    >>> round(hull.e_above_hull("CuAu", -1.6), 6)   # hull at -1.5 eV/atom
    -0.1
    >>> round(hull.e_above_hull("Cu3Au", -1.0), 6)  # hull at -1.25 eV/atom
    0.25
    """

    def __init__(
        self, entries: Iterable, chemical_system: str | Iterable[str] | None = None, *,
        is_formation: bool = False, name: str = "",
    ) -> None:
        entries = list(entries)
        terminal = {str(e.composition.elements[0]) for e in entries if e.composition.is_element}
        kept = [e for e in entries if {str(x) for x in e.composition.elements} <= terminal]
        if not kept:
            raise ValueError(f"no usable reference entries for the hull ({len(entries)} given, none of them "
                             "with elemental entries for all its elements)")
        super().__init__(kept, chemical_system, is_formation=is_formation, name=name)
        self.n_dropped = len(entries) - len(kept)

    @staticmethod
    def _phase_diagram(entries: list, elements: tuple[str, ...]) -> PhaseDiagram:
        return PhaseDiagram(entries)

    @classmethod
    def from_energies(cls, energies: dict[str, float] | Iterable[tuple[str, float]]) -> PhaseDiagramHull:
        """Hull from ``formula -> energy per atom`` (eV/atom); several rows per formula allowed.

        Parameters
        ----------
        energies : dict or iterable of (str, float)
            Formulas and their energies per atom.

        Returns
        -------
        PhaseDiagramHull
        """
        items = energies.items() if isinstance(energies, dict) else energies
        return cls(_per_atom_entry(formula, e) for formula, e in items)

    @classmethod
    def from_structures(cls, structures: Sequence[Atoms], energies_per_atom: Sequence[float]) -> PhaseDiagramHull:
        """Hull from structures and their energies per atom (non-finite energies skipped).

        Parameters
        ----------
        structures : sequence of ase.Atoms
            The references.
        energies_per_atom : sequence of float
            Their energies (eV/atom).

        Returns
        -------
        PhaseDiagramHull
        """
        return cls(_per_atom_entry(atoms, e) for atoms, e in zip(structures, energies_per_atom)
                   if e is not None and math.isfinite(float(e)))

    def e_above_hull(self, composition_or_atoms: Any, energy_per_atom: float) -> float:
        """Energy per atom above the hull at that composition (negative below it).

        Parameters
        ----------
        composition_or_atoms : str, Composition, ase.Atoms or Structure
            The composition.
        energy_per_atom : float
            Its energy (eV/atom).

        Returns
        -------
        float
            eV/atom.

        Raises
        ------
        ValueError
            If the composition has an element the hull does not cover (named).
        """
        comp = as_composition(composition_or_atoms)
        missing = sorted({str(e) for e in comp.elements} - set(self.elements))
        if missing:
            raise ValueError(f"element(s) {missing} of {comp.reduced_formula} are not in the reference hull "
                             f"(elements: {sorted(self.elements)})")
        entry = PDEntry(comp, float(energy_per_atom) * comp.num_atoms)
        return float(self.phase_diagram.get_e_above_hull(entry, allow_negative=True))


def _per_atom_entry(composition_or_atoms: Any, energy_per_atom: float) -> PDEntry:
    comp = as_composition(composition_or_atoms)
    return PDEntry(comp, float(energy_per_atom) * comp.num_atoms)


def stored_energies(structures: Sequence[Atoms], key: str = "energy_per_atom") -> np.ndarray:
    """Energies per atom already stored in ``atoms.info[key]`` (``nan`` where absent).

    Examples
    --------
    >>> from ase.build import bulk
    >>> a = bulk("Cu"); a.info["energy_per_atom"] = -3.5
    >>> stored_energies([a, bulk("Cu")]).tolist()
    [-3.5, nan]
    """
    out = np.full(len(structures), np.nan)
    for k, atoms in enumerate(structures):
        value = atoms.info.get(key)
        try:
            out[k] = float(value)
        except (TypeError, ValueError):
            pass
    return out


def energies_above_hull(
    structures: Sequence[Atoms],
    energies_per_atom: Sequence[float],
    hull: HullLike,
) -> tuple[np.ndarray, list[str | None]]:
    """Energy above the hull (eV/atom) of each structure.

    Returns
    -------
    e_hull : numpy.ndarray
        ``nan`` where the energy is missing or the hull cannot place the structure.
    problems : list
        ``None``, or why the structure has no value (e.g. an element absent from
        the hull); such structures are flagged, not dropped.

    Examples
    --------
    >>> from ase.build import bulk
    >>> hull = PhaseDiagramHull.from_energies({"Cu": -3.0})
    >>> e, why = energies_above_hull([bulk("Cu"), bulk("Au")], [-2.9, -3.0], hull)
    >>> round(float(e[0]), 6), why[1][:10]
    (0.1, 'element(s)')
    """
    if len(energies_per_atom) != len(structures):
        raise ValueError(f"{len(energies_per_atom)} energies for {len(structures)} structures")
    out = np.full(len(structures), np.nan)
    problems: list[str | None] = [None] * len(structures)
    for k, (atoms, e) in enumerate(zip(structures, energies_per_atom)):
        if e is None or not math.isfinite(float(e)):
            problems[k] = "no energy"
            continue
        try:
            out[k] = float(hull.e_above_hull(atoms, float(e)))
        except Exception as exc:  # noqa: BLE001 - flagged per structure
            problems[k] = str(exc) or type(exc).__name__
    return out, problems


def filter_references(
    references: Sequence[Atoms],
    max_e_above_hull: float = 0.5,
    hull: HullLike | None = None,
) -> tuple[list[Atoms], np.ndarray]:
    """Drop reference structures more than ``max_e_above_hull`` eV/atom above the hull.

    The energy above hull of each reference is taken from ``atoms.info["e_above_hull"]``
    when present; otherwise from ``atoms.info["energy_per_atom"]`` against ``hull``,
    or, without ``hull``, against the hull of the references' own stored energies
    (the database's energies, as in the paper). References without any energy are
    kept.

    Returns
    -------
    kept : list of ase.Atoms
    e_above_hull : numpy.ndarray
        The value used for every input reference (``nan`` when unknown).

    Examples
    --------
    >>> from ase.build import bulk
    >>> a, b = bulk("Cu"), bulk("Cu", "bcc", a=2.9)
    >>> a.info["energy_per_atom"], b.info["energy_per_atom"] = -3.0, -2.0
    >>> kept, e = filter_references([a, b], 0.5)
    >>> len(kept), e.tolist()
    (1, [0.0, 1.0])
    """
    refs = list(references)
    e_hull = np.full(len(refs), np.nan)
    for k, atoms in enumerate(refs):
        try:
            e_hull[k] = float(atoms.info["e_above_hull"])
        except (KeyError, TypeError, ValueError):
            pass
    todo = np.isnan(e_hull)
    if todo.any():
        energies = stored_energies(refs)
        if hull is None and np.isfinite(energies).any():
            try:
                hull = PhaseDiagramHull.from_structures(refs, energies)
            except Exception as exc:  # noqa: BLE001 - e.g. missing elemental entries
                warnings.warn(f"cannot build a hull from the references' stored energies: {exc}", stacklevel=2)
                hull = None
        if hull is not None:
            idx = np.flatnonzero(todo & np.isfinite(energies))
            values, _ = energies_above_hull([refs[k] for k in idx], energies[idx], hull)
            e_hull[idx] = values
    keep = ~(e_hull > max_e_above_hull)
    return [a for a, k in zip(refs, keep) if k], e_hull


class EnergyWorker:
    """What a Ray worker of the analysis holds: one calculator, built once.

    Parameters
    ----------
    calculator : str, ASE calculator or callable
        A name for :func:`aseguide.potentials.get_calculator` (built in the worker), a
        calculator object (sent to the worker) or a factory called with no argument.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> EnergyWorker(EMT()).energies([bulk("Cu", "fcc", a=3.6)]).round(4).tolist()
    [-0.0067]
    """

    def __init__(self, calculator: Any) -> None:
        if isinstance(calculator, str):
            from aseguide.potentials import get_calculator

            calculator = get_calculator(calculator)
        elif isinstance(calculator, type) or (callable(calculator) and not hasattr(calculator, "calculate")):
            calculator = calculator()
        self.calculator = calculator

    def energies(self, structures: Sequence[Atoms], relax: bool = False, fmax: float = 0.05,
                 steps: int = 200) -> np.ndarray:
        """Energy per atom of each structure (see :func:`compute_energies`)."""
        return compute_energies(structures, self.calculator, relax=relax, fmax=fmax, steps=steps)


def cluster_energies(structures: Sequence[Atoms], calculator: Any, cluster: Any, *, relax: bool = False,
                     fmax: float = 0.05, steps: int = 200, chunk_size: int | None = None, pool: Any = None
                     ) -> np.ndarray:
    """:func:`compute_energies` spread over the workers of a Ray cluster; the same values.

    Each structure's energy is computed alone (a copy of it, the calculator, optionally
    a relaxation), so splitting the structures into chunks over workers changes nothing
    but the time taken.

    Parameters
    ----------
    structures : sequence of ase.Atoms
        Crystals.
    calculator : str, ASE calculator or callable
        See :class:`EnergyWorker`.
    cluster : str or mapping
        The cluster setting (:func:`aseguide.runs.cluster.parse_cluster`); ``"local"``
        computes here.
    relax, fmax, steps : bool, float, int
        As in :func:`compute_energies`.
    chunk_size : int, optional
        Structures per task (default: about four tasks per worker).
    pool : WorkerPool, optional
        Already started workers of :class:`EnergyWorker` (reused over several calls).

    Returns
    -------
    numpy.ndarray
        Energy per atom, ``nan`` where the calculation failed.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> cluster_energies([bulk("Cu", "fcc", a=3.6)], EMT(), "local").round(4).tolist()
    [-0.0067]
    """
    from aseguide.runs.cluster import WorkerPool, parse_cluster

    settings = parse_cluster(cluster)
    if pool is None and settings.is_local:
        return compute_energies(structures, calculator, relax=relax, fmax=fmax, steps=steps)
    structures = list(structures)
    if not structures:
        return np.zeros(0)
    owned = pool is None
    if owned:
        pool = WorkerPool(EnergyWorker, settings, (calculator,), name="aseguide-energies")
    try:
        pool.start()
        if chunk_size is None:
            chunk_size = max(1, math.ceil(len(structures) / (4 * pool.workers)))
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        chunks = [structures[i:i + chunk_size] for i in range(0, len(structures), chunk_size)]

        def halves(task: tuple) -> list[tuple] | None:
            part = task[0]
            if len(part) <= 1:
                return None
            middle = (len(part) + 1) // 2
            return [(part[:middle], *task[1:]), (part[middle:], *task[1:])]

        results = pool.map("energies", ((chunk, relax, fmax, steps) for chunk in chunks), split=halves,
                           join=np.concatenate)
        return np.concatenate([np.asarray(values, dtype=float) for _, values in results])
    finally:
        if owned:
            pool.close()
