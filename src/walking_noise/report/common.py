"""What every table and figure of the report shares: series of runs, the fit axis, fits that never raise, output.

A *series* is the set of runs that differ only in ``seed`` and ``noise.noise_std`` (and in where they ran:
``data_dir``, ``checkpoint``, ``device``): one accuracy-vs-noise curve of the paper, fitted with Eq. 1 to give the
midpoint noise level mu. All fits go through :func:`walking_noise.fit.fit_midpoint`.

Fit axis (decided by the grid, not by the noise kind): ``log10`` when the positive noise levels of the series span
at least two decades (max/min >= 100) *and* their steps are more even on a log scale than on a linear one
(coefficient of variation of the log10 steps below that of the linear steps); otherwise ``linear``. The paper's
global multiplicative grids (0..~2) are linear, its additive and walking grids (1e-3..1e10) log-spaced. On the log
axis runs at noise 0 cannot be placed and are left out of the fit (the fit result notes it).

"Too few runs": a fit of Eq. 1 needs >= 4 distinct noise levels (4 parameters; ``fit.MIN_LEVELS_SINGLE``), the
double logistic >= 8. An output for which no series qualifies raises :class:`NotEnoughRuns`, which
:func:`walking_noise.report.write_report` lists in ``index.md`` with the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from walking_noise import fit as wfit
from walking_noise.fit.errors import FLAG_BRACKET, reported_error
from walking_noise.identity import LOCATION_KEYS
from walking_noise.registry import display_dataset, display_model
from walking_noise.results import config_columns

NOISE_STD = "noise.noise_std"
ACCURACY = "final_accuracy"
#: Config keys that vary *within* a series.
WITHIN_SERIES = ("seed", NOISE_STD)
#: How far above chance a fitted a_min must lie for a drop to count as partial (accuracy fraction).
PARTIAL_DROP_MARGIN = 0.1
#: Minimum distinct noise levels of a single-logistic fit (its four parameters).
MIN_LEVELS = wfit.MIN_LEVELS_SINGLE
MIN_LEVELS_DOUBLE = wfit.MIN_LEVELS_DOUBLE

#: Fit fields copied into every fit table (CSV), in this order. ``mu_err`` is the one error every table and figure
#: quotes (:func:`walking_noise.fit.errors.reported_error`, half the 68 % interval); the fit's covariance error, a
#: different number, is ``mu_err_covariance`` (one column, one meaning).
FIT_FIELDS = ("converged", "reason", "model", "axis", "mu", "mu_lo68", "mu_hi68", "mu_lo95", "mu_hi95", "error_flag",
              "interval_method", "interval_se", "interval_dof", "mu_err", "mu_err_covariance", "mu_err_unscaled",
              "mu_err_jackknife",
              "sigma", "sigma_err", "delta_a", "delta_a_err", "a_min", "a_min_err", "chi2_red", "n_levels", "n_runs",
              "spread_floor", "error_method", "mu_lower_bound", "mu_upper_bound", "n_dropped_nonfinite")


class NotEnoughRuns(ValueError):
    """An output cannot be made from the runs given; the message says what is missing."""


# ---- selecting runs ----------------------------------------------------------------------------------------


def series_columns(df: pd.DataFrame) -> list[str]:
    """Config columns that identify a series: every config key but the seed, the noise level and location keys."""
    return [c for c in config_columns(df) if c not in WITHIN_SERIES and c not in LOCATION_KEYS]


def column(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    """``df[name]``, or a column of ``default`` when the runs do not have that key (older documents)."""
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def select(df: pd.DataFrame, **conditions: Any) -> pd.DataFrame:
    """Rows whose flattened config matches: ``select(df, **{"noise.kind": "additive"})``; a tuple means "any of"."""
    mask = pd.Series(True, index=df.index)
    for name, wanted in conditions.items():
        values = column(df, name)
        if isinstance(wanted, (tuple, list, set)):
            mask &= values.isin(list(wanted))
        elif wanted is None:
            mask &= values.isna()
        else:
            mask &= (values == wanted).fillna(False).astype(bool)
    return df[mask]


def paper_runs(df: pd.DataFrame, kind: str | Sequence[str], placement: str) -> pd.DataFrame:
    """Completed runs with finite noise of ``kind`` (additive/multiplicative) at ``placement`` (global/walking)."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    out = select(df, **{"noise.kind": kinds, "noise.placement": placement})
    if "status" in out.columns:
        out = out[out["status"].fillna("COMPLETED") == "COMPLETED"]
    if ACCURACY not in out.columns or NOISE_STD not in out.columns:
        return out.iloc[0:0]
    return out[np.isfinite(pd.to_numeric(out[NOISE_STD], errors="coerce"))]


