"""Which midpoints differ (walking_noise.fit.compare): a known difference is found, a null difference is found at
most at the nominal rate, and the family's corrections and letters say what they should."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from walking_noise.fit import fit_midpoint
from walking_noise.fit.compare import ALPHA, difference, holm, letters, versus_value
from walking_noise.fit.simulate import Design, seed_effects, simulate

#: One injection point measured with 3 seeds x 8 levels (log axis), seeds' offsets dominating.
POINT = Design("point", tuple(np.logspace(-1, 1, 8)), mu=1.6, sigma=-0.15, axis="log10", n_seeds=3, tau_mu=0.045,
               tau_amax=0.01)


def _pair(a: Design, b: Design, rng: np.random.Generator, shared: float = 0.5):
    """Two curves measured with the same seeds: each seed's offsets are correlated ``shared`` between them."""
    z = seed_effects(a, rng)
    own = seed_effects(a, rng)
    zb = tuple(shared * zi + math.sqrt(1 - shared**2) * oi for zi, oi in zip(z, own))
    fits = []
    for design, effects in ((a, z), (b, zb)):
        x, y, s = simulate(design, rng, effects)
        fits.append(fit_midpoint(x, y, seeds=s, axis=design.axis))
    return fits


def test_a_known_difference_between_two_points_is_detected():
    """Point b is 1.3x as robust as point a (0.11 decades, a few of the pair's standard errors)."""
    rng = np.random.default_rng(11)
    fa, fb = _pair(POINT, replace(POINT, mu=1.6 * 1.3), rng)
    diff = difference(fa, fb)
    assert diff.d == pytest.approx(-math.log10(1.3), abs=0.05)
    assert diff.p < ALPHA and diff.dof == 2 and "paired" in diff.method
    lo, hi = diff.bounds(0.95)
    assert lo <= -math.log10(1.3) <= hi


@pytest.mark.slow
def test_a_null_difference_is_found_at_most_at_the_nominal_rate():
    """150 pairs of points with the same mu: "differs" at p < 5 % in at most 5 % of them, within 3 binomial
    standard errors."""
    rng = np.random.default_rng(12)
    n = 150
    p = [difference(*_pair(POINT, POINT, rng)).p for _ in range(n)]
    rate = float(np.mean(np.array(p) < ALPHA))
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / n), rate


def test_a_difference_with_itself_is_zero_and_never_significant():
    (fa, _) = _pair(POINT, POINT, np.random.default_rng(13))
    diff = difference(fa, fa)
    assert diff.d == 0.0 and diff.se == 0.0 and diff.p == 1.0


def test_a_value_inside_the_95_percent_interval_is_not_rejected_and_one_outside_is():
    (fa, _) = _pair(POINT, POINT, np.random.default_rng(14))
    assert versus_value(fa, fa.mu_hi95 * 0.999).p > 0.05
    assert versus_value(fa, fa.mu_hi95 * 1.001).p < 0.05


def test_holm_multiplies_the_smallest_p_by_the_family_size_and_keeps_the_order():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    np.testing.assert_allclose(adjusted, [0.04, 0.09, 0.09, 0.5])  # 4 x 0.01, max(3 x 0.03, .), 2 x 0.04 -> 0.09


def test_letters_share_a_letter_exactly_where_no_difference_was_found():
    # items 0 < 1 < 2 (by mu): 0 and 2 differ, 1 differs from neither
    assert letters(3, [(0, 2)], order=[1.0, 2.0, 3.0]) == ["a", "ab", "b"]
    # nothing differs: one group; everything differs: one letter each, in the order of mu
    assert letters(3, [], order=[3.0, 1.0, 2.0]) == ["a", "a", "a"]
    assert letters(3, [(0, 1), (0, 2), (1, 2)], order=[3.0, 1.0, 2.0]) == ["c", "a", "b"]
