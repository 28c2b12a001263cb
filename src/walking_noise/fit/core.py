"""The numerical core: weighted least-squares fits of a curve in the unit box (Eq. 2), and the spread floor.

Everything here works in the unit box of :class:`walking_noise.fit.levels.Frame` (tested noise range and level means
both mapped to [0, 1]), so that one set of bounds and starting values serves every curve; the conversion back to user
units is the pipeline's. The fit minimises ``sum(((F - y) / w)**2)`` with ``w`` the floored standard error of each
level mean (:func:`level_errors`).
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from walking_noise.fit.curves import curve_function, curve_jacobian, double_midpoint

#: Default spread floor as a fraction of the range (max - min) of the level means.
DEFAULT_SPREAD_FLOOR_FRACTION = 0.02
#: Lower bound of |sigma| as a fraction of the median spacing of the noise levels (fit axis).
RESOLUTION_SIGMA_FRACTION = 0.1


def spread_floor(mean: np.ndarray, std: np.ndarray, given: float | None) -> tuple[float, str]:
    """The floor of the per-level spread (accuracy units) and the rule that gave it.

    A spread estimated from 2-5 repeats is often accidentally tiny, and such a level would dominate the fit; the
    default floor is 2 % of the range of the level means (module docstring of :mod:`walking_noise.fit`).
    """
    if given is None:
        floor = DEFAULT_SPREAD_FLOOR_FRACTION * float(mean.max() - mean.min())
        rule = f"default: {DEFAULT_SPREAD_FLOOR_FRACTION:g} x range of level means"
        if floor <= 0:
            floor = max(1e-3 * float(np.max(np.abs(mean))), 1e-12)
            rule = "default: 1e-3 x max |level mean| (level means have zero range)"
    else:
        floor, rule = float(given), "user-given absolute value"
    return floor, f"{rule}; active on {int(np.sum(std < floor))} of {std.size} levels"


def level_errors(std: np.ndarray, n: np.ndarray, floor: float) -> np.ndarray:
    """Eq. 2's error of each level mean: the spread over repeats, floored, over sqrt(repeats) (accuracy units)."""
    return np.maximum(std, floor) / np.sqrt(n)


def crossings(u: np.ndarray, v: np.ndarray, level: float) -> list[float]:
    """Positions where the piecewise-linear curve (u, v) crosses ``level`` (the nearest point when it never does):
    model-free starting values, and the observed half-drop crossing that bounds an extrapolated mu."""
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
    """Starts of Eq. 1 at the observed half crossing(s), with widths from the 25 %..75 % crossings and fixed ones."""
    # internal plateaus: falling curve goes from ~1 to ~0
    hi_lvl, lo_lvl = (0.75, 0.25) if direction < 0 else (0.25, 0.75)
    halves = crossings(u, v, 0.5)
    w = abs(crossings(u, v, lo_lvl)[0] - crossings(u, v, hi_lvl)[0]) / (2 * math.log(3))
    s_est = max(w, 2 * s_min, 0.01)
    m_cands = [halves[0]] + ([halves[-1]] if abs(halves[-1] - halves[0]) > 1e-9 else [])
    starts = []
    for m in m_cands:
        for s in (s_est, 0.03, 0.1, 0.3):
            starts.append(np.array([m, direction * max(s, 2 * s_min), 1.0, 0.0]))
    return starts


def _double_starts(u: np.ndarray, v: np.ndarray, direction: float, s_min: float) -> list[np.ndarray]:
    """Starts of the double logistic: the quarter crossings, then pairs of (at most 6) gaps between levels."""
    s0 = direction * max(0.03, 2 * s_min)
    starts = []
    first = crossings(u, v, 0.75 if direction < 0 else 0.25)[0]
    second = crossings(u, v, 0.25 if direction < 0 else 0.75)[-1]
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
    """Parameter box in the unit frame (module docstring of :mod:`walking_noise.fit`, "Bounds")."""
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


