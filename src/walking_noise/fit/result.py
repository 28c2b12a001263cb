"""The outcome of a fit: :class:`FitResult`, plain Python values only, and how a fit that found no midpoint says so."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from walking_noise.fit.curves import double_logistic, logistic
from walking_noise.files import to_plain


def finite_or_none(v: Any) -> float | None:
    """``v`` as a plain float, or None when it is missing or not a finite number (what a result field holds)."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class FitResult:
    """Outcome of :func:`walking_noise.fit.fit_midpoint`. All fields are plain Python values.

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
        Leave-one-seed-out jackknife standard error (needs >= 2 seeds).
    mu_lo68, mu_hi68, mu_lo95, mu_hi95 : float or None
        The quoted 68 % and 95 % intervals of mu (noise-std units; on a log10 axis symmetric in log10 mu, so
        asymmetric in mu): :mod:`walking_noise.fit.errors` says how they are made and why.
        :func:`walking_noise.fit.errors.reported_error` is half the 68 % interval.
    interval_method : str
        How the intervals were made (seed jackknife with Student t, the bracketing levels, the covariance).
    interval_se, interval_dof : float or None, int or None
        Scale (fit-axis units: decades on the log10 axis) and degrees of freedom (None: normal) of the
        intervals' law.
    error_flag : str
        Empty when the interval is calibrated; else why it is not ("2 seeds: 1 dof", "bracketed between
        levels", "1 seed: error not calibrated", ...), printed beside the number.
    jackknife_mu : dict
        mu on the fit axis refitted without each seed, by seed label (str): what paired comparisons of two
        fits with the same seeds resample (:mod:`walking_noise.fit.compare`).
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
    mu_lo68: float | None = None
    mu_hi68: float | None = None
    mu_lo95: float | None = None
    mu_hi95: float | None = None
    interval_method: str = ""
    interval_se: float | None = None
    interval_dof: int | None = None
    error_flag: str = ""
    jackknife_mu: dict = field(default_factory=dict)

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


def not_converged(res: FitResult, reason: str, *, lower: float | None = None, upper: float | None = None,
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
    res.mu_lo68 = res.mu_hi68 = res.mu_lo95 = res.mu_hi95 = res.interval_se = res.interval_dof = None
