"""Errors of the midpoint noise level mu: what ``mu_err``, ``mu_err_unscaled`` and ``mu_err_jackknife`` mean.

* **Covariance, chi2-scaled** (``mu_err``): the standard error from the covariance of the weighted fit
  (``absolute_sigma=True``) times ``sqrt(max(1, chi2_red))`` (:class:`walking_noise.fit.core.Core`);
  ``mu_err_unscaled`` is the same without the factor. :func:`covariance_method` says which was applied.
* **Grid resolution**: a transition sharper than the level spacing locates mu only to within its bracketing levels,
  so ``mu_err`` is raised to (gap of those levels) / sqrt(12).
* **Seed jackknife** (``mu_err_jackknife``): leave one seed out, refit, and take the jackknife standard error of
  the refitted midpoints; needs >= 3 seed labels.

The report quotes the larger of ``mu_err`` and ``mu_err_jackknife``
(:func:`walking_noise.report.common.reported_error`). :func:`mu_errors` is the one entry of this stage: given the
prepared levels and a converged fit, it returns every error of mu it adds; a new kind of error belongs there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from walking_noise.fit.core import RESOLUTION_SIGMA_FRACTION, Core, fit_model
from walking_noise.fit.curves import MIN_LEVELS
from walking_noise.fit.levels import Levels, group, noise_error, unit_box
from walking_noise.fit.result import FitResult, finite_or_none


@dataclass
class MuErrors:
    """The errors :func:`mu_errors` adds to a converged fit: mu in noise-std units, ``log10_*`` in decades (log10
    axis only), and what the result must say about them."""

    mu_err: float | None
    log10_mu_err: float | None
    resolution_limited: bool = False  # |sigma| at its lower bound: the step is sharper than the grid
    raised: bool = False  # mu_err raised to the grid resolution
    mu_err_jackknife: float | None = None
    log10_mu_err_jackknife: float | None = None
    jackknife_n_seeds: int = 0  # 0: no jackknife (the notes say why)
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
        if self.jackknife_n_seeds:
            p["jackknife_n_seeds"] = self.jackknife_n_seeds
            if res.axis == "log10":
                res.log10_mu_err_jackknife = p["log10_mu_err_jackknife"] = self.log10_mu_err_jackknife
            res.mu_err_jackknife = p["mu_err_jackknife"] = self.mu_err_jackknife


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
    midpoint and covariance errors in user units): the grid-resolution floor, then the seed jackknife."""
    out = MuErrors(mu_err=res.mu_err, log10_mu_err=res.log10_mu_err)
    _resolution_error(out, chosen, data, res.mu, res.axis)
    if data.seeds is not None:
        se, k, note = seed_jackknife(data, chosen, res.axis)
        if se is None:
            out.notes.append(note)
        else:
            out.jackknife_n_seeds = k
            if res.axis == "log10":
                out.log10_mu_err_jackknife = finite_or_none(se)
            out.mu_err_jackknife = finite_or_none(noise_error(res.mu, se, res.axis))
    return out


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


def seed_jackknife(data: Levels, chosen: Core, axis: str) -> tuple[float | None, int, str]:
    """Leave-one-seed-out jackknife standard error of mu on the fit axis, and the number of seeds; (None, k, why)
    when it cannot be computed. Each refit stays in the frame, floor and bounds of the full fit and starts from it."""
    codes, labels = pd.factorize(data.seeds, use_na_sentinel=True)
    k = len(labels)
    if k < 3:
        return None, k, f"jackknife skipped: {k} distinct seed label(s) (< 3)"
    mus = []
    for i in range(k):
        keep = codes != i
        lv, mean, std, n = group(data.x[keep], data.y[keep])
        if lv.size < MIN_LEVELS[chosen.model]:
            return None, k, f"jackknife skipped: leaving out seed {labels[i]!r} leaves {lv.size} levels"
        u, v, w = unit_box(data.frame, axis, lv, mean, std, n, data.floor)
        core, err = fit_model(chosen.model, u, v, w, data.direction, data.s_min, [chosen.popt])
        if core is None or not math.isfinite(core.mu):
            return None, k, f"jackknife skipped: refit without seed {labels[i]!r} failed ({err or 'no midpoint'})"
        mus.append(core.mu)
    mus_f = np.array([data.frame.to_user("pos", m) for m in mus])
    return math.sqrt((k - 1) / k * float(np.sum((mus_f - mus_f.mean()) ** 2))), k, ""
