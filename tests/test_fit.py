"""Tests for walking_noise.fit (midpoint noise level, paper Eq. 1-2 and appendix B)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from walking_noise.fit import core as fit_core, errors as fit_errors, levels as fit_levels, pipeline as fit_pipeline
from walking_noise.fit import (
    FitResult,
    aggregate_repeats,
    double_logistic,
    fit_midpoint,
    logistic,
    midpoint_noise_level,
)

LOG_GRID = 10.0 ** np.arange(-2, 17)  # 1e-2 .. 1e16, one level per decade


def draw_runs(rng, levels, mu, sigma, delta_a, a_min, n_rep, s_plateau, s_mid, axis="linear"):
    """Synthetic per-run accuracies from Eq. 1, noisier in the transition (as in the paper)."""
    x = np.repeat(np.asarray(levels, dtype=float), n_rep)
    t = np.log10(x) if axis == "log10" else x
    pos = math.log10(mu) if axis == "log10" else mu
    p = logistic(t, pos, sigma, 1.0, 0.0)
    y = a_min + delta_a * p + rng.normal(size=x.size) * (s_plateau + s_mid * 4 * p * (1 - p))
    seeds = np.tile(np.arange(n_rep), len(levels))
    return x, y, seeds


def exact_runs(levels, n_rep, func, spread=0.0):
    """Repeats placed at mean + spread * (-1, 0, +1, ...) so their std is known exactly."""
    levels = np.asarray(levels, dtype=float)
    offs = np.linspace(-1.0, 1.0, n_rep) if n_rep > 1 else np.zeros(1)
    offs = offs / (offs.std(ddof=1) if n_rep > 1 else 1.0)
    x = np.repeat(levels, n_rep)
    y = np.repeat(func(levels), n_rep) + spread * np.tile(offs, len(levels))
    return x, y


# ----------------------------------------------------------------------------- models


def test_logistic_is_eq1_and_falls_for_negative_sigma():
    mu, sigma, da, amin = 2.0, -0.3, 0.8, 0.1
    assert logistic(mu, mu, sigma, da, amin) == pytest.approx(amin + da / 2)
    x = np.linspace(-5, 10, 50)
    y = logistic(x, mu, sigma, da, amin)
    assert np.all(np.diff(y) < 0)
    assert y[0] == pytest.approx(amin + da, abs=1e-6) and y[-1] == pytest.approx(amin, abs=1e-6)
    # explicit formula and overflow safety
    ref = da / (1 + np.exp(-(x - mu) / sigma)) + amin
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    assert np.all(np.isfinite(logistic(np.array([-1e300, 1e300, -np.inf, np.inf]), 0.0, -1e-3, 1.0, 0.0)))


def test_double_logistic_plateaus():
    p = dict(mu1=1.0, sigma1=-0.1, delta_a1=0.3, mu2=5.0, sigma2=-0.2, delta_a2=0.5, a_min=0.1)
    assert double_logistic(-10.0, **p) == pytest.approx(0.9)
    assert double_logistic(3.0, **p) == pytest.approx(0.6, abs=1e-4)
    assert double_logistic(20.0, **p) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- aggregation


def test_aggregate_repeats():
    x = [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    y = [0.9, 0.8, 1.0, 0.5, np.nan, 0.2, 0.4]
    df = aggregate_repeats(x, y)
    assert list(df.columns) == ["noise_std", "mean", "std", "n"]
    np.testing.assert_allclose(df["noise_std"], [0, 1, 2])
    np.testing.assert_allclose(df["mean"], [0.9, 0.5, 0.3])
    np.testing.assert_allclose(df["std"], [0.1, 0.0, np.std([0.2, 0.4], ddof=1)])
    assert list(df["n"]) == [3, 1, 2]
    assert df.attrs["n_dropped_nonfinite"] == 1


# ----------------------------------------------------------------------------- recovery & error honesty

COVERAGE_CASES = [
    # name, levels, mu, sigma, delta_a, a_min, repeats, plateau sd, extra mid sd, axis
    ("linear_3rep", np.linspace(0, 2, 11), 0.8, -0.15, 0.88, 0.10, 3, 0.01, 0.03, "linear"),
    ("linear_5rep_percent", np.linspace(0, 5, 15), 2.0, -0.5, 60.0, 10.0, 5, 1.0, 3.0, "linear"),
    ("linear_3rep_steep", np.linspace(0, 1, 9), 0.33, -0.04, 0.9, 0.10, 3, 0.005, 0.05, "linear"),
    ("log_3rep_mu1e6", LOG_GRID, 1e6, -0.8, 0.88, 0.10, 3, 0.01, 0.03, "log10"),
    ("log_5rep_mu1e3", LOG_GRID, 1e3, -0.4, 0.50, 0.10, 5, 0.005, 0.02, "log10"),
]


@pytest.mark.parametrize("case", COVERAGE_CASES, ids=[c[0] for c in COVERAGE_CASES])
def test_mu_recovered_within_reported_error(case):
    """Honesty of the errors on synthetic curves drawn from Eq. 1.

    Measured with 200 draws per case (2-sigma coverage, nominal 95 %): mu_err alone
    0.83-0.95 (lowest: 3 repeats on the log grid, where few transition levels carry
    spreads estimated from 3 runs), max(mu_err, mu_err_jackknife) 0.90-0.97. The
    thresholds below leave room for the binomial scatter of 40 draws.
    """
    name, levels, mu, sigma, da, amin, n_rep, s0, s1, axis = case
    rng = np.random.default_rng(12345)
    n_draws = 40
    inside, inside_cons, ratios = [], [], []
    for _ in range(n_draws):
        x, y, seeds = draw_runs(rng, levels, mu, sigma, da, amin, n_rep, s0, s1, axis)
        r = fit_midpoint(x, y, axis=axis, seeds=seeds)
        assert r.converged, r.reason
        assert r.mu_err is not None and r.mu_err > 0 and r.mu_err_jackknife is not None
        assert r.mu_err >= r.mu_err_unscaled * (1 - 1e-12)  # scaling only inflates
        if axis == "log10":
            # coverage on the axis the fit was made on (mu_err is its linear propagation)
            dev = abs(r.log10_mu - math.log10(mu))
            err, err_jk = r.log10_mu_err, r.log10_mu_err_jackknife
            assert r.mu == pytest.approx(10**r.log10_mu, rel=1e-12)
            assert r.mu_err == pytest.approx(r.mu * math.log(10) * r.log10_mu_err, rel=1e-12)
            assert r.mu_err_jackknife == pytest.approx(r.mu * math.log(10) * err_jk, rel=1e-12)
        else:
            dev, err, err_jk = abs(r.mu - mu), r.mu_err, r.mu_err_jackknife
        inside.append(dev <= 2 * err)
        inside_cons.append(dev <= 2 * max(err, err_jk))
        ratios.append(dev / err)
    coverage, coverage_cons = float(np.mean(inside)), float(np.mean(inside_cons))
    assert coverage >= 0.75, f"{name}: only {coverage:.2f} of draws within 2 mu_err"
    assert coverage_cons >= 0.8, f"{name}: only {coverage_cons:.2f} within 2 max(mu_err, jackknife)"
    # ... and the error bars are not absurdly wide either
    assert 0.1 <= np.mean(ratios) <= 3.0, np.mean(ratios)


def test_log_axis_reports_mu_in_noise_std_units():
    rng = np.random.default_rng(7)
    x, y, seeds = draw_runs(rng, LOG_GRID, 1e6, -0.8, 0.88, 0.1, 5, 0.005, 0.02, "log10")
    r = fit_midpoint(x, y, axis="log10", seeds=seeds)
    assert r.converged and r.axis == "log10"
    assert abs(r.mu - 1e6) <= 3 * r.mu_err
    assert 1e5 < r.mu < 1e7
    assert abs(r.log10_mu - 6.0) <= 3 * r.log10_mu_err
    assert r.sigma < 0 and abs(r.sigma - (-0.8)) < 0.3  # decades
    # the curve evaluates in noise-std units
    assert r.predict([r.mu])[0] == pytest.approx(r.a_min + r.delta_a / 2, rel=1e-9)
    assert r.predict([0.0])[0] == pytest.approx(r.a_min + r.delta_a)


def test_log_axis_drops_zero_noise_with_note():
    x, y = exact_runs(np.r_[0.0, LOG_GRID], 3, lambda v: logistic(np.log10(np.maximum(v, 1e-300)), 4.0, -0.7, 0.8, 0.1), 0.01)
    r = fit_midpoint(x, y, axis="log10")
    assert r.converged
    assert r.n_levels == len(LOG_GRID) and r.n_runs == 3 * len(LOG_GRID)
    assert any("noise_std = 0" in n for n in r.notes)
    assert r.log10_mu == pytest.approx(4.0, abs=1e-3)


# ----------------------------------------------------------------------------- double logistic


def _plateau_curve_runs(seed=3, n_rep=5):
    rng = np.random.default_rng(seed)
    truth = dict(mu1=2.0, sigma1=-0.4, delta_a1=0.35, mu2=10.0, sigma2=-0.5, delta_a2=0.45, a_min=0.1)
    x = np.repeat(LOG_GRID, n_rep)
    t = np.log10(x)
    y = double_logistic(t, **truth) + rng.normal(0, 0.01, x.size)
    seeds = np.tile(np.arange(n_rep), len(LOG_GRID))
    return x, y, seeds, truth


def test_auto_picks_double_on_plateau_curve_and_recovers_it():
    x, y, seeds, truth = _plateau_curve_runs()
    r = fit_midpoint(x, y, axis="log10", model="auto", seeds=seeds)
    assert r.converged, r.reason
    assert r.model == "double"
    assert "double" in r.model_choice_reason and "dAIC" in r.model_choice_reason
    p = r.params
    assert p["log10_mu1"] == pytest.approx(truth["mu1"], abs=0.3)
    assert p["log10_mu2"] == pytest.approx(truth["mu2"], abs=0.3)
    assert p["log10_mu1"] < p["log10_mu2"]
    assert r.delta_a == pytest.approx(truth["delta_a1"] + truth["delta_a2"], abs=0.03)
    # true half-way crossing between the outer plateaus
    half = truth["a_min"] + 0.5 * (truth["delta_a1"] + truth["delta_a2"])
    t_true = brentq(lambda t: double_logistic(t, **truth) - half, -2, 16)
    assert abs(r.log10_mu - t_true) <= 3 * r.log10_mu_err + 0.05
    assert r.predict([r.mu])[0] == pytest.approx(r.a_min + r.delta_a / 2, abs=1e-6)
    assert r.mu_err is not None and r.mu_err_jackknife is not None
    assert r.sigma is None and r.params["sigma1"] < 0 and r.params["sigma2"] < 0


@pytest.mark.parametrize("model", ["single", "double"])
def test_the_analytic_jacobian_is_the_curves_derivative(model):
    # the solver steps along these derivatives instead of finite differences: a wrong one fits a wrong curve
    from walking_noise.fit.curves import curve_function, curve_jacobian

    x = np.array([-np.inf, -3.0, -0.4, 0.0, 0.2, 0.5, 0.9, 2.0, 40.0, np.inf])
    params = (np.array([0.3, -0.2, 0.7, 0.1]) if model == "single"
              else np.array([0.2, -0.1, 0.4, 0.7, -0.15, 0.35, 0.12]))
    func, jac = curve_function(model), curve_jacobian(model)
    got = jac(x, *params)
    assert got.shape == (x.size, params.size) and np.all(np.isfinite(got))
    for j in range(params.size):
        h = 1e-6
        up, down = params.copy(), params.copy()
        up[j] += h
        down[j] -= h
        numeric = (func(x, *up) - func(x, *down)) / (2 * h)
        numeric = np.where(np.isfinite(numeric), numeric, 0.0)
        np.testing.assert_allclose(got[:, j], numeric, rtol=1e-6, atol=1e-8)


def test_auto_picks_single_on_single_logistic_curve():
    rng = np.random.default_rng(11)
    x, y, _ = draw_runs(rng, LOG_GRID, 1e5, -0.7, 0.85, 0.1, 3, 0.01, 0.02, "log10")
    r = fit_midpoint(x, y, axis="log10", model="auto")
    assert r.converged and r.model == "single"
    assert r.model_choice_reason.startswith("auto: single")
    single = fit_midpoint(x, y, axis="log10", model="single")
    assert r.mu == pytest.approx(single.mu)


def test_double_needs_enough_levels():
    x, y = exact_runs(np.linspace(0, 1, 6), 3, lambda v: logistic(v, 0.5, -0.1, 0.8, 0.1), 0.01)
    r = fit_midpoint(x, y, model="double")
    assert not r.converged and "too few" in r.reason
    r = fit_midpoint(x, y, model="auto")  # falls back to single
    assert r.converged and r.model == "single"


# ----------------------------------------------------------------------------- spreads and weights


def test_zero_spread_repeats_do_not_crash():
    levels = np.linspace(0, 2, 11)
    func = lambda v: logistic(v, 0.8, -0.15, 0.88, 0.1)  # noqa: E731
    x, y = exact_runs(levels, 3, func, spread=0.0)  # identical repeats everywhere
    r = fit_midpoint(x, y)
    assert r.converged
    assert r.mu == pytest.approx(0.8, abs=1e-6)
    assert math.isfinite(r.mu_err) and math.isfinite(r.mu_err_unscaled)
    assert r.spread_floor == pytest.approx(0.02 * (func(levels).max() - func(levels).min()))
    assert "active on 11 of 11" in r.spread_floor_rule
    # single repeat per level, and a user-given absolute floor
    x1, y1 = exact_runs(levels, 1, func)
    y1 = y1 + np.random.default_rng(0).normal(0, 0.005, y1.size)
    r1 = fit_midpoint(x1, y1, spread_floor=0.005)
    assert r1.converged and r1.spread_floor == 0.005 and "user-given" in r1.spread_floor_rule
    assert math.isfinite(r1.mu_err) and abs(r1.mu - 0.8) < 5 * r1.mu_err


def test_weighted_fit_uses_spread():
    levels = np.linspace(0, 2, 11)
    func = lambda v: logistic(v, 0.8, -0.15, 0.88, 0.1)  # noqa: E731
    x, y = exact_runs(levels, 3, func, spread=0.01)
    base = fit_midpoint(x, y)
    k = np.where(levels == 1.0)[0][0]  # a transition level, just past mu
    at_k = x == levels[k]

    def moved(spread):
        y2 = y.copy()
        y2[at_k] = func(levels[k]) + 0.35 + spread * np.array([-1.0, 0.0, 1.0])
        return fit_midpoint(x, y2, spread_floor=0.0)

    r_noisy = moved(0.5)  # huge spread: weight ~ (0.01/0.5)^2
    r_tight = moved(0.01)  # same spread as the others
    assert r_noisy.converged and r_tight.converged
    shift_noisy = abs(r_noisy.mu - base.mu)
    shift_tight = abs(r_tight.mu - base.mu)
    assert shift_tight > 0.05
    assert shift_noisy < 0.1 * shift_tight
    assert shift_noisy < 2 * base.mu_err


# ----------------------------------------------------------------------------- failures never raise


def test_flat_high_curve_not_converged():
    rng = np.random.default_rng(1)
    x = np.repeat(np.linspace(0, 1, 8), 3)
    y = 0.98 + rng.normal(0, 0.003, x.size)
    r = fit_midpoint(x, y, chance_level=0.1)
    assert not r.converged and "flat" in r.reason and "upper plateau" in r.reason
    assert r.mu is None and r.mu_lower_bound == pytest.approx(1.0)
    r0 = fit_midpoint(x, y)  # without chance level: still a clear, non-raising answer
    assert not r0.converged and "flat" in r0.reason and r0.mu is None
    assert midpoint_noise_level(x, y) == (None, None)


def test_flat_low_curve_not_converged():
    rng = np.random.default_rng(2)
    x = np.repeat(np.linspace(0.5, 3, 8), 3)
    y = 0.1 + rng.normal(0, 0.01, x.size)
    r = fit_midpoint(x, y, chance_level=0.1)
    assert not r.converged and "lower plateau" in r.reason
    assert r.mu is None and r.mu_upper_bound == pytest.approx(0.5)


def test_transition_not_completed_in_tested_range_gives_bounds():
    levels = np.linspace(0, 1, 9)
    # drop starts inside the range, lower plateau never reached (true mu = 1.15 > max tested 1.0)
    x, y = exact_runs(levels, 3, lambda v: logistic(v, 1.15, -0.15, 0.88, 0.1), 0.005)
    r = fit_midpoint(x, y)
    assert not r.converged and r.mu is None
    assert "lower plateau not reached" in r.reason
    assert r.mu_lower_bound is not None and 0.5 < r.mu_lower_bound <= 1.15
    assert "mu_extrapolated" in r.params
    # curve already falling at the smallest tested noise (true mu = -0.2 < min tested 0)
    x, y = exact_runs(levels, 3, lambda v: logistic(v, -0.2, -0.15, 0.88, 0.1), 0.005)
    r = fit_midpoint(x, y)
    assert not r.converged and "upper plateau not reached" in r.reason
    assert r.mu_upper_bound is not None and -0.2 <= r.mu_upper_bound < 0.5


def test_nan_accuracies_dropped_and_counted():
    rng = np.random.default_rng(5)
    x, y, seeds = draw_runs(rng, np.linspace(0, 2, 11), 0.8, -0.15, 0.88, 0.1, 3, 0.01, 0.02)
    y[[0, 7, 20]] = np.nan
    y[25] = np.inf
    r = fit_midpoint(x, y, seeds=seeds)
    assert r.converged
    assert r.n_dropped_nonfinite == 4 and r.n_runs == x.size - 4
    assert any("non-finite" in n for n in r.notes)
    assert abs(r.mu - 0.8) < 0.1
    # all runs of a level diverged -> that level disappears
    y2 = y.copy()
    y2[x == x[3]] = np.nan
    assert fit_midpoint(x, y2).n_levels == 10


def test_too_few_levels_not_converged():
    x = np.repeat([0.0, 0.5, 1.0], 3)
    y = np.repeat([0.9, 0.5, 0.1], 3)
    r = fit_midpoint(x, y)
    assert not r.converged and "too few" in r.reason and r.n_levels == 3
    assert fit_midpoint([], []).converged is False


def test_curve_fit_failure_reported(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("Optimal parameters not found: maxfev exceeded")

    monkeypatch.setattr(fit_core, "curve_fit", boom)
    x, y = exact_runs(np.linspace(0, 2, 11), 3, lambda v: logistic(v, 0.8, -0.15, 0.88, 0.1), 0.01)
    r = fit_midpoint(x, y)
    assert not r.converged and "did not converge" in r.reason and r.mu is None


def test_programming_errors_raise():
    with pytest.raises(ValueError, match=">= 0"):
        fit_midpoint([-0.1, 0.0, 0.1, 0.2], [0.9, 0.8, 0.5, 0.2])
    with pytest.raises(ValueError, match="same length"):
        fit_midpoint([0.0, 0.1], [0.9])
    with pytest.raises(ValueError, match="1-D"):
        fit_midpoint(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        fit_midpoint([0.0, np.nan], [0.9, 0.8])
    with pytest.raises(ValueError, match="axis"):
        fit_midpoint([0.0, 1.0], [0.9, 0.8], axis="log")
    with pytest.raises(ValueError, match="model"):
        fit_midpoint([0.0, 1.0], [0.9, 0.8], model="triple")
    with pytest.raises(ValueError, match="seeds"):
        fit_midpoint([0.0, 1.0], [0.9, 0.8], seeds=[1, 2, 3])
    with pytest.raises(ValueError):
        aggregate_repeats([-1.0], [0.5])


# ----------------------------------------------------------------------------- jackknife & result object


def test_jackknife_filled_with_seeds():
    rng = np.random.default_rng(9)
    x, y, seeds = draw_runs(rng, np.linspace(0, 2, 11), 0.8, -0.15, 0.88, 0.1, 4, 0.01, 0.03)
    r = fit_midpoint(x, y, seeds=seeds)
    assert r.converged and r.mu_err_jackknife is not None and r.mu_err_jackknife > 0
    assert r.params["jackknife_n_seeds"] == 4
    # manual jackknife reproduces the value
    mus = []
    for s in range(4):
        keep = seeds != s
        sub = fit_midpoint(x[keep], y[keep], spread_floor=r.spread_floor)
        mus.append(sub.mu)
    mus = np.array(mus)
    se = math.sqrt(3 / 4 * np.sum((mus - mus.mean()) ** 2))
    assert r.mu_err_jackknife == pytest.approx(se, rel=1e-3)
    # 2 seeds: a jackknife of 1 dof, flagged; 1 seed: none, with a note
    two = seeds < 2
    r2 = fit_midpoint(x[two], y[two], seeds=seeds[two])
    assert r2.mu_err_jackknife is not None and r2.interval_dof == 1
    assert r2.error_flag == "2 seeds: 1 dof"
    one = seeds == 0
    r1 = fit_midpoint(x[one], y[one], seeds=seeds[one])
    assert r1.mu_err_jackknife is None and any("jackknife skipped" in n for n in r1.notes)
    assert r1.error_flag == "1 seed: error not calibrated"
    # string labels work, too
    r3 = fit_midpoint(x, y, seeds=np.array([f"seed{s}" for s in seeds]))
    assert r3.mu_err_jackknife == pytest.approx(r.mu_err_jackknife)


def test_result_is_json_able_and_predicts():
    rng = np.random.default_rng(4)
    x, y, seeds = draw_runs(rng, np.linspace(0, 2, 11), 0.8, -0.15, 88.0, 10.0, 3, 1.0, 2.0)
    r = fit_midpoint(x, y, seeds=seeds)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    for key in ("converged", "reason", "model", "axis", "mu", "mu_err", "mu_err_unscaled", "mu_err_jackknife",
                "sigma", "sigma_err", "delta_a", "delta_a_err", "a_min", "a_min_err", "chi2_red", "n_levels",
                "n_runs", "spread_floor", "error_method", "params"):
        assert key in d
    assert type(r.mu) is float and type(r.n_levels) is int  # plain JSON types, not numpy scalars
    assert "max(1, chi2_red)" in r.error_method
    assert r.sigma < 0 and r.a_min == pytest.approx(10, abs=2) and r.delta_a == pytest.approx(88, abs=3)
    np.testing.assert_allclose(r.predict(x), logistic(x, r.mu, r.sigma, r.delta_a, r.a_min))
    mu, err = midpoint_noise_level(x, y)
    assert mu == pytest.approx(r.mu) and err == pytest.approx(r.mu_err)
    # failed results serialise too, and predict gives NaN
    bad = fit_midpoint([0.0, 1.0], [0.9, 0.1])
    json.dumps(bad.to_dict(), allow_nan=False)
    assert np.all(np.isnan(bad.predict([0.5])))


def test_p0_accepted_in_user_units():
    x, y = exact_runs(LOG_GRID, 3, lambda v: logistic(np.log10(v), 3.0, -0.5, 0.8, 0.1), 0.01)
    r = fit_midpoint(x, y, axis="log10", p0={"mu": 1e3, "sigma": -0.5, "delta_a": 0.8, "a_min": 0.1})
    assert r.converged and r.log10_mu == pytest.approx(3.0, abs=1e-4)
    with pytest.raises(ValueError, match="p0"):
        fit_midpoint(x, y, p0=[1.0, 2.0])


def test_step_sharper_than_grid_gets_resolution_error():
    x = np.repeat(LOG_GRID, 3)
    y = np.where(x < 3e5, 0.98, 0.10) + np.random.default_rng(0).normal(0, 0.002, x.size)
    r = fit_midpoint(x, y, axis="log10")
    assert r.converged and 5.0 <= r.log10_mu <= 6.0  # between the bracketing levels
    assert r.log10_mu_err == pytest.approx(1.0 / math.sqrt(12.0))  # one decade gap
    assert r.params["sigma_at_lower_bound"] is True and "sharper" in r.error_method


# ----------------------------------------------------------------------------- the stages, one at a time


def _levels(x, y, seeds=None, spread_floor=None):
    """The prepared levels of a single-logistic fit on the linear axis, as fit_midpoint prepares them."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return fit_levels.prepare_levels(FitResult(), x, y, seeds, "linear", "single", spread_floor)


