"""Midpoint noise level: fitting a scaled logistic to accuracy-vs-noise curves.

Implements Sec. IV.A (Eq. 1-2) and appendix B (two stacked logistics) of
"Walking Noise" (Borras, Klein, Fröning).

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
* **Errors.** ``mu_err`` is the standard error from the covariance scaled by
  ``max(1, chi2_red)`` (i.e. errors times ``sqrt(max(1, chi2_red))``);
  ``mu_err_unscaled`` is the plain ``absolute_sigma=True`` error;
  ``mu_err_jackknife`` is the leave-one-seed-out jackknife standard error
  (needs ``seeds`` with >= 3 distinct labels). With 2-5 repeats the spreads
  are poorly known: the unscaled error is often far too small, and even
  ``mu_err`` is somewhat optimistic with 3 repeats (2-sigma coverage ~86-91 %
  instead of 95 % in simulation, because the weights themselves are noisy).
  For a conservative error use ``max(mu_err, mu_err_jackknife)``.
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
  ``mu_err`` is raised to (gap of the levels bracketing mu) / sqrt(12). Only programming errors (wrong shapes, negative or non-finite
  noise levels, unknown options) raise ``ValueError``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, brentq, curve_fit
from scipy.special import expit

from walking_noise.files import to_plain

__all__ = [
    "logistic",
    "double_logistic",
    "FitResult",
    "aggregate_repeats",
    "fit_midpoint",
    "midpoint_noise_level",
]

AXES = ("linear", "log10")
MODELS = ("single", "double", "auto")

#: Minimum number of distinct noise levels for the single logistic (4 parameters).
MIN_LEVELS_SINGLE = 4
#: Minimum number of distinct noise levels for the double logistic (7 parameters + 1 dof).
MIN_LEVELS_DOUBLE = 8
#: Default spread floor as a fraction of the range (max - min) of the level means.
DEFAULT_SPREAD_FLOOR_FRACTION = 0.02
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
#: Lower bound of |sigma| as a fraction of the median spacing of the noise levels (fit axis).
RESOLUTION_SIGMA_FRACTION = 0.1

_SINGLE_NAMES = ("mu", "sigma", "delta_a", "a_min")
_SINGLE_KINDS = ("pos", "width", "height", "offset")
_DOUBLE_NAMES = ("mu1", "sigma1", "delta_a1", "mu2", "sigma2", "delta_a2", "a_min")
_DOUBLE_KINDS = ("pos", "width", "height", "pos", "width", "height", "offset")


# --------------------------------------------------------------------------- models


def logistic(x: Any, mu: float, sigma: float, delta_a: float, a_min: float) -> np.ndarray:
    """Scaled logistic of the paper's Eq. 1.

    ``F(x) = delta_a / (1 + exp(-(x - mu) / sigma)) + a_min``

    Parameters
    ----------
    x : array_like
        Position on the fit axis (noise std, or log10 of it for a log-axis fit).
    mu : float
        Midpoint (same units as ``x``): ``F(mu) = a_min + delta_a / 2``.
    sigma : float
        Transition width (units of ``x``). Negative for a curve that falls
        with ``x`` (the usual accuracy-vs-noise case), positive for a rising one.
    delta_a : float
        Height of the step (accuracy units).
    a_min : float
        Shift (accuracy units); the lower plateau when ``delta_a > 0``.

    Returns
    -------
    numpy.ndarray
        ``F(x)`` with the shape of ``x``. Numerically safe for very large
        ``|x - mu| / |sigma|`` and for ``x = ±inf``.
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = (x - mu) / sigma
    return delta_a * expit(z) + a_min


def double_logistic(
    x: Any,
    mu1: float,
    sigma1: float,
    delta_a1: float,
    mu2: float,
    sigma2: float,
    delta_a2: float,
    a_min: float,
) -> np.ndarray:
    """Two stacked logistics (paper appendix B, Fig. 7).

    ``F2(x) = a_min + delta_a1 / (1 + exp(-(x - mu1)/sigma1))
                    + delta_a2 / (1 + exp(-(x - mu2)/sigma2))``

    Parameters have the meaning of :func:`logistic` for each step; by
    convention ``mu1 < mu2`` (the first drop happens at lower noise). For a
    falling curve both sigmas are negative, the upper plateau is
    ``a_min + delta_a1 + delta_a2``, the intermediate plateau ``a_min + delta_a2``
    and the lower plateau ``a_min``.
    """
    return logistic(x, mu1, sigma1, delta_a1, 0.0) + logistic(x, mu2, sigma2, delta_a2, a_min)


# --------------------------------------------------------------------------- result


