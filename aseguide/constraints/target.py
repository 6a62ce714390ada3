"""Targets of scalar descriptors: a value, an interval or a set of intervals.

:class:`Target` is the one target type of aseguide: every objective and the
``aseguide analyze`` command line parse their targets with it, and measure the
distance of a descriptor to the target set with :meth:`Target.distance` (torch) or
:meth:`Target.distance_numpy` (numpy).

Examples
--------
>>> Target("3..5").intervals.tolist(), Target((None, 0.1), nonnegative=False).tolist()
([[3.0, 5.0]], [-inf, 0.1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Target", "TargetLike", "distance_to_target"]

#: What :class:`Target` accepts: a number, ``(lo, hi)``, a list of those, a string, a Target.
TargetLike = Any


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_bound(x: Any) -> bool:
    return x is None or _is_number(x)


def _open(lo: Any, hi: Any) -> tuple[float, float]:
    """An interval with ``None`` for an open side (``-inf`` / ``inf``)."""
    if lo is None and hi is None:
        raise ValueError(f"target {(lo, hi)!r} has no bound")
    return (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))


def _parse_text(text: str) -> list[tuple[float, float]]:
    """``"4"``, ``"3..5"``, ``"..0.1"`` (open side) or comma-separated items of those."""
    intervals = []
    try:
        for item in (part.strip() for part in text.split(",")):
            if ".." in item:
                lo, hi = (side.strip() for side in item.split("..", 1))
                intervals.append(_open(float(lo) if lo else None, float(hi) if hi else None))
            else:
                intervals.append((float(item), float(item)))
    except ValueError:
        raise ValueError(
            f"target must be a number, an interval lo..hi or a comma-separated list of those, got {text!r}"
        ) from None
    return intervals


def _parse(value: Any) -> list[tuple[float, float]]:
    if _is_number(value):
        return [(float(value), float(value))]
    if isinstance(value, str):
        return _parse_text(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"target must be a number, an interval (lo, hi) or a list of intervals, got {value!r}")
    if len(value) == 2 and all(_is_bound(v) for v in value):
        return [_open(value[0], value[1])]
    if all(_is_number(v) for v in value):
        raise ValueError(
            f"ambiguous target {value!r}: write a set of values as a list of intervals, "
            f"e.g. {[(v, v) for v in value]!r}"
        )
    intervals = []
    for item in value:
        if _is_number(item):
            intervals.append((float(item), float(item)))
        elif isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, str) and len(item) in (1, 2) \
                and all(_is_bound(v) for v in item):
            intervals.append(_open(item[0], item[-1]))
        else:
            raise ValueError(f"target element {item!r} is neither a number nor an interval (lo, hi)")
    return intervals


class Target:
    """A target value, interval or set of intervals for a scalar descriptor.

    Parameters
    ----------
    value : number, tuple, list, str or Target
        ``4`` (a value), ``(3.5, 4.5)`` (a closed interval; ``None`` or ``math.inf``
        for an open side), a sequence of values and intervals
        ``[(3, 3), (4, 4), (6, 7)]`` (their union), or the same as text: ``"4"``,
        ``"3..5"``, ``"..0.1"``, ``"3,4,6..7"``. A bare sequence of two numbers is
        always an interval; write a set of values as ``[(3, 3), (4, 4)]``.
    nonnegative : bool
        Reject negative bounds (all built-in descriptors but energies are
        non-negative).

    Raises
    ------
    ValueError
        For a negative bound (when ``nonnegative``), ``lo > hi``, a NaN, an interval
        without any bound, unreadable text, or an ambiguous bare list of more than two
        numbers, naming the value.

    Examples
    --------
    >>> import torch
    >>> target = Target([(3, 3), (5, 6)])
    >>> target.distance(torch.tensor([2.0, 4.0, 5.5, 8.0])).tolist()
    [1.0, 1.0, 0.0, 2.0]
    >>> Target("3,5..6") == target
    True
    """

    def __init__(self, value: TargetLike, nonnegative: bool = True) -> None:
        intervals = value.intervals.tolist() if isinstance(value, Target) else _parse(value)
        for lo, hi in intervals:
            if math.isnan(lo) or math.isnan(hi) or lo == math.inf or hi == -math.inf:
                raise ValueError(f"invalid target interval ({lo}, {hi})")
            if lo > hi:
                raise ValueError(f"target interval ({lo}, {hi}) has lo > hi")
            if nonnegative and lo < 0:
                raise ValueError(f"negative target {lo!r}: this descriptor is never negative")
        self.intervals = np.array(sorted(intervals), dtype=np.float64).reshape(-1, 2)
        self._original = self._json_form()

    def _json_form(self) -> float | list:
        rows = [[float(lo), float(hi)] for lo, hi in self.intervals]
        if len(rows) == 1:
            lo, hi = rows[0]
            return lo if lo == hi else rows[0]
        return rows

    def tolist(self) -> float | list:
        """JSON-friendly form accepted back by ``Target(...)``."""
        return self._original

    def spans(self) -> list[tuple[float, float]]:
        """The intervals as ``(lo, hi)`` tuples, in increasing order (for plots)."""
        return [(float(lo), float(hi)) for lo, hi in self.intervals]

    def distance(self, values: torch.Tensor) -> torch.Tensor:
        """Distance from each value to the target set (0 inside), differentiable."""
        return distance_to_target(values, self.intervals)

    def distance_numpy(self, values: Any) -> np.ndarray:
        """Distance from each value to the target set (0 inside; ``nan`` stays ``nan``).

        Examples
        --------
        >>> Target((3, 5)).distance_numpy([2.0, 4.0, float("nan")]).tolist()
        [1.0, 0.0, nan]
        """
        values = np.asarray(values, dtype=float)
        out = np.full(values.shape, np.inf)
        for lo, hi in self.intervals:
            out = np.minimum(out, np.maximum(np.maximum(lo - values, values - hi), 0.0))
        return np.where(np.isnan(values), np.nan, out)

    def __repr__(self) -> str:
        return f"Target({self._original!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Target) and np.array_equal(self.intervals, other.intervals)

    def __hash__(self) -> int:
        return hash(self.intervals.tobytes())


def distance_to_target(values: torch.Tensor, intervals: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Distance from ``values`` to a union of closed intervals ``(K, 2)``; 0 inside.

    Parameters
    ----------
    values : torch.Tensor
        Descriptor values, any shape.
    intervals : array_like
        ``(K, 2)`` closed intervals ``[lo, hi]``.

    Examples
    --------
    >>> import torch
    >>> distance_to_target(torch.tensor([0.0, 2.5]), [[1.0, 2.0]]).tolist()
    [1.0, 0.5]
    """
    bounds = torch.as_tensor(np.asarray(intervals, dtype=np.float64), dtype=values.dtype, device=values.device)
    below = (bounds[:, 0] - values[..., None]).clamp_min(0.0)
    above = (values[..., None] - bounds[:, 1]).clamp_min(0.0)
    # inf bounds give nan from inf - inf only when values are inf, which descriptors never are.
    return (below + above).amin(dim=-1)