def _hashable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is None:
        return None
    if isinstance(value, (list, dict)):
        return repr(value)
    return value.item() if hasattr(value, "item") else value


@dataclass
class Series:
    """The runs of one accuracy-vs-noise curve and the config values that define it."""

    key: dict[str, Any]
    runs: pd.DataFrame

    @property
    def levels(self) -> np.ndarray:
        return np.unique(self.runs[NOISE_STD].to_numpy(dtype=float))

    def label(self, columns: Iterable[str]) -> str:
        return ", ".join(f"{short_name(c)}={display(self.key.get(c))}" for c in columns)


def series_of(df: pd.DataFrame, keys: Sequence[str] | None = None) -> list[Series]:
    """Split runs into series (by ``keys``, default :func:`series_columns`), in a stable order."""
    if df.empty:
        return []
    keys = list(keys if keys is not None else series_columns(df))
    if not keys:
        return [Series({}, df)]
    frame = pd.DataFrame({k: [_hashable(v) for v in column(df, k)] for k in keys}, index=df.index)
    groups = frame.groupby(keys, dropna=False, sort=False).indices
    out = []
    for positions in groups.values():
        first = frame.iloc[positions[0]]
        out.append(Series({k: _hashable(first[k]) for k in keys}, df.iloc[positions]))
    out.sort(key=lambda s: [sort_key(s.key[k]) for k in keys])
    return out


def sort_key(value: Any) -> tuple[int, Any]:
    """Numbers in numeric order, then strings, then missing values."""
    if value is None:
        return (2, "")
    if isinstance(value, (bool, int, float, np.number)):
        return (0, float(value))
    return (1, str(value))


def varying(series: Sequence[Series], exclude: Iterable[str] = ()) -> list[str]:
    """The key columns whose value differs between ``series`` (what a legend must tell apart)."""
    if not series:
        return []
    skip = set(exclude)
    cols = [c for c in series[0].key if c not in skip]
    return [c for c in cols if len({repr(s.key.get(c)) for s in series}) > 1]


def short_name(columnname: str) -> str:
    return columnname.split(".")[-1]


