"""Walking noise (paper sections V-VI, appendix C-D): Fig. 2/10/11 (mu per injection point), Fig. 3 (a_min per
point, multiplicative), Fig. 5/8/9 (preserved accuracy) and Table II (weight magnitude ratio).

Every walking series is one injection point (``noise.injection_layer``) in one setting: the *role* of a series is
"noise only at inference" (``noise.phase = inference``), "noise in training" or "noise in training, clamped weights"
(``weight_clamping``), the three curves of the paper's Fig. 2. The x axis of every per-point figure is the model's
list of injection points, labelled "index name" from the stored layer table of the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.common import (
    MIN_LEVELS, NOISE_STD, NotEnoughRuns, Series, accuracy_points, chance_level, column, dataset_name, display,
    fit_row, fit_series, half_drop_level, layer_labels, learnable_points, markdown_table, model_name,
    new_figure, overflow_levels, paper_runs, plain_log_ticks, save_figure, series_of, short_name, slug, sort_key,
    varying,
    write_csv, write_text,
)
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
    """A walking figure's title: model, dataset, BatchNorm, noise kind (and what else varies); with ``runs``, a
    second line with their training epochs and seeds."""
    bn = "with BatchNorm" if key.get("batchnorm") else "without BatchNorm"
    more = [f"{short_name(c)}={display(key.get(c))}" for c in extra if c not in ("dataset", "model", "batchnorm")
            and c not in WITHIN_FIGURE]
    title = (f"{model_name(key.get('model'))} on {dataset_name(key.get('dataset'))}, {bn}, "
             f"{key.get('noise.kind')} walking noise" + (f" ({', '.join(more)})" if more else ""))
    if runs is None or "training.epochs" not in runs or "seed" not in runs:
        return title
    epochs = "/".join(str(int(e)) for e in sorted(runs["training.epochs"].dropna().unique()))
    seeds = sorted(int(v) for v in runs["seed"].dropna().unique())
    return f"{title}\n{epochs} epochs, {len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def group_slug(key: dict[str, Any], extra: list[str]) -> str:
    more = [key.get(c) for c in extra if c not in ("dataset", "model", "batchnorm") and c not in WITHIN_FIGURE]
    return slug(key.get("dataset"), key.get("model"), bool(key.get("batchnorm")), *more)


def _point_axis(ax: Any, runs: pd.DataFrame, used: set[int]) -> dict[int, str]:
    labels = layer_labels(runs) or {i: str(i) for i in sorted(used)}
    for i in used:
        labels.setdefault(i, str(i))
    ax.set_xticks(sorted(labels))
    ax.set_xticklabels([labels[i] for i in sorted(labels)], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(min(labels) - 0.5, max(labels) + 0.5)
    ax.set_xlabel("injection point (index name)")
    return labels


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
    and named below the plot. A curve's line joins only neighbouring points that both have a converged fit: across
    a bound or an omitted point it breaks. One PNG per dataset/model/BatchNorm
    (``fig2_walking_mu_<kind>_<dataset>_<model>_<bn|nobn>.png``) and a CSV of all fits.
    """
    out_dir = Path(out_dir)
    series = walking_series(df, kind)
    if not any(len(s.levels) >= MIN_LEVELS for s in series):
        raise NotEnoughRuns(f"Fig. 2 ({kind}): no walking {kind} series with >= {MIN_LEVELS} noise levels "
                            f"({len(series)} series found)")
    table = walking_fit_table(series)
    paths = [write_csv(table, out_dir / f"fig2_walking_mu_{kind}.csv")]
    extra = varying(series)
    by_id = {id(s): i for i, s in enumerate(series)}
    for key, group in figure_groups(series):
        fig = new_figure(7.5, 5.2)
        ax = fig.subplots()
        runs = pd.concat([s.runs for s in group])
        omitted: list[str] = []
        curves = _curves(group)
        sites = {c[1] for c in curves}
        shown = {"bound": False, "partial": False, "diverged": False, "overflow": False}
        for r_i, c in enumerate(curves):
            members = sorted([s for s in group if curve(s.key) == c], key=lambda s: s.key["noise.injection_layer"])
            shift = (r_i - (len(curves) - 1) / 2) * 0.12
            color, marker, line = _curve_style(c, sites)
            r = curve_label(c, sites)
            xs, ys, es, partial, log_fit = [], [], [], [], []
            segment, segments = 0, []  # the curve is drawn only between neighbouring points that both have a fit
            for s in members:
                row = table.iloc[by_id[id(s)]]
                x = float(s.key["noise.injection_layer"]) + shift
                y = None
                segment += not row["converged"]  # a bound or an omitted point: no line passes it
                if row["converged"]:
                    y = row["mu"]
                    xs.append(x), ys.append(y), es.append(float(np.nan_to_num(row["mu_err_reported"])))
                    partial.append(bool(row["partial_drop"]))
                    log_fit.append(row.get("axis") == "log10")
                    segments.append(segment)
                elif row.get("mu_lower_bound") is not None and np.isfinite(row["mu_lower_bound"]):
                    y = row["mu_lower_bound"]
                    ax.plot([x], [y], "^", mfc="none", mec=color, ms=8)
                    shown["bound"] = True
                    shown["overflow"] |= row.get("overflow_from") is not None and np.isfinite(row["overflow_from"])
                elif row.get("mu_upper_bound") is not None and np.isfinite(row["mu_upper_bound"]):
                    y = row["mu_upper_bound"]
                    ax.plot([x], [y], "v", mfc="none", mec=color, ms=8)
                    shown["bound"] = True
                else:
                    omitted.append(f"{row['point']} ({r}): {str(row['reason'])[:70]}")
                if y is not None and row["n_diverged"]:
                    ax.plot([x], [y], "x", color="tab:red", ms=10, mew=1.5)
                    shown["diverged"] = True
            if xs:
                xs_a, ys_a, es_a, part = np.array(xs), np.array(ys), np.array(es), np.array(partial)
                ax.errorbar(xs_a, ys_a, yerr=_log_axis_bars(ys_a, es_a, np.array(log_fit)), fmt="none", lw=1,
                            color=color, capsize=3)
                breaks = np.flatnonzero(np.diff(segments)) + 1
                ax.plot(np.insert(xs_a, breaks, np.nan), np.insert(ys_a, breaks, np.nan), lw=1, color=color, ls=line)
                ax.plot(xs_a[~part], ys_a[~part], marker, ms=5, color=color, ls="none")
                ax.plot([], [], marker, ms=5, lw=1, color=color, ls=line, label=r)  # the legend's sample of the curve
                if part.any():
                    ax.plot(xs_a[part], ys_a[part], marker, ms=7, mfc="white", mec=color, mew=1.5, ls="none")
                    shown["partial"] = True
            else:
                ax.plot([], [], marker, color=color, label=f"{r} (no converged fit)")
        # explain each kind of marker only where the figure has one
        if shown["partial"]:
            ax.plot([], [], "o", mfc="white", mec="gray", mew=1.5, label="partial drop: fitted a_min > chance + 10 "
                                                                           "points (mu of a smaller drop)")
        if shown["bound"]:
            ax.plot([], [], "^", mfc="none", mec="gray", label="no converged fit: a bound on mu (up: mu above it, "
                                                               "down: below)" + ("; float32 overflow levels left out"
                                                                                 if shown["overflow"] else ""))
        if shown["diverged"]:
            ax.plot([], [], "x", color="tab:red", mew=1.5, label="some runs diverged (scored at chance)")
        _point_axis(ax, runs, {int(s.key["noise.injection_layer"]) for s in group})
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_ylabel("midpoint noise level mu (noise std)")
        ax.set_title("Walking noise: " + group_title(key, extra, runs), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=7, frameon=False)
        if omitted:
            ax.text(0.0, -0.32, "omitted (fit not converged): " + "; ".join(omitted[:4])
                    + (f"; +{len(omitted) - 4} more" if len(omitted) > 4 else ""), fontsize=6, va="top",
                    transform=ax.transAxes)
        paths.append(save_figure(fig, out_dir / f"fig2_walking_mu_{kind}_{group_slug(key, extra)}.png"))
    return paths


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
                ax.errorbar(x[ok], 100 * amin[ok], yerr=100 * err[ok], fmt="o", ms=5, capsize=3, color=color,
                            label=f"{r}: fitted a_min")
            smallest = np.array([row["acc_smallest_noise"] for row in rows], dtype=float)
            ax.plot(x, 100 * smallest, "_", color=color, ms=12, mew=2,
                    label=f"{r}: measured at s = {_levels_text(rows, 'smallest_noise')}")
            largest = np.array([row["acc_largest_noise"] for row in rows], dtype=float)
            ax.plot(x, 100 * largest, "s--", mfc="none", mec=color, color=color, lw=0.8, ms=6,
                    label=f"{r}: measured at s = {_levels_text(rows, 'largest_noise')}")
        chance = chance_level(runs)
        if chance:
            ax.axhline(100 * chance, color="gray", ls=":", lw=1, label="chance level")
        _point_axis(ax, runs, {int(s.key["noise.injection_layer"]) for s in group})
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Lower accuracy bound a_min: " + group_title(key, extra, runs), fontsize=9)
        ax.grid(alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=6, frameon=False)
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
    from the seed spreads of both (relative errors added in quadrature). One series per dataset, one PNG per model
    and BatchNorm (``fig5_preserved_accuracy_<model>_<bn|nobn>.png``), and a CSV.
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
        rows.append({**s.key, "point": layer_labels(s.runs).get(point, str(point)), **e,
                     "largest_tested_noise": float(s.levels.max()),
                     "preserved_accuracy": ratio, "preserved_accuracy_err": abs(ratio) * rel})
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
            ax.errorbar(sub["noise.injection_layer"].astype(float) + shift, sub["preserved_accuracy"],
                        yerr=sub["preserved_accuracy_err"], fmt=SITE_MARKERS[site] + "-", ms=5, capsize=3,
                        label=f"{dataset_name(dataset)}{where} (s = {_levels_text(sub.to_dict('records'), 'largest_noise')}"
                              f" vs {_levels_text(sub.to_dict('records'), 'smallest_noise')})")
        runs_here = pd.concat([series[i].runs for i in members])
        _point_axis(ax, runs_here, {int(series[i].key["noise.injection_layer"]) for i in members})
        ax.set_ylim(bottom=0)
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_ylabel("preserved accuracy (largest noise / no noise)")
        bn = "with" if first.get("batchnorm") else "without"
        more = [f"{short_name(c)}={display(first.get(c))}" for c in extra]
        ax.set_title(f"Preserved accuracy, multiplicative walking noise: {model_name(first.get('model'))} {bn} "
                     f"BatchNorm" + (f" ({', '.join(more)})" if more else ""), fontsize=9)
        ax.grid(alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=7, frameon=False)
        name = slug(first.get("model"), bool(first.get("batchnorm")), *[first.get(c) for c in extra])
        paths.append(save_figure(fig, out_dir / f"fig5_preserved_accuracy_{name}.png"))
    return paths