def test_unit_box_weights_are_the_floored_standard_errors_of_eq2():
    x, y = exact_runs(np.linspace(0, 2, 11), 3, lambda v: logistic(v, 0.8, -0.15, 0.88, 0.1), 0.01)
    data = fit_levels.fit_frame(_levels(x, y, spread_floor=0.005), "linear")
    expected = np.maximum(data.std, 0.005) / np.sqrt(3)  # Eq. 2 with the per-level standard error, floored
    np.testing.assert_allclose(data.w * data.frame.y_scale, expected, rtol=1e-12)
    np.testing.assert_allclose(data.std, 0.01, rtol=1e-12)  # exact_runs: spread 0.01 at every level


def test_fit_frame_returns_new_levels_and_leaves_its_input_alone():
    x, y = exact_runs(np.linspace(0, 2, 11), 3, lambda v: logistic(v, 0.8, -0.15, 0.88, 0.1), 0.01)
    data = _levels(x, y)
    framed = fit_levels.fit_frame(data, "linear")
    assert data.frame is None and data.u is None and data.w is None  # the input is not normalised in place
    assert framed.u[0] == 0.0 and framed.u[-1] == 1.0 and framed.v.min() == 0.0 and framed.v.max() == 1.0
    assert framed.direction == -1.0  # accuracy falls with noise


