"""Common protocol of guidance objectives: batched torch loss + ASE views.

Every objective is one batched, differentiable torch function
:meth:`BaseObjective.loss` of a :class:`~aseguide.state.CrystalBatch` returning one
non-negative value per structure. Everything else is derived from it once, here:

* :meth:`BaseObjective.descriptor` and :meth:`BaseObjective.satisfied` (analysis views);
* :meth:`BaseObjective.energy_forces_stress` (loss, ``-dloss/dpositions`` and
  ``(1/V) dloss/dstrain``), used by the ASE soft-restraint protocol
  (``atoms.set_constraint(objective)``) and by
  :class:`aseguide.calculators.GuidanceCalculator`.

Targets (:class:`Target`) are a value, an interval ``(lo, hi)`` or a set of
intervals ``[(lo1, hi1), (lo2, hi2), ...]``; the loss is a penalty of the distance
from the descriptor to that set, zero inside.

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.constraints import VolumePerAtom
>>> objective = VolumePerAtom(target=(10.0, 12.0))
>>> float(objective.descriptor(bulk("Si"))[0])  # doctest: +ELLIPSIS
20.01...
>>> bool(objective.satisfied(bulk("Si"))[0])
False
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from ase import Atoms

from aseguide.constraints.target import Target, TargetLike, distance_to_target
from aseguide.state import CrystalBatch

__all__ = [
    "Objective",
    "ObjectiveProtocol",
    "BaseObjective",
    "ScalarObjective",
    "Target",
    "distance_to_target",
    "penalty",
    "PENALTIES",
    "objective_from_dict",
    "energy_forces_stress",
]

#: Names of the penalties applied to the distance ``x >= 0`` from the target set.
PENALTIES = ("l1", "l2", "huber")

StructuresLike = Any  # CrystalBatch | ase.Atoms | Structure | sequences of those


def _as_batch(structures: StructuresLike) -> CrystalBatch:
    """A batch from a batch (kept as is) or ASE / pymatgen structures (float64)."""
    if isinstance(structures, CrystalBatch):
        return structures
    return CrystalBatch.from_any(structures, dtype=torch.float64)


def _check_number(name: str, value: Any, *, positive: bool = False, allow_zero: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and (number < 0 or (number == 0 and not allow_zero)):
        kind = "positive" if not allow_zero else "non-negative"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def penalty(distance: torch.Tensor, kind: str = "l1", delta: float = 1.0) -> torch.Tensor:
    """Penalty of a non-negative distance: ``l1`` = x, ``l2`` = x², ``huber``.

    The Huber penalty is ``x²/2`` for ``x <= delta`` and ``delta (x - delta/2)`` beyond.

    Examples
    --------
    >>> import torch
    >>> penalty(torch.tensor([0.5, 3.0]), "huber", delta=1.0).tolist()
    [0.125, 2.5]
    """
    if kind == "l1":
        return distance
    if kind == "l2":
        return distance.square()
    if kind == "huber":
        return torch.where(distance <= delta, 0.5 * distance.square(), delta * (distance - 0.5 * delta))
    raise ValueError(f"unknown loss {kind!r}; choose one of {PENALTIES}")


# ---------------------------------------------------------------------------- gradients
def energy_forces_stress(
    objective: ObjectiveProtocol, structures: StructuresLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss as an energy with its forces and stress, in ASE conventions.

    Returns ``(energy (S,), forces (N, 3), stress (S, 6))`` (detached): the loss,
    ``-dloss/dpositions`` at fixed cell, and ``(1/V) dloss/dstrain`` in Voigt order
    ``xx, yy, zz, yz, xz, xy``, the strain deforming cell and positions together
    (``cell -> cell (1 + eps)``, fractional coordinates fixed).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.constraints import Volume
    >>> energy, forces, stress = energy_forces_stress(Volume(target=1.0, loss="l1"), bulk("Si"))
    >>> round(float(stress[0, 0]), 6)  # d(V - 1)/d eps_xx / V = 1
    1.0
    """
    batch = _as_batch(structures)
    with torch.enable_grad():
        frac = batch.frac.detach()
        cell = batch.cell.detach()
        displacement = torch.zeros_like(frac, requires_grad=True)
        strain = torch.zeros_like(cell, requires_grad=True)
        identity = torch.eye(3, dtype=cell.dtype, device=cell.device)
        inverse_cell = torch.linalg.inv(cell)
        # positions + u at fixed cell <=> frac + u @ cell^-1; strain deforms the cell only.
        moved_frac = frac + torch.einsum("ni,nij->nj", displacement, inverse_cell[batch.batch])
        strained_cell = cell @ (identity + strain)
        energy = objective.loss(batch.replace(frac=moved_frac, cell=strained_cell))
        grad_u, grad_strain = torch.autograd.grad(energy.sum(), (displacement, strain), allow_unused=True)
    if grad_u is None:
        grad_u = torch.zeros_like(frac)
    if grad_strain is None:
        grad_strain = torch.zeros_like(cell)
    virial = 0.5 * (grad_strain + grad_strain.transpose(1, 2))
    stress = virial / batch.volume()[:, None, None]
    voigt = stress[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    return energy.detach(), -grad_u, voigt


# ---------------------------------------------------------------------------- objectives
@runtime_checkable
class ObjectiveProtocol(Protocol):
    """What every guidance objective offers (a structural type, for type hints).

    Any object with these methods is an objective for the samplers, the
    calculators and the analysis; :class:`BaseObjective` implements them from a
    single batched torch loss.

    Examples
    --------
    >>> from aseguide.constraints import Volume
    >>> isinstance(Volume(40.0), ObjectiveProtocol)
    True
    """

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        """Per-structure loss ``(S,)``, >= 0, differentiable w.r.t. ``frac`` and ``cell``."""

    def descriptor(self, structures: StructuresLike) -> torch.Tensor:
        """The physical quantity behind the loss, one value per structure."""

    def satisfied(self, structures: StructuresLike) -> torch.Tensor:
        """Whether each structure meets the objective (bool ``(S,)``)."""

    def todict(self) -> dict[str, Any]:
        """``{"name": class name, "kwargs": constructor arguments}``."""


#: Objective classes by name, for :func:`objective_from_dict` (filled by subclassing).
_CLASSES: dict[str, type[BaseObjective]] = {}


class BaseObjective:
    """Base class of guidance objectives (batched torch loss + ASE soft restraint).

    Subclasses implement :meth:`loss`, :meth:`descriptor_tensor` and
    :meth:`satisfied_tensor` on a :class:`~aseguide.state.CrystalBatch`, and
    :meth:`_kwargs` (constructor arguments for :meth:`todict`).

    Parameters
    ----------
    strength:
        Weight of the loss when the objective is used as an ASE soft restraint
        (``atoms.set_constraint(objective)``): the restraint energy is
        ``strength * loss`` (eV when the loss is read as eV). Also a default weight
        for samplers.
    tolerance:
        Tolerance of :meth:`satisfied`, in the unit of :meth:`descriptor`
        (subclass-specific default).

    Notes
    -----
    ASE protocol: ``adjust_positions`` does nothing (no hard constraint),
    ``get_removed_dof`` is 0, ``adjust_potential_energy`` / ``adjust_forces`` /
    ``adjust_stress`` add ``strength`` times the loss, its forces and its stress.
    The objective only depends on chemical species, so ``index_shuffle`` and
    ``repeat`` keep it as it is. Importing :mod:`aseguide.constraints` registers the
    objective classes with :mod:`ase.constraints`, so ``.traj`` files written with
    such a restraint are read back (``ase.io.read``) with the restraint rebuilt.
    """

    default_tolerance: float = 0.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("aseguide.constraints.") and not cls.__name__.startswith("_"):
            _CLASSES[cls.__name__] = cls

    def __init__(self, *, strength: float = 1.0, tolerance: float | None = None) -> None:
        self.strength = _check_number("strength", strength, positive=True)
        self.tolerance = (
            self.default_tolerance if tolerance is None else _check_number("tolerance", tolerance, positive=True)
        )
        self._last_key: tuple | None = None
        self._last_result: tuple[float, np.ndarray, np.ndarray] | None = None

    # -- to implement --------------------------------------------------------------------
    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        """Per-structure loss ``(S,)``, >= 0, differentiable w.r.t. ``frac`` and ``cell``."""
        raise NotImplementedError

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        """Per-structure descriptor ``(S,)`` (differentiable where meaningful)."""
        raise NotImplementedError

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        """Per-structure booleans ``(S,)``."""
        raise NotImplementedError

    def _kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- derived views -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Short readable name used in logs and in :meth:`Combined.parts`."""
        return type(self).__name__

    def __call__(self, batch: CrystalBatch) -> torch.Tensor:
        return self.loss(batch)

    def descriptor(self, structures: StructuresLike) -> torch.Tensor:
        """The physical quantity behind the loss, one value per structure (detached).

        ``structures``: a batch, or ``ase.Atoms`` / pymatgen structures (float64).
        """
        with torch.no_grad():
            return self.descriptor_tensor(_as_batch(structures)).detach()

    def satisfied(self, structures: StructuresLike) -> torch.Tensor:
        """Whether each structure meets the objective within ``tolerance`` (bool ``(S,)``)."""
        with torch.no_grad():
            return self.satisfied_tensor(_as_batch(structures)).detach()

    def energy_forces_stress(self, structures: StructuresLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :func:`energy_forces_stress` (loss without ``strength``)."""
        return energy_forces_stress(self, structures)

    # -- serialisation --------------------------------------------------------------------
    def todict(self) -> dict[str, Any]:
        """ASE-style description ``{"name": class name, "kwargs": constructor arguments}``."""
        kwargs = self._kwargs()
        kwargs["strength"] = self.strength
        kwargs["tolerance"] = self.tolerance
        return {"name": type(self).__name__, "kwargs": kwargs}

    def copy(self) -> BaseObjective:
        """A new, equal objective (rebuilt from :meth:`todict`)."""
        return objective_from_dict(self.todict())

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.todict()["kwargs"].items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.todict() == self.todict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.todict(), sort_keys=True, default=str))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_last_key"] = None
        state["_last_result"] = None
        return state

    # -- ASE constraint protocol ------------------------------------------------------------
    def _restraint(self, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray]:
        """``strength`` x (energy, forces, Voigt stress), cached for the last geometry."""
        key = (atoms.positions.tobytes(), atoms.cell.array.tobytes(), atoms.numbers.tobytes(), self.strength)
        if key != self._last_key or self._last_result is None:
            energy, forces, stress = energy_forces_stress(self, atoms)
            self._last_result = (
                self.strength * float(energy[0]),
                self.strength * forces.cpu().numpy(),
                self.strength * stress[0].cpu().numpy(),
            )
            self._last_key = key
        return self._last_result

    def adjust_positions(self, atoms: Atoms, new: np.ndarray) -> None:
        """Soft restraint: positions are never changed."""

    def adjust_momenta(self, atoms: Atoms, momenta: np.ndarray) -> None:
        """Soft restraint: momenta are never changed."""

    def adjust_potential_energy(self, atoms: Atoms) -> float:
        """Restraint energy ``strength * loss``."""
        return self._restraint(atoms)[0]

    def adjust_forces(self, atoms: Atoms, forces: np.ndarray) -> None:
        """Add the restraint forces ``-strength * dloss/dpositions`` in place."""
        forces += self._restraint(atoms)[1]

    def adjust_stress(self, atoms: Atoms, stress: np.ndarray) -> None:
        """Add the restraint stress (Voigt, ASE sign convention) in place."""
        restraint_stress = self._restraint(atoms)[2]
        if stress.shape == (3, 3):
            from ase.stress import voigt_6_to_full_3x3_stress

            stress += voigt_6_to_full_3x3_stress(restraint_stress)
        else:
            stress += restraint_stress

    def get_removed_dof(self, atoms: Atoms) -> int:
        """A soft restraint removes no degree of freedom."""
        return 0

    def index_shuffle(self, atoms: Atoms, ind: Any) -> None:
        """Species-based objective: nothing to re-index."""

    def repeat(self, m: Any, n: int) -> BaseObjective:
        """Species-based objective: the same objective applies to a supercell."""
        return self.copy()


