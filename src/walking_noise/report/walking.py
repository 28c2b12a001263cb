"""Walking noise (paper sections V-VI, appendix C-D): Fig. 2/10/11 (mu per injection point, with which points
differ: :mod:`walking_noise.report.differences`), Fig. 3 (a_min per point, multiplicative) and Fig. 5/8/9 (preserved
accuracy); Table II (weight magnitude ratio) is :mod:`walking_noise.report.weights`.

Every walking series is one injection point (``noise.injection_layer``) in one setting: the *role* of a series is
"noise only at inference" (``noise.phase = inference``), "noise in training" or "noise in training, clamped weights"
(``weight_clamping``), the three curves of the paper's Fig. 2. The x axis of every per-point figure is the model's
list of injection points, labelled "index name" from the stored layer table of the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.common import (
    MIN_LEVELS, NOISE_STD, NotEnoughRuns, Series, accuracy_points, chance_level, column, dataset_name, display,
    fit_row, fit_series, layer_labels, model_name, new_figure,
    overflow_levels, paper_runs, plain_log_ticks, save_figure, series_of, short_name, slug, sort_key, varying, wrap,
    write_csv, write_text,
)
from walking_noise.report.differences import differences_markdown, figure_differences
from walking_noise.sites import SITES

#: Config columns that vary *within* one figure of walking noise (points and the three roles).
WITHIN_FIGURE = ("noise.injection_layer", "noise.phase", "weight_clamping", "noise.site")
ROLE_STYLE = {  # the paper's colours: blue baseline, orange trained with noise, green trained and clamped
    "noise only at inference": "tab:blue",
    "noise in training": "tab:orange",
    "noise in training, clamped weights": "tab:green",
    "noise at inference, clamped weights": "tab:purple",
}


SITE_MARKERS = {name: site.marker for name, site in SITES.items()}  # the site table's (walking_noise.sites)
SITE_COLORS = {name: site.color for name, site in SITES.items()}
ROLE_LINES = {"noise only at inference": ":", "noise in training": "-", "noise in training, clamped weights": "--",
              "noise at inference, clamped weights": "-."}


def role(key: dict[str, Any]) -> str:
    """Which of the paper's curves a walking series belongs to."""
    inference = key.get("noise.phase") == "inference"
    clamped = bool(key.get("weight_clamping"))
    if inference:
        return "noise at inference, clamped weights" if clamped else "noise only at inference"
    return "noise in training, clamped weights" if clamped else "noise in training"


def curve(key: dict[str, Any]) -> tuple[str, str]:
    """(role, noise site) of a walking series: one curve of a per-point figure, coloured by role, marked by site."""
    return role(key), str(key.get("noise.site") or "activation")


def curve_label(c: tuple[str, str], sites: set[str]) -> str:
    return c[0] + (f", {c[1]} site" if len(sites) > 1 or c[1] != "activation" else "")


def _curve_style(c: tuple[str, str], sites: set[str]) -> tuple[str, str, str]:
    """(colour, marker, line style) of a curve: one site: colour by role (the paper's); several: colour by site."""
    if len(sites) > 1:
        return SITE_COLORS[c[1]], SITE_MARKERS[c[1]], ROLE_LINES[c[0]]
    return ROLE_STYLE[c[0]], SITE_MARKERS[c[1]], "-"


def _curves(group: list[Series]) -> list[tuple[str, str]]:
    return sorted({curve(s.key) for s in group}, key=lambda c: (list(ROLE_STYLE).index(c[0]),
                                                                  list(SITE_MARKERS).index(c[1])))


def walking_series(df: pd.DataFrame, kind: str) -> list[Series]:
    return series_of(paper_runs(df, kind, "walking"))


def figure_groups(series: list[Series]) -> list[tuple[dict[str, Any], list[Series]]]:
    """Series grouped into figures: same config except the injection point and the role."""
    keys = [c for c in (series[0].key if series else {}) if c not in WITHIN_FIGURE]
    groups: dict[tuple, list[Series]] = {}
    for s in series:
        groups.setdefault(tuple(repr(s.key.get(c)) for c in keys), []).append(s)
    out = [({c: g[0].key.get(c) for c in keys}, g) for g in groups.values()]
    out.sort(key=lambda t: [sort_key(t[0].get(c)) for c in keys])
    return out


