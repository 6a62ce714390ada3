"""Statistics and Pareto fronts of aseguide.analysis, against hand computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency, gaussian_kde

from aseguide.analysis import (
    dominates,
    histogram,
    kde,
    pareto_fronts,
    silverman_factor,
    two_proportion_ztest,
)


# ----------------------------------------------------------------- z-test
def _phi_upper(z: float) -> float:
    """Upper tail of the standard normal from math.erfc (independent of scipy)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def test_ztest_hand_computed_equal_sizes():
    # p_g = 0.6, p_u = 0.4, pooled 0.5: se = sqrt(0.25 * (2/100)) = 0.0707107
    z, p = two_proportion_ztest(60, 100, 40, 100)
    assert z == pytest.approx(0.2 / math.sqrt(0.25 * 0.02), rel=1e-12)
    assert z == pytest.approx(2.8284271247, rel=1e-9)
    assert p == pytest.approx(0.0023388675, rel=1e-6)


def test_ztest_hand_computed_unequal_sizes():
    kg, ng, ku, nu = 30, 50, 18, 60
    pg, pu = 30 / 50, 18 / 60
    pooled = 48 / 110
    z_hand = (pg - pu) / math.sqrt(pooled * (1 - pooled) * (1 / 50 + 1 / 60))
    z, p = two_proportion_ztest(kg, ng, ku, nu)
    assert z == pytest.approx(z_hand, rel=1e-12)
    assert z == pytest.approx(3.1591, abs=1e-4)
    assert p == pytest.approx(_phi_upper(z_hand), rel=1e-9)


@pytest.mark.parametrize("counts", [(88, 100, 21, 100), (7, 56, 3, 56), (10, 40, 25, 80), (5, 30, 9, 30)])
def test_ztest_equals_pearson_chi_square(counts):
    """z^2 is Pearson's chi-square of the 2x2 table (no continuity correction);
    the one-sided p is half the two-sided one, on the side of the sign of z."""
    kg, ng, ku, nu = counts
    z, p = two_proportion_ztest(kg, ng, ku, nu)
    chi2, p_two, _, _ = chi2_contingency([[kg, ng - kg], [ku, nu - ku]], correction=False)
    assert z**2 == pytest.approx(chi2, rel=1e-10)
    expected = p_two / 2 if z > 0 else 1 - p_two / 2
    assert p == pytest.approx(expected, rel=1e-8, abs=1e-300)


def test_ztest_direction_and_degenerate_cases():
    z1, p1 = two_proportion_ztest(40, 100, 60, 100)
    assert z1 < 0 and p1 > 0.99  # guided worse: not significant for "guided > unguided"
    assert two_proportion_ztest(0, 10, 0, 20) == (0.0, 0.5)
    assert two_proportion_ztest(10, 10, 20, 20) == (0.0, 0.5)
    z, p = two_proportion_ztest(10, 10, 0, 10)
    assert z == pytest.approx(math.sqrt(20)) and p < 1e-5


@pytest.mark.parametrize(
    "args, word",
    [((11, 10, 1, 10), "k_guided=11"), ((1, 10, -1, 10), "k_unguided=-1"), ((0, 0, 1, 10), "n_guided"),
     ((1.5, 10, 1, 10), "k_guided"), ((1, 10, 1, 0), "n_unguided")],
)
def test_ztest_bad_input_named(args, word):
    with pytest.raises(ValueError, match=word):
        two_proportion_ztest(*args)


# ----------------------------------------------------------------- KDE
def test_silverman_bandwidth_matches_scipy_and_formula():
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.5, size=257)
    r = kde(x)
    ref = gaussian_kde(x, bw_method="silverman")
    sigma = np.std(x, ddof=1)
    assert r.bandwidth == pytest.approx(ref.factor * sigma, rel=1e-12)
    # 1D Silverman rule: (4 / (3 n))^(1/5) * sigma
    assert r.bandwidth == pytest.approx((4.0 / (3.0 * len(x))) ** 0.2 * sigma, rel=1e-12)
    assert silverman_factor(len(x)) == pytest.approx(ref.silverman_factor(), rel=1e-12)
    assert silverman_factor(50, d=2) == pytest.approx(gaussian_kde(rng.normal(size=(2, 50)), "silverman").factor)
    # the density is the mean of gaussians of that width
    x0 = 3.0
    hand = np.mean(np.exp(-0.5 * ((x0 - x) / r.bandwidth) ** 2)) / (r.bandwidth * math.sqrt(2 * math.pi))
    assert kde(x, grid=[x0]).density[0] == pytest.approx(hand, rel=1e-10)
    assert np.trapezoid(r.density, r.grid) == pytest.approx(1.0, abs=2e-3)


