"""Norm combination of several objectives (the paper's multi-objective loss)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from aseguide.constraints.base import BaseObjective, _check_number, objective_from_dict
from aseguide.state import CrystalBatch

__all__ = ["Combined"]


class Combined(BaseObjective):
    """``loss = || (w_1 l_1, ..., w_n l_n) ||_p`` per structure.

    Parameters
    ----------
    objectives:
        Non-empty list of objectives (or their :meth:`~Objective.todict` dicts).
    weights:
        Non-negative weights ``w_k`` (default all 1).
    norm:
        ``p >= 1`` or ``math.inf`` (default 2, as in the paper; ``1`` is the weighted
        sum, ``inf`` the maximum).
    strength:
        Weight as a soft restraint (the parts' own strengths are not used here).

    Notes
    -----
    The gradient is finite when every part is zero (the norm is taken as 0 there).
    :meth:`parts` reports each part's loss; the descriptor is the combined loss and a
    structure is satisfied when every part is.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.constraints import Volume, VolumePerAtom
    >>> atoms = bulk("Si", "sc", a=2.0)  # 8 Å³, one atom
    >>> combined = Combined([Volume(12.0), VolumePerAtom(5.0)])
    >>> round(float(combined.descriptor(atoms)[0]), 6)  # sqrt(4^2 + 3^2)
    5.0
    >>> sorted(combined.parts(atoms))
    ['Volume', 'VolumePerAtom']
    """

    def __init__(
        self,
        objectives: Sequence[BaseObjective | Mapping[str, Any]],
        weights: Sequence[float] | None = None,
        norm: float = 2,
        *,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        super().__init__(strength=strength, tolerance=tolerance)
        if isinstance(objectives, (BaseObjective, Mapping)):
            objectives = [objectives]
        self.objectives = [objective_from_dict(o) for o in objectives]
        if not self.objectives:
            raise ValueError("Combined needs at least one objective, got an empty list")
        if weights is None:
            weights = [1.0] * len(self.objectives)
        weights = [_check_number("weight", w, positive=True) for w in weights]
        if len(weights) != len(self.objectives):
            raise ValueError(f"{len(weights)} weights for {len(self.objectives)} objectives")
        self.weights = weights
        norm = float(norm)
        if not (norm >= 1.0):
            raise ValueError(f"norm must be >= 1 (or inf), got {norm!r}")
        self.norm = norm
        self.part_names = self._unique_names()

    def _unique_names(self) -> list[str]:
        names: list[str] = []
        for objective in self.objectives:
            name, k = objective.name, 2
            while name in names:
                name, k = f"{objective.name}#{k}", k + 1
            names.append(name)
        return names

    @property
    def name(self) -> str:
        return "Combined"

    def _stack(self, batch: CrystalBatch) -> torch.Tensor:
        weights = torch.as_tensor(self.weights, dtype=batch.dtype, device=batch.device)
        return torch.stack([objective.loss(batch) for objective in self.objectives], dim=-1) * weights

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        weighted = self._stack(batch)  # (S, n), non-negative
        if math.isinf(self.norm):
            return weighted.amax(dim=-1)
        if self.norm == 1.0:
            return weighted.sum(dim=-1)
        powered = weighted.pow(self.norm).sum(dim=-1)
        positive = powered > 0
        safe = torch.where(positive, powered, torch.ones_like(powered))
        return torch.where(positive, safe.pow(1.0 / self.norm), torch.zeros_like(powered))

    def parts(self, structures: Any) -> dict[str, torch.Tensor]:
        """Each part's (unweighted) loss per structure, keyed by a readable unique name."""
        from aseguide.constraints.base import _as_batch

        batch = _as_batch(structures)
        with torch.no_grad():
            return {name: objective.loss(batch).detach() for name, objective in zip(self.part_names, self.objectives)}

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return self.loss(batch)

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        satisfied = [objective.satisfied_tensor(batch) for objective in self.objectives]
        return torch.stack(satisfied, dim=-1).all(dim=-1)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "objectives": [objective.todict() for objective in self.objectives],
            "weights": list(self.weights),
            "norm": self.norm,
        }
