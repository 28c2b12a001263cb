"""Adaptive noise grids find the transition of a known curve with fewer runs than a dense fixed grid."""

import numpy as np
import pytest

from walking_noise.adaptive import AdaptiveGrid, find_transition, relative_error
from walking_noise.fit import fit_midpoint, logistic


def _synthetic(mu_log10: float, sigma: float, noise: float, rng: np.random.Generator):
    """Accuracy of a falling curve on a log axis (0.98 -> 0.1) with per-run Gaussian scatter."""
    def measure(levels, seeds):
        rows = []
        for s in levels:
            mean = logistic(np.log10(s), mu_log10, -sigma, 0.88, 0.10)
            rows += [(s, seed, float(mean + rng.normal(0, noise))) for seed in seeds]
        return rows
    return measure


@pytest.mark.parametrize("mu_log10, sigma", [(0.2, 0.15), (-0.8, 0.3), (1.3, 0.1)])
def test_adaptive_search_recovers_mu_with_fewer_runs_than_the_dense_grid(mu_log10, sigma):
    rng = np.random.default_rng(7)
    measure = _synthetic(mu_log10, sigma, 0.02, rng)
    dense_levels = np.logspace(-2, 2, 17)
    dense = measure(dense_levels, range(5))
    x, seeds, y = map(np.array, zip(*dense))
    dense_fit = fit_midpoint(x, y, seeds=seeds, axis="log10")
    assert dense_fit.converged
    target = relative_error(dense_fit)
    result = find_transition(measure, AdaptiveGrid(0.01, 100.0, target_rel_err=target, max_runs=85))
    assert result.fit.converged, result.stopped_because
    assert relative_error(result.fit) <= target
    assert result.runs < len(dense)
    true_mu = 10**mu_log10
    assert abs(result.fit.mu - true_mu) < 4 * result.fit.mu_err + 0.02 * true_mu


def test_flat_curve_stops_without_crashing():
    def flat(levels, seeds):
        return [(s, seed, 0.97) for s in levels for seed in seeds]
    result = find_transition(flat, AdaptiveGrid(0.01, 1.0, max_runs=40))
    assert not result.fit.converged
    assert result.stopped_because
    assert result.runs <= 40


def test_transition_outside_the_range_is_found_by_widening():
    measure = _synthetic(2.5, 0.2, 0.01, np.random.default_rng(1))
    result = find_transition(measure, AdaptiveGrid(0.01, 10.0, target_rel_err=0.1, max_runs=150))
    assert result.fit.converged and abs(np.log10(result.fit.mu) - 2.5) < 0.2


def test_bad_grid_settings_are_rejected():
    with pytest.raises(ValueError, match="low > 0 on a log10 axis"):
        AdaptiveGrid(0.0, 1.0)
    with pytest.raises(ValueError, match="valid choices: log10, linear"):
        AdaptiveGrid(0.1, 1.0, axis="ln")
