"""Short-contact repulsion: penalty for interatomic distances below ``r_min``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from aseguide.constraints.base import BaseObjective, _check_number
from aseguide.neighbors import neighbor_list
from aseguide.state import CrystalBatch, symbols_to_numbers

__all__ = ["MinDistance"]

_N_ELEMENTS = len(chemical_symbols)


class MinDistance(BaseObjective):
    """Penalty for contacts shorter than a minimum distance (periodic images included).

    ``loss = sum over unordered pairs (i, j, image) of max(0, r_min(i, j) - d_ij)^2``
    (Å², per structure); zero when no contact is shorter than ``r_min``.

    Parameters
    ----------
    r_min:
        Minimum distance in Å: a number (for all pairs, or for the pairs listed in
        ``pairs``), or per species pair as a mapping ``{("Cu", "P"): 2.0, ...}`` or a
        list of ``(A, B, r)``; pairs not given are not restrained. Order within a
        pair does not matter. Must be positive.
    pairs:
        With a numeric ``r_min``: restrict it to these species pairs
        ``[("Cu", "Cu"), ("Cu", "P")]`` (default: every pair of atoms).
    strength:
        Weight as a soft restraint.
    tolerance:
        :meth:`satisfied` accepts structures whose worst contact is shorter than its
        ``r_min`` by at most ``tolerance`` Å (default 0).

    Notes
    -----
    The descriptor is the shortest restrained distance of each structure (Å) among
    pairs closer than twice the largest ``r_min``; ``inf`` when there is none.

    Examples
    --------
    >>> from ase.build import bulk
    >>> objective = MinDistance(2.0)
    >>> round(float(objective.descriptor(bulk("C", "diamond", a=3.567))[0]), 4)
    1.5446
    >>> bool(objective.satisfied(bulk("C", "diamond", a=3.567))[0])
    False
    """

    default_tolerance = 0.0

    def __init__(
        self,
        r_min: float | Mapping | Sequence,
        pairs: Sequence[Sequence[str | int]] | None = None,
        *,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        super().__init__(strength=strength, tolerance=tolerance)
        table = np.zeros((_N_ELEMENTS, _N_ELEMENTS))
        self._global = False
        if isinstance(r_min, (Mapping, Sequence)) and not isinstance(r_min, str):
            if pairs is not None:
                raise ValueError("give pairs only with a single numeric r_min")
            items = [(*key, value) for key, value in r_min.items()] if isinstance(r_min, Mapping) else list(r_min)
            if not items:
                raise ValueError("r_min per pair is empty")
        else:
            value = self._check_radius(r_min, "all pairs")
            if pairs is None:
                self._global = True
                table[1:, 1:] = value
                items = []
            else:
                pairs = list(pairs)
                if not pairs:
                    raise ValueError("pairs is empty; use pairs=None for all pairs")
                items = [(*pair, value) for pair in pairs]
        for item in items:
            if len(item) != 3:
                raise ValueError(f"r_min entries must be (A, B, r), got {item!r}")
            za, zb = symbols_to_numbers(item[:2])
            value = self._check_radius(item[2], f"{item[0]}-{item[1]}")
            table[za, zb] = table[zb, za] = value
        self._table = torch.from_numpy(table)
        self.search_radius = float(table.max())
        self._species = tuple(int(z) for z in np.nonzero(table.any(axis=0))[0])

    @staticmethod
    def _check_radius(value: Any, label: str) -> float:
        radius = _check_number("r_min", value)
        if radius <= 0:
            raise ValueError(f"r_min must be positive, got {value!r} for {label}")
        return radius

    @property
    def name(self) -> str:
        return "MinDistance"

    def _pairs(self, batch: CrystalBatch, radius: float) -> tuple[Any, torch.Tensor, torch.Tensor]:
        involved = None
        if not self._global:
            involved = torch.isin(batch.numbers, torch.as_tensor(self._species, device=batch.device))
        pairs = neighbor_list(batch, radius, centers=involved, neighbors=involved)
        table = self._table.to(device=batch.device, dtype=batch.dtype)
        r_min = table[batch.numbers[pairs.first], batch.numbers[pairs.second]]
        return pairs, pairs.distances(batch.frac, batch.cell), r_min

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        pairs, distance, r_min = self._pairs(batch, self.search_radius)
        overlap = (r_min - distance).clamp_min(0.0).square()
        total = torch.zeros(batch.n_structures, dtype=batch.dtype, device=batch.device)
        return 0.5 * total.index_add(0, pairs.structure, overlap)  # each pair is listed twice

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        pairs, distance, r_min = self._pairs(batch, 2.0 * self.search_radius)
        restrained = r_min > 0
        shortest = torch.full((batch.n_structures,), math.inf, dtype=batch.dtype, device=batch.device)
        return shortest.scatter_reduce(0, pairs.structure[restrained], distance[restrained], reduce="amin")

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        pairs, distance, r_min = self._pairs(batch, self.search_radius)
        violation = (r_min - distance).clamp_min(0.0)
        worst = torch.zeros(batch.n_structures, dtype=batch.dtype, device=batch.device)
        worst = worst.scatter_reduce(0, pairs.structure, violation, reduce="amax")
        return worst <= self.tolerance

    def _kwargs(self) -> dict[str, Any]:
        if self._global:
            return {"r_min": self.search_radius, "pairs": None}
        table = self._table.numpy()
        entries = [
            [chemical_symbols[a], chemical_symbols[b], float(table[a, b])]
            for a in self._species for b in self._species if a <= b and table[a, b] > 0
        ]
        return {"r_min": entries, "pairs": None}