def group_title(key: dict[str, Any], extra: list[str], runs: pd.DataFrame | None = None) -> str:
    """A per-point figure's title: model, dataset, BatchNorm, noise kind, what else sets the figure apart and, from
    ``runs``, how long they trained and how many seeds each point has."""
    bn = "with BatchNorm" if key.get("batchnorm") else "without BatchNorm"
    more = [f"{short_name(c)}={display(key.get(c))}" for c in extra if c not in ("dataset", "model", "batchnorm")
            and c not in WITHIN_FIGURE]
    return (f"{model_name(key.get('model'))} on {dataset_name(key.get('dataset'))}, {bn}, "
            f"{key.get('noise.kind')} walking noise" + (f" ({', '.join(more)})" if more else "")
            + (f"; {training_note(runs)}" if runs is not None else ""))


def training_note(runs: pd.DataFrame) -> str:
    """``10 epochs, 3 seeds`` (ranges where the runs differ): what a reader needs to weigh a figure's points."""
    def span(values: Any, unit: str) -> str:
        vals = sorted({int(v) for v in values if pd.notna(v)})
        if not vals:
            return f"? {unit}"
        return f"{vals[0]} {unit}" if len(vals) == 1 else f"{vals[0]}-{vals[-1]} {unit}"

    seeds = runs.groupby([c for c in ("noise.injection_layer", NOISE_STD) if c in runs.columns])["seed"].nunique() \
        if "seed" in runs.columns else pd.Series(dtype=int)
    return f"{span(column(runs, 'training.epochs'), 'epochs')}, {span(seeds, 'seeds')} per level"


def group_slug(key: dict[str, Any], extra: list[str]) -> str:
    more = [key.get(c) for c in extra if c not in ("dataset", "model", "batchnorm") and c not in WITHIN_FIGURE]
    return slug(key.get("dataset"), key.get("model"), bool(key.get("batchnorm")), *more)