def _run_curve_fit(model: str, u: np.ndarray, v: np.ndarray, w: np.ndarray, starts: list[np.ndarray],
                   lo: np.ndarray, hi: np.ndarray, pinned: Mapping[int, float] | None = None) -> tuple[tuple | None, str]:
    """Weighted least squares (Eq. 2: residuals over ``w``, absolute_sigma) from each start; the lowest chi2 wins.
    ``pinned`` parameters are held at their values: only the others are fitted, and their rows and columns of the
    covariance are zero."""
    full_func, full_jac = curve_function(model), curve_jacobian(model)
    pinned = dict(pinned or {})
    free = np.array([j for j in range(lo.size) if j not in pinned], dtype=int)

    def expand(values: np.ndarray) -> np.ndarray:
        out = np.empty(lo.size)
        out[free] = values
        for j, value in pinned.items():
            out[j] = value
        return out

    def func(x: np.ndarray, *values: float) -> np.ndarray:
        return full_func(x, *expand(np.asarray(values)))

    def jac(x: np.ndarray, *values: float) -> np.ndarray:
        return full_jac(x, *expand(np.asarray(values)))[:, free]

    lo_f, hi_f = lo[free], hi[free]
    best = None
    last_err = ""
    pad = 1e-9 * (hi_f - lo_f)
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=float)[free], lo_f + pad, hi_f - pad)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, pcov = curve_fit(
                    func, u, v, p0=p0, sigma=w, absolute_sigma=True, jac=jac,
                    bounds=(lo_f, hi_f), method="trf", max_nfev=2000 * len(p0),
                )
        except (RuntimeError, ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            last_err = str(exc)
            continue
        r = (func(u, *popt) - v) / w
        chi2 = float(np.dot(r, r))
        if not math.isfinite(chi2):
            continue
        if best is None or chi2 < best[2] - 1e-12:
            cov = np.zeros((lo.size, lo.size))
            cov[np.ix_(free, free)] = pcov
            best = (expand(popt), cov, chi2)
    return best, last_err


def _order_double(popt: np.ndarray, pcov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap the steps of a double logistic so that ``mu1 <= mu2`` (the convention of its parameters)."""
    if popt[0] <= popt[3]:
        return popt, pcov
    perm = np.array([3, 4, 5, 0, 1, 2, 6])
    return popt[perm], pcov[np.ix_(perm, perm)]


def _double_mu_and_var(popt: np.ndarray, pcov: np.ndarray) -> tuple[float, float]:
    """The double logistic's midpoint and its variance by the delta method (central-difference gradient)."""
    m = double_midpoint(popt)
    if not math.isfinite(m):
        return m, float("nan")
    grad = np.zeros(popt.size)
    for j in range(popt.size):
        h = 1e-6 * max(1.0, abs(popt[j]))
        pp, pm = popt.copy(), popt.copy()
        pp[j] += h
        pm[j] -= h
        grad[j] = (double_midpoint(pp) - double_midpoint(pm)) / (2 * h)
    if not np.all(np.isfinite(grad)):
        return m, float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        var = float(grad @ pcov @ grad)
    return m, var


class Core:
    """Internal (unit-box) fit of one model: parameters, covariance, statistics.

    ``scale = max(1, chi2_red)`` (1 when dof = 0) is the factor on the covariance of the chi2-scaled errors
    (:func:`walking_noise.fit.errors.covariance_method` says so in the result).
    """

    def __init__(self, model: str, popt: np.ndarray, pcov: np.ndarray, chi2: float, n_points: int,
                 pinned: Mapping[int, float] | None = None):
        self.model = model
        self.pinned = dict(pinned or {})
        if model == "double":
            popt, pcov = _order_double(popt, pcov)
        self.popt = np.asarray(popt, dtype=float)
        self.pcov = np.asarray(pcov, dtype=float)
        self.chi2 = chi2
        self.k = self.popt.size - len(self.pinned)  # free parameters
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
        """Standard error of parameter ``j`` (unit box), chi2-scaled unless ``scaled=False``; NaN if undetermined."""
        return self._standard_error(self.pcov[j, j], scaled)

    def mu_err(self, scaled: bool = True) -> float:
        """Standard error of the midpoint (unit box), as :meth:`err`."""
        return self._standard_error(self.mu_var, scaled)

    def _standard_error(self, var: float, scaled: bool) -> float:
        if not math.isfinite(var) or var < 0:
            return float("nan")
        return math.sqrt(var * (self.scale if scaled else 1.0))


#: The unit-box values of the single logistic's scale and shift (indices 2, 3) that put its plateaus at the lowest
#: and highest level means: the paper's "a_max and a_min being the maximal and minimal achieved accuracy".
OBSERVED_PLATEAUS = {2: 1.0, 3: 0.0}


def fit_model(model: str, u: np.ndarray, v: np.ndarray, w: np.ndarray, direction: float, s_min: float,
              extra_starts: Sequence[np.ndarray] = (), standard_starts: bool = True,
              pinned: Mapping[int, float] | None = None) -> tuple[Core | None, str]:
    """Fit ``model`` in the unit box from its standard starts (after ``extra_starts``) and keep the lowest chi2;
    None and the reason when no start converged to a finite chi2. ``standard_starts=False``: from ``extra_starts``
    alone (a refit that should stay on the branch of the fit it starts from, as the jackknife's). ``pinned``:
    parameter index -> unit-box value held fixed (e.g. :data:`OBSERVED_PLATEAUS`); not counted as free."""
    lo, hi = _bounds(model, direction, s_min)
    starts = list(extra_starts)
    if standard_starts:
        starts += (_single_starts(u, v, direction, s_min) if model == "single"
                   else _double_starts(u, v, direction, s_min))
    best, err = _run_curve_fit(model, u, v, w, starts, lo, hi, pinned)
    if best is None:
        return None, f"curve_fit did not converge for the {model} logistic ({err or 'no finite solution'})"
    return Core(model, best[0], best[1], best[2], u.size, pinned), ""
