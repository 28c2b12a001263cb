"""The decision pipeline of :func:`fit_midpoint`: which curve, and whether its midpoint is a measurement.

In order: prepare the levels (:mod:`walking_noise.fit.levels`), stop at a flat curve, fit the model(s) asked for
(``auto``: keep the double logistic only when clearly better), translate the fit to user units, and refuse a midpoint
the data do not contain (outside the tested range, or a plateau far beyond the data; then the bound on mu the data
do give); a converged fit then gets its errors (:func:`walking_noise.fit.errors.mu_errors`). Failures are results,
never exceptions (module docstring of :mod:`walking_noise.fit`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from walking_noise.fit.core import OBSERVED_PLATEAUS, Core, crossings, fit_model
from walking_noise.fit.curves import KINDS, MIN_LEVELS_DOUBLE, NAMES
from walking_noise.fit.errors import covariance_method, mu_errors, reported_error
from walking_noise.fit.levels import (
    Frame, Levels, axis_to_noise, check_arguments, fit_frame, noise_error, p0_internal, prepare_levels, validate,
)
from walking_noise.fit.result import FitResult, finite_or_none, not_converged

#: ``model="auto"``: minimum (rescaled) AIC improvement of the double over the single logistic.
AUTO_MIN_DELTA_AIC = 10.0
#: ``model="auto"``: minimum height of each step as a fraction of the total drop.
AUTO_MIN_STEP_FRACTION = 0.1
#: Flatness test: a curve is flat when the range of its level means is at most
#: ``max(FLAT_SPREAD_FACTOR * median per-run spread, FLAT_REL_DROP * max|mean|)``.
FLAT_SPREAD_FACTOR = 4.0
FLAT_REL_DROP = 0.05
#: A fitted plateau further than this fraction of the observed accuracy range
#: beyond the level means counts as "not reached within the data".
PLATEAU_TOLERANCE = 0.2
#: How Eq. 1's plateaus are found (:func:`fit_midpoint`'s ``plateaus``).
PLATEAUS = ("fitted", "observed")


def fit_midpoint(
    noise_std: Any,
    accuracy: Any,
    *,
    seeds: Any = None,
    axis: str = "linear",
    model: str = "single",
    spread_floor: float | None = None,
    p0: Sequence[float] | Mapping[str, float] | None = None,
    chance_level: float | None = None,
    plateaus: str = "fitted",
) -> FitResult:
    """Fit Eq. 1 (or two stacked logistics) and return the midpoint noise level.

    Parameters
    ----------
    noise_std : array_like, shape (n_runs,)
        Standard deviation of the injected noise for each run (noise-std
        units, >= 0). Several runs (seeds) per level are expected.
    accuracy : array_like, shape (n_runs,)
        Accuracy of each run, as fraction or percent (no assumption made).
        NaN/inf (a diverged run) marks that run invalid; it is dropped and
        counted in ``n_dropped_nonfinite``.
    seeds : array_like, shape (n_runs,), optional
        Seed (repeat) label of each run. With >= 2 distinct labels a
        leave-one-seed-out jackknife gives the quoted interval (calibrated
        from 3 seeds on; see :mod:`walking_noise.fit.errors`); without them
        the interval is the covariance error's, flagged as not calibrated.
    axis : {"linear", "log10"}
        Fit axis. ``"log10"`` fits in ``t = log10(noise_std)`` (for curves
        spanning many decades); runs at noise 0 are dropped (noted), and
        ``sigma`` is then in decades. ``mu`` is reported in noise-std units
        either way.
    model : {"single", "double", "auto"}
        Eq. 1, the two-step curve of appendix B, or automatic choice (see
        module docstring for the criterion).
    spread_floor : float, optional
        Absolute floor for the per-level spread Δy, in accuracy units.
        Default: 2 % of the range (max - min) of the level means.
    p0 : sequence or dict, optional
        Extra starting values (tried first) in the order/names of
        :func:`logistic` (4 values) or :func:`double_logistic` (7 values);
        midpoints in noise-std units, widths in fit-axis units.
    chance_level : float, optional
        Accuracy of random guessing (same units as ``accuracy``). Only used to
        tell a flat curve at the upper plateau (``mu > max tested noise``) from
        one at chance level (``mu < min tested noise``).
    plateaus : {"fitted", "observed"}
        ``"fitted"``: a_min and delta_a are free parameters of Eq. 1 (the default). ``"observed"``: they are held
        at the lowest and highest level means, the paper's words for them ("a_max and a_min being the maximal and
        minimal achieved accuracy"), so only mu and sigma are fitted; ``model="single"`` only.

    Returns
    -------
    FitResult
        Never raises for bad data; check ``converged`` and ``reason``.

    Raises
    ------
    ValueError
        Wrong shapes, negative or non-finite noise levels, unknown ``axis`` /
        ``model``, invalid ``spread_floor`` or ``p0``.
    """
    check_arguments(axis, model, spread_floor, p0)
    if plateaus not in PLATEAUS:
        raise ValueError(f"plateaus must be one of {PLATEAUS}; got {plateaus!r}")
    if plateaus == "observed" and model != "single":
        raise ValueError(f"plateaus='observed' pins the plateaus of Eq. 1 (model='single'); got model={model!r}")
    x, y, s = validate(noise_std, accuracy, seeds)
    res = FitResult(axis=axis, model="double" if model == "double" else "single")
    data = prepare_levels(res, x, y, s, axis, model, spread_floor)
    if data is None:
        return res
    flat = flat_curve(data, chance_level)
    if flat is not None:
        not_converged(res, flat.reason, lower=flat.lower, upper=flat.upper)
        res.error_method = "none"
        return res
    data = fit_frame(data, axis)
    if data.direction > 0:
        res.notes.append("accuracy rises with noise: fitted with sigma > 0")
    chosen = _choose_model(res, data, model, p0, OBSERVED_PLATEAUS if plateaus == "observed" else None)
    if chosen is None:
        return res
    _fill_from_core(res, chosen, data.frame, axis)
    if not _midpoint_inside_data(res, chosen, data):
        return res
    if not math.isfinite(chosen.mu_err()):
        res.converged = False
        res.reason = ("fit found a midpoint but its covariance is undetermined (degenerate parameters); mu kept for "
                      "inspection")
        return res
    errors = mu_errors(data, chosen, res)
    res.converged, res.reason = True, "ok"
    errors.write_to(res)
    return res


class Flat(NamedTuple):
    """A curve without a transition: why, and the bound on mu it gives (noise-std units), if any."""

    reason: str
    lower: float | None = None  # mu > lower: never left the upper plateau
    upper: float | None = None  # mu < upper: at chance from the smallest level on


def flat_curve(data: Levels, chance_level: float | None) -> Flat | None:
    """Whether the level means never leave one plateau (then which, and the bound on mu), else None.

    Flat: the range of the level means is at most ``max(4 x median per-run spread, 5 % of max |mean|)``; a logistic
    fitted to such a curve would place its step anywhere.
    """
    lv, mean, std, n = data.levels, data.mean, data.std, data.n
    y_range = float(mean.max() - mean.min())
    multi = std[n >= 2]
    noise_scale = float(np.median(multi)) if multi.size else 0.0
    flat_tol = max(FLAT_SPREAD_FACTOR * noise_scale, FLAT_REL_DROP * float(np.max(np.abs(mean))))
    if y_range <= flat_tol:
        level = float(np.average(mean, weights=n))
        base = (f"flat curve: level means vary by only {y_range:.4g} (<= {flat_tol:.4g}) around {level:.4g} "
                f"over noise_std {lv[0]:.4g}..{lv[-1]:.4g}; no transition to fit")
        if chance_level is not None and level - chance_level <= max(flat_tol, 0.1 * abs(level)):
            return Flat(base + f"; at chance level ({chance_level:g}): never leaves the lower plateau, mu < min "
                               f"tested noise", upper=float(lv[0]))
        if chance_level is not None:
            return Flat(base + "; above chance level: never leaves the upper plateau, mu > max tested noise",
                        lower=float(lv[-1]))
        return Flat(base + "; if this is the clean-accuracy plateau then mu > max tested noise, if it is chance "
                           "level then mu < min tested noise (pass chance_level to decide)")
    return None


def _choose_model(res: FitResult, data: Levels, model: str, p0: Any,
                  pinned: dict[int, float] | None = None) -> Core | None:
    """Fit the single and/or the double logistic and keep the one asked for (``auto``: the better by AIC, see
    :func:`_choose`); None (``res`` says why) when no fit succeeded. ``pinned``: the single logistic's held
    parameters (unit box)."""
    args = (data.u, data.v, data.w, data.direction, data.s_min)
    single = double = None
    err_single = err_double = ""
    if model in ("single", "auto"):
        start = p0_internal(p0, "single", data.frame, res.axis)
        single, err_single = fit_model("single", *args, [start] if start is not None else [], pinned=pinned)
        if pinned:
            res.params["plateaus"] = "observed"
            res.notes.append("a_min and a_min + delta_a held at the lowest and highest level means (plateaus "
                             "'observed')")
    if model == "double" or (model == "auto" and data.levels.size >= MIN_LEVELS_DOUBLE):
        start = p0_internal(p0, "double", data.frame, res.axis)
        double, err_double = fit_model("double", *args, [start] if start is not None else [])
    if model == "single":
        chosen, why = single, "model='single' requested"
    elif model == "double":
        chosen, why = double, "model='double' requested"
    else:
        chosen, why = _choose(single, double, data.levels.size, res.params)
    res.model_choice_reason = why
    if chosen is None:
        reason = err_single if model != "double" else err_double
        if model == "auto":
            reason = "; ".join(e for e in (err_single, err_double) if e) or why
        not_converged(res, reason)
        res.error_method = "none"
        return None
    res.model = chosen.model
    return chosen


def _choose(single: Core | None, double: Core | None, n_levels: int, params: dict) -> tuple[Core | None, str]:
    """``model="auto"``: the double logistic only when it is clearly better and its steps are real (module
    docstring of :mod:`walking_noise.fit`); the criteria go into ``params``."""
    if double is None:
        if n_levels < MIN_LEVELS_DOUBLE:
            return single, f"auto: single (only {n_levels} levels; the double logistic needs >= {MIN_LEVELS_DOUBLE})"
        return single, "auto: single (double fit failed)"
    if single is None:
        return double, "auto: double (single fit failed)"
    c = max(1.0, double.chi2_red) if double.dof > 0 else 1.0
    daic = (single.chi2 - double.chi2) / c - 2 * (double.k - single.k)
    m1, s1, d1, m2, s2, d2, _ = double.popt
    frac = min(d1, d2) / (d1 + d2) if d1 + d2 > 0 else 0.0
    sep = (m2 - m1) / (abs(s1) + abs(s2))
    params.update(auto_delta_aic=daic, auto_min_step_fraction=frac, auto_separation=sep,
                  auto_chi2_single=single.chi2, auto_chi2_double=double.chi2)
    crit = (
        f"rescaled dAIC = {daic:.3g} (need > {AUTO_MIN_DELTA_AIC:g}), smaller step = {frac:.2f} of drop "
        f"(need >= {AUTO_MIN_STEP_FRACTION:g}), separation (mu2-mu1)/(|s1|+|s2|) = {sep:.2f} (need > 1)"
    )
    if daic > AUTO_MIN_DELTA_AIC and frac >= AUTO_MIN_STEP_FRACTION and sep > 1.0:
        return double, "auto: double; " + crit
    return single, "auto: single; " + crit


def _midpoint_inside_data(res: FitResult, chosen: Core, data: Levels) -> bool:
    """Whether the fitted midpoint is a measurement: it crosses its half level, lies inside the tested range, and
    both plateaus are within the data; else ``res`` is not converged and says which bound on mu the data allow."""
    mu_n = chosen.mu
    if not math.isfinite(mu_n):
        not_converged(res, "the fitted curve does not cross its half level; no midpoint")
        return False
    lv, direction = data.levels, data.direction
    if mu_n > 1.0 or mu_n < 0.0:
        outside = "above the largest" if mu_n > 1.0 else "below the smallest"
        plateau = "upper" if (mu_n > 1.0) == (direction < 0) else "lower"
        not_converged(res, f"fitted midpoint lies {outside} tested noise level (extrapolated, {res.mu:.4g}); the "
                           f"curve does not complete its transition within the data (stays near the {plateau} "
                           f"plateau)", extrapolated=res.mu,
                      lower=float(lv[-1]) if mu_n > 1.0 else None, upper=float(lv[0]) if mu_n < 0.0 else None)
        return False
    # are both plateaus inside the data? (internal units: level means span [0, 1])
    a_n = chosen.popt[-1]
    d_n = chosen.popt[2] if chosen.model == "single" else chosen.popt[2] + chosen.popt[5]
    unseen = [name for name, outside in (("lower", a_n < -PLATEAU_TOLERANCE),
                                         ("upper", a_n + d_n > 1.0 + PLATEAU_TOLERANCE)) if outside]
    if not unseen:
        return True
    halves = crossings(data.u, data.v, 0.5)
    # lower plateau (falling curve: at high noise) not reached -> true half level is lower than the observed
    # one -> the midpoint lies at higher noise than the observed crossing.
    at_high_noise = "lower" if direction < 0 else "upper"
    lower = upper = None
    bound_txt = []
    if at_high_noise in unseen:
        lower = finite_or_none(axis_to_noise(data.frame.to_user("pos", halves[-1]), res.axis))
        bound_txt.append(f"mu >= {lower:.4g} (observed half-drop crossing)")
    if len(unseen) == 1 and at_high_noise not in unseen:
        upper = finite_or_none(axis_to_noise(data.frame.to_user("pos", halves[0]), res.axis))
        bound_txt.append(f"mu <= {upper:.4g} (observed half-drop crossing)")
    not_converged(res, f"{' and '.join(unseen)} plateau not reached within the tested noise range: the fitted "
                       f"plateau lies more than {PLATEAU_TOLERANCE:.0%} of the observed accuracy range beyond the "
                       f"data, so the midpoint is an extrapolation (fitted {res.mu:.4g})"
                       + ("; " + ", ".join(bound_txt) if bound_txt else ""),
                  extrapolated=res.mu, lower=lower, upper=upper)
    return False


def _fill_from_core(res: FitResult, core: Core, frame: Frame, axis: str) -> None:
    """Every parameter of ``core`` in user units into ``res``: values, chi2-scaled and unscaled errors (positions
    also as ``log10_*`` on the log axis), the fit statistics and how the errors were obtained."""
    names, kinds = NAMES[core.model], KINDS[core.model]
    p: dict[str, Any] = res.params

    def put(name: str, kind: str, val_n: float, err_n: float, err_n_unscaled: float) -> None:
        val = frame.to_user(kind, val_n)
        err = frame.err_to_user(kind, err_n)
        erru = frame.err_to_user(kind, err_n_unscaled)
        if kind == "pos" and axis == "log10":
            p["log10_" + name], p["log10_" + name + "_err"] = finite_or_none(val), finite_or_none(err)
            p["log10_" + name + "_err_unscaled"] = finite_or_none(erru)
            lin = axis_to_noise(val, axis)
            p[name], p[name + "_err"] = finite_or_none(lin), finite_or_none(noise_error(lin, err, axis))
            p[name + "_err_unscaled"] = finite_or_none(noise_error(lin, erru, axis))
        else:
            p[name], p[name + "_err"], p[name + "_err_unscaled"] = (finite_or_none(val), finite_or_none(err),
                                                                    finite_or_none(erru))

    for j, (name, kind) in enumerate(zip(names, kinds)):
        put(name, kind, core.popt[j], core.err(j), core.err(j, scaled=False))

    if core.model == "double":
        put("mu", "pos", core.mu, core.mu_err(), core.mu_err(scaled=False))
        var_d = core.pcov[2, 2] + core.pcov[5, 5] + 2 * core.pcov[2, 5]
        ed = math.sqrt(var_d) if math.isfinite(var_d) and var_d >= 0 else float("nan")
        put("delta_a", "height", core.popt[2] + core.popt[5], ed * math.sqrt(core.scale), ed)
        res.sigma = res.sigma_err = None
    else:
        res.sigma, res.sigma_err = p["sigma"], p["sigma_err"]

    p.update(chi2=finite_or_none(core.chi2), dof=int(core.dof), chi2_red=finite_or_none(core.chi2_red),
             aic=finite_or_none(core.aic), error_scale=finite_or_none(math.sqrt(core.scale)))
    res.mu, res.mu_err, res.mu_err_unscaled = p["mu"], p["mu_err"], p["mu_err_unscaled"]
    if axis == "log10":
        res.log10_mu, res.log10_mu_err = p["log10_mu"], p["log10_mu_err"]
    res.delta_a, res.delta_a_err = p["delta_a"], p["delta_a_err"]
    res.a_min, res.a_min_err = p["a_min"], p["a_min_err"]
    res.chi2_red = finite_or_none(core.chi2_red)
    res.error_method = covariance_method(core, axis)


def midpoint_noise_level(noise_std: Any, accuracy: Any, **kw: Any) -> tuple[float | None, float | None]:
    """Convenience wrapper around :func:`fit_midpoint`.

    Parameters
    ----------
    noise_std, accuracy : array_like
        Per-run noise std (noise-std units) and accuracy, see :func:`fit_midpoint`.
    **kw
        Passed on to :func:`fit_midpoint` (``seeds``, ``axis``, ``model``...).

    Returns
    -------
    (mu, error) : tuple of float or None
        Midpoint noise level and its quoted error in noise-std units
        (:func:`walking_noise.fit.errors.reported_error`: half the 68 %
        interval); ``(None, None)`` when the fit did not converge.
    """
    r = fit_midpoint(noise_std, accuracy, **kw)
    if not r.converged:
        return None, None
    return r.mu, reported_error(r)