#: The public base class of objectives (subclass it to write your own); same class as
#: :class:`BaseObjective`. Type hints use :class:`ObjectiveProtocol`.
Objective = BaseObjective


class ScalarObjective(BaseObjective):
    """An objective ``loss = penalty(distance(descriptor, target))`` on a scalar descriptor.

    Subclasses implement :meth:`descriptor_tensor` (differentiable). ``loss`` is one of
    :data:`PENALTIES` (``delta`` is the Huber threshold); ``satisfied`` means the
    descriptor is within ``tolerance`` of the target set.
    """

    def __init__(
        self,
        target: TargetLike,
        *,
        loss: str = "l1",
        delta: float = 1.0,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        super().__init__(strength=strength, tolerance=tolerance)
        self.target = Target(target)
        if loss not in PENALTIES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {PENALTIES}")
        self.loss_kind = loss
        self.delta = _check_number("delta", delta, positive=True, allow_zero=False)

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        return penalty(self.target.distance(self.descriptor_tensor(batch)), self.loss_kind, self.delta)

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return self.target.distance(self.descriptor_tensor(batch)) <= self.tolerance

    # -- hard (discrete) views, for validation ---------------------------------------------
    def hard_descriptor(self, structures: StructuresLike) -> np.ndarray:
        """The descriptor by its plain, non-smoothed definition (numpy float64, ``(S,)``).

        Implemented by the objectives the analysis validates with a discrete
        definition (hard coordination counts, volume per atom).
        """
        raise NotImplementedError(f"{type(self).__name__} has no hard descriptor")

    def hard_loss(self, structures: StructuresLike) -> np.ndarray:
        """Distance of :meth:`hard_descriptor` to the target set (``nan`` stays ``nan``)."""
        return self.target.distance_numpy(self.hard_descriptor(structures))

    def hard_satisfied(self, structures: StructuresLike) -> np.ndarray:
        """:meth:`hard_loss` within ``tolerance`` (bool; ``False`` where undefined).

        Examples
        --------
        >>> from ase.build import bulk
        >>> from aseguide.constraints import VolumePerAtom
        >>> VolumePerAtom(8.0).hard_satisfied([bulk("Cu", "sc", a=2.0), bulk("Cu", "sc", a=2.2)]).tolist()
        [True, False]
        """
        loss = self.hard_loss(structures)
        return np.where(np.isnan(loss), False, loss <= self.tolerance + 1e-12)

    def _kwargs(self) -> dict[str, Any]:
        return {"target": self.target.tolist(), "loss": self.loss_kind, "delta": self.delta}


def _objective_class(name: str) -> type[BaseObjective] | None:
    """Find the objective class of a name.

    An attribute of :mod:`aseguide.constraints` (where classes defined elsewhere are
    added, see ``docs/extending.md``), else a built-in one.
    """
    package = sys.modules.get("aseguide.constraints")  # always imported before this module
    cls = getattr(package, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseObjective):
        return cls
    return _CLASSES.get(name)


def objective_from_dict(description: Mapping[str, Any] | BaseObjective) -> BaseObjective:
    """Rebuild an objective from :meth:`BaseObjective.todict` output (or return it as is).

    Examples
    --------
    >>> from aseguide.constraints import Volume
    >>> objective_from_dict(Volume(40.0).todict()) == Volume(40.0)
    True
    """
    if isinstance(description, BaseObjective):
        return description
    name = description.get("name") if isinstance(description, Mapping) else None
    cls = _objective_class(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"not an aseguide objective description: {description!r}")
    return cls(**dict(description.get("kwargs", {})))
