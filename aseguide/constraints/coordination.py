"""Coordination objectives: soft neighbour counts under periodic boundary conditions.

For centre atoms ``i`` of species group A and neighbour atoms ``j`` of species group
B, the soft coordination number is

    C_i = sum over j in B, all periodic images, (j, image) != (i, 0) of w(d_ij)

with ``w`` a smooth step at the cutoff ``r_c`` of the pair of species:

* ``kernel="sigmoid"``: ``w(d) = sigmoid(s (r_c - d))`` (sharpness ``s``, 1/Å);
* ``kernel="gaussian"``: ``w(d) = exp(-(d / sigma)^2)`` with
  ``sigma = r_c / sqrt(ln 2)``, so that ``w(r_c) = 1/2`` as for the sigmoid.

Both weights are shifted and rescaled, ``(w - eps) / (1 - eps)`` clipped at 0 with
``eps = 1e-3`` (:data:`WEIGHT_FLOOR`), so that they reach exactly zero at a finite
radius (``r_c + ln((1 - eps)/eps) / s`` for the sigmoid,
``sigma sqrt(ln(1/eps))`` for the gaussian): the count is continuous and only pairs
inside that radius are searched. The gaussian weight is long ranged (zero at
``3.2 r_c``), the sigmoid one is not.

Default cutoffs are the sum of the covalent radii of the two species plus 0.5 Å
(:func:`default_cutoff`), with ``ase.data.covalent_radii``: B. Cordero et al.,
"Covalent radii revisited", Dalton Trans. 2832 (2008) (e.g. Co-O:
1.26 + 0.66 + 0.5 = 2.42 Å).

Structures without any centre atom: the mean count (descriptor) is 0, the loss is 0
(no contribution, no gradient) and :meth:`~Coordination.satisfied` is ``False``.
Nothing is ever NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from aseguide.constraints.base import (
    BaseObjective,
    ScalarObjective,
    _check_number,
    penalty,
)
from aseguide.constraints.hard import COVALENT_RADIUS_MARGIN, as_atoms_list, default_cutoff, mean_coordination
from aseguide.neighbors import neighbor_list
from aseguide.state import CrystalBatch, symbols_to_numbers

__all__ = [
    "Coordination",
    "CoordinationDistribution",
    "default_cutoff",
    "jensen_shannon_divergence",
    "wasserstein_distance_1d",
    "KERNELS",
    "DIVERGENCES",
    "WEIGHT_FLOOR",
    "COVALENT_RADIUS_MARGIN",
]

#: Kernel names accepted by the coordination objectives.
KERNELS = ("sigmoid", "gaussian")
#: Divergence names accepted by :class:`CoordinationDistribution`.
DIVERGENCES = ("js", "wasserstein")
#: Weight below which a pair is cut off (weights are shifted so they reach 0 there).
WEIGHT_FLOOR = 1e-3
#: Default sigmoid sharpness, 1/Å (10-90 % of the step within 0.44 Å).
DEFAULT_SHARPNESS = 10.0

_N_ELEMENTS = len(chemical_symbols)


def _species_group(role: str, species: Any) -> tuple[int, ...]:
    if isinstance(species, (str, int, np.integer)):
        species = [species]
    species = list(species)
    if not species:
        raise ValueError(f"{role} species list is empty")
    return tuple(sorted(set(symbols_to_numbers(species))))


def _symbols(numbers: Sequence[int]) -> list[str]:
    return [chemical_symbols[z] for z in numbers]


class _SoftCounter:
    """Soft counts of neighbour species around centre species (shared machinery)."""

    def __init__(
        self,
        center: Any,
        neighbor: Any,
        cutoff: float | Mapping | Sequence | None,
        kernel: str,
        sharpness: float | None,
    ) -> None:
        self.centers = _species_group("center", center)
        self.neighbors = _species_group("neighbor", neighbor)
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
        self.kernel = kernel
        if kernel == "gaussian" and sharpness is not None:
            raise ValueError("sharpness applies to the sigmoid kernel only; the gaussian width is set by the cutoff")
        self.sharpness = None if kernel == "gaussian" else _check_number(
            "sharpness", DEFAULT_SHARPNESS if sharpness is None else sharpness, positive=True, allow_zero=False
        )
        self.cutoff_argument = cutoff
        self.cutoffs = self._cutoff_table(cutoff)  # {(zc, zn): r_c}
        self.search_radius = max(self._zero_weight_radius(r) for r in self.cutoffs.values())
        table = np.zeros((_N_ELEMENTS, _N_ELEMENTS))
        for (zc, zn), radius in self.cutoffs.items():
            table[zc, zn] = radius
        self._table = torch.from_numpy(table)

    def _cutoff_table(self, cutoff: Any) -> dict[tuple[int, int], float]:
        pairs = [(zc, zn) for zc in self.centers for zn in self.neighbors]
        table = {(zc, zn): default_cutoff(zc, zn) for zc, zn in pairs}
        if cutoff is None:
            return table
        if isinstance(cutoff, Mapping):
            items = [(*key, value) for key, value in cutoff.items()]
        elif isinstance(cutoff, Sequence) and not isinstance(cutoff, str):
            items = [tuple(item) for item in cutoff]
        else:
            value = _check_number("cutoff", cutoff)
            if value <= 0:
                raise ValueError(f"cutoff must be positive, got {cutoff!r}")
            return dict.fromkeys(pairs, value)
        for item in items:
            if len(item) != 3:
                raise ValueError(f"cutoff entries must be (center, neighbor, radius), got {item!r}")
            zc, zn = symbols_to_numbers(item[:2])
            value = _check_number("cutoff", item[2])
            if value <= 0:
                raise ValueError(f"cutoff must be positive, got {item[2]!r} for {item[0]}-{item[1]}")
            if (zc, zn) not in table:
                raise ValueError(f"cutoff given for {item[0]}-{item[1]}, which is not a center-neighbor pair")
            table[(zc, zn)] = value
        return table

    def cutoff_todict(self) -> float | list | None:
        if self.cutoff_argument is None or not isinstance(self.cutoff_argument, (Mapping, Sequence)):
            return None if self.cutoff_argument is None else float(self.cutoff_argument)
        return [[chemical_symbols[zc], chemical_symbols[zn], r] for (zc, zn), r in sorted(self.cutoffs.items())]

    def _zero_weight_radius(self, cutoff: float) -> float:
        if self.kernel == "sigmoid":
            return cutoff + math.log((1.0 - WEIGHT_FLOOR) / WEIGHT_FLOOR) / self.sharpness
        return cutoff / math.sqrt(math.log(2.0)) * math.sqrt(math.log(1.0 / WEIGHT_FLOOR))

    def weight(self, distance: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
        """Shifted soft step: 1 well inside, 1/2 near ``cutoff``, exactly 0 beyond the search radius."""
        if self.kernel == "sigmoid":
            raw = torch.sigmoid(self.sharpness * (cutoff - distance))
        else:
            raw = torch.exp(-math.log(2.0) * (distance / cutoff).square())
        return ((raw - WEIGHT_FLOOR) / (1.0 - WEIGHT_FLOOR)).clamp_min(0.0)

    def masks(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        centers = torch.as_tensor(self.centers, device=batch.device)
        neighbors = torch.as_tensor(self.neighbors, device=batch.device)
        return torch.isin(batch.numbers, centers), torch.isin(batch.numbers, neighbors)

    def counts(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(counts (N,), is_center (N,), n_centers (S,))``; counts are 0 on non-centres."""
        is_center, is_neighbor = self.masks(batch)
        pairs = neighbor_list(batch, self.search_radius, centers=is_center, neighbors=is_neighbor)
        distance = pairs.distances(batch.frac, batch.cell)
        table = self._table.to(device=batch.device, dtype=batch.dtype)
        cutoff = table[batch.numbers[pairs.first], batch.numbers[pairs.second]]
        weights = self.weight(distance, cutoff)
        counts = torch.zeros(batch.n_atoms, dtype=batch.dtype, device=batch.device).index_add(
            0, pairs.first, weights
        )
        n_centers = torch.zeros(batch.n_structures, dtype=batch.dtype, device=batch.device).index_add(
            0, batch.batch, is_center.to(batch.dtype)
        )
        return counts, is_center, n_centers

    def group_label(self) -> str:
        return f"{'+'.join(_symbols(self.centers))}-{'+'.join(_symbols(self.neighbors))}"


