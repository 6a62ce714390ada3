"""Cell-volume objectives: volume per atom and total cell volume."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aseguide._validation import check_volume_target
from aseguide.constraints.base import ScalarObjective
from aseguide.constraints.hard import as_atoms_list, volume_per_atom
from aseguide.constraints.target import Target
from aseguide.state import CrystalBatch

__all__ = ["VolumePerAtom", "Volume"]


class VolumePerAtom(ScalarObjective):
    """Volume per atom ``|det L| / N`` (Å³/atom) towards a target value or set.

    Parameters
    ----------
    target:
        Å³/atom: a value, an interval ``(lo, hi)`` or a list of intervals (zero loss
        inside), see :class:`~aseguide.constraints.Target`; it must be positive (``0``
        or ``-3`` raise ``ValueError``, as ``aseguide analyze`` does).
    loss:
        ``"l1"`` (``|v - v*|``, default), ``"l2"`` or ``"huber"`` (threshold ``delta``)
        applied to the distance from the target set.
    strength:
        Weight as a soft restraint.
    tolerance:
        :meth:`satisfied` accepts structures within ``tolerance`` Å³/atom of the
        target set (default 0.5).

    Examples
    --------
    >>> from ase.build import bulk
    >>> objective = VolumePerAtom(target=7.0, loss="l2")
    >>> atoms = bulk("Cu", "fcc", a=3.6)  # 11.664 Å³/atom
    >>> round(float(objective.descriptor(atoms)[0]), 3)
    11.664
    """

    default_tolerance = 0.5

    def __init__(
        self,
        target: Any,
        *,
        loss: str = "l1",
        delta: float = 1.0,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        check_volume_target(target, Target(target, nonnegative=False).intervals.tolist())
        super().__init__(target, loss=loss, delta=delta, strength=strength, tolerance=tolerance)

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return batch.volume() / batch.num_atoms.to(batch.dtype)

    def hard_descriptor(self, structures: Any) -> np.ndarray:
        """Volume per atom computed with numpy (float64), as the analysis reports it.

        Examples
        --------
        >>> from ase.build import bulk
        >>> VolumePerAtom(8.0).hard_descriptor(bulk("Cu", "sc", a=2.0)).round(6).tolist()
        [8.0]
        """
        return volume_per_atom(as_atoms_list(structures))


class Volume(ScalarObjective):
    """Total cell volume ``|det L|`` (Å³) towards a target value or set.

    Parameters are those of :class:`VolumePerAtom`, in Å³ (default tolerance 1 Å³).
    As an ASE restraint, the target stays the same for a supercell.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.state import CrystalBatch
    >>> objective = Volume(target=(30.0, 50.0))
    >>> objective.loss(CrystalBatch.from_atoms(bulk("Si"))).tolist()  # 40.0 Å³ is inside
    [0.0]
    """

    default_tolerance = 1.0

    def __init__(
        self,
        target: Any,
        *,
        loss: str = "l1",
        delta: float = 1.0,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        check_volume_target(target, Target(target, nonnegative=False).intervals.tolist())
        super().__init__(target, loss=loss, delta=delta, strength=strength, tolerance=tolerance)

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return batch.volume()
