"""The quoted interval of mu (walking_noise.fit.errors): calibrated on simulated campaigns with a known mu, and
flagged where a design cannot be calibrated."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from walking_noise.fit import fit_midpoint, pull, reported_error
from walking_noise.fit.errors import FLAG_BRACKET, FLAG_TWO_SEEDS, LEVELS
from walking_noise.fit.simulate import Design, simulate, slope_levels

#: 3 seeds x 8 levels on a linear axis, the seeds' offsets dominating the test-set noise (benchmarks/fit_coverage.py's
#: "lin 8 levels, 3 seeds").
SMALL = Design("small", tuple(np.linspace(0.0, 2.0, 8)), mu=0.9, sigma=-0.12, n_seeds=3, tau_mu=0.036,
               tau_amax=0.01)


def _campaigns(design: Design, n: int, seed: int) -> list:
    """``n`` simulated campaigns of ``design``, each fitted with its seed labels."""
    rng = np.random.default_rng(seed)
    return [fit_midpoint(x, y, seeds=s, axis=design.axis) for x, y, s in (simulate(design, rng) for _ in range(n))]


@pytest.mark.slow
def test_the_95_percent_interval_covers_the_true_mu_at_its_nominal_rate_with_3_seeds():
    """200 campaigns: the share whose 95 % interval holds mu is 95 % within 3 binomial standard errors, and the
    pulls (the truth's normal quantile in the quoted law) have rms 1 within 3 of its standard errors."""
    n = 200
    fits = _campaigns(SMALL, n, seed=2027)
    assert all(f.converged and f.error_flag == "" and f.interval_dof == 2 for f in fits)
    covered = np.mean([f.mu_lo95 <= SMALL.mu <= f.mu_hi95 for f in fits])
    assert abs(covered - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / n), covered
    z = np.array([pull(f, SMALL.mu) for f in fits])
    assert abs(math.sqrt(np.mean(z**2)) - 1.0) <= 3 / math.sqrt(2 * n), np.sqrt(np.mean(z**2))


def test_the_quoted_interval_is_the_seed_jackknife_with_student_t_of_seeds_minus_one_dof():
    (fit,) = _campaigns(SMALL, 1, seed=1)
    se = fit.mu_err_jackknife
    assert fit.interval_se == pytest.approx(se) and fit.interval_dof == 2
    assert fit.mu_hi95 - fit.mu == pytest.approx(stats.t.ppf(0.975, 2) * se)  # 4.30 x se for 3 seeds
    assert reported_error(fit) == pytest.approx(stats.t.ppf(0.5 + LEVELS["68"] / 2, 2) * se)


def test_a_log_axis_interval_is_symmetric_in_decades_and_asymmetric_in_mu():
    design = Design("log", tuple(np.logspace(-1, 1, 8)), mu=1.6, sigma=-0.15, axis="log10", tau_mu=0.045,
                    tau_amax=0.01)
    (fit,) = _campaigns(design, 1, seed=3)
    up, down = math.log10(fit.mu_hi95) - fit.log10_mu, fit.log10_mu - math.log10(fit.mu_lo95)
    assert up == pytest.approx(down, rel=1e-9) and up == pytest.approx(stats.t.ppf(0.975, 2) * fit.interval_se)
    assert fit.mu_hi95 - fit.mu > fit.mu - fit.mu_lo95  # wider above mu than below


def test_a_drop_between_two_levels_is_flagged_and_its_interval_is_the_bracket():
    sharp = Design("sharp", tuple(np.linspace(0.0, 2.0, 8)), mu=0.9, sigma=-0.01, tau_mu=0.003)
    assert not slope_levels(sharp).any()
    (fit,) = _campaigns(sharp, 1, seed=4)
    levels = np.linspace(0.0, 2.0, 8)
    below, above = levels[levels < 0.9].max(), levels[levels > 0.9].min()
    assert fit.error_flag == FLAG_BRACKET and fit.params["slope_levels"] == 0
    assert (fit.mu_lo95, fit.mu_hi95) == pytest.approx((below, above))
    assert (fit.mu_lo68, fit.mu_hi68) == pytest.approx((below, above))
    assert pull(fit, 0.9) is None  # no law inside a bracket


def test_two_seeds_are_flagged_as_not_calibrated_with_one_dof():
    two = Design("two", SMALL.levels, mu=0.9, sigma=-0.12, n_seeds=2, tau_mu=0.036, tau_amax=0.01)
    (fit,) = _campaigns(two, 1, seed=5)
    assert fit.error_flag == FLAG_TWO_SEEDS and fit.interval_dof == 1
    assert fit.mu_hi95 - fit.mu == pytest.approx(stats.t.ppf(0.975, 1) * fit.mu_err_jackknife)  # 12.7 x se


def test_without_seed_labels_the_interval_is_the_covariance_error_flagged():
    x, y, _ = simulate(SMALL, np.random.default_rng(6))
    fit = fit_midpoint(x, y)
    assert fit.error_flag == "no seed labels: error not calibrated" and fit.interval_dof is None
    assert reported_error(fit) == pytest.approx(fit.mu_err)  # one standard deviation of a normal law