def _mean_over_centers(values: torch.Tensor, is_center: torch.Tensor, n_centers: torch.Tensor,
                       batch: CrystalBatch) -> torch.Tensor:
    """Per-structure mean of per-atom ``values`` over centre atoms (0 without centres)."""
    values = torch.where(is_center.reshape(-1, *([1] * (values.ndim - 1))), values, torch.zeros_like(values))
    total = torch.zeros((batch.n_structures, *values.shape[1:]), dtype=values.dtype, device=values.device)
    total = total.index_add(0, batch.batch, values)
    return total / n_centers.clamp_min(1.0).reshape(-1, *([1] * (values.ndim - 1)))


class Coordination(ScalarObjective):
    """Soft coordination number of ``center`` species by ``neighbor`` species.

    Parameters
    ----------
    center, neighbor:
        Element symbol(s) or atomic number(s); a list is a species group (e.g.
        ``center="Cu", neighbor=["P", "Si"]``). Unknown symbols raise ``ValueError``.
    target:
        Desired coordination: a value, an interval ``(lo, hi)`` or a list of intervals
        (zero loss inside), non-negative.
    cutoff:
        Å. ``None``: covalent radii sum + 0.5 Å for each species pair
        (:func:`default_cutoff`); a number for all pairs; or a mapping
        ``{(center, neighbor): r}`` / list of ``(center, neighbor, r)`` overriding
        the default for some pairs. Must be positive.
    kernel:
        ``"sigmoid"`` (default) or ``"gaussian"`` (see the module docstring).
    sharpness:
        Sigmoid steepness in 1/Å (default 10; large values give hard counts). Not
        accepted with the gaussian kernel.
    loss:
        ``"l1"`` (default), ``"l2"`` or ``"huber"`` (threshold ``delta``), applied to the
        distance between the count and the target set.
    per_atom:
        ``False``: penalise the mean count of each structure. ``True``: penalise each
        centre atom's count and average the penalties over the centre atoms of the
        structure (``satisfied`` then requires every centre atom within tolerance).
    strength:
        Weight as a soft restraint.
    tolerance:
        :meth:`satisfied` accepts a (mean or per-atom) count within ``tolerance`` of
        the target set (default 0.5).

    Notes
    -----
    The descriptor is the mean soft count over the centre atoms of each structure, 0
    for a structure without centre atoms (whose loss is 0 and which is never
    satisfied).

    Examples
    --------
    >>> from ase.build import bulk
    >>> objective = Coordination("Na", "Cl", target=6, sharpness=50.0)
    >>> round(float(objective.descriptor(bulk("NaCl", "rocksalt", a=5.64))[0]), 3)
    6.0
    """

    default_tolerance = 0.5

    def __init__(
        self,
        center: Any,
        neighbor: Any,
        target: Any,
        cutoff: float | Mapping | Sequence | None = None,
        kernel: str = "sigmoid",
        sharpness: float | None = None,
        loss: str = "l1",
        delta: float = 1.0,
        per_atom: bool = False,
        *,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        self.counter = _SoftCounter(center, neighbor, cutoff, kernel, sharpness)
        super().__init__(target, loss=loss, delta=delta, strength=strength, tolerance=tolerance)
        self.per_atom = bool(per_atom)

    @property
    def name(self) -> str:
        return f"Coordination[{self.counter.group_label()}]"

    def counts(self, structures: Any) -> torch.Tensor:
        """Soft count of every atom ``(N,)`` (0 for atoms that are not centres), detached."""
        from aseguide.constraints.base import _as_batch

        with torch.no_grad():
            return self.counter.counts(_as_batch(structures))[0]

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        counts, is_center, n_centers = self.counter.counts(batch)
        return _mean_over_centers(counts, is_center, n_centers, batch)

    def hard_descriptor(self, structures: Any) -> np.ndarray:
        """Mean hard count per structure (neighbours within the cutoff; ``nan`` without centres).

        Examples
        --------
        >>> from ase.build import bulk
        >>> Coordination("Na", "Cl", 6, cutoff=3.0).hard_descriptor(bulk("NaCl", "rocksalt", a=5.64)).tolist()
        [6.0]
        """
        return mean_coordination(as_atoms_list(structures), list(self.counter.centers),
                                 list(self.counter.neighbors), self.counter.cutoff_argument)

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        counts, is_center, n_centers = self.counter.counts(batch)
        if self.per_atom:
            per_atom_penalty = penalty(self.target.distance(counts), self.loss_kind, self.delta)
            value = _mean_over_centers(per_atom_penalty, is_center, n_centers, batch)
        else:
            mean = _mean_over_centers(counts, is_center, n_centers, batch)
            value = penalty(self.target.distance(mean), self.loss_kind, self.delta)
        return torch.where(n_centers > 0, value, torch.zeros_like(value))

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        counts, is_center, n_centers = self.counter.counts(batch)
        if self.per_atom:
            distance = torch.where(is_center, self.target.distance(counts), torch.zeros_like(counts))
            worst = torch.zeros(batch.n_structures, dtype=batch.dtype, device=batch.device).scatter_reduce(0, batch.batch, distance, reduce="amax")
        else:
            worst = self.target.distance(_mean_over_centers(counts, is_center, n_centers, batch))
        return (worst <= self.tolerance) & (n_centers > 0)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "center": _symbols(self.counter.centers),
            "neighbor": _symbols(self.counter.neighbors),
            "target": self.target.tolist(),
            "cutoff": self.counter.cutoff_todict(),
            "kernel": self.counter.kernel,
            "sharpness": self.counter.sharpness,
            "loss": self.loss_kind,
            "delta": self.delta,
            "per_atom": self.per_atom,
        }