def _pyfloat(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class FitResult:
    """Outcome of :func:`fit_midpoint`. All fields are plain Python values.

    Attributes
    ----------
    converged : bool
        True when a midpoint inside the tested noise range with a finite error
        was found.
    reason : str
        ``"ok"`` or a human-readable explanation of why no midpoint is given.
    model : str
        ``"single"`` or ``"double"`` (the model actually reported).
    axis : str
        ``"linear"`` or ``"log10"`` (the axis the fit was made on).
    mu, mu_err : float or None
        Midpoint noise level and its standard error, in noise-std units (for
        the log axis ``mu = 10**log10_mu`` and
        ``mu_err = mu * ln(10) * log10_mu_err``). ``mu_err`` is scaled by
        ``sqrt(max(1, chi2_red))``, see ``error_method``.
    mu_err_unscaled : float or None
        Error from the covariance with ``absolute_sigma=True``, no scaling.
    mu_err_jackknife : float or None
        Leave-one-seed-out jackknife standard error (needs >= 3 seeds).
    log10_mu, log10_mu_err, log10_mu_err_jackknife : float or None
        The same on the log10 scale (filled for ``axis="log10"`` only).
    sigma, sigma_err : float or None
        Transition width in fit-axis units (noise std, or decades for the
        log axis); negative for falling curves. None for the double model
        (see ``params['sigma1']``, ``params['sigma2']``).
    delta_a, delta_a_err, a_min, a_min_err : float or None
        Step height (total drop for the double model) and lower plateau,
        in accuracy units.
    chi2_red : float or None
        Weighted chi-square per degree of freedom (None when dof = 0).
    n_levels, n_runs : int
        Distinct noise levels and runs used in the fit.
    spread_floor : float
        Floor applied to the per-level spread Δy (accuracy units).
    spread_floor_rule : str
        How the floor was obtained, and on how many levels it was active.
    error_method : str
        How ``mu_err`` was obtained.
    mu_lower_bound, mu_upper_bound : float or None
        For non-converged fits whose midpoint lies beyond the tested range:
        ``mu > mu_lower_bound`` (never left the upper plateau) or
        ``mu < mu_upper_bound`` (already at the lower plateau).
    model_choice_reason : str
        Why this model was reported (relevant for ``model="auto"``).
    n_dropped_nonfinite : int
        Runs dropped because their accuracy was NaN/inf (diverged runs).
    notes : list of str
        Everything else worth knowing (dropped points, detected direction...).
    params : dict
        All fitted parameters (``name``, ``name_err``, ``name_err_unscaled``;
        positions also as ``log10_name`` on the log axis) plus fit
        statistics (``chi2``, ``dof``, ``aic``...).
    """

    converged: bool = False
    reason: str = ""
    model: str = "single"
    axis: str = "linear"
    mu: float | None = None
    mu_err: float | None = None
    mu_err_unscaled: float | None = None
    mu_err_jackknife: float | None = None
    log10_mu: float | None = None
    log10_mu_err: float | None = None
    log10_mu_err_jackknife: float | None = None
    sigma: float | None = None
    sigma_err: float | None = None
    delta_a: float | None = None
    delta_a_err: float | None = None
    a_min: float | None = None
    a_min_err: float | None = None
    chi2_red: float | None = None
    n_levels: int = 0
    n_runs: int = 0
    spread_floor: float = 0.0
    spread_floor_rule: str = ""
    error_method: str = ""
    mu_lower_bound: float | None = None
    mu_upper_bound: float | None = None
    model_choice_reason: str = ""
    n_dropped_nonfinite: int = 0
    notes: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """All fields as a JSON-serialisable dict (non-finite floats become None)."""
        return to_plain(asdict(self), nan_as_none=True)

    def predict(self, x: Any) -> np.ndarray:
        """Evaluate the fitted curve.

        Parameters
        ----------
        x : array_like
            Noise standard deviations (noise-std units, >= 0), whatever the
            fit axis. For the log axis ``x = 0`` maps to the upper plateau.

        Returns
        -------
        numpy.ndarray
            Predicted accuracy (units of the input accuracies); all NaN when
            no curve was fitted.
        """
        x = np.asarray(x, dtype=float)
        p = self.params
        if self.axis == "log10":
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.log10(x)

            def pos(name: str) -> float | None:
                return p.get("log10_" + name)

        else:
            t = x

            def pos(name: str) -> float | None:
                return p.get(name)

        if self.model == "double":
            vals = [pos("mu1"), p.get("sigma1"), p.get("delta_a1"), pos("mu2"),
                    p.get("sigma2"), p.get("delta_a2"), p.get("a_min")]
            if any(v is None for v in vals):
                return np.full(x.shape, np.nan)
            return double_logistic(t, *vals)
        vals = [pos("mu"), p.get("sigma"), p.get("delta_a"), p.get("a_min")]
        if any(v is None for v in vals):
            return np.full(x.shape, np.nan)
        return logistic(t, *vals)


# --------------------------------------------------------------------------- input handling


def _validate(noise_std: Any, accuracy: Any, seeds: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        x = np.asarray(noise_std, dtype=float)
        y = np.asarray(accuracy, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"noise_std and accuracy must be numeric arrays: {exc}") from exc
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(
            f"noise_std and accuracy must be 1-D arrays (one entry per run); got shapes {x.shape} and {y.shape}"
        )
    if x.shape != y.shape:
        raise ValueError(f"noise_std and accuracy must have the same length; got {x.size} and {y.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError("noise_std must be finite (NaN/inf noise levels are not allowed)")
    if np.any(x < 0):
        raise ValueError(f"noise_std must be >= 0 (it is a standard deviation); got min {x.min()!r}")
    s = None
    if seeds is not None:
        s = np.asarray(seeds)
        if s.ndim != 1 or s.shape != x.shape:
            raise ValueError(f"seeds must be a 1-D array with one label per run; got shape {s.shape}, expected {x.shape}")
    return x, y, s


def _group(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Levels (sorted), mean, std (ddof=1 if n>=2 else 0), n. Assumes finite y."""
    if x.size == 0:
        e = np.zeros(0)
        return e, e, e, np.zeros(0, dtype=int)
    lv, inv = np.unique(x, return_inverse=True)
    n = np.bincount(inv, minlength=lv.size)
    mean = np.bincount(inv, weights=y, minlength=lv.size) / n
    ss = np.bincount(inv, weights=(y - mean[inv]) ** 2, minlength=lv.size)
    std = np.where(n >= 2, np.sqrt(ss / np.maximum(n - 1, 1)), 0.0)
    return lv, mean, std, n


def aggregate_repeats(noise_std: Any, accuracy: Any) -> pd.DataFrame:
    """Group runs by noise level.

    Parameters
    ----------
    noise_std : array_like, shape (n_runs,)
        Injected noise standard deviation of each run (noise-std units, >= 0).
        Runs with exactly equal values form one level.
    accuracy : array_like, shape (n_runs,)
        Accuracy of each run (fraction or percent). Non-finite values
        (diverged runs) are dropped; their number is in
        ``df.attrs["n_dropped_nonfinite"]``.

    Returns
    -------
    pandas.DataFrame
        Columns ``noise_std`` (sorted ascending), ``mean``, ``std`` (ddof=1;
        0.0 for a single repeat) and ``n`` (valid runs at that level).

    Raises
    ------
    ValueError
        Wrong shapes, or negative / non-finite noise levels.
    """
    x, y, _ = _validate(noise_std, accuracy)
    ok = np.isfinite(y)
    lv, mean, std, n = _group(x[ok], y[ok])
    df = pd.DataFrame({"noise_std": lv, "mean": mean, "std": std, "n": n.astype(int)})
    df.attrs["n_dropped_nonfinite"] = int((~ok).sum())
    return df


# --------------------------------------------------------------------------- fitting internals


class _Frame:
    """Normalisation between user units and the internal unit box.

    Fit axis ``f`` (x or log10 x) maps to ``u = (f - f_lo) / f_span`` in [0, 1];
    accuracy maps to ``v = (y - y_base) / y_scale`` with the level means in [0, 1].
    """

    def __init__(self, f_lo: float, f_span: float, y_base: float, y_scale: float):
        self.f_lo, self.f_span, self.y_base, self.y_scale = f_lo, f_span, y_base, y_scale

    def to_user(self, kind: str, val: float) -> float:
        if kind == "pos":
            return self.f_lo + self.f_span * val
        if kind == "width":
            return self.f_span * val
        if kind == "height":
            return self.y_scale * val
        return self.y_base + self.y_scale * val

    def err_to_user(self, kind: str, err: float) -> float:
        return (self.f_span if kind in ("pos", "width") else self.y_scale) * err

    def to_internal(self, kind: str, val: float) -> float:
        if kind == "pos":
            return (val - self.f_lo) / self.f_span
        if kind == "width":
            return val / self.f_span
        if kind == "height":
            return val / self.y_scale
        return (val - self.y_base) / self.y_scale


def _crossings(u: np.ndarray, v: np.ndarray, level: float) -> list[float]:
    """Positions where the piecewise-linear curve (u, v) crosses ``level``."""
    out: list[float] = []
    d = v - level
    for i in range(len(u) - 1):
        if d[i] == 0:
            out.append(float(u[i]))
        elif d[i] * d[i + 1] < 0:
            out.append(float(u[i] + (u[i + 1] - u[i]) * d[i] / (d[i] - d[i + 1])))
    if len(u) and d[-1] == 0:
        out.append(float(u[-1]))
    if not out:
        out.append(float(u[np.argmin(np.abs(d))]))
    return out


def _single_starts(u: np.ndarray, v: np.ndarray, direction: float, s_min: float) -> list[np.ndarray]:
    # internal plateaus: falling curve goes from ~1 to ~0
    hi_lvl, lo_lvl = (0.75, 0.25) if direction < 0 else (0.25, 0.75)
    halves = _crossings(u, v, 0.5)
    w = abs(_crossings(u, v, lo_lvl)[0] - _crossings(u, v, hi_lvl)[0]) / (2 * math.log(3))
    s_est = max(w, 2 * s_min, 0.01)
    m_cands = [halves[0]] + ([halves[-1]] if abs(halves[-1] - halves[0]) > 1e-9 else [])
    starts = []
    for m in m_cands:
        for s in (s_est, 0.03, 0.1, 0.3):
            starts.append(np.array([m, direction * max(s, 2 * s_min), 1.0, 0.0]))
    return starts


def _double_starts(u: np.ndarray, v: np.ndarray, direction: float, s_min: float) -> list[np.ndarray]:
    s0 = direction * max(0.03, 2 * s_min)
    starts = []
    first = _crossings(u, v, 0.75 if direction < 0 else 0.25)[0]
    second = _crossings(u, v, 0.25 if direction < 0 else 0.75)[-1]
    if second > first:
        starts.append(np.array([first, s0, 0.5, second, s0, 0.5, 0.0]))
    mids = 0.5 * (u[1:] + u[:-1])
    if mids.size > 6:
        mids = mids[np.unique(np.round(np.linspace(0, mids.size - 1, 6)).astype(int))]
    for i in range(mids.size):
        for j in range(i + 1, mids.size):
            m1, m2 = mids[i], mids[j]
            between = v[(u > m1) & (u < m2)]
            plateau = float(np.clip(np.mean(between), 0.05, 0.95)) if between.size else 0.5
            # falling: upper 1 -> plateau -> 0 ; rising: 0 -> plateau -> 1
            d1 = 1.0 - plateau if direction < 0 else plateau
            d2 = 1.0 - d1
            starts.append(np.array([m1, s0, d1, m2, s0, d2, 0.0]))
    return starts


def _bounds(model: str, direction: float, s_min: float) -> tuple[np.ndarray, np.ndarray]:
    s_max = 2.0
    s_lo, s_hi = (-s_max, -s_min) if direction < 0 else (s_min, s_max)
    m_lo, m_hi = -0.25, 1.25  # a quarter of the tested range beyond either end
    d_lo, d_hi = 0.0, 1.5
    a_lo, a_hi = -0.25, 0.75
    if model == "single":
        return np.array([m_lo, s_lo, d_lo, a_lo]), np.array([m_hi, s_hi, d_hi, a_hi])
    return (
        np.array([m_lo, s_lo, d_lo, m_lo, s_lo, d_lo, a_lo]),
        np.array([m_hi, s_hi, d_hi, m_hi, s_hi, d_hi, a_hi]),
    )


def _run_curve_fit(model: str, u, v, w, starts, lo, hi) -> tuple[tuple | None, str]:
    func = logistic if model == "single" else double_logistic
    best = None
    last_err = ""
    pad = 1e-9 * (hi - lo)
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=float), lo + pad, hi - pad)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(
                    func, u, v, p0=p0, sigma=w, absolute_sigma=True,
                    bounds=(lo, hi), method="trf", max_nfev=2000 * len(p0),
                )
        except (RuntimeError, ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            last_err = str(exc)
            continue
        r = (func(u, *popt) - v) / w
        chi2 = float(np.dot(r, r))
        if not math.isfinite(chi2):
            continue
        if best is None or chi2 < best[2] - 1e-12:
            best = (popt, pcov, chi2)
    return best, last_err


def _order_double(popt: np.ndarray, pcov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if popt[0] <= popt[3]:
        return popt, pcov
    perm = np.array([3, 4, 5, 0, 1, 2, 6])
    return popt[perm], pcov[np.ix_(perm, perm)]


def _double_half_crossing(p: np.ndarray) -> float:
    m1, s1, d1, m2, s2, d2, a = p
    target = a + 0.5 * (d1 + d2)
    span = 60.0 * max(abs(s1), abs(s2)) + 1.0
    lo, hi = min(m1, m2) - span, max(m1, m2) + span

    def g(t: float) -> float:
        return float(double_logistic(t, *p)) - target

    glo, ghi = g(lo), g(hi)
    if not (math.isfinite(glo) and math.isfinite(ghi)) or glo * ghi >= 0:
        return float("nan")
    return float(brentq(g, lo, hi, xtol=1e-13, rtol=1e-13, maxiter=500))


def _double_mu_and_var(popt: np.ndarray, pcov: np.ndarray) -> tuple[float, float]:
    m = _double_half_crossing(popt)
    if not math.isfinite(m):
        return m, float("nan")
    grad = np.zeros(popt.size)
    for j in range(popt.size):
        h = 1e-6 * max(1.0, abs(popt[j]))
        pp, pm = popt.copy(), popt.copy()
        pp[j] += h
        pm[j] -= h
        grad[j] = (_double_half_crossing(pp) - _double_half_crossing(pm)) / (2 * h)
    if not np.all(np.isfinite(grad)):
        return m, float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        var = float(grad @ pcov @ grad)
    return m, var


class _Core:
    """Internal (unit-box) fit of one model: parameters, covariance, statistics."""

    def __init__(self, model, popt, pcov, chi2, n_points):
        self.model = model
        if model == "double":
            popt, pcov = _order_double(popt, pcov)
        self.popt = np.asarray(popt, dtype=float)
        self.pcov = np.asarray(pcov, dtype=float)
        self.chi2 = chi2
        self.k = self.popt.size
        self.dof = n_points - self.k
        self.chi2_red = chi2 / self.dof if self.dof > 0 else float("nan")
        self.scale = max(1.0, self.chi2_red) if self.dof > 0 else 1.0
        self.aic = chi2 + 2 * self.k
        if model == "single":
            self.mu = float(self.popt[0])
            self.mu_var = float(self.pcov[0, 0])
        else:
            self.mu, self.mu_var = _double_mu_and_var(self.popt, self.pcov)

    def err(self, j: int, scaled: bool = True) -> float:
        v = self.pcov[j, j]
        if not math.isfinite(v) or v < 0:
            return float("nan")
        return math.sqrt(v * (self.scale if scaled else 1.0))

    def mu_err(self, scaled: bool = True) -> float:
        v = self.mu_var
        if not math.isfinite(v) or v < 0:
            return float("nan")
        return math.sqrt(v * (self.scale if scaled else 1.0))


def _fit_model(model, u, v, w, direction, s_min, extra_starts=()) -> tuple[_Core | None, str]:
    lo, hi = _bounds(model, direction, s_min)
    starts = list(extra_starts)
    starts += _single_starts(u, v, direction, s_min) if model == "single" else _double_starts(u, v, direction, s_min)
    best, err = _run_curve_fit(model, u, v, w, starts, lo, hi)
    if best is None:
        return None, f"curve_fit did not converge for the {model} logistic ({err or 'no finite solution'})"
    return _Core(model, best[0], best[1], best[2], u.size), ""


def _p0_internal(p0: Any, model: str, frame: _Frame, axis: str) -> np.ndarray | None:
    if p0 is None:
        return None
    names = _SINGLE_NAMES if model == "single" else _DOUBLE_NAMES
    kinds = _SINGLE_KINDS if model == "single" else _DOUBLE_KINDS
    if isinstance(p0, Mapping):
        if not set(names) <= set(p0):
            return None
        vals = [float(p0[n]) for n in names]
    else:
        vals = [float(v) for v in p0]
        if len(vals) != len(names):
            return None
    out = []
    for val, kind in zip(vals, kinds):
        if kind == "pos" and axis == "log10":
            if val <= 0:
                raise ValueError("p0: midpoints must be > 0 (noise-std units) for axis='log10'")
            val = math.log10(val)
        out.append(frame.to_internal(kind, val))
    return np.array(out)


def _check_p0(p0: Any) -> None:
    if p0 is None:
        return
    n = len(p0)
    if isinstance(p0, Mapping):
        if not (set(_SINGLE_NAMES) <= set(p0) or set(_DOUBLE_NAMES) <= set(p0)):
            raise ValueError(f"p0 dict needs keys {_SINGLE_NAMES} or {_DOUBLE_NAMES}")
    elif n not in (4, 7):
        raise ValueError("p0 must have 4 (single) or 7 (double) values in the order of logistic()/double_logistic()")


# --------------------------------------------------------------------------- public fit


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
        Seed (repeat) label of each run. With >= 3 distinct labels a
        leave-one-seed-out jackknife error ``mu_err_jackknife`` is computed.
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
    _check_arguments(axis, model, spread_floor, p0)
    x, y, s = _validate(noise_std, accuracy, seeds)
    res = FitResult(axis=axis, model="double" if model == "double" else "single")
    data = _prepare_levels(res, x, y, s, axis, model, spread_floor)
    if data is None or _flat_curve(res, data, chance_level):
        return res
    chosen = _choose_model(res, data, model, p0)
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
    _resolution_error(res, chosen, data)
    res.converged, res.reason = True, "ok"
    if data.seeds is not None:
        _jackknife(res, chosen, data.x, data.y, data.seeds, data.frame, axis, data.floor, data.direction, data.s_min)
    return res


# ---- the stages of fit_midpoint ----------------------------------------------------------------------------


@dataclass
class _Levels:
    """The runs of one fit grouped by noise level, and the normalised frame the logistic is fitted in."""

    x: np.ndarray
    y: np.ndarray
    seeds: np.ndarray | None
    levels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    floor: float
    frame: _Frame | None = None
    u: np.ndarray | None = None  # level positions on the fit axis, scaled to [0, 1]
    v: np.ndarray | None = None  # level means, scaled to [0, 1]
    w: np.ndarray | None = None  # errors of the level means, in the scale of v
    direction: float = -1.0  # -1: accuracy falls with noise
    s_min: float = 0.0  # the smallest |sigma| the grid resolves


def _check_arguments(axis: str, model: str, spread_floor: float | None, p0: Any) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}; got {axis!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if spread_floor is not None and not (math.isfinite(float(spread_floor)) and float(spread_floor) >= 0):
        raise ValueError(f"spread_floor must be a finite number >= 0; got {spread_floor!r}")
    _check_p0(p0)


def _not_converged(res: FitResult, reason: str, *, lower: float | None = None, upper: float | None = None,
                   extrapolated: float | None = None) -> None:
    """Mark ``res`` as not converged: the reason, the bounds on mu it allows, and no midpoint."""
    res.converged = False
    res.reason = reason
    if extrapolated is not None:
        res.params["mu_extrapolated"] = extrapolated
    if lower is not None:
        res.mu_lower_bound = lower
    if upper is not None:
        res.mu_upper_bound = upper
    res.mu = res.mu_err = res.mu_err_unscaled = res.log10_mu = res.log10_mu_err = None


def _prepare_levels(res: FitResult, x: np.ndarray, y: np.ndarray, s: np.ndarray | None, axis: str, model: str,
                    spread_floor: float | None) -> _Levels | None:
    """Drop what cannot be fitted (non-finite accuracy, noise 0 on a log axis), group the runs by level and set the
    spread floor; None (``res`` says why) when fewer levels remain than the model has parameters."""
    ok = np.isfinite(y)
    res.n_dropped_nonfinite = int((~ok).sum())
    if res.n_dropped_nonfinite:
        res.notes.append(f"dropped {res.n_dropped_nonfinite} run(s) with non-finite accuracy (diverged runs)")
    if axis == "log10":
        zero = ok & (x == 0)
        if zero.any():
            res.notes.append(f"axis='log10': dropped {int(zero.sum())} run(s) at noise_std = 0 (no log10 position)")
        ok &= x > 0
    x, y = x[ok], y[ok]
    s = s[ok] if s is not None else None
    res.n_runs = int(x.size)
    lv, mean, std, n = _group(x, y)
    res.n_levels = int(lv.size)
    need = MIN_LEVELS_DOUBLE if model == "double" else MIN_LEVELS_SINGLE
    if lv.size < need:
        res.reason = f"too few distinct noise levels: {lv.size} < {need} needed for the {res.model} logistic"
        res.error_method = "none"
        return None
    y_range = float(mean.max() - mean.min())
    if spread_floor is None:
        floor = DEFAULT_SPREAD_FLOOR_FRACTION * y_range
        rule = f"default: {DEFAULT_SPREAD_FLOOR_FRACTION:g} x range of level means"
        if floor <= 0:
            floor = max(1e-3 * float(np.max(np.abs(mean))), 1e-12)
            rule = "default: 1e-3 x max |level mean| (level means have zero range)"
    else:
        floor, rule = float(spread_floor), "user-given absolute value"
    res.spread_floor = float(floor)
    res.spread_floor_rule = f"{rule}; active on {int(np.sum(std < floor))} of {lv.size} levels"
    return _Levels(x, y, s, lv, mean, std, n, floor)


def _flat_curve(res: FitResult, data: _Levels, chance_level: float | None) -> bool:
    """Whether the level means never leave one plateau (``res`` then says which and bounds mu); else normalise
    the levels into ``data``'s fit frame and return False."""
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
            _not_converged(res, base + f"; at chance level ({chance_level:g}): never leaves the lower plateau, mu < "
                                       f"min tested noise", upper=float(lv[0]))
        elif chance_level is not None:
            _not_converged(res, base + "; above chance level: never leaves the upper plateau, mu > max tested noise",
                           lower=float(lv[-1]))
        else:
            _not_converged(res, base + "; if this is the clean-accuracy plateau then mu > max tested noise, if it is "
                                       "chance level then mu < min tested noise (pass chance_level to decide)")
        res.error_method = "none"
        return True
    f_axis = np.log10(lv) if res.axis == "log10" else lv
    f_lo, f_span = float(f_axis[0]), float(f_axis[-1] - f_axis[0])
    data.frame = _Frame(f_lo, f_span, float(mean.min()), y_range)
    data.u = (f_axis - f_lo) / f_span
    data.v = (mean - data.frame.y_base) / data.frame.y_scale
    data.w = np.maximum(std, data.floor) / np.sqrt(n) / data.frame.y_scale
    third = max(1, lv.size // 3)
    data.direction = -1.0 if data.v[:third].mean() >= data.v[-third:].mean() else 1.0
    if data.direction > 0:
        res.notes.append("accuracy rises with noise: fitted with sigma > 0")
    data.s_min = RESOLUTION_SIGMA_FRACTION * float(np.median(np.diff(data.u)))
    return False


def _choose_model(res: FitResult, data: _Levels, model: str, p0: Any) -> _Core | None:
    """Fit the single and/or the double logistic and keep the one asked for (``auto``: the better by AIC, see
    :func:`_choose`); None (``res`` says why) when no fit succeeded."""
    args = (data.u, data.v, data.w, data.direction, data.s_min)
    single = double = None
    err_single = err_double = ""
    if model in ("single", "auto"):
        start = _p0_internal(p0, "single", data.frame, res.axis)
        single, err_single = _fit_model("single", *args, [start] if start is not None else [])
    if model == "double" or (model == "auto" and data.levels.size >= MIN_LEVELS_DOUBLE):
        start = _p0_internal(p0, "double", data.frame, res.axis)
        double, err_double = _fit_model("double", *args, [start] if start is not None else [])
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
        _not_converged(res, reason)
        res.error_method = "none"
        return None
    res.model = chosen.model
    return chosen


def _midpoint_inside_data(res: FitResult, chosen: _Core, data: _Levels) -> bool:
    """Whether the fitted midpoint is a measurement: it crosses its half level, lies inside the tested range, and
    both plateaus are within the data; else ``res`` is not converged and says which bound on mu the data allow."""
    mu_n = chosen.mu
    if not math.isfinite(mu_n):
        _not_converged(res, "the fitted curve does not cross its half level; no midpoint")
        return False
    lv, direction = data.levels, data.direction
    if mu_n > 1.0 or mu_n < 0.0:
        outside = "above the largest" if mu_n > 1.0 else "below the smallest"
        plateau = "upper" if (mu_n > 1.0) == (direction < 0) else "lower"
        _not_converged(res, f"fitted midpoint lies {outside} tested noise level (extrapolated, {res.mu:.4g}); the "
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
    halves = _crossings(data.u, data.v, 0.5)
    # lower plateau (falling curve: at high noise) not reached -> true half level is lower than the observed
    # one -> the midpoint lies at higher noise than the observed crossing.
    at_high_noise = "lower" if direction < 0 else "upper"
    lower = upper = None
    bound_txt = []
    if at_high_noise in unseen:
        lower = _pyfloat(_axis_to_noise(data.frame.to_user("pos", halves[-1]), res.axis))
        bound_txt.append(f"mu >= {lower:.4g} (observed half-drop crossing)")
    if len(unseen) == 1 and at_high_noise not in unseen:
        upper = _pyfloat(_axis_to_noise(data.frame.to_user("pos", halves[0]), res.axis))
        bound_txt.append(f"mu <= {upper:.4g} (observed half-drop crossing)")
    _not_converged(res, f"{' and '.join(unseen)} plateau not reached within the tested noise range: the fitted "
                        f"plateau lies more than {PLATEAU_TOLERANCE:.0%} of the observed accuracy range beyond the "
                        f"data, so the midpoint is an extrapolation (fitted {res.mu:.4g})"
                        + ("; " + ", ".join(bound_txt) if bound_txt else ""),
                   extrapolated=res.mu, lower=lower, upper=upper)
    return False


def _resolution_error(res: FitResult, chosen: _Core, data: _Levels) -> None:
    """A transition sharper than the grid locates mu only within its bracketing levels: raise mu_err to that."""
    width_idx = [1] if chosen.model == "single" else [1, 4]
    if not any(abs(chosen.popt[j]) <= data.s_min * (1 + 1e-6) for j in width_idx):
        return
    u = data.u
    i = int(np.clip(np.searchsorted(u, chosen.mu), 1, u.size - 1))
    gap_err = float(u[i] - u[i - 1]) / math.sqrt(12.0)
    res.params["sigma_at_lower_bound"] = True
    note = ("transition sharper than the level spacing (|sigma| at its lower bound, "
            f"{RESOLUTION_SIGMA_FRACTION:g} x median spacing)")
    res.notes.append(note + "; mu is located only to within the bracketing levels")
    if gap_err <= chosen.mu_err():
        return
    err_f = data.frame.err_to_user("pos", gap_err)
    if res.axis == "log10":
        res.log10_mu_err = res.params["log10_mu_err"] = _pyfloat(err_f)
        res.mu_err = res.params["mu_err"] = _pyfloat(res.mu * math.log(10.0) * err_f)
    else:
        res.mu_err = res.params["mu_err"] = _pyfloat(err_f)
    res.error_method += "; " + note + ": mu_err raised to (gap of bracketing levels)/sqrt(12)"


def _choose(single: _Core | None, double: _Core | None, n_levels: int, params: dict) -> tuple[_Core | None, str]:
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


def _axis_to_noise(f: float, axis: str) -> float:
    if axis == "log10":
        return 10.0**f if f < 308 else float("inf")
    return f


def _fill_from_core(res: FitResult, core: _Core, frame: _Frame, axis: str) -> None:
    names = _SINGLE_NAMES if core.model == "single" else _DOUBLE_NAMES
    kinds = _SINGLE_KINDS if core.model == "single" else _DOUBLE_KINDS
    p: dict[str, Any] = res.params
    ln10 = math.log(10.0)

    def put(name: str, kind: str, val_n: float, err_n: float, err_n_unscaled: float) -> None:
        val = frame.to_user(kind, val_n)
        err = frame.err_to_user(kind, err_n)
        erru = frame.err_to_user(kind, err_n_unscaled)
        if kind == "pos" and axis == "log10":
            p["log10_" + name], p["log10_" + name + "_err"] = _pyfloat(val), _pyfloat(err)
            p["log10_" + name + "_err_unscaled"] = _pyfloat(erru)
            lin = 10.0 ** val if val < 308 else float("inf")
            p[name], p[name + "_err"] = _pyfloat(lin), _pyfloat(lin * ln10 * err)
            p[name + "_err_unscaled"] = _pyfloat(lin * ln10 * erru)
        else:
            p[name], p[name + "_err"], p[name + "_err_unscaled"] = _pyfloat(val), _pyfloat(err), _pyfloat(erru)

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

    p.update(chi2=_pyfloat(core.chi2), dof=int(core.dof), chi2_red=_pyfloat(core.chi2_red),
             aic=_pyfloat(core.aic), error_scale=_pyfloat(math.sqrt(core.scale)))
    res.mu, res.mu_err, res.mu_err_unscaled = p["mu"], p["mu_err"], p["mu_err_unscaled"]
    if axis == "log10":
        res.log10_mu, res.log10_mu_err = p["log10_mu"], p["log10_mu_err"]
    res.delta_a, res.delta_a_err = p["delta_a"], p["delta_a_err"]
    res.a_min, res.a_min_err = p["a_min"], p["a_min_err"]
    res.chi2_red = _pyfloat(core.chi2_red)
    if core.dof <= 0:
        how = "covariance with absolute_sigma=True, unscaled (dof = 0, chi2_red undefined)"
    else:
        how = (f"covariance (absolute_sigma=True) scaled by max(1, chi2_red) = {core.scale:.3g} "
               f"(errors x {math.sqrt(core.scale):.3g})")
    if core.model == "double":
        how += "; mu (half-way crossing) error by the delta method (numerical gradient)"
    if axis == "log10":
        how += "; mu_err = mu * ln(10) * log10_mu_err"
    res.error_method = how


def _jackknife(res, chosen, x, y, s, frame, axis, floor, direction, s_min) -> None:
    codes, labels = pd.factorize(s, use_na_sentinel=True)
    k = len(labels)
    if k < 3:
        res.notes.append(f"jackknife skipped: {k} distinct seed label(s) (< 3)")
        return
    need = MIN_LEVELS_SINGLE if chosen.model == "single" else MIN_LEVELS_DOUBLE
    mus = []
    for i in range(k):
        keep = codes != i
        lv, mean, std, n = _group(x[keep], y[keep])
        if lv.size < need:
            res.notes.append(f"jackknife skipped: leaving out seed {labels[i]!r} leaves {lv.size} levels")
            return
        f_axis = np.log10(lv) if axis == "log10" else lv
        u = (f_axis - frame.f_lo) / frame.f_span
        v = (mean - frame.y_base) / frame.y_scale
        w = np.maximum(std, floor) / np.sqrt(n) / frame.y_scale
        core, err = _fit_model(chosen.model, u, v, w, direction, s_min, [chosen.popt])
        if core is None or not math.isfinite(core.mu):
            res.notes.append(f"jackknife skipped: refit without seed {labels[i]!r} failed ({err or 'no midpoint'})")
            return
        mus.append(core.mu)
    mus_f = np.array([frame.to_user("pos", m) for m in mus])
    se = math.sqrt((k - 1) / k * float(np.sum((mus_f - mus_f.mean()) ** 2)))
    res.params["jackknife_n_seeds"] = k
    if axis == "log10":
        res.log10_mu_err_jackknife = _pyfloat(se)
        res.params["log10_mu_err_jackknife"] = res.log10_mu_err_jackknife
        res.mu_err_jackknife = _pyfloat(res.mu * math.log(10.0) * se)
    else:
        res.mu_err_jackknife = _pyfloat(se)
    res.params["mu_err_jackknife"] = res.mu_err_jackknife


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
    (mu, mu_err) : tuple of float or None
        Midpoint noise level and its (chi2-scaled) error in noise-std units;
        ``(None, None)`` when the fit did not converge.
    """
    r = fit_midpoint(noise_std, accuracy, **kw)
    if not r.converged:
        return None, None
    return r.mu, r.mu_err
