"""Midpoint noise level: fitting a scaled logistic to accuracy-vs-noise curves.

Implements Sec. IV.A (Eq. 1-2) and appendix B (two stacked logistics) of
"Walking Noise" (Borras, Klein, Fröning).

Stages (one module each, in the order a fit passes through them):

* :mod:`~walking_noise.fit.curves`: the curves (Eq. 1, the double logistic) and their parameters.
* :mod:`~walking_noise.fit.levels`: input checks, runs grouped into levels, the unit-box frame and axis.
* :mod:`~walking_noise.fit.core`: weighted least squares in the unit box (Eq. 2), the spread floor.
* :mod:`~walking_noise.fit.pipeline`: :func:`fit_midpoint`: flat curves, which model, is mu a measurement.
* :mod:`~walking_noise.fit.errors`: the errors of mu: the quoted interval (seed jackknife with Student t, the
  bracket of a drop between two levels, flags where it is not calibrated) and the others (covariance, jackknife).
* :mod:`~walking_noise.fit.result`: :class:`FitResult`.
* :mod:`~walking_noise.fit.compare`: differences of log mu between fits (paired seed jackknife, Holm, letters).
* :mod:`~walking_noise.fit.simulate`: simulated campaigns with a known mu (what the errors are checked against).

Model (paper Eq. 1)::

    F(x; mu, sigma, delta_a, a_min) = delta_a / (1 + exp(-(x - mu) / sigma)) + a_min

Conventions a user must know
----------------------------
* **Sign of sigma.** The paper's form is kept unchanged. Accuracy *falls* with
  noise, so a falling curve has ``sigma < 0``; then ``a_min + delta_a`` is the
  upper (clean) plateau and ``a_min`` the lower (chance) plateau. ``|sigma|`` is
  the width of the transition (the 25 %..75 % part of the drop spans
  ``2 ln 3 |sigma| ~ 2.2 |sigma|``). A curve that rises with noise (unusual) is
  fitted with ``sigma > 0``; the direction is detected from the data and noted.
* **Units.** ``mu`` (the midpoint noise level) is always reported in units of
  the injected noise standard deviation, whatever the fit axis. ``sigma`` is in
  units of the fit axis: noise-std units for ``axis="linear"``, decades
  (log10 units) for ``axis="log10"``. ``delta_a`` and ``a_min`` are in the
  units of the accuracies given (fraction or percent; nothing is assumed).
* **Weights (Eq. 2).** Runs are grouped by noise level; ``y`` is the mean
  accuracy over repeats, ``Δy`` the standard deviation over repeats (ddof=1,
  0 for a single repeat), floored at ``spread_floor`` (see below). The fit
  minimises ``sum(((F - y) / (Δy / sqrt(n)))**2)``: the per-level standard
  error of the mean is used, so that the covariance is in absolute units.
  With the same number of repeats at every level this has exactly the
  minimiser of the paper's Eq. 2 (the factor ``sqrt(n)`` is a constant).
* **Spread floor.** ``Δy_eff = max(Δy, spread_floor)``. Default
  ``spread_floor = 0.02 * (max - min)`` of the level means (2 % of the
  accuracy range of the curve), in accuracy units. Pass a number to use an
  absolute floor instead. The value used is ``FitResult.spread_floor``, the
  rule in ``FitResult.spread_floor_rule``. Why 2 %: a spread estimated from
  2-5 repeats is often accidentally tiny, and such a level then dominates the
  fit; in simulations with 3 repeats the 2-sigma interval of ``mu`` covered
  the truth in 80-89 % of draws with a 1 % floor and 86-91 % with 2 % (same
  rms error of ``mu``). Larger floors make errors conservative when the real
  spread is smaller than the floor.
* **Errors.** The error to quote is the interval ``mu_lo68 .. mu_hi68`` (and
  ``mu_lo95 .. mu_hi95``), half of whose 68 % width is
  :func:`~walking_noise.fit.errors.reported_error`: the leave-one-seed-out
  jackknife with Student t quantiles of n_seeds - 1 degrees of freedom, on the
  fit axis (symmetric in log10 mu for a log-axis fit), calibrated by
  ``benchmarks/fit_coverage.py``; ``error_flag`` says where it is not (2 seeds,
  no seeds, a drop between two levels: then the interval is the bracket).
  :mod:`walking_noise.fit.errors` explains the choice. The other errors stay:
  ``mu_err`` is the standard error from the covariance scaled by
  ``max(1, chi2_red)`` (i.e. errors times ``sqrt(max(1, chi2_red))``);
  ``mu_err_unscaled`` is the plain ``absolute_sigma=True`` error;
  ``mu_err_jackknife`` is the jackknife standard error (needs ``seeds`` with
  >= 2 distinct labels). The covariance errors treat levels x seeds as
  independent and do not see a seed's offset shared by its levels; they are
  not calibrated where seed effects dominate (see the coverage study).
* **Double logistic / auto.** ``model="auto"`` chooses the double logistic only
  if (a) ``ΔAIC = (chi2_single - chi2_double) / max(1, chi2_red_double) - 2*3 > 10``
  (weighted chi-square, rescaled by the double fit's reduced chi-square so that
  underestimated spreads do not inflate the evidence), (b) each step holds at
  least 10 % of the total drop, and (c) the steps are separated,
  ``mu2 - mu1 > |sigma1| + |sigma2|`` (fit-axis units). It needs >= 8 noise
  levels. For the double model ``mu`` is the noise level where the curve
  crosses half-way between its upper and lower plateau (solved numerically;
  error by the delta method).
* **Failures never raise** for bad data (flat curves, < 4 noise levels, NaN
  accuracies, no convergence): the result has ``converged=False`` and a
  ``reason``. Also not converged: a midpoint outside the tested range, or a
  fit whose upper or lower plateau lies more than 20 % of the observed
  accuracy range beyond the data (transition not completed within the tested
  noise); then ``mu`` is None and ``mu_lower_bound`` / ``mu_upper_bound``
  carry what the data do say (e.g. "mu > max tested noise"). A curve is
  *flat* when the range of its level means is at most
  ``max(4 x median per-run spread, 5 % of max |mean|)``; pass
  ``chance_level`` to tell "flat at the clean plateau" from "flat at chance".
* **Bounds** (fit in a unit box: tested noise range -> [0, 1], level means ->
  [0, 1]): ``mu`` within the tested range +- 25 %, ``a_min`` within
  [-0.25, 0.75] and ``delta_a`` within [0, 1.5] of the observed accuracy range,
  ``|sigma|`` in [0.1 x median level spacing, 2 x tested range]. A step
  sharper than the level spacing drives ``|sigma|`` to its lower bound; then
  ``mu_err`` is raised to (gap of the levels bracketing mu) / sqrt(12) (and where
  no level lies on the slope the quoted interval is the bracket). Only
  programming errors (wrong shapes, negative or non-finite noise levels,
  unknown options) raise ``ValueError``.
"""