def display(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def dataset_name(name: Any) -> str:
    return display_dataset(name)


def model_name(name: Any) -> str:
    return display_model(name)


def slug(*parts: Any) -> str:
    """A file-name-safe join of ``parts``: ``slug("mlp", True)`` -> ``"mlp_bn"``."""
    words = []
    for p in parts:
        if isinstance(p, (bool, np.bool_)):
            words.append("bn" if p else "nobn")
        else:
            words.append(re.sub(r"[^A-Za-z0-9]+", "-", str(p)).strip("-"))
    return "_".join(w for w in words if w)


# ---- layer tables ------------------------------------------------------------------------------------------


def layer_labels(runs: pd.DataFrame) -> dict[int, str]:
    """``{index: "index name"}`` of the injection points, from the first run that stored its layer table."""
    for table in column(runs, "layer_table"):
        if isinstance(table, list) and table:
            return {int(r["index"]): f"{r['index']} {r['name']}" for r in table}
    return {}


def learnable_points(runs: pd.DataFrame) -> dict[int, tuple[int, str]]:
    """``{injection index: (ordinal among learnable layers 1.., layer type)}`` (the Layer IDs of Table II)."""
    for table in column(runs, "layer_table"):
        if isinstance(table, list) and table:
            out, ordinal = {}, 0
            for r in table:
                # kind: conv/linear (tables stored before kinds existed: the paper's short names)
                if r.get("parameters", 0) and "op" not in r and r.get(  # modules: Table II's layers
                        "kind", {"Conv": "conv", "FC": "linear"}.get(r.get("name"))) in ("conv", "linear"):
                    ordinal += 1
                    out[int(r["index"])] = (ordinal, str(r["name"]))
            return out
    return {}


def wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (at spaces): titles that fit their figure."""
    words, lines, line = str(text).split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines[:4])


def chance_level(runs: pd.DataFrame) -> float | None:
    """1 / number of classes (from the logits' shape in the layer table), the accuracy of guessing."""
    for table in column(runs, "layer_table"):
        if isinstance(table, list) and table:
            shape = table[-1].get("output_shape") or []
            if len(shape) == 1 and shape[0] > 0:
                return 1.0 / shape[0]
    return None


# ---- fitting -----------------------------------------------------------------------------------------------


def choose_axis(levels: Iterable[float]) -> str:
    """``"log10"`` for a log-spaced grid of noise levels, else ``"linear"`` (rule in the module docstring)."""
    pos = np.unique(np.asarray([v for v in levels if v is not None and np.isfinite(v) and v > 0], dtype=float))
    if pos.size < 3 or pos[-1] / pos[0] < 100:
        return "linear"
    lin, log = np.diff(pos), np.diff(np.log10(pos))

    def cv(steps: np.ndarray) -> float:
        return float(np.std(steps) / np.mean(steps))

    return "log10" if cv(log) < cv(lin) else "linear"


def overflowed(runs: pd.DataFrame) -> np.ndarray:
    """Per run: non-finite outputs in the averaged epochs of a run that did not diverge (float32 overflow)."""
    from walking_noise.export import nonfinite_outputs

    return np.array([nonfinite_outputs(v, a, d) for v, a, d in zip(
        column(runs, "val_nonfinite"), column(runs, "final_epochs_averaged"), column(runs, "diverged"))], dtype=bool)


def diverged(runs: pd.DataFrame) -> np.ndarray:
    """Per run: its weights became non-finite in training (its accuracy is chance level)."""
    return np.array([bool(v) if isinstance(v, (bool, np.bool_)) else False for v in column(runs, "diverged")],
                    dtype=bool)


def overflow_levels(series: Series) -> list[float]:
    """Noise levels of ``series`` where some run's outputs overflowed float32: arithmetic, not a measurement."""
    over = overflowed(series.runs)
    return sorted(set(series.runs[NOISE_STD].to_numpy(float)[over].tolist()))


def diverged_levels(series: Series) -> list[float]:
    """Noise levels of ``series`` with at least one diverged run."""
    return sorted(set(series.runs[NOISE_STD].to_numpy(float)[diverged(series.runs)].tolist()))


def fit_series(series: Series, *, axis: str | None = None, model: str = "single",
               spread_floor: float | None = None, plateaus: str = "fitted") -> wfit.FitResult:
    """Fit Eq. 1 (or the double logistic) to one series; never raises (a failure is a non-converged result).

    Levels where a run's outputs overflowed float32 are left out (they measure the arithmetic, not the noise): a
    curve that drops only there gives a lower bound on mu, never a mu. Diverged runs stay in at chance level.
    Results are cached by the series' data, so Table I and Fig. 1 (or Fig. 2, 3 and Table II) fit each curve once.
    ``spread_floor`` and ``plateaus`` are :func:`walking_noise.fit.fit_midpoint`'s (None: its default floor, 2 % of
    the accuracy range).
    """
    runs = series.runs
    x = runs[NOISE_STD].to_numpy(dtype=float)
    y = pd.to_numeric(runs[ACCURACY], errors="coerce").to_numpy(dtype=float)
    seeds = np.array([_hashable(s) for s in column(runs, "seed", 0)], dtype=object)
    bad = overflow_levels(series)
    keep = ~np.isin(x, bad)
    axis = axis or choose_axis(x[keep])
    fit = _cached_fit(tuple(x[keep].tolist()), tuple(y[keep].tolist()), tuple(seeds[keep].tolist()), axis, model,
                      chance_level(runs), spread_floor, plateaus)
    if not bad:
        return fit
    from dataclasses import replace

    return replace(fit, notes=[*fit.notes, f"{len(bad)} level(s) from {min(bad):g} left out: float32 overflow "
                                           f"(non-finite outputs), not a measurement"],
                   params={**fit.params, "overflow_from": min(bad)})


@lru_cache(maxsize=4096)
def _cached_fit(x: tuple, y: tuple, seeds: tuple, axis: str, model: str, chance: float | None,
                spread_floor: float | None = None, plateaus: str = "fitted") -> wfit.FitResult:
    try:
        return wfit.fit_midpoint(np.asarray(x, float), np.asarray(y, float), seeds=np.asarray(seeds, dtype=object),
                                 axis=axis, model=model, chance_level=chance, spread_floor=spread_floor,
                                 plateaus=plateaus)
    except Exception as err:  # noqa: BLE001 - a fit that fails is a result, not a crash of the report
        return wfit.FitResult(converged=False, reason=f"fit failed: {type(err).__name__}: {err}", model=model,
                              axis=axis, n_runs=len(x), n_levels=len(set(x)))


def fit_row(series: Series, fit: wfit.FitResult) -> dict[str, Any]:
    """One row of a fit table: the series' config values, its size and every fit field."""
    row: dict[str, Any] = dict(series.key)
    row["n_seeds"] = int(column(series.runs, "seed", 0).nunique())
    done = fit.to_dict()
    done["mu_err_covariance"], done["mu_err"] = done.get("mu_err"), reported_error(fit)
    for name in FIT_FIELDS:  # the fit's "model" (single/double) must not overwrite the network's
        row["fit_model" if name == "model" else name] = done.get(name)
    row["notes"] = "; ".join(str(n) for n in fit.notes)
    row["mu_extrapolated"] = fit.params.get("mu_extrapolated")
    row["n_diverged"] = int(diverged(series.runs).sum())
    row["diverged_levels"] = " ".join(f"{v:g}" for v in diverged_levels(series))
    row["overflow_from"] = fit.params.get("overflow_from")
    chance = chance_level(series.runs)
    # a drop that ends well above chance: its mu is the midpoint of a partial drop, not of the loss of all accuracy
    row["partial_drop"] = bool(fit.converged and chance is not None and fit.a_min is not None
                               and fit.a_min > chance + PARTIAL_DROP_MARGIN)
    return row


def half_drop_level(series: Series) -> float | None:
    """A model-free midpoint: the tested level whose mean accuracy is closest to half-way between max and min."""
    agg = wfit.aggregate_repeats(series.runs[NOISE_STD].to_numpy(float),
                                 pd.to_numeric(series.runs[ACCURACY], errors="coerce").to_numpy(float))
    if agg.empty:
        return None
    half = (agg["mean"].max() + agg["mean"].min()) / 2
    return float(agg["noise_std"].iloc[int(np.argmin(np.abs(agg["mean"].to_numpy() - half)))])


# ---- output ------------------------------------------------------------------------------------------------


def format_bound(lower: float | None, upper: float | None) -> str | None:
    """``> x`` or ``< x`` (3 significant digits) for a fit that only bounds mu, the lower bound first; None when it
    gives no bound. One notation for every table that prints a bound (Table I, the sensitivity table, the report's
    fit tables)."""
    if lower is not None:
        return f"> {lower:.3g}"
    if upper is not None:
        return f"< {upper:.3g}"
    return None


def format_pm(mu: float | None, err: float | None) -> str:
    """``"1.69 ± 0.05"``: the error to two significant digits, mu to the same decimal place."""
    if mu is None or not np.isfinite(mu):
        return ""
    if err is None or not np.isfinite(err) or err <= 0:
        return f"{mu:.3g}"
    if _needs_exponent(mu):
        return _with_exponent(format_pm, mu, err)
    decimals = max(0, 1 - int(math.floor(math.log10(err))))
    return f"{mu:.{decimals}f} ± {err:.{decimals}f}"


def _needs_exponent(mu: float) -> bool:
    return mu != 0 and (abs(mu) >= 1e5 or abs(mu) < 1e-3)


def _with_exponent(fmt: Any, mu: float, *errors: float) -> str:
    """``(1.23 ± 0.04)e7``: ``fmt`` applied to mu and its errors scaled by mu's power of ten."""
    exp = int(math.floor(math.log10(abs(mu))))
    scale = 10.0**exp
    return f"({fmt(mu / scale, *(e / scale for e in errors))})e{exp}"


def format_interval(mu: float | None, lo: float | None, hi: float | None, axis: str = "linear",
                    flag: str = "") -> str:
    """The quoted value of mu with its 68 % interval and flag: ``"0.905 ± 0.004"`` (linear fit), ``"1.60 +0.12/-0.10"``
    (log10 fit: symmetric in log10 mu, so asymmetric in mu; ``± x`` where the two sides agree to two digits),
    ``"1.4 (bracketed between levels 1 and 1.78)"``; a flag that the interval is not calibrated follows in
    parentheses. Empty without a mu."""
    if mu is None or not np.isfinite(mu):
        return ""
    if flag == FLAG_BRACKET and lo is not None and hi is not None:
        return f"{mu:.3g} (bracketed between levels {lo:.3g} and {hi:.3g})"
    note = f" ({flag})" if flag else ""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mu:.3g}{note}"
    up, down = hi - mu, mu - lo
    if axis != "log10" or format_pm(mu, up) == format_pm(mu, down):
        return format_pm(mu, (up + down) / 2 if axis == "log10" else up) + note
    return _format_asymmetric(mu, up, down) + note


def _format_asymmetric(mu: float, up: float, down: float) -> str:
    """``"1.60 +0.12/-0.10"``: both sides to two significant digits of the smaller, mu to the same place."""
    small = min(up, down)
    if not small > 0:
        return f"{mu:.3g}"
    if _needs_exponent(mu):
        return _with_exponent(_format_asymmetric, mu, up, down)
    decimals = max(0, 1 - int(math.floor(math.log10(small))))
    return f"{mu:.{decimals}f} +{up:.{decimals}f}/-{down:.{decimals}f}"


def format_fit(fit: wfit.FitResult | dict[str, Any]) -> str:
    """:func:`format_interval` of a fit, or of a fit-table row (a dict or pandas row with the FIT_FIELDS)."""
    get = (lambda k: getattr(fit, k)) if isinstance(fit, wfit.FitResult) else (lambda k: _none_if_nan(fit.get(k)))
    return format_interval(get("mu"), get("mu_lo68"), get("mu_hi68"), get("axis") or "linear",
                           get("error_flag") or "")


def _none_if_nan(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plain_log_ticks(axis: Any, minor: bool = True) -> None:
    """Tick labels of a log axis as plain numbers (``3``, ``0.01``, ``1e+06``) instead of ``3x10^0``;
    ``minor``: also label the 2x and 5x minor ticks (for axes spanning about one decade)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
                             if minor else NullFormatter())


def new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    """A figure that needs no GUI backend (Agg canvas), independent of pyplot's global state."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: Path) -> Path:
    """Save at 110 dpi, the canvas grown to hold every artist: a legend below a wide panel can be wider than the
    figure (Fig. 2 of a 33-point model cut its notes off at both sides)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.08)
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def panel_grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return int(math.ceil(n / cols)), cols


def accuracy_points(series: Series) -> pd.DataFrame:
    """Mean and standard deviation (over seeds) of the final accuracy per noise level."""
    return wfit.aggregate_repeats(series.runs[NOISE_STD].to_numpy(float),
                                  pd.to_numeric(series.runs[ACCURACY], errors="coerce").to_numpy(float))
