"""Step 9: Pareto fronts (non-dominated sorting), minimising every column.

Point *a* dominates *b* when ``a <= b`` in every column and ``a < b`` in at least one.
Front 1 is the set of points no other point dominates; front *k* is the
non-dominated set after removing fronts 1 … k−1. Equal points share a front.

Examples
--------
>>> from aseguide.analysis import pareto_fronts
>>> pareto_fronts([[0, 1], [1, 0], [1, 1], [2, 2]]).tolist()
[1, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_fronts", "dominates"]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether point ``a`` dominates ``b`` (all columns minimised).

    Examples
    --------
    >>> dominates([0, 1], [1, 1]), dominates([0, 1], [1, 0])
    (True, False)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_fronts(points: Sequence[Sequence[float]] | np.ndarray, nan_policy: str = "raise",
                  block: int = 1024) -> np.ndarray:
    """Front number (1-based) of every point; every column is minimised.

    Parameters
    ----------
    points:
        ``(n_points, n_objectives)`` array (a 1D array is one objective).
    nan_policy:
        ``"raise"`` (default) for rows with non-finite values, or ``"omit"`` to give
        them front 0 and rank the others.
    block:
        Rows of the dominance matrix computed at once (memory only).

    Returns
    -------
    numpy.ndarray
        Integer front numbers, 1 for the non-dominated points.

    Raises
    ------
    ValueError
        For a non-finite value with ``nan_policy="raise"`` (the row is named) or an
        unknown ``nan_policy``.

    Examples
    --------
    >>> pareto_fronts([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0]]).tolist()
    [1, 1, 2, 1]
    """
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p[:, None]
    if p.ndim != 2:
        raise ValueError(f"points must be a 2D array (n_points, n_objectives), got shape {p.shape}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    finite = np.all(np.isfinite(p), axis=1)
    if not finite.all() and nan_policy == "raise":
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"point {row} has a non-finite value {p[row].tolist()}; use nan_policy='omit'")
    fronts = np.zeros(len(p), dtype=np.int64)
    idx = np.flatnonzero(finite)
    q = p[idx]
    n = len(q)
    if n == 0:
        return fronts
    # dom[i, j]: i dominates j, built in row blocks; then peel fronts by domination counts
    dom = np.zeros((n, n), dtype=bool)
    for start in range(0, n, block):
        a = q[start:start + block, None, :]
        dom[start:start + block] = np.all(a <= q[None], axis=2) & np.any(a < q[None], axis=2)
    dominated_by = dom.sum(axis=0)
    rank = np.zeros(n, dtype=np.int64)
    current = np.flatnonzero(dominated_by == 0)
    k = 1
    while len(current):
        rank[current] = k
        dominated_by = dominated_by - dom[current].sum(axis=0)
        dominated_by[rank > 0] = -1
        current = np.flatnonzero(dominated_by == 0)
        k += 1
    fronts[idx] = rank
    return fronts
