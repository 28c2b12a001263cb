"""A second opinion on mu: psignifit 4 (Schütt et al. 2016) fitted to the same runs as test-set counts.

psignifit fits a psychometric function ``psi(x) = gamma + (1 - gamma - lambda) S(x; threshold, width)`` with a
beta-binomial likelihood (overdispersion ``eta``) and priors, and reports credible intervals from a grid posterior.
With ``sigmoid="neg_logistic"`` (a falling logistic) and ``thresh_PC=0.5`` its ``threshold`` is where the curve is
half-way between its two asymptotes: the midpoint mu of Eq. 1, on the axis the data are given on (log10 of the noise
std for a log-axis fit). Its ``width`` spans S = 0.05 .. 0.95, ``2 ln 19 |sigma|`` for a logistic.

The runs are given as counts: the accuracies of the seeds at a level times the test-set size, summed (``k``), out of
``seeds x n_test`` trials. That is what psignifit models, and it is not what varies between the runs of a campaign:
a seed's offset is shared by all its levels, which a per-level overdispersion cannot represent, and the test set is
shared by all runs, so their scatter can be smaller than binomial. psignifit's intervals are therefore not the
calibrated ones (:mod:`walking_noise.fit.errors`); its point estimate is an independent check of the fit's mu.
psignifit is an optional dependency (``pip install psignifit``, tested with 4.3); nothing else imports this module.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np

from walking_noise.fit.levels import group


def psignifit_midpoint(noise_std: Any, accuracy: Any, n_test: int, axis: str = "linear") -> dict[str, Any]:
    """psignifit 4's midpoint of the runs (noise std, accuracy fraction) with ``n_test`` test samples each: ``mu``
    (noise std), its credible intervals ``lo68 .. hi68`` and ``lo95 .. hi95`` (noise std), ``sigma`` (fit-axis units,
    from psignifit's width), the overdispersion ``eta`` and the seconds it took. ImportError when psignifit is not
    installed (``pip install psignifit``)."""
    import psignifit

    x = np.asarray(noise_std, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    keep = np.isfinite(y) & ((x > 0) if axis == "log10" else np.ones(x.size, dtype=bool))
    levels, mean, _std, n = group(x[keep], y[keep])
    position = np.log10(levels) if axis == "log10" else levels
    data = np.column_stack([position, np.round(mean * n * n_test), n * n_test])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = psignifit.psignifit(data, sigmoid="neg_logistic", experiment_type="yes/no", thresh_PC=0.5,
                                     verbose=False)
    seconds = time.perf_counter() - started
    estimate = result.parameter_estimate_MAP
    to_noise = (lambda t: 10.0**t) if axis == "log10" else float
    intervals = result.confidence_intervals["threshold"]
    out: dict[str, Any] = {"mu": to_noise(estimate["threshold"]), "position": float(estimate["threshold"]),
                           "sigma": -float(estimate["width"]) / (2 * math.log(19.0)), "eta": float(estimate["eta"]),
                           "seconds": seconds}
    for name, key in (("68", "0.68"), ("95", "0.95")):
        lo, hi = intervals[key]
        out[f"lo{name}"], out[f"hi{name}"] = to_noise(lo), to_noise(hi)
    return out