from __future__ import annotations

from walking_noise.fit.core import DEFAULT_SPREAD_FLOOR_FRACTION, RESOLUTION_SIGMA_FRACTION
from walking_noise.fit.curves import MIN_LEVELS_DOUBLE, MIN_LEVELS_SINGLE, MODELS, double_logistic, logistic
from walking_noise.fit.errors import pull, reported_error
from walking_noise.fit.levels import AXES, aggregate_repeats
from walking_noise.fit.pipeline import (
    AUTO_MIN_DELTA_AIC, AUTO_MIN_STEP_FRACTION, FLAT_REL_DROP, FLAT_SPREAD_FACTOR, PLATEAU_TOLERANCE, fit_midpoint,
    midpoint_noise_level,
)
from walking_noise.fit.result import FitResult

#: The public API; the constants stay importable from here, as before the stages had modules of their own.
__all__ = [
    "logistic",
    "double_logistic",
    "FitResult",
    "aggregate_repeats",
    "fit_midpoint",
    "midpoint_noise_level",
    "reported_error",
    "pull",
    "AXES",
    "MODELS",
    "MIN_LEVELS_SINGLE",
    "MIN_LEVELS_DOUBLE",
    "DEFAULT_SPREAD_FLOOR_FRACTION",
    "AUTO_MIN_DELTA_AIC",
    "AUTO_MIN_STEP_FRACTION",
    "FLAT_SPREAD_FACTOR",
    "FLAT_REL_DROP",
    "PLATEAU_TOLERANCE",
    "RESOLUTION_SIGMA_FRACTION",
]