# ---------------------------------------------------------------------------- distributions
def jensen_shannon_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log, in [0, ln 2]) along the last axis.

    ``JS = KL(p || m)/2 + KL(q || m)/2`` with ``m = (p + q)/2``; equals
    ``scipy.spatial.distance.jensenshannon(p, q) ** 2``. Finite gradients on empty bins.

    Examples
    --------
    >>> import torch
    >>> round(float(jensen_shannon_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))), 6)
    0.693147
    """
    middle = 0.5 * (p + q)

    def relative_entropy(a: torch.Tensor) -> torch.Tensor:
        return (a * (a.clamp_min(eps).log() - middle.clamp_min(eps).log())).sum(-1)

    return 0.5 * relative_entropy(p) + 0.5 * relative_entropy(q)


def wasserstein_distance_1d(p: torch.Tensor, q: torch.Tensor, spacing: float = 1.0) -> torch.Tensor:
    """Earth mover's (Wasserstein-1) distance between histograms on equally spaced bins.

    ``W1 = spacing * sum_k |P_k - Q_k|`` with ``P``, ``Q`` the cumulative sums; equals
    ``scipy.stats.wasserstein_distance(bins, bins, p, q)`` for normalised histograms.

    Examples
    --------
    >>> import torch
    >>> float(wasserstein_distance_1d(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])))
    2.0
    """
    return spacing * (torch.cumsum(p, -1) - torch.cumsum(q, -1)).abs()[..., :-1].sum(-1)


class CoordinationDistribution(BaseObjective):
    """Distance between the distribution of per-atom soft counts and a desired one.

    The soft counts ``C_i`` of the centre atoms (as in :class:`Coordination`) are put
    into a histogram on the integers ``0 .. max_count`` with linear (triangular)
    assignment, ``h_k(C) = max(0, 1 - |C - k|)`` (counts above ``max_count`` go to
    the last bin), averaged over the centre atoms of each structure, and compared with
    the target histogram by Jensen-Shannon divergence (``"js"``, nats) or by the
    Wasserstein-1 distance (``"wasserstein"``, in coordination units). KL is not
    offered: it is infinite when supports differ.

    Parameters
    ----------
    center, neighbor, cutoff, kernel, sharpness:
        As in :class:`Coordination`.
    target_distribution:
        ``{count: weight}`` or a sequence of weights indexed by count
        (``[0, 0, 0, 0.5, 0.5]`` = half 3-fold, half 4-fold). Normalised; weights
        must be non-negative and not all zero.
    divergence:
        ``"js"`` (default) or ``"wasserstein"``.
    max_count:
        Last histogram bin (default ``max(12, largest target count + 2)``).
    strength:
        Weight as a soft restraint.
    tolerance:
        :meth:`satisfied` accepts a divergence ``<= tolerance`` (default 0.05 nats
        for JS, 0.1 for Wasserstein).

    Notes
    -----
    The descriptor is the divergence itself. Structures without centre atoms have
    loss and descriptor 0 and are never satisfied.

    Examples
    --------
    >>> from ase.build import bulk
    >>> objective = CoordinationDistribution("C", "C", {4: 1.0}, sharpness=50.0)
    >>> round(float(objective.descriptor(bulk("C", "diamond", a=3.567))[0]), 6)
    0.0
    """

    def __init__(
        self,
        center: Any,
        neighbor: Any,
        target_distribution: Mapping[int, float] | Sequence[float],
        divergence: str = "js",
        cutoff: float | Mapping | Sequence | None = None,
        kernel: str = "sigmoid",
        sharpness: float | None = None,
        max_count: int | None = None,
        *,
        strength: float = 1.0,
        tolerance: float | None = None,
    ) -> None:
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
        self.divergence = divergence
        self.default_tolerance = 0.05 if divergence == "js" else 0.1
        self.counter = _SoftCounter(center, neighbor, cutoff, kernel, sharpness)
        super().__init__(strength=strength, tolerance=tolerance)
        weights = self._parse_distribution(target_distribution)
        largest = int(np.nonzero(weights)[0].max())
        self.max_count = max(12, largest + 2) if max_count is None else int(max_count)
        if self.max_count < largest:
            raise ValueError(f"max_count={max_count!r} is below the largest target count {largest}")
        padded = np.zeros(self.max_count + 1)
        padded[: len(weights)] = weights
        self.target_distribution = padded / padded.sum()

    @staticmethod
    def _parse_distribution(distribution: Any) -> np.ndarray:
        if isinstance(distribution, Mapping):
            items = {}
            for key, value in distribution.items():
                try:
                    count = int(key)
                except (TypeError, ValueError):
                    raise ValueError(f"target_distribution key {key!r} is not an integer count") from None
                if count < 0 or str(count) != str(key).strip():
                    raise ValueError(f"target_distribution key {key!r} is not a non-negative integer count")
                items[count] = value
            weights = np.zeros(max(items, default=-1) + 1)
            for count, value in items.items():
                weights[count] = _check_number(f"target_distribution[{count}]", value)
        else:
            weights = np.array([_check_number("target_distribution weight", w) for w in distribution], dtype=float)
        if weights.size == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"target_distribution must have non-negative weights, not all zero, got {distribution!r}"
            )
        return weights

    @property
    def name(self) -> str:
        return f"CoordinationDistribution[{self.counter.group_label()}]"

    def _histogram(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        counts, is_center, n_centers = self.counter.counts(batch)
        bins = torch.arange(self.max_count + 1, dtype=batch.dtype, device=batch.device)
        clipped = counts.clamp(0.0, float(self.max_count))
        assignment = (1.0 - (clipped[:, None] - bins).abs()).clamp_min(0.0)
        return _mean_over_centers(assignment, is_center, n_centers, batch), n_centers

    def histogram(self, structures: Any) -> torch.Tensor:
        """Soft histogram of per-atom counts of each structure, ``(S, max_count + 1)``."""
        from aseguide.constraints.base import _as_batch

        with torch.no_grad():
            return self._histogram(_as_batch(structures))[0]

    def _divergence(self, batch: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        histogram, n_centers = self._histogram(batch)
        target = torch.as_tensor(self.target_distribution, dtype=batch.dtype, device=batch.device)
        if self.divergence == "js":
            value = jensen_shannon_divergence(histogram, target.expand_as(histogram))
        else:
            value = wasserstein_distance_1d(histogram, target.expand_as(histogram))
        return torch.where(n_centers > 0, value, torch.zeros_like(value)), n_centers

    def loss(self, batch: CrystalBatch) -> torch.Tensor:
        return self._divergence(batch)[0]

    def descriptor_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        return self._divergence(batch)[0]

    def satisfied_tensor(self, batch: CrystalBatch) -> torch.Tensor:
        value, n_centers = self._divergence(batch)
        return (value <= self.tolerance) & (n_centers > 0)

    def _kwargs(self) -> dict[str, Any]:
        return {
            "center": _symbols(self.counter.centers),
            "neighbor": _symbols(self.counter.neighbors),
            "target_distribution": self.target_distribution.tolist(),
            "divergence": self.divergence,
            "cutoff": self.counter.cutoff_todict(),
            "kernel": self.counter.kernel,
            "sharpness": self.counter.sharpness,
            "max_count": self.max_count,
        }