def point_axis(ax: Any, runs: pd.DataFrame, used: set[int]) -> dict[int, str]:
    labels = layer_labels(runs) or {i: str(i) for i in sorted(used)}
    for i in used:
        labels.setdefault(i, str(i))
    ax.set_xticks(sorted(labels))
    ax.set_xticklabels([labels[i] for i in sorted(labels)], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(min(labels) - 0.5, max(labels) + 0.5)
    ax.set_xlabel("injection point (index name)")
    return labels


def _point_of(s: Series) -> int:
    return int(s.key["noise.injection_layer"])


def walking_fit_table(series: list[Series]) -> pd.DataFrame:
    """One row per walking series: its config values, role, point label and every fit field."""
    rows = []
    for s in series:
        row = fit_row(s, fit_series(s))
        point = s.key.get("noise.injection_layer")
        row["role"] = role(s.key)
        row["site"] = curve(s.key)[1]
        row["point"] = layer_labels(s.runs).get(int(point), str(point)) if point is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class PointMark:
    """One injection point of a Fig. 2 curve: where it is drawn and as what."""

    x: float  # injection point, shifted so that the curves of one point do not overlap
    y: Any  # mu (kind "fit") or the bound on it; None: omitted
    kind: str  # "fit", "lower_bound" (mu above y), "upper_bound" (mu below y) or "omitted"
    diverged: bool = False  # some of its runs diverged (a red cross where y is drawn)
    lo: float | None = None  # the quoted 68 % interval of mu (fits; None where there is none)
    hi: float | None = None
    partial: bool = False  # a fit of a partial drop (hollow marker)
    flag: str = ""  # why its interval is not calibrated (dashed error bar), empty if it is
    letters: str = ""  # the points of its curve that cannot be told apart from it share a letter
    segment: int = 0  # fits with the same segment are joined by the curve's line


@dataclass
class CurveMarks:
    """One curve of a Fig. 2 panel: its legend label, style and points in the order of the injection points."""

    label: str
    color: str
    marker: str
    line: str
    points: list[PointMark]

    @property
    def fits(self) -> list[PointMark]:
        return [m for m in self.points if m.kind == "fit"]


@dataclass
class WalkingMarks:
    """What one Fig. 2 panel shows: its curves, the points named below it, and which legend notes it needs."""

    curves: list[CurveMarks]
    omitted: list[str] = field(default_factory=list)
    shown: dict[str, bool] = field(  # which kinds of marker the panel has, so that the legend explains only those
        default_factory=lambda: dict.fromkeys(("bound", "partial", "diverged", "overflow", "flag", "letters",
                                               "alike"), False))
    alike: list[tuple[PointMark, PointMark]] = field(default_factory=list)  # two curves' fits, not told apart

    @property
    def drawn(self) -> bool:
        """Whether the panel has anything to draw: a fit or a bound at some point."""
        return any(m.y is not None for c in self.curves for m in c.points)


def walking_marks(group: list[Series], rows: list[Any], alike: Sequence[tuple[int, int]] = ()) -> WalkingMarks:
    """Sort the walking series of one panel into marks (plain data, no drawing): ``rows[i]`` is the row of
    :func:`walking_fit_table` of ``group[i]`` (with its ``letters`` where the points were compared). The marks say
    which points are midpoints, bounds, partial drops, diverged or omitted, where a curve's line breaks (at every
    point without a converged fit), and which fits of two curves at one point (``alike``: pairs of indices into
    ``group``) cannot be told apart."""
    curves = _curves(group)
    sites = {c[1] for c in curves}
    out = WalkingMarks([])
    mark_of: dict[int, PointMark] = {}
    for r_i, c in enumerate(curves):
        members = sorted([(k, s, row) for k, (s, row) in enumerate(zip(group, rows)) if curve(s.key) == c],
                         key=lambda t: t[1].key["noise.injection_layer"])
        shift = (r_i - (len(curves) - 1) / 2) * 0.12
        color, marker, line = _curve_style(c, sites)
        marks = CurveMarks(curve_label(c, sites), color, marker, line, [])
        segment = 0  # the curve is drawn only between neighbouring points that both have a fit
        for k, s, row in members:
            mark = _point_mark(row, float(s.key["noise.injection_layer"]) + shift, segment)
            mark_of[k] = mark
            segment = mark.segment
            marks.points.append(mark)
            if mark.kind == "omitted":
                out.omitted.append(f"{row['point']} ({marks.label}): {str(row['reason'])[:70]}")
            out.shown["bound"] |= mark.kind in ("lower_bound", "upper_bound")
            out.shown["overflow"] |= mark.kind == "lower_bound" and _overflowed(row)
            out.shown["diverged"] |= mark.diverged
            out.shown["partial"] |= mark.partial
            out.shown["flag"] |= bool(mark.flag)
            out.shown["letters"] |= bool(mark.letters)
        out.curves.append(marks)
    out.alike = [(mark_of[i], mark_of[j]) for i, j in alike
                 if mark_of[i].kind == "fit" and mark_of[j].kind == "fit"]
    out.shown["alike"] = bool(out.alike)
    return out


def _point_mark(row: Any, x: float, segment: int) -> PointMark:
    """The mark of one fit-table row; ``segment`` counts the breaks of the line before it."""
    segment += not row["converged"]  # a bound or an omitted point: no line passes it
    if row["converged"]:
        lo, hi = (_finite(row.get(name)) for name in ("mu_lo68", "mu_hi68"))
        return PointMark(x, row["mu"], "fit", bool(row["n_diverged"]), lo, hi, bool(row["partial_drop"]),
                         str(row.get("error_flag") or ""), str(row.get("letters") or ""), segment)
    if row.get("mu_lower_bound") is not None and np.isfinite(row["mu_lower_bound"]):
        return PointMark(x, row["mu_lower_bound"], "lower_bound", bool(row["n_diverged"]), segment=segment)
    if row.get("mu_upper_bound") is not None and np.isfinite(row["mu_upper_bound"]):
        return PointMark(x, row["mu_upper_bound"], "upper_bound", bool(row["n_diverged"]), segment=segment)
    return PointMark(x, None, "omitted", segment=segment)


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _overflowed(row: Any) -> bool:
    """Levels of this point were left out as float32 overflow (its bound says "mu above the last level kept")."""
    return row.get("overflow_from") is not None and np.isfinite(row["overflow_from"])


#: A lower bound more than this factor above the highest fitted midpoint (its interval's top) of a panel is drawn at
#: that height with its value written beside it.
BOUND_CLIP = 30.0


def _draw_walking_marks(ax: Any, marks: WalkingMarks) -> None:
    """Draw the curves of one Fig. 2 panel and the legend entries that explain its kinds of marker.

    A lower bound far above every fitted midpoint (noise after a ResNet's last addition leaves the accuracy at 93 %
    up to s = 3e11) is drawn at the top of the axis with its value written beside it, so that it does not squeeze
    the measured midpoints into one line."""
    fitted = [m.hi if m.hi is not None else m.y for c in marks.curves for m in c.fits]
    top = BOUND_CLIP * max(fitted) if fitted else None
    for c in marks.curves:
        for m in c.points:
            y = m.y
            if m.kind == "lower_bound" and top is not None and y > top:
                y = top
                ax.annotate(f"> {m.y:.1g}", (m.x, y), xytext=(0, -10), textcoords="offset points", ha="center",
                            va="top", fontsize=6, color=c.color, rotation=90)
            if m.kind in ("lower_bound", "upper_bound"):
                ax.plot([m.x], [y], "^" if m.kind == "lower_bound" else "v", mfc="none", mec=c.color, ms=8)
            if m.diverged:
                ax.plot([m.x], [y], "x", color="tab:red", ms=10, mew=1.5)
        fits = c.fits
        if not fits:
            ax.plot([], [], c.marker, color=c.color, label=f"{c.label} (no converged fit)")
            continue
        xs_a, ys_a = np.array([m.x for m in fits]), np.array([m.y for m in fits])
        part = np.array([m.partial for m in fits])
        for flagged in (False, True):  # a dashed bar: an interval that is not calibrated
            bars = [m for m in fits if bool(m.flag) == flagged and m.lo is not None and m.hi is not None]
            if bars:
                drawn = ax.errorbar([m.x for m in bars], [m.y for m in bars], fmt="none", lw=1, color=c.color,
                                    capsize=3, yerr=np.array([[m.y - m.lo for m in bars], [m.hi - m.y for m in bars]]))
                if flagged:
                    drawn[2][0].set_linestyle("--")
        for m in fits:
            if m.letters:
                ax.annotate(m.letters, (m.x, m.hi if m.hi is not None else m.y), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6, color=c.color)
        breaks = np.flatnonzero(np.diff([m.segment for m in fits])) + 1
        ax.plot(np.insert(xs_a, breaks, np.nan), np.insert(ys_a, breaks, np.nan), lw=1, color=c.color, ls=c.line)
        ax.plot(xs_a[~part], ys_a[~part], c.marker, ms=5, color=c.color, ls="none")
        ax.plot([], [], c.marker, ms=5, lw=1, color=c.color, ls=c.line, label=c.label)  # the legend's sample
        if part.any():
            ax.plot(xs_a[part], ys_a[part], c.marker, ms=7, mfc="white", mec=c.color, mew=1.5, ls="none")
    for a, b in marks.alike:
        ax.plot([a.x, b.x], [a.y, b.y], ":", color="0.35", lw=1.2)
    # explain each kind of marker only where the figure has one
    if marks.shown["letters"]:
        ax.plot([], [], " ", label="letters: points of one curve sharing a letter cannot be told apart (paired seed "
                                   "jackknife, Holm over the figure, 5 %)")
    if marks.shown["alike"]:
        ax.plot([], [], ":", color="0.35", lw=1.2, label="dotted: two curves at this point cannot be told apart")
    if marks.shown["flag"]:
        ax.plot([], [], "--", color="gray", lw=1, label="dashed bar: interval not calibrated (2 seeds: 1 dof; or the "
                                                         "drop lies between two levels: the bar is their bracket)")
    if marks.shown["partial"]:
        ax.plot([], [], "o", mfc="white", mec="gray", mew=1.5, label="partial drop: fitted a_min > chance + 10 "
                                                                       "points (mu of a smaller drop)")
    if marks.shown["bound"]:
        ax.plot([], [], "^", mfc="none", mec="gray", label="no converged fit: a bound on mu (up: mu above it, "
                                                           "down: below)" + ("; float32 overflow levels left out"
                                                                             if marks.shown["overflow"] else ""))
    if marks.shown["diverged"]:
        ax.plot([], [], "x", color="tab:red", mew=1.5, label="some runs diverged (scored at chance)")


def fig2_walking_mu(df: pd.DataFrame, out_dir: str | Path, *, kind: str = "additive") -> list[Path]:
    """Fig. 2 (and 10, 11): walking midpoint noise level mu per injection point, log y axis.

    One curve per role (colour: noise only at inference, noise in training, noise in training with clamped weights)
    and noise site (marker: circle activation, square weight, diamond MAC). Filled markers with error bars:
    converged fits of a full drop. Hollow markers: converged fits of a partial drop
    (the fitted a_min lies more than 10 points above chance): mu there is the midpoint of a smaller drop, not of the
    loss of all accuracy. Hollow triangles: fits that did not converge but bound mu (the curve never left its upper
    plateau: mu > largest level measured, triangle up, also where levels beyond were left out as float32 overflow;
    or started at chance: mu < smallest, triangle down; or only the observed half-way crossing bounds mu). Red
    crosses: the point's runs include diverged ones (scored at chance). Points without a fit or bound are omitted
    and named below the plot (a panel whose every point is omitted is not drawn). A curve's line joins only
    neighbouring points that both have a converged fit: across a bound or an omitted point it breaks. One PNG per
    dataset/model/BatchNorm
    (``fig2_walking_mu_<kind>_<dataset>_<model>_<bn|nobn>.png``) and a CSV of all fits.
    """
    out_dir = Path(out_dir)
    series = walking_series(df, kind)
    if not any(len(s.levels) >= MIN_LEVELS for s in series):
        raise NotEnoughRuns(f"Fig. 2 ({kind}): no walking {kind} series with >= {MIN_LEVELS} noise levels "
                            f"({len(series)} series found)")
    table = walking_fit_table(series)
    extra = varying(series)
    by_id = {id(s): i for i, s in enumerate(series)}
    pairs, pages, figures = [], [], []
    for key, group in figure_groups(series):
        sites = {curve(s.key)[1] for s in group}
        found = figure_differences(group, [fit_series(s) for s in group], _point_of, lambda s: curve(s.key),
                                   lambda c, sites=sites: curve_label(c, sites))
        for k, s in enumerate(group):
            table.loc[by_id[id(s)], "letters"] = found.letters.get(k, "")
        title = group_title(key, extra)
        if not found.pairs.empty:
            pairs.append(found.pairs.assign(figure=title))
        pages += differences_markdown(title, found, group, _point_of, lambda s: curve(s.key),
                                      lambda c, sites=sites: curve_label(c, sites))
        figures.append((key, group, found.alike))
    paths = [write_csv(table, out_dir / f"fig2_walking_mu_{kind}.csv")]
    if pairs:
        paths += [write_csv(pd.concat(pairs, ignore_index=True), out_dir / f"fig2_walking_differences_{kind}.csv"),
                  write_text("\n".join([f"# Which points differ: walking {kind} noise", "",
                                        "Differences of log10 mu (decades) between the points of a curve and "
                                        "between curves at a point: paired seed jackknife, Student t, Holm over "
                                        "the pairs of each figure (walking_noise.fit.compare); every pair is in "
                                        f"fig2_walking_differences_{kind}.csv.", "", *pages]),
                             out_dir / f"fig2_walking_differences_{kind}.md")]
    for key, group, alike in figures:
        marks = walking_marks(group, [table.iloc[by_id[id(s)]] for s in group], alike)
        if not marks.drawn:  # no point of the panel has a fit or a bound (its rows stay in the CSV): no empty figure
            continue
        lower = marks.shown["partial"] or any(m.kind == "lower_bound" for c in marks.curves for m in c.points)
        fig = new_figure(7.5, 6.8 if lower else 5.2)
        if lower:  # a panel of end accuracy under the midpoints: the x axis and the notes go under it
            ax, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
        else:
            ax = bottom = fig.subplots()
        runs = pd.concat([s.runs for s in group])
        _draw_walking_marks(ax, marks)
        point_axis(bottom, runs, {int(s.key["noise.injection_layer"]) for s in group})
        if lower:
            _draw_end_accuracy(bottom, group, marks)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_ylabel("midpoint noise level mu (noise std)")
        ax.set_title(wrap("Walking noise: " + group_title(key, extra, runs), 95), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=7, frameon=False)
        omitted = marks.omitted
        if omitted:
            bottom.text(0.0, -0.9 if lower else -0.32, "omitted (fit not converged): " + "; ".join(omitted[:4])
                        + (f"; +{len(omitted) - 4} more" if len(omitted) > 4 else ""), fontsize=6, va="top",
                        transform=bottom.transAxes)
        paths.append(save_figure(fig, out_dir / f"fig2_walking_mu_{kind}_{group_slug(key, extra)}.png"))
    return paths


def _draw_end_accuracy(ax: Any, group: list[Series], marks: WalkingMarks) -> None:
    """The panel under Fig. 2 where some drop is partial or never happens: each curve's mean accuracy at the largest
    level all points of the curve share, so that a curve whose mu looks no better but keeps its accuracy shows it."""
    shared = _shared_levels(group)
    largest: set[str] = set()
    for c, drawn in zip(_curves(group), marks.curves):
        members = sorted([i for i, s in enumerate(group) if curve(s.key) == c],
                         key=lambda i: group[i].key["noise.injection_layer"])
        ends = [_extremes(group[i], None, shared[i][1]) for i in members]
        acc = np.array([100 * e["acc_largest_noise"] for e in ends], dtype=float)
        ax.plot([m.x for m in drawn.points], acc, drawn.marker + "--", color=drawn.color, mfc="none", lw=0.8, ms=5)
        largest |= {f"{e['largest_noise']:.3g}" for e in ends if np.isfinite(e["largest_noise"])}
    chance = chance_level(pd.concat([s.runs for s in group]))
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls=":", lw=1)
        ax.text(ax.get_xlim()[1], 100 * chance, " chance", fontsize=6, va="center", color="gray")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%) at the\nlargest level", fontsize=8)
    levels = ", ".join(sorted(largest, key=float)[:3]) + (" ..." if len(largest) > 3 else "")
    ax.set_title(f"end accuracy: mean over seeds at the largest level each curve shares (s = {levels})", fontsize=7)
    ax.grid(alpha=0.3)


