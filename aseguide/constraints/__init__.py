"""Guidance objectives: batched differentiable losses that are also ASE soft restraints.

Each objective is one batched torch loss on a :class:`~aseguide.state.CrystalBatch`
(one value per structure), viewed three ways: ``loss(batch)`` for guidance,
``descriptor`` / ``satisfied`` for analysis, and the ASE constraint protocol
(``atoms.set_constraint(objective)``) as a soft restraint of weight ``strength``.

Importing this package registers the objective classes with :mod:`ase.constraints`
(ASE rebuilds constraints by class name when it reads a ``.traj`` file), so
trajectories written with such a restraint stay readable by ``ase.io.read`` in any
process that imported :mod:`aseguide.constraints`.

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.constraints import Coordination, MinDistance, Combined
>>> guide = Combined([Coordination("C", "C", target=4), MinDistance(1.2)])
>>> atoms = bulk("C", "diamond", a=3.567)
>>> bool(guide.satisfied(atoms)[0])
True
"""

from __future__ import annotations

import ase.constraints as _ase_constraints

from aseguide.constraints.base import (
    PENALTIES,
    BaseObjective,
    Objective,
    ObjectiveProtocol,
    ScalarObjective,
    energy_forces_stress,
    objective_from_dict,
    penalty,
)
from aseguide.constraints.combined import Combined
from aseguide.constraints.coordination import (
    COVALENT_RADIUS_MARGIN,
    DIVERGENCES,
    KERNELS,
    WEIGHT_FLOOR,
    Coordination,
    CoordinationDistribution,
    default_cutoff,
    jensen_shannon_divergence,
    wasserstein_distance_1d,
)
from aseguide.constraints.distance import MinDistance
from aseguide.constraints.energy import EnergyAboveHull
from aseguide.constraints.hard import coordination_numbers, mean_coordination, volume_per_atom
from aseguide.constraints.target import Target, TargetLike, distance_to_target
from aseguide.constraints.volume import Volume, VolumePerAtom

__all__ = [
    "Objective",
    "ObjectiveProtocol",
    "BaseObjective",
    "ScalarObjective",
    "Target",
    "TargetLike",
    "distance_to_target",
    "penalty",
    "energy_forces_stress",
    "objective_from_dict",
    "PENALTIES",
    "VolumePerAtom",
    "Volume",
    "Coordination",
    "CoordinationDistribution",
    "MinDistance",
    "Combined",
    "EnergyAboveHull",
    "default_cutoff",
    "coordination_numbers",
    "mean_coordination",
    "volume_per_atom",
    "jensen_shannon_divergence",
    "wasserstein_distance_1d",
    "KERNELS",
    "DIVERGENCES",
    "WEIGHT_FLOOR",
    "COVALENT_RADIUS_MARGIN",
    "register_with_ase",
]

#: Objective classes that ASE can rebuild by name from a ``.traj`` file.
OBJECTIVE_CLASSES = (
    VolumePerAtom,
    Volume,
    Coordination,
    CoordinationDistribution,
    MinDistance,
    Combined,
    EnergyAboveHull,
)


def register_with_ase() -> None:
    """Make :func:`ase.constraints.dict2constraint` rebuild aseguide objectives by name.

    ASE reads constraints from ``.traj`` files by looking their ``todict()["name"]`` up
    in :mod:`ase.constraints` (and raises ``ValueError`` for unknown names). This adds
    the objective classes there; names already used by ASE are never overwritten (the
    placeholders of the ``aseguide_ase`` plugin, which ASE loads through an entry point
    so that a process that never imported aseguide reads such files too, are).
    Called on import of :mod:`aseguide.constraints`; idempotent.
    """
    for cls in OBJECTIVE_CLASSES:
        existing = getattr(_ase_constraints, cls.__name__, None)
        if existing is not None and not getattr(existing, "__module__", "").startswith("aseguide.") \
                and not getattr(existing, "_aseguide_placeholder", False):
            continue
        setattr(_ase_constraints, cls.__name__, cls)
        if cls.__name__ not in _ase_constraints.__all__:
            _ase_constraints.__all__.append(cls.__name__)


register_with_ase()