def test_flat_curve_at_chance_bounds_mu_by_the_smallest_level_without_touching_the_levels():
    x = np.repeat(np.linspace(0.1, 2, 8), 3)
    y = 0.1 + np.random.default_rng(2).normal(0, 0.003, x.size)
    data = _levels(x, y)
    flat = fit_pipeline.flat_curve(data, chance_level=0.1)
    assert flat.upper == pytest.approx(0.1) and flat.lower is None and "chance" in flat.reason
    assert data.frame is None and data.u is None  # a pure verdict


def test_jackknife_error_vanishes_when_seeds_differ_only_by_a_constant_offset():
    """Leaving out a seed that only shifts every level by the same amount moves a_min, never mu."""
    lv = np.linspace(0, 2, 11)
    offsets = np.array([-0.02, 0.0, 0.03, 0.01])
    x, seeds = np.repeat(lv, 4), np.tile(np.arange(4), lv.size)
    y = logistic(x, 0.8, -0.15, 0.88, 0.1) + offsets[seeds]
    r = fit_midpoint(x, y, seeds=seeds)
    assert r.converged and r.mu == pytest.approx(0.8, abs=1e-9)
    assert r.params["jackknife_n_seeds"] == 4 and r.mu_err_jackknife == pytest.approx(0.0, abs=1e-9)


