"""Errors of the midpoint noise level mu: the interval the report quotes, and the errors it is chosen against.

What is estimated
-----------------
The estimand is the *population* midpoint: the mu of the curve that the seeds of a campaign scatter around. A seed
fixes a network's initialisation and data order, so its offset (in mu, in the clean plateau) is shared by every
level it is measured at; levels are not independent repeats. Its uncertainty is therefore dominated by the seed
effect, which only the seeds reveal: with n seeds there are n - 1 degrees of freedom for its variance, however many
levels are measured. Errors that treat levels x seeds as independent residuals (the fit's covariance, with or
without the spread floor or the chi2 scaling) cannot be calibrated where seed effects dominate, and a likelihood of
the test-set counts alone sees only the test-set noise.

The quoted interval (``FitResult.mu_lo68 .. mu_hi68``, ``mu_lo95 .. mu_hi95``, :func:`reported_error`)
--------------------------------------------------------------------------------------------------------------
* **Seed jackknife with Student t** (>= 3 seeds; the default): leave one seed out of the whole fit, refit, and take
  the jackknife standard error ``se`` of the refitted midpoints on the fit axis (log10 mu for a log-axis fit, so the
  interval in mu is asymmetric and its half-width is stated in decades; mu for a linear one). The interval is
  ``mu_hat +- t_{q, n-1} se`` with n - 1 degrees of freedom (``t_{0.975, 2} = 4.30`` for 3 seeds). Chosen by the
  coverage study ``benchmarks/fit_coverage.py`` (results in ``results/fit_coverage/``): on every simulated design
  with >= 3 seeds and a level on the slope it covers the truth in 93-97 % of campaigns at 95 % and its pulls have an
  rms of 0.9-1.1, where the covariance error (with or without the floor and chi2 scaling, or the larger of it and the
  jackknife, the report's error before) and the jackknife with normal quantiles do not.
* **Pulls** of a t interval: ``(mu_hat - mu) / se`` has a t law with n - 1 degrees of freedom when calibrated
  (infinite variance for 3 seeds), so the pull :func:`pull` is the truth's position in the reported distribution
  mapped to a standard normal quantile, ``Phi^-1(F_t((mu_hat - mu) / se))``: N(0, 1) when calibrated.
* **Two seeds**: the same interval with 1 degree of freedom (``t_{0.975, 1} = 12.7``), flagged ``"2 seeds: 1 dof"``.
  Over many simulated campaigns it covers at its nominal rate (the coverage study), but the scale of one campaign's
  interval is a single difference of two refits, so that interval can be far too wide or too narrow, and nothing in
  the data can tell which; the calibration target (issue 27) asks for >= 3 seeds.
* **One seed, no seed labels, a failed jackknife**: the covariance error with normal quantiles, flagged
  ``"... error not calibrated"``: the seed effect is not measured at all.
* **A drop between two levels** (no level whose mean lies between the fitted plateaus by more than a margin,
  :func:`slope_levels`): every seed puts mu in the same bracket, so any resampling error collapses to ~0 while mu
  may lie anywhere between the two levels. The interval is then the bracket itself (the levels below and above mu,
  at both 68 % and 95 %), flagged ``"bracketed between levels"``.

``FitResult.error_flag`` holds the flag (empty when the interval is calibrated) and the report prints it next to
the number; ``interval_method``, ``interval_se`` (fit-axis units) and ``interval_dof`` say how it was made.

The other errors (kept for comparison and for the adaptive searches chosen with them)
-------------------------------------------------------------------------------------
* **Covariance, chi2-scaled** (``mu_err``): the standard error from the covariance of the weighted fit
  (``absolute_sigma=True``) times ``sqrt(max(1, chi2_red))`` (:class:`walking_noise.fit.core.Core`);
  ``mu_err_unscaled`` is the same without the factor. :func:`covariance_method` says which was applied. A
  transition sharper than the level spacing raises ``mu_err`` to (gap of the bracketing levels) / sqrt(12).
* **Seed jackknife** (``mu_err_jackknife``, in noise-std units; ``jackknife_mu``: the refitted midpoints on the fit
  axis by left-out seed, which :mod:`walking_noise.fit.compare` pairs between fits).

:func:`mu_errors` is the one entry of this stage: given the prepared levels and a converged fit, it returns every
error of mu it adds; a new kind of error belongs there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np
import pandas as pd
from scipy import stats

from walking_noise.fit.core import RESOLUTION_SIGMA_FRACTION, Core, fit_model
from walking_noise.fit.curves import MIN_LEVELS
from walking_noise.fit.levels import Levels, axis_to_noise, group, noise_error, unit_box
from walking_noise.fit.result import FitResult, finite_or_none

#: A level counts as on the slope when its mean lies more than this fraction of the drop from both fitted plateaus
#: (and more than :data:`SLOPE_MARGIN_SE` of its own standard errors).
SLOPE_MARGIN_FRACTION = 0.05
SLOPE_MARGIN_SE = 2.0
#: The quoted intervals by name: "68" is one standard deviation of a normal law (68.27 %), so that without seeds
#: the quoted error is the covariance standard error itself; "95" is 95 %.
LEVELS = {"68": math.erf(1 / math.sqrt(2)), "95": 0.95}

FLAG_BRACKET = "bracketed between levels"
FLAG_TWO_SEEDS = "2 seeds: 1 dof"


@dataclass
class Interval:
    """The quoted interval of mu: fit-axis centre and scale, its law (Student t with ``dof``, normal when ``dof`` is
    None, the bracket itself when ``bracket`` is set), the flag the report prints beside it, and how it was made."""

    centre: float  # mu_hat on the fit axis
    se: float | None  # scale on the fit axis (decades for log10)
    dof: int | None
    method: str
    flag: str = ""
    bracket: tuple[float, float] | None = None  # fit-axis positions of the levels around mu

    def bounds(self, prob: float) -> tuple[float, float]:
        """The central ``prob`` interval on the fit axis."""
        if self.bracket is not None:
            return self.bracket
        half = _quantile(0.5 + prob / 2, self.dof) * float(self.se or 0.0)
        return self.centre - half, self.centre + half

    def write_to(self, res: FitResult) -> None:
        """The interval in noise-std units into ``res`` (``mu_lo68`` ... ``mu_hi95``) with its law and flag."""
        for tag, prob in LEVELS.items():
            lo, hi = (finite_or_none(axis_to_noise(b, res.axis)) for b in self.bounds(prob))
            setattr(res, f"mu_lo{tag}", lo)
            setattr(res, f"mu_hi{tag}", hi)
        res.interval_method, res.interval_se, res.interval_dof = self.method, finite_or_none(self.se), self.dof
        res.error_flag = self.flag


def _quantile(q: float, dof: int | None) -> float:
    return float(stats.norm.ppf(q) if dof is None else stats.t.ppf(q, dof))


@dataclass
class MuErrors:
    """The errors :func:`mu_errors` adds to a converged fit: mu in noise-std units, ``log10_*`` in decades (log10
    axis only), the quoted interval, and what the result must say about them."""

    mu_err: float | None
    log10_mu_err: float | None
    resolution_limited: bool = False  # |sigma| at its lower bound: the step is sharper than the grid
    raised: bool = False  # mu_err raised to the grid resolution
    mu_err_jackknife: float | None = None
    log10_mu_err_jackknife: float | None = None
    jackknife_n_seeds: int = 0  # 0: no jackknife (the notes say why)
    jackknife_mu: dict[str, float] = field(default_factory=dict)  # fit-axis refits by left-out seed label
    slope_levels: int = 0
    interval: Interval | None = None
    notes: list[str] = field(default_factory=list)
    method: str = ""  # appended to FitResult.error_method

    def write_to(self, res: FitResult) -> None:
        """Record these errors in ``res`` (its fields and the mirrors in ``res.params``)."""
        p = res.params
        if self.resolution_limited:
            p["sigma_at_lower_bound"] = True
        if self.raised:
            if res.axis == "log10":
                res.log10_mu_err = p["log10_mu_err"] = self.log10_mu_err
            res.mu_err = p["mu_err"] = self.mu_err
        res.notes.extend(self.notes)
        res.error_method += self.method
        p["slope_levels"] = self.slope_levels
        if self.jackknife_n_seeds:
            p["jackknife_n_seeds"] = self.jackknife_n_seeds
            if res.axis == "log10":
                res.log10_mu_err_jackknife = p["log10_mu_err_jackknife"] = self.log10_mu_err_jackknife
            res.mu_err_jackknife = p["mu_err_jackknife"] = self.mu_err_jackknife
            res.jackknife_mu = dict(self.jackknife_mu)
        if self.interval is not None:
            self.interval.write_to(res)


def covariance_method(core: Core, axis: str) -> str:
    """How the covariance errors of ``core`` were scaled and converted (``FitResult.error_method``)."""
    if core.dof <= 0:
        how = "covariance with absolute_sigma=True, unscaled (dof = 0, chi2_red undefined)"
    else:
        how = (f"covariance (absolute_sigma=True) scaled by max(1, chi2_red) = {core.scale:.3g} "
               f"(errors x {math.sqrt(core.scale):.3g})")
    if core.model == "double":
        how += "; mu (half-way crossing) error by the delta method (numerical gradient)"
    if axis == "log10":
        how += "; mu_err = mu * ln(10) * log10_mu_err"
    return how


def mu_errors(data: Levels, chosen: Core, res: FitResult) -> MuErrors:
    """Every error of mu beyond the covariance one, for the converged fit ``chosen`` of ``data`` (``res`` holds its
    midpoint and covariance errors in user units): the grid-resolution floor, the seed jackknife, and the quoted
    interval chosen from them (module docstring)."""
    out = MuErrors(mu_err=res.mu_err, log10_mu_err=res.log10_mu_err)
    _resolution_error(out, chosen, data, res.mu, res.axis)
    why = "no seed labels"  # why the interval falls back to the covariance error, if it does
    if data.seeds is not None:
        jack = seed_jackknife(data, chosen, res.axis)
        if jack.se is None:
            out.notes.append(jack.note)
            why = "1 seed" if jack.n_seeds == 1 else "jackknife failed (see notes)"
        else:
            out.jackknife_n_seeds, out.jackknife_mu = jack.n_seeds, jack.replicates
            if res.axis == "log10":
                out.log10_mu_err_jackknife = finite_or_none(jack.se)
            out.mu_err_jackknife = finite_or_none(noise_error(res.mu, jack.se, res.axis))
    out.slope_levels = slope_levels(data, chosen)
    out.interval = _interval(out, chosen, data, res, why)
    return out


def _interval(out: MuErrors, chosen: Core, data: Levels, res: FitResult, why: str) -> Interval:
    """The quoted interval (module docstring): the bracket, the seed jackknife with t, or the covariance error."""
    centre = data.frame.to_user("pos", chosen.mu)
    if out.slope_levels == 0:
        return Interval(centre, None, None, "the levels bracketing mu (no level on the slope)", FLAG_BRACKET,
                        _bracket(data, chosen))
    se_j = out.log10_mu_err_jackknife if res.axis == "log10" else out.mu_err_jackknife
    if out.jackknife_n_seeds >= 2 and se_j is not None:
        k = out.jackknife_n_seeds
        return Interval(centre, se_j, k - 1, f"leave-one-seed-out jackknife, Student t with {k - 1} dof",
                        FLAG_TWO_SEEDS if k == 2 else "")
    se_c = out.log10_mu_err if res.axis == "log10" else out.mu_err  # the covariance error, raised to the grid
    return Interval(centre, se_c, None, "covariance (chi2-scaled), normal", f"{why}: error not calibrated")


def slope_levels(data: Levels, chosen: Core) -> int:
    """How many levels lie on the slope: their mean lies between the fitted plateaus by more than
    ``max(SLOPE_MARGIN_FRACTION x drop, SLOPE_MARGIN_SE x the level's standard error)``. None of them: the drop
    happens between two levels, and only the bracket locates mu."""
    lower = float(chosen.popt[-1])
    drop = float(chosen.popt[2] if chosen.model == "single" else chosen.popt[2] + chosen.popt[5])
    if drop <= 0:
        return 0
    se = data.std / np.sqrt(data.n) / data.frame.y_scale  # unit-box units, without the floor
    margin = np.maximum(SLOPE_MARGIN_FRACTION * drop, SLOPE_MARGIN_SE * se)
    return int(np.sum((data.v > lower + margin) & (data.v < lower + drop - margin)))


def _bracket(data: Levels, chosen: Core) -> tuple[float, float]:
    """Fit-axis positions of the two levels around the fitted mu."""
    u = data.u
    i = int(np.clip(np.searchsorted(u, chosen.mu), 1, u.size - 1))
    return data.frame.to_user("pos", float(u[i - 1])), data.frame.to_user("pos", float(u[i]))


def _resolution_error(out: MuErrors, chosen: Core, data: Levels, mu: float, axis: str) -> None:
    """A transition sharper than the grid locates mu only within its bracketing levels: raise mu_err to that."""
    width_idx = [1] if chosen.model == "single" else [1, 4]
    if not any(abs(chosen.popt[j]) <= data.s_min * (1 + 1e-6) for j in width_idx):
        return
    u = data.u
    i = int(np.clip(np.searchsorted(u, chosen.mu), 1, u.size - 1))
    gap_err = float(u[i] - u[i - 1]) / math.sqrt(12.0)
    out.resolution_limited = True
    note = ("transition sharper than the level spacing (|sigma| at its lower bound, "
            f"{RESOLUTION_SIGMA_FRACTION:g} x median spacing)")
    out.notes.append(note + "; mu is located only to within the bracketing levels")
    if gap_err <= chosen.mu_err():
        return
    err_f = data.frame.err_to_user("pos", gap_err)
    if axis == "log10":
        out.log10_mu_err = finite_or_none(err_f)
    out.mu_err = finite_or_none(noise_error(mu, err_f, axis))
    out.raised = True
    out.method = "; " + note + ": mu_err raised to (gap of bracketing levels)/sqrt(12)"


@dataclass
class Jackknife:
    """A leave-one-seed-out jackknife of mu: its standard error on the fit axis (None: not computed, ``note`` says
    why), the number of seed labels, and each refit's mu on the fit axis by left-out seed label."""

    se: float | None
    n_seeds: int
    replicates: dict[str, float] = field(default_factory=dict)
    note: str = ""


def seed_jackknife(data: Levels, chosen: Core, axis: str) -> Jackknife:
    """Leave-one-seed-out jackknife of mu on the fit axis (>= 2 seed labels). Each refit stays in the frame, floor
    and bounds of the full fit and starts from it (the other starts only if that one fails), so that every
    replicate stays on the full fit's branch."""
    codes, labels = pd.factorize(data.seeds, use_na_sentinel=True)
    k = len(labels)
    if k < 2:
        return Jackknife(None, k, note=f"jackknife skipped: {k} distinct seed label(s) (< 2)")
    mus = []
    for i in range(k):
        keep = codes != i
        lv, mean, std, n = group(data.x[keep], data.y[keep])
        if lv.size < MIN_LEVELS[chosen.model]:
            return Jackknife(None, k, note=f"jackknife skipped: leaving out seed {labels[i]!r} leaves {lv.size} "
                                           f"levels")
        u, v, w = unit_box(data.frame, axis, lv, mean, std, n, data.floor)
        core, err = fit_model(chosen.model, u, v, w, data.direction, data.s_min, [chosen.popt],
                              standard_starts=False, pinned=chosen.pinned)
        if core is None:
            core, err = fit_model(chosen.model, u, v, w, data.direction, data.s_min, [chosen.popt],
                                  pinned=chosen.pinned)
        if core is None or not math.isfinite(core.mu):
            return Jackknife(None, k, note=f"jackknife skipped: refit without seed {labels[i]!r} failed "
                                           f"({err or 'no midpoint'})")
        mus.append(core.mu)
    mus_f = np.array([data.frame.to_user("pos", m) for m in mus])
    se = math.sqrt((k - 1) / k * float(np.sum((mus_f - mus_f.mean()) ** 2)))
    return Jackknife(se, k, {str(label): float(m) for label, m in zip(labels, mus_f)})


# ---- what the report and the adaptive searches read ------------------------------------------------------------


def reported_error(fit: FitResult) -> float | None:
    """The one error the report quotes for mu and the adaptive searches stop on (noise-std units): half the width
    of the 68 % interval (module docstring); None without a converged fit."""
    if fit.mu_lo68 is None or fit.mu_hi68 is None:
        return None
    return (fit.mu_hi68 - fit.mu_lo68) / 2


def pull(fit: FitResult, truth: float) -> float | None:
    """Where ``truth`` (noise-std units) lies in the reported distribution of mu, as a standard normal quantile:
    ``Phi^-1(F((mu_hat - truth) / se))`` on the fit axis with F the interval's law (Student t or normal). N(0, 1)
    over campaigns when the interval is calibrated; None for a bracket (no law inside it) or without an interval."""
    if fit.interval_se is None or not fit.interval_se > 0 or fit.mu is None or (fit.axis == "log10" and truth <= 0):
        return None
    pos = math.log10 if fit.axis == "log10" else float
    z = (pos(fit.mu) - pos(truth)) / fit.interval_se
    if fit.interval_dof is None:
        return z
    return float(stats.norm.ppf(np.clip(stats.t.cdf(z, fit.interval_dof), 1e-300, 1 - 1e-16)))

