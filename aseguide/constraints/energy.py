"""Energy above a reference convex hull, from an ML potential, as a guidance objective.

``E_hull(x) = E_pot(x) / N - E_hull(composition)`` in eV/atom: the potential's energy
per atom minus the energy of the reference hull at the structure's composition. For a
fixed composition the hull term is a constant, so the gradient is that of the
potential's energy per atom (per atom, not total: structures of different sizes are
guided alike). The species are those of the batch (x̂0 species at a diffusion step); the
hull term follows the composition.

Robustness on noisy diffusion states: the loss goes through ``scale * asinh(loss /
scale)`` (linear for ``|loss| << scale``, logarithmic beyond, so absurd energies of
early noisy structures stay finite and do not dominate); a structure on which the
potential fails, whose energy is not finite, or whose composition leaves the hull's
chemical system gets the constant loss ``scale * asinh(failure_value / scale)`` and no
gradient, and ``nan`` as descriptor; the rest of the batch is unaffected.

Examples
--------
>>> from aseguide.thermo import ReferenceHull
>>> from aseguide.constraints import EnergyAboveHull
>>> hull = ReferenceHull.from_table("mattergenbis_vb_LiCoO.csv", "total")     # doctest: +SKIP
>>> objective = EnergyAboveHull("chgnet", hull, target=(None, 0.1))             # doctest: +SKIP
>>> objective.descriptor(atoms)          # eV/atom above the hull                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aseguide.constraints.base import (
    PENALTIES,
    BaseObjective,
    Target,
    _check_number,
    objective_from_dict,
    penalty,
)
from aseguide.potentials import BatchedPotential, canonical_name, get_potential
from aseguide.state import CrystalBatch
from aseguide.thermo import ReferenceHull

__all__ = ["EnergyAboveHull"]

#: Why GRACE cannot drive guidance, and what to use instead.
GRACE_GUIDANCE_ERROR = (
    "GRACE cannot be the potential of an EnergyAboveHull guidance objective: it runs on TensorFlow, "
    "and TensorFlow gradients do not flow into the torch autograd graph that guidance differentiates "
    "through. Guide with a torch potential: 'mattersim' (the paper's guidance potential), 'chgnet' or "
    "'sevenn'; use GRACE to validate (aseguide analyze --calculator grace, "
    "aseguide.calculators.get_calculator('grace'))."
)


def _is_grace(calculator: Any) -> bool:
    """A GRACE calculator or potential (without importing tensorpotential)."""
    import sys

    if isinstance(calculator, str):
        return calculator.strip().lower() == "grace"
    if getattr(calculator, "name", None) == "grace":  # get_potential("grace")
        return True
    module = sys.modules.get("tensorpotential.calculator.asecalculator")
    cls = getattr(module, "TPCalculator", None) if module is not None else None
    inner = getattr(calculator, "calculator", calculator)  # ASECalculatorPotential
    return cls is not None and isinstance(inner, cls)


def _parse_target(target: Any) -> Target | None:
    """``None``, or any :class:`Target` form (``None`` for an open side of an interval)."""
    return None if target is None else Target(target, nonnegative=False)


class EnergyAboveHull(BaseObjective):
    """Energy above the reference hull per atom (eV/atom), from an ML potential.

    Parameters
    ----------
    calculator:
        The potential: a name (``"mattersim"``, ``"chgnet"``, ``"sevenn"``), an ASE
        calculator, or a :class:`~aseguide.potentials.BatchedPotential`.
        Not GRACE (``"grace"``): it runs on TensorFlow, whose gradients do not flow into
        torch; GRACE validates (``aseguide analyze --calculator grace``).
        Loaded once, at first use (a name given here is loaded lazily, so reading a
        trajectory that carries this restraint does not load a model).
    hull:
        An absolute-energy :class:`~aseguide.thermo.ReferenceHull` (or its
        ``todict()``), on the same energy scale as the potential.
    target:
        ``None``: the loss is the energy above hull itself (lower is better, may be
        negative below the hull). A value, an interval such as ``(None, 0.1)``
        (≤ 0.1 eV/atom) or a list of intervals: the loss is the ``loss`` penalty of the
        distance to it (zero inside).
    loss:
        Penalty of the distance to the target: ``"l1"``, ``"l2"``, ``"huber"``
        (threshold ``delta``). Ignored with ``target=None``.
    scale:
        eV/atom scale of the robust transform ``scale * asinh(loss / scale)``;
        ``None`` disables it (the loss is then exactly the energy above hull/penalty).
    failure_value:
        Loss (before the robust transform) of a structure that cannot be evaluated.
    calculator_kwargs:
        Options for a potential given by name (``model=``, ``device=``, ``modal=``).
    strength, tolerance:
        As for every objective. ``satisfied`` means: with ``target=None``,
        ``E_hull <= tolerance`` (default 0.1 eV/atom); otherwise within ``tolerance``
        (default 0) of the target set.

    Raises
    ------
    ValueError
        For a formation-energy hull (a potential gives total energies), a GRACE
        potential (no torch gradients; the message names the alternatives), an unknown
        loss or a bad number (named).

    Examples
    --------
    >>> from ase.calculators.emt import EMT
    >>> from ase.build import bulk
    >>> from pymatgen.analysis.phase_diagram import PDEntry
    >>> from aseguide.thermo import ReferenceHull
    >>> hull = ReferenceHull([PDEntry("Cu", 0.0)])       # EMT's Cu reference is ~0 eV/atom
    >>> objective = EnergyAboveHull(EMT(), hull, scale=None)
    >>> round(float(objective.descriptor(bulk("Cu", a=3.7))[0]), 4)
    0.0303
    """

    def __init__(
        self,
        calculator: str | Any | None,
        hull: ReferenceHull | dict[str, Any],
        target: Any = None,
        *,
        loss: str = "l1",
        delta: float = 0.1,
        scale: float | None = 1.0,
        failure_value: float = 10.0,
        calculator_kwargs: dict[str, Any] | None = None,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        if tolerance is None:
            tolerance = 0.1 if target is None else 0.0
        super().__init__(strength=strength, tolerance=tolerance)
        if isinstance(hull, dict):
            hull = ReferenceHull.from_dict(hull)
        if not isinstance(hull, ReferenceHull):
            raise TypeError(f"hull must be a ReferenceHull, got {type(hull).__name__}")
        if hull.is_formation:
            raise ValueError(
                "EnergyAboveHull needs an absolute-energy hull (a potential predicts total energies); "
                "build it with elemental_references= or from structures with the same potential"
            )
        self.hull = hull
        self.target = _parse_target(target)
        if loss not in PENALTIES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {PENALTIES}")
        self.loss_kind = loss
        self.delta = _check_number("delta", delta, positive=True, allow_zero=False)
        self.scale = None if scale is None else _check_number("scale", scale, positive=True, allow_zero=False)
        self.failure_value = _check_number("failure_value", failure_value)
        self.calculator_kwargs = dict(calculator_kwargs or {})
        self._potential: BatchedPotential | None = None
        self._spec: str | None = None
        if isinstance(calculator, str):
            self._spec = canonical_name(calculator)
            if self._spec == "grace":
                raise ValueError(GRACE_GUIDANCE_ERROR)
        elif calculator is not None:
            if _is_grace(calculator):
                raise ValueError(GRACE_GUIDANCE_ERROR)
            if self.calculator_kwargs:
                raise ValueError("calculator_kwargs only apply to a potential given by name")
            # an object given here cannot be rebuilt from todict(): a rebuilt copy needs
            # its potential set again (copy() shares it)
            self._potential = calculator if isinstance(calculator, BatchedPotential) else get_potential(calculator)

    # ------------------------------------------------------------------ potential
    @property
    def potential(self) -> BatchedPotential:
        """The batched potential (loaded at first use, then kept)."""
        if self._potential is None:
            if self._spec is None:
                raise RuntimeError(
                    "this EnergyAboveHull has no potential (rebuilt from a description without one): "
                    "set objective.potential = aseguide.calculators.get_potential(...)"
                )
            self._potential = get_potential(self._spec, **self.calculator_kwargs)
        return self._potential

    @potential.setter
    def potential(self, value: Any) -> None:
        if _is_grace(value):
            raise ValueError(GRACE_GUIDANCE_ERROR)
        self._potential = get_potential(value)

    # ------------------------------------------------------------------ pieces
    def hull_energy(self, batch: CrystalBatch) -> torch.Tensor:
        """Hull energy per atom at each structure's composition (eV/atom), ``nan`` outside the system."""
        numbers = batch.numbers.detach().cpu().numpy()
        owner = batch.batch.detach().cpu().numpy()
        species, inverse = np.unique(numbers, return_inverse=True)
        counts = np.zeros((batch.n_structures, species.size), dtype=np.int64)
        np.add.at(counts, (owner, inverse.reshape(-1)), 1)
        rows, row_of = np.unique(counts, axis=0, return_inverse=True)
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in species]
        values = np.empty(rows.shape[0])
        for r, row in enumerate(rows):
            comp = {symbols[k]: int(c) for k, c in enumerate(row) if c > 0}
            if not self.hull.contains(comp):
                values[r] = np.nan
            else:
                values[r] = self.hull.hull_energy_per_atom(comp)
        return torch.as_tensor(values[row_of.reshape(-1)], dtype=batch.dtype, device=batch.device)

    def e_above_hull(self, batch: CrystalBatch) -> torch.Tensor:
        """Energy above hull per atom (eV/atom), differentiable; ``nan`` where undefined."""
        energy = self.potential.energy_per_atom(batch)
        return energy - self.hull_energy(batch)

    def _robust(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.scale is None else self.scale * torch.asinh(x / self.scale)

    # ------------------------------------------------------------------ objective protocol
    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        """``scale * asinh(L / scale)`` with ``L = E_hull`` or the penalty of its distance to the target."""
        e = self.e_above_hull(batch)
        finite = torch.isfinite(e)
        safe = torch.where(finite, e, torch.zeros_like(e))
        raw = safe if self.target is None else penalty(self.target.distance(safe), self.loss_kind, self.delta)
        failure = self._robust(torch.full_like(raw, self.failure_value))
        return torch.where(finite, self._robust(raw), failure)

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return self.e_above_hull(batch)

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        e = self.e_above_hull(batch)
        finite = torch.isfinite(e)
        safe = torch.where(finite, e, torch.zeros_like(e))
        ok = safe <= self.tolerance if self.target is None else self.target.distance(safe) <= self.tolerance
        return ok & finite

    def _kwargs(self) -> dict[str, Any]:
        target = None if self.target is None else self.target.tolist()
        return {
            "calculator": self._spec,
            "hull": self.hull.todict(),
            "target": target,
            "loss": self.loss_kind,
            "delta": self.delta,
            "scale": self.scale,
            "failure_value": self.failure_value,
            "calculator_kwargs": dict(self.calculator_kwargs),
        }

    def copy(self) -> EnergyAboveHull:
        """An equal objective sharing the same loaded potential (no reload)."""
        new = objective_from_dict(self.todict())
        new._potential = self._potential
        return new