def test_mu_errors_returns_the_errors_without_writing_them():
    rng = np.random.default_rng(9)
    x, y, seeds = draw_runs(rng, np.linspace(0, 2, 11), 0.8, -0.15, 0.88, 0.1, 4, 0.01, 0.03)
    r = fit_midpoint(x, y, seeds=seeds)
    res = FitResult(axis="linear")
    data = fit_levels.fit_frame(_levels(x, y, seeds), "linear")
    chosen, _ = fit_core.fit_model("single", data.u, data.v, data.w, data.direction, data.s_min)
    res.mu, res.mu_err = r.mu, r.mu_err
    found = fit_errors.mu_errors(data, chosen, res)
    assert res.mu_err_jackknife is None  # returned, not written
    assert found.mu_err_jackknife == pytest.approx(r.mu_err_jackknife, rel=1e-9)
    assert found.jackknife_n_seeds == 4 and found.mu_err == r.mu_err


def test_observed_plateaus_hold_a_min_and_a_max_at_the_extreme_level_means_and_recover_mu():
    """The paper's reading of a_min and a_max (the lowest and highest achieved accuracy): both are held at the
    level means, only mu and sigma are fitted; on a curve that reaches both plateaus mu is recovered."""
    levels = np.linspace(0.0, 2.0, 21)
    x, y = exact_runs(levels, 5, lambda s: 0.1 + 0.88 * logistic(s, 0.9, -0.08, 1.0, 0.0), spread=0.01)
    seeds = np.tile(np.arange(5), len(levels))
    free = fit_midpoint(x, y, seeds=seeds)
    held = fit_midpoint(x, y, seeds=seeds, plateaus="observed")
    means = [y[x == lv].mean() for lv in levels]
    assert held.converged and held.params["plateaus"] == "observed"
    assert held.a_min == pytest.approx(min(means), abs=1e-9)
    assert held.a_min + held.delta_a == pytest.approx(max(means), abs=1e-9)
    assert held.mu == pytest.approx(0.9, abs=0.01) and free.mu == pytest.approx(0.9, abs=0.01)
    assert held.params["dof"] == free.params["dof"] + 2  # two parameters fewer


def test_observed_plateaus_move_mu_when_the_curve_has_not_reached_its_floor():
    """Where the last levels still fall, the lowest level mean is above the fitted floor: held plateaus put the
    half-drop higher up the curve, so mu comes out smaller than with free plateaus."""
    levels = np.linspace(0.0, 1.2, 13)
    x, y = exact_runs(levels, 3, lambda s: 0.1 + 0.88 * logistic(s, 0.9, -0.1, 1.0, 0.0), spread=0.01)
    seeds = np.tile(np.arange(3), len(levels))
    assert fit_midpoint(x, y, seeds=seeds, plateaus="observed").mu < fit_midpoint(x, y, seeds=seeds).mu - 0.01


def test_observed_plateaus_are_for_the_single_logistic_only():
    with pytest.raises(ValueError, match="plateaus"):
        fit_midpoint([0, 1, 2, 3], [1, 0.9, 0.2, 0.1], model="double", plateaus="observed")
    with pytest.raises(ValueError, match="plateaus must be one of"):
        fit_midpoint([0, 1, 2, 3], [1, 0.9, 0.2, 0.1], plateaus="paper")
