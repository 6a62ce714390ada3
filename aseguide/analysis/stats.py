"""Step 8: statistics: satisfaction fractions, the two-proportion z-test, KDEs.

Examples
--------
>>> from aseguide.analysis import two_proportion_ztest
>>> z, p = two_proportion_ztest(60, 100, 40, 100)
>>> round(z, 4), round(p, 5)
(2.8284, 0.00234)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import gaussian_kde, norm

__all__ = ["two_proportion_ztest", "KDEResult", "kde", "silverman_factor", "histogram"]


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def two_proportion_ztest(k_guided: int, n_guided: int, k_unguided: int, n_unguided: int) -> tuple[float, float]:
    """One-sided two-proportion z-test of a higher guided success rate.

    With :math:`p_g = k_g/n_g`, :math:`p_u = k_u/n_u` and the pooled rate
    :math:`p = (k_g + k_u)/(n_g + n_u)`,

    .. math::

        z = \\frac{p_g - p_u}{\\sqrt{p (1 - p) (1/n_g + 1/n_u)}}, \\qquad
        p\\text{-value} = 1 - \\Phi(z)

    (alternative hypothesis :math:`p_g > p_u`; significant when the p-value is below
    0.05). When both rates are 0 or both are 1 the test has no information:
    ``(0.0, 0.5)`` is returned.

    Parameters
    ----------
    k_guided, n_guided:
        Structures satisfying the constraint and total, guided run.
    k_unguided, n_unguided:
        The same for the unguided (baseline) run.

    Returns
    -------
    (z, p) : tuple of float

    Raises
    ------
    ValueError
        If a count is not a whole number, a total is not positive, or a success
        count is outside ``0..n`` (the offending value is named).

    Examples
    --------
    >>> z, p = two_proportion_ztest(88, 100, 21, 100)
    >>> p < 1e-12
    True
    """
    kg, ng = _count("k_guided", k_guided), _count("n_guided", n_guided)
    ku, nu = _count("k_unguided", k_unguided), _count("n_unguided", n_unguided)
    for name, n in (("n_guided", ng), ("n_unguided", nu)):
        if n <= 0:
            raise ValueError(f"{name} must be positive, got {n}")
    for name, k, n in (("k_guided", kg, ng), ("k_unguided", ku, nu)):
        if not 0 <= k <= n:
            raise ValueError(f"{name}={k} is outside 0..{n}")
    pg, pu = kg / ng, ku / nu
    pooled = (kg + ku) / (ng + nu)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / ng + 1.0 / nu))
    if se == 0.0:
        return 0.0, 0.5
    z = (pg - pu) / se
    return float(z), float(norm.sf(z))


def silverman_factor(n: int, d: int = 1) -> float:
    """Silverman's rule-of-thumb factor :math:`(n (d + 2) / 4)^{-1/(d + 4)}`.

    The kernel bandwidth is this factor times the sample standard deviation
    (``ddof=1``); for ``d = 1`` it equals :math:`(4/3)^{1/5} \\sigma n^{-1/5}
    \\approx 1.06 \\sigma n^{-1/5}`.

    Examples
    --------
    >>> round(silverman_factor(100), 6)
    0.421685
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n >= 1 and d >= 1, got n={n!r}, d={d!r}")
    return float((n * (d + 2) / 4.0) ** (-1.0 / (d + 4)))


@dataclass
class KDEResult:
    """A 1D gaussian KDE evaluated on a grid.

    Attributes
    ----------
    grid, density:
        Evaluation points and density values (integrating to ~1 over a wide grid).
    bandwidth:
        Kernel standard deviation in the data's units (``nan`` when not defined).
    n:
        Number of finite samples used.
    """

    grid: np.ndarray
    density: np.ndarray
    bandwidth: float
    n: int


def kde(values: Sequence[float], grid: Sequence[float] | None = None, bw_method: str | float = "silverman",
        n_grid: int = 256) -> KDEResult:
    """Gaussian kernel density estimate (scipy), Silverman bandwidth by default.

    Non-finite values are ignored. With fewer than two distinct values the density
    is not defined: a zero density and ``bandwidth = nan`` are returned.

    Parameters
    ----------
    values:
        Samples.
    grid:
        Points where to evaluate; default ``n_grid`` points spanning the data ± 3
        bandwidths.
    bw_method:
        Passed to :class:`scipy.stats.gaussian_kde` (``"silverman"``, ``"scott"`` or
        a factor).

    Examples
    --------
    >>> r = kde([1.0, 2.0, 3.0, 4.0])     # 3 ** (-1/5) * std(ddof=1)
    >>> round(r.bandwidth, 4)
    1.0363
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    x = x[np.isfinite(x)]
    if len(np.unique(x)) < 2:
        g = np.asarray(grid, dtype=float) if grid is not None else (
            np.linspace(x[0] - 1, x[0] + 1, n_grid) if len(x) else np.linspace(0, 1, n_grid))
        return KDEResult(grid=g, density=np.zeros_like(g), bandwidth=float("nan"), n=len(x))
    estimator = gaussian_kde(x, bw_method=bw_method)
    bandwidth = float(np.sqrt(estimator.covariance[0, 0]))
    if grid is None:
        g = np.linspace(x.min() - 3 * bandwidth, x.max() + 3 * bandwidth, n_grid)
    else:
        g = np.asarray(grid, dtype=float)
    return KDEResult(grid=g, density=estimator(g), bandwidth=bandwidth, n=len(x))


def histogram(values: Sequence[float], bins: int | Sequence[float] = 30, range: tuple[float, float] | None = None,
              integer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Density-normalised histogram of the finite values; ``integer`` bins centre on integers.

    Examples
    --------
    >>> h, edges = histogram([3, 4, 4, 6], integer=True)
    >>> edges[:2].tolist(), float(h[1])
    ([2.5, 3.5], 0.5)
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    x = x[np.isfinite(x)]
    if integer:
        lo = math.floor(x.min()) if len(x) else 0
        hi = math.ceil(x.max()) if len(x) else 1
        bins = np.arange(lo - 0.5, hi + 1.5, 1.0)
    if len(x) == 0:
        edges = np.asarray(bins, dtype=float) if not isinstance(bins, int) else np.linspace(0, 1, bins + 1)
        return np.zeros(len(edges) - 1), edges
    return np.histogram(x, bins=bins, range=range, density=True)