def _closest_level(levels: list[float], mu: float, axis: str) -> float:
    if axis == "log10" and mu > 0 and any(v > 0 for v in levels):
        positive = [v for v in levels if v > 0]
        return min(positive, key=lambda v: abs(np.log10(v) - np.log10(mu)))
    return min(levels, key=lambda v: abs(v - mu))


def _mean_magnitude(runs: pd.DataFrame, level: float, label: str) -> tuple[float, int]:
    values = [m[label] for m, x in zip(column(runs, "weight_magnitudes"), runs[NOISE_STD])
              if x == level and isinstance(m, dict) and label in m]
    return (float(np.mean(values)), len(values)) if values else (np.nan, 0)


def table2_weight_ratio(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Table II: mean |w| of each learnable layer, unclamped / clamped, at the noise level closest to mu.

    For every learnable layer (conv/FC) with additive walking noise injected at its output and trained with noise,
    mu is fitted on the unclamped series (if that fit does not converge: the tested level whose accuracy is
    closest to half-way between the highest and lowest, noted in ``mu_source``). Among the levels run both clamped
    and unclamped, the one closest to mu (in log10 for a log-spaced grid) is used; the ratio is the mean over seeds
    of ``weight_magnitudes[layer]`` of the unclamped runs divided by that of the clamped runs. Writes
    ``table2_weight_ratio.md`` (the paper's layout) and ``table2_weight_ratio.csv``.
    """
    out_dir = Path(out_dir)
    series = [s for s in walking_series(df, "additive") if s.key.get("noise.phase") != "inference"]
    other = [c for c in varying(series) if c not in WITHIN_FIGURE and c not in ("dataset", "model", "batchnorm")]
    pairs: dict[tuple, dict[bool, Series]] = {}
    for s in series:
        k = tuple(repr(s.key.get(c)) for c in ["dataset", "model", "batchnorm", *other, "noise.injection_layer"])
        pairs.setdefault(k, {})[bool(s.key.get("weight_clamping"))] = s
    rows = []
    for found in pairs.values():
        if False not in found or True not in found:
            continue
        free, clamped = found[False], found[True]
        point = int(free.key["noise.injection_layer"])
        learnable = learnable_points(free.runs)
        if point not in learnable:
            continue
        label = layer_labels(free.runs).get(point, str(point))
        fit = fit_series(free)
        if fit.converged:
            mu, source = fit.mu, "fit of the unclamped series"
        else:
            mu = half_drop_level(free)
            source = f"half-drop level (unclamped fit not converged: {fit.reason})"
        common = sorted(set(free.levels) & set(clamped.levels))
        if mu is None or not common:
            continue
        level = _closest_level(common, mu, fit.axis)
        w_free, n_free = _mean_magnitude(free.runs, level, label)
        w_clamped, n_clamped = _mean_magnitude(clamped.runs, level, label)
        ordinal, layer_type = learnable[point]
        rows.append({**{c: free.key.get(c) for c in ["dataset", "model", "batchnorm", *other]},
                     "injection_layer": point, "layer": label, "layer_id": ordinal, "layer_type": layer_type,
                     "mu": mu, "mu_err": fit.mu_err if fit.converged else None, "mu_source": source,
                     "noise_std": level, "mean_abs_w_unclamped": w_free, "mean_abs_w_clamped": w_clamped,
                     "n_unclamped": n_free, "n_clamped": n_clamped,
                     "ratio": w_free / w_clamped if w_clamped and np.isfinite(w_clamped) else np.nan})
    if not rows:
        raise NotEnoughRuns("Table II: needs walking additive runs trained with noise, with and without weight "
                            "clamping, at the same learnable (conv/FC) injection point and noise level, with stored "
                            "weight magnitudes")
    table = pd.DataFrame(rows).sort_values(["dataset", "model", *other, "batchnorm", "layer_id"], key=lambda c: c.map(
        sort_key) if c.dtype == object else c, ignore_index=True)
    lines = ["# Table II: weight magnitude ratio between unclamped and clamped weights", "",
             "Mean |w| of the layer at the walking injection point, unclamped / clamped (w in [-1, 1]), trained with "
             "additive noise at that point, at the tested noise level closest to the unclamped series' mu; mean over "
             "seeds. Levels and sources in `table2_weight_ratio.csv`.", ""]
    for key, sub in table.groupby(["dataset", "model", *other], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lines += [f"## {model_name(key[1])} on {dataset_name(key[0])}"
                  + "".join(f", {short_name(c)} = {display(v)}" for c, v in zip(other, key[2:])), ""]
        ids = sorted(set(sub["layer_id"]))
        types = {i: sub[sub["layer_id"] == i]["layer_type"].iloc[0] for i in ids}
        body = [["Layer Type", *[types[i] for i in ids]]]
        for bn, name in ((True, "with BatchNorm"), (False, "without BatchNorm")):
            part = sub[sub["batchnorm"].astype(bool) == bn]
            if part.empty:
                continue
            cells = []
            for i in ids:
                r = part[part["layer_id"] == i]
                cells.append(f"{r['ratio'].iloc[0]:.2g}" if len(r) and np.isfinite(r["ratio"].iloc[0]) else "")
            body.append([name, *cells])
        lines.append(markdown_table(["Layer ID", *[str(i) for i in ids]], body))
    return [write_text("\n".join(lines) + "\n", out_dir / "table2_weight_ratio.md"),
            write_csv(table, out_dir / "table2_weight_ratio.csv")]


def _log_axis_bars(mu: np.ndarray, err: np.ndarray, log_fit: np.ndarray) -> np.ndarray:
    """(2, n) error bars for a log y axis. A log10-axis fit's error is symmetric in log10 s (``mu_err = mu ln10
    e``), so it is drawn as mu / 10^e .. mu * 10^e; a linear fit's is drawn as is, cut above zero."""
    e = np.where(mu > 0, err / (np.maximum(mu, 1e-300) * np.log(10.0)), 0.0)
    lower = np.where(log_fit, mu * (1.0 - 10.0 ** -e), np.minimum(err, mu * 0.999))
    upper = np.where(log_fit, mu * (10.0 ** e - 1.0), err)
    return np.vstack([lower, upper])

__all__ = ["fig2_walking_mu", "fig3_amin", "fig5_preserved_accuracy", "table2_weight_ratio", "role",
           "walking_fit_table"]
