"""Input preparation: runs grouped into noise levels (mean, spread, repeats), and the frame the fit works in.

A fit sees the level means, not the runs (Eq. 2). :func:`prepare_levels` drops what cannot be fitted and groups the
rest into :class:`Levels`; :func:`fit_frame` then places the levels in the unit box of a :class:`Frame` (tested
noise range and level means both mapped to [0, 1], on the linear or log10 axis), where the numerical core
(:mod:`walking_noise.fit.core`) fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

from walking_noise.fit.core import RESOLUTION_SIGMA_FRACTION, level_errors, spread_floor as floor_of_spread
from walking_noise.fit.curves import KINDS, MIN_LEVELS, MODELS, NAMES
from walking_noise.fit.result import FitResult

#: ``fit_midpoint(axis=...)``: fit in noise std, or in log10 of it (curves spanning many decades).
AXES = ("linear", "log10")


def validate(noise_std: Any, accuracy: Any, seeds: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The runs as float arrays (and seed labels); ValueError for what only a programming error gives."""
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
            raise ValueError(f"seeds must be a 1-D array with one label per run; got shape {s.shape}, "
                             f"expected {x.shape}")
    return x, y, s


def group(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    x, y, _ = validate(noise_std, accuracy)
    ok = np.isfinite(y)
    lv, mean, std, n = group(x[ok], y[ok])
    df = pd.DataFrame({"noise_std": lv, "mean": mean, "std": std, "n": n.astype(int)})
    df.attrs["n_dropped_nonfinite"] = int((~ok).sum())
    return df


class Frame:
    """Normalisation between user units and the internal unit box.

    Fit axis ``f`` (x or log10 x) maps to ``u = (f - f_lo) / f_span`` in [0, 1];
    accuracy maps to ``v = (y - y_base) / y_scale`` with the level means in [0, 1].
    """

    def __init__(self, f_lo: float, f_span: float, y_base: float, y_scale: float):
        self.f_lo, self.f_span, self.y_base, self.y_scale = f_lo, f_span, y_base, y_scale

    def to_user(self, kind: str, val: float) -> float:
        """A parameter of ``kind`` (pos, width, height, offset) from the unit box to user units (fit axis)."""
        if kind == "pos":
            return self.f_lo + self.f_span * val
        if kind == "width":
            return self.f_span * val
        if kind == "height":
            return self.y_scale * val
        return self.y_base + self.y_scale * val

    def err_to_user(self, kind: str, err: float) -> float:
        """An error of a parameter of ``kind`` from the unit box to user units (a scale, no shift)."""
        return (self.f_span if kind in ("pos", "width") else self.y_scale) * err

    def to_internal(self, kind: str, val: float) -> float:
        """A parameter of ``kind`` from user units (fit axis) into the unit box."""
        if kind == "pos":
            return (val - self.f_lo) / self.f_span
        if kind == "width":
            return val / self.f_span
        if kind == "height":
            return val / self.y_scale
        return (val - self.y_base) / self.y_scale


@dataclass
class Levels:
    """The runs of one fit grouped by noise level, and (after :func:`fit_frame`) the unit box the logistic is fitted
    in. Accuracies in the units given, noise levels in noise-std units."""

    x: np.ndarray  # noise std of each run kept (the jackknife regroups them)
    y: np.ndarray  # accuracy of each run kept
    seeds: np.ndarray | None  # seed label of each run kept
    levels: np.ndarray  # distinct noise levels, ascending
    mean: np.ndarray  # mean accuracy per level
    std: np.ndarray  # spread over repeats per level (ddof=1; 0 for one repeat)
    n: np.ndarray  # repeats per level
    floor: float  # spread floor (accuracy units)
    frame: Frame | None = None
    u: np.ndarray | None = None  # level positions on the fit axis, scaled to [0, 1]
    v: np.ndarray | None = None  # level means, scaled to [0, 1]
    w: np.ndarray | None = None  # errors of the level means, in the scale of v
    direction: float = -1.0  # -1: accuracy falls with noise
    s_min: float = 0.0  # the smallest |sigma| the grid resolves


def check_arguments(axis: str, model: str, spread_floor: float | None, p0: Any) -> None:
    """ValueError for an option a caller cannot mean (unknown axis or model, bad floor, p0 of the wrong size)."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}; got {axis!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    if spread_floor is not None and not (math.isfinite(float(spread_floor)) and float(spread_floor) >= 0):
        raise ValueError(f"spread_floor must be a finite number >= 0; got {spread_floor!r}")
    _check_p0(p0)


def p0_internal(p0: Any, model: str, frame: Frame, axis: str) -> np.ndarray | None:
    """User starting values (midpoints in noise-std units) in the unit box; None when they are not for ``model``."""
    if p0 is None:
        return None
    names, kinds = NAMES[model], KINDS[model]
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
        if not (set(NAMES["single"]) <= set(p0) or set(NAMES["double"]) <= set(p0)):
            raise ValueError(f"p0 dict needs keys {NAMES['single']} or {NAMES['double']}")
    elif n not in (4, 7):
        raise ValueError("p0 must have 4 (single) or 7 (double) values in the order of logistic()/double_logistic()")



def prepare_levels(res: FitResult, x: np.ndarray, y: np.ndarray, s: np.ndarray | None, axis: str, model: str,
                   spread_floor: float | None) -> Levels | None:
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
    lv, mean, std, n = group(x, y)
    res.n_levels = int(lv.size)
    need = MIN_LEVELS["double" if model == "double" else "single"]
    if lv.size < need:
        res.reason = f"too few distinct noise levels: {lv.size} < {need} needed for the {res.model} logistic"
        res.error_method = "none"
        return None
    floor, res.spread_floor_rule = floor_of_spread(mean, std, spread_floor)
    res.spread_floor = float(floor)
    return Levels(x, y, s, lv, mean, std, n, floor)


def fit_frame(data: Levels, axis: str) -> Levels:
    """``data`` placed in its unit box: the frame, the normalised levels and weights, the direction of the curve and
    the smallest width the grid resolves (a new value; ``data`` is unchanged)."""
    f_axis = np.log10(data.levels) if axis == "log10" else data.levels
    frame = Frame(float(f_axis[0]), float(f_axis[-1] - f_axis[0]), float(data.mean.min()),
                  float(data.mean.max() - data.mean.min()))
    u, v, w = unit_box(frame, axis, data.levels, data.mean, data.std, data.n, data.floor)
    third = max(1, data.levels.size // 3)
    direction = -1.0 if v[:third].mean() >= v[-third:].mean() else 1.0
    s_min = RESOLUTION_SIGMA_FRACTION * float(np.median(np.diff(u)))
    return replace(data, frame=frame, u=u, v=v, w=w, direction=direction, s_min=s_min)


def unit_box(frame: Frame, axis: str, levels: np.ndarray, mean: np.ndarray, std: np.ndarray, n: np.ndarray,
             floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels in ``frame``'s unit box: positions u, means v and their errors w (Eq. 2, floored); the jackknife
    places its refits in the frame of the full fit, so that all share one set of bounds."""
    f_axis = np.log10(levels) if axis == "log10" else levels
    return (frame.to_internal("pos", f_axis), frame.to_internal("offset", mean),
            frame.to_internal("height", level_errors(std, n, floor)))


def axis_to_noise(f: float, axis: str) -> float:
    """A position on the fit axis in noise-std units (inf beyond float range on the log axis)."""
    if axis == "log10":
        return 10.0**f if f < 308 else float("inf")
    return f


def noise_error(noise: float, err: float, axis: str) -> float:
    """The error in noise-std units of a position ``noise`` whose fit-axis error is ``err`` (on the log axis by
    the delta method: ``noise * ln(10) * err``)."""
    return noise * math.log(10.0) * err if axis == "log10" else err