def fig3_amin(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 3: multiplicative walking noise, the fitted lower plateau a_min per injection point (percent).

    Filled: a_min ± error of converged fits. Dashes and hollow squares: the mean accuracy measured at the smallest
    and at the largest noise level that every point of a series shares (the levels are in the legend; an adaptive
    search may have measured further at some points, see the CSV). Dotted: chance level. One PNG per
    dataset/model/BatchNorm and a CSV with a_min, delta_a and the measured accuracies.
    """
    out_dir = Path(out_dir)
    series = walking_series(df, "multiplicative")
    if not any(len(s.levels) >= 2 for s in series):
        raise NotEnoughRuns(f"Fig. 3: no walking multiplicative series with >= 2 noise levels "
                            f"({len(series)} series found)")
    table = walking_fit_table(series)
    shared = _shared_levels(series)
    extremes = [_extremes(s, *shared[i]) for i, s in enumerate(series)]
    for col in ("acc_smallest_noise", "acc_largest_noise", "smallest_noise", "largest_noise"):
        table[col] = [e[col] for e in extremes]
    table["largest_tested_noise"] = [float(s.levels.max()) for s in series]
    paths = [write_csv(table, out_dir / "fig3_amin.csv")]
    extra = varying(series)
    by_id = {id(s): i for i, s in enumerate(series)}
    for key, group in figure_groups(series):
        fig = new_figure(7.5, 5.6)
        ax = fig.subplots()
        runs = pd.concat([s.runs for s in group])
        curves = _curves(group)
        sites = {c[1] for c in curves}
        levels: list[tuple[str, str]] = []
        for r_i, c in enumerate(curves):
            members = sorted([s for s in group if curve(s.key) == c], key=lambda s: s.key["noise.injection_layer"])
            shift = (r_i - (len(curves) - 1) / 2) * 0.12
            color, _, _ = _curve_style(c, sites)
            r = curve_label(c, sites)
            rows = [table.iloc[by_id[id(s)]] for s in members]
            x = np.array([float(s.key["noise.injection_layer"]) + shift for s in members])
            ok = np.array([bool(row["converged"]) and row["a_min"] is not None for row in rows])
            if ok.any():
                amin = np.array([row["a_min"] if o else np.nan for row, o in zip(rows, ok)], dtype=float)
                err = np.array([np.nan_to_num(float(row["a_min_err"] if row["a_min_err"] is not None else 0.0))
                                if o else np.nan for row, o in zip(rows, ok)], dtype=float)
                ax.errorbar(x[ok], 100 * amin[ok], yerr=100 * err[ok], fmt="o", ms=5, capsize=3, color=color)
            smallest = np.array([row["acc_smallest_noise"] for row in rows], dtype=float)
            ax.plot(x, 100 * smallest, "_", color=color, ms=12, mew=2)
            largest = np.array([row["acc_largest_noise"] for row in rows], dtype=float)
            ax.plot(x, 100 * largest, "s--", mfc="none", mec=color, color=color, lw=0.8, ms=6)
            ax.plot([], [], "s", color=color, ms=8, label=r)  # one legend entry per curve: its colour
            levels.append((_levels_text(rows, "smallest_noise"), _levels_text(rows, "largest_noise")))
        # what each kind of mark means, once (the levels where every curve shares them)
        lows, highs = {lo for lo, _ in levels}, {hi for _, hi in levels}
        ax.errorbar([], [], yerr=[], fmt="o", color="gray", ms=5, capsize=3, label="fitted a_min ± error")
        ax.plot([], [], "_", color="gray", ms=12, mew=2,
                label=f"measured at the smallest noise (s = {lows.pop() if len(lows) == 1 else 'per curve, see CSV'})")
        ax.plot([], [], "s--", mfc="none", mec="gray", color="gray", lw=0.8, ms=6,
                label=f"measured at the largest noise (s = {highs.pop() if len(highs) == 1 else 'per curve, see CSV'})")
        chance = chance_level(runs)
        if chance:
            ax.axhline(100 * chance, color="gray", ls=":", lw=1, label="chance level")
        point_axis(ax, runs, {int(s.key["noise.injection_layer"]) for s in group})
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(wrap("Lower accuracy bound a_min: " + group_title(key, extra, runs), 95), fontsize=9)
        ax.grid(alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8, frameon=False)
        paths.append(save_figure(fig, out_dir / f"fig3_amin_{group_slug(key, extra)}.png"))
    return paths


def _levels_text(rows: list[Any], column_name: str) -> str:
    """The one level all ``rows`` were measured at, or the range of per-point levels where they share none."""
    values = sorted({float(row[column_name]) for row in rows if np.isfinite(row[column_name])})
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{values[0]:.3g}..{values[-1]:.3g} (per point)" if values else "n/a"


def _extremes(s: Series, smallest: float | None = None, largest: float | None = None) -> dict[str, float]:
    """Mean accuracy at ``smallest`` and ``largest`` (None: the smallest / largest level ``s`` measured)."""
    pts = accuracy_points(s)
    if pts.empty:
        return dict(acc_smallest_noise=np.nan, acc_largest_noise=np.nan, smallest_noise=np.nan, largest_noise=np.nan,
                    std_smallest_noise=np.nan, std_largest_noise=np.nan)
    lo = pts.iloc[0] if smallest is None else pts[pts["noise_std"] == smallest].iloc[0]
    hi = pts.iloc[-1] if largest is None else pts[pts["noise_std"] == largest].iloc[0]
    return dict(acc_smallest_noise=float(lo["mean"]), acc_largest_noise=float(hi["mean"]),
                smallest_noise=float(lo["noise_std"]), largest_noise=float(hi["noise_std"]),
                std_smallest_noise=float(lo["std"]), std_largest_noise=float(hi["std"]))


def _shared_levels(series: list[Series]) -> dict[int, tuple[float | None, float | None]]:
    """Per series: (smallest, largest) noise level that every series of its figure and role shares (the points of
    one curve of the figure), so that all points are compared at the same levels; (None, None) where they share
    none. An adaptive search may go further at some points, where float32 overflow, not the noise, ends a curve."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(series):
        groups.setdefault(tuple(repr(v) for k, v in s.key.items() if k != "noise.injection_layer"), []).append(i)
    out: dict[int, tuple[float | None, float | None]] = {}
    for members in groups.values():
        common = set.intersection(*(set(series[i].levels.tolist()) - set(overflow_levels(series[i]))
                                    for i in members))
        for i in members:
            out[i] = (min(common), max(common)) if common else (None, None)
    return out


def fig5_preserved_accuracy(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 5 (and 8, 9): preserved accuracy under multiplicative walking noise trained with noise, per point.

    Preserved accuracy = mean accuracy at the largest noise level tested at every point of the figure (else at the
    point's largest) / mean accuracy at noise 0 (or, without runs at 0, at the smallest tested noise); error bar
    from the seed spreads of both (relative errors added in quadrature). Dashed: chance level / clean accuracy, what
    a model that only guesses keeps. One series per dataset, one PNG per model and BatchNorm
    (``fig5_preserved_accuracy_<model>_<bn|nobn>.png``), and a CSV.
    """
    out_dir = Path(out_dir)
    runs = paper_runs(df, "multiplicative", "walking")
    runs = runs[(column(runs, "noise.phase", "train_and_inference") == "train_and_inference")
                & ~column(runs, "weight_clamping", False).fillna(False).astype(bool)]
    series = [s for s in series_of(runs) if len(s.levels) >= 2]
    if not series:
        raise NotEnoughRuns("Fig. 5: no walking multiplicative series (noise in training, no clamping) with >= 2 "
                            "noise levels")
    shared = _shared_levels(series)
    rows = []
    for i, s in enumerate(series):
        e = _extremes(s, None, shared[i][1])
        ratio = e["acc_largest_noise"] / e["acc_smallest_noise"] if e["acc_smallest_noise"] > 0 else np.nan
        rel = np.hypot(e["std_largest_noise"] / max(e["acc_largest_noise"], 1e-12),
                       e["std_smallest_noise"] / max(e["acc_smallest_noise"], 1e-12))
        point = int(s.key["noise.injection_layer"])
        chance = chance_level(s.runs)
        rows.append({**s.key, "point": layer_labels(s.runs).get(point, str(point)), **e,
                     "largest_tested_noise": float(s.levels.max()),
                     "preserved_accuracy": ratio, "preserved_accuracy_err": abs(ratio) * rel,
                     "chance_preserved": chance / e["acc_smallest_noise"] if chance and e["acc_smallest_noise"] > 0
                     else np.nan})
    table = pd.DataFrame(rows)
    paths = [write_csv(table, out_dir / "fig5_preserved_accuracy.csv")]
    extra = [c for c in varying(series) if c not in WITHIN_FIGURE and c != "dataset"]
    panels: dict[tuple, list[int]] = {}
    for i, s in enumerate(series):
        panels.setdefault(tuple(repr(s.key.get(c)) for c in ["model", "batchnorm", *extra]), []).append(i)
    for members in panels.values():
        first = series[members[0]].key
        fig = new_figure(7.5, 4.6)
        ax = fig.subplots()
        datasets = sorted({(series[i].key.get("dataset"), curve(series[i].key)[1]) for i in members},
                          key=lambda t: (sort_key(t[0]), list(SITE_MARKERS).index(t[1])))
        sites = {site for _, site in datasets}
        for d_i, (dataset, site) in enumerate(datasets):
            idx = sorted([i for i in members if (series[i].key.get("dataset"), curve(series[i].key)[1])
                          == (dataset, site)], key=lambda i: series[i].key["noise.injection_layer"])
            sub = table.iloc[idx]
            shift = (d_i - (len(datasets) - 1) / 2) * 0.1
            where = f", {site} site" if len(sites) > 1 or site != "activation" else ""
            drawn = ax.errorbar(sub["noise.injection_layer"].astype(float) + shift, sub["preserved_accuracy"],
                                yerr=sub["preserved_accuracy_err"], fmt=SITE_MARKERS[site] + "-", ms=5, capsize=3,
                                label=f"{dataset_name(dataset)}{where} (s = "
                                      f"{_levels_text(sub.to_dict('records'), 'largest_noise')} vs "
                                      f"{_levels_text(sub.to_dict('records'), 'smallest_noise')})")
            floor = float(sub["chance_preserved"].mean())
            if np.isfinite(floor):  # a model that guesses keeps chance / clean accuracy: the floor of this ratio
                ax.axhline(floor, color=drawn[0].get_color(), ls="--", lw=0.8,
                           label=f"chance level / clean accuracy, {dataset_name(dataset)}{where}: {floor:.2f}")
        runs_here = pd.concat([series[i].runs for i in members])
        point_axis(ax, runs_here, {int(series[i].key["noise.injection_layer"]) for i in members})
        ax.set_ylim(bottom=0)
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_ylabel("preserved accuracy (largest noise / no noise)")
        bn = "with" if first.get("batchnorm") else "without"
        more = [f"{short_name(c)}={display(first.get(c))}" for c in extra]
        ax.set_title(wrap(f"Preserved accuracy, multiplicative walking noise: {model_name(first.get('model'))} "
                                 f"{bn} BatchNorm" + (f" ({', '.join(more)})" if more else "")
                                 + f"; {training_note(runs_here)}", 95), fontsize=9)
        ax.grid(alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=7, frameon=False)
        name = slug(first.get("model"), bool(first.get("batchnorm")), *[first.get(c) for c in extra])
        paths.append(save_figure(fig, out_dir / f"fig5_preserved_accuracy_{name}.png"))
    return paths


__all__ = ["fig2_walking_mu", "fig3_amin", "fig5_preserved_accuracy", "role", "walking_fit_table"]