def test_kde_ignores_nan_and_handles_degenerate_input():
    r = kde([1.0, np.nan, 2.0, 4.0])
    assert r.n == 3 and math.isfinite(r.bandwidth)
    flat = kde([2.0, 2.0, 2.0])
    assert math.isnan(flat.bandwidth) and not flat.density.any()


def test_integer_histogram_bins_centre_on_integers():
    h, edges = histogram([3, 4, 4, 6, 6, 6], integer=True)
    assert edges.tolist() == [2.5, 3.5, 4.5, 5.5, 6.5]
    assert h.tolist() == pytest.approx([1 / 6, 2 / 6, 0.0, 3 / 6])


# ----------------------------------------------------------------- Pareto fronts
def _brute_force_fronts(points: np.ndarray) -> np.ndarray:
    """The definition, literally: peel the non-dominated set again and again."""
    remaining = set(range(len(points)))
    fronts = np.zeros(len(points), dtype=int)
    k = 0
    while remaining:
        k += 1
        front = [i for i in remaining
                 if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        for i in front:
            fronts[i] = k
        remaining -= set(front)
    return fronts


def test_pareto_hand_built_staircases():
    # three nested staircases, listed shuffled; (0.5, 0.5) strictly dominates the third staircase only
    f1 = [(0, 4), (1, 2), (2, 1), (4, 0)]
    f2 = [(1, 4), (2, 2.5), (3, 1.5), (4.5, 0.5)]
    f3 = [(2, 5), (4, 3), (5, 2)]
    pts = f1 + f2 + f3
    order = [7, 2, 9, 0, 5, 10, 3, 1, 8, 4, 6]
    shuffled = np.array([pts[i] for i in order], dtype=float)
    expected = np.array([1] * 4 + [2] * 4 + [3] * 3)[order]
    assert pareto_fronts(shuffled).tolist() == expected.tolist()


def test_pareto_ties_and_dominance_details():
    # equal points share a front; (1, 1) is dominated by (1, 0) (equal in one column, better in the other)
    pts = [[1, 0], [1, 0], [1, 1], [0, 2], [2, 2]]
    assert pareto_fronts(pts).tolist() == [1, 1, 2, 1, 3]
    # one column: fronts are the ranks of distinct values
    assert pareto_fronts([3.0, 1.0, 2.0, 1.0]).tolist() == [3, 1, 2, 1]
    # three objectives
    pts3 = [[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 2], [0, 0, 0.5]]
    # (0,0,0.5) < (0,0,1) < (1,1,1) < (1,1,2): a chain of dominations
    assert pareto_fronts(pts3).tolist() == [2, 1, 1, 3, 4, 1]


@pytest.mark.parametrize("seed", range(4))
def test_pareto_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d = (120, 2) if seed % 2 == 0 else (80, 3)
    pts = rng.integers(0, 12, size=(n, d)).astype(float)  # many ties
    got = pareto_fronts(pts, block=17)  # small blocks exercise the blocked dominance matrix
    assert got.tolist() == _brute_force_fronts(pts).tolist()
    # every point of front k+1 is dominated by some point of front k, none of front k by another of k
    for k in range(1, got.max()):
        a, b = pts[got == k], pts[got == k + 1]
        assert all(any(dominates(p, q) for p in a) for q in b)
        assert not any(dominates(p, q) for p, q in itertools.permutations(a, 2))


def test_pareto_nan_policy():
    pts = [[0.0, 1.0], [np.nan, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="point 1"):
        pareto_fronts(pts)
    assert pareto_fronts(pts, nan_policy="omit").tolist() == [1, 0, 1]
    assert pareto_fronts(np.zeros((0, 2))).tolist() == []
    with pytest.raises(ValueError, match="nan_policy"):
        pareto_fronts(pts, nan_policy="ignore")
