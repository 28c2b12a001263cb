"""How sensitive is a trained model, point by point: the per-point table, the ranking and the figure of a sensitivity
scan (runs that evaluate trained weights, :mod:`walking_noise.sensitivity`).

A series is every run of one trained model (``weights_sha256``) at one point, site, kind and mode (walking,
leave-one-out, global) that differs only in noise level and draw (``seed``): Eq. 1 is fitted to it on the log10 axis
of the adaptive searches (:func:`walking_noise.report.common.fit_series`), and mu is quoted with the library's
calibrated 68 % interval (:mod:`walking_noise.fit.errors`: the leave-one-draw-out jackknife with Student t, in decades
on this axis, so asymmetric in mu; flagged where it is not calibrated). The repeats of these fits are
independent noise draws over the whole test set of one trained model, not retrained models: the error says how well
the midpoint of *this* model is known, not how it varies between trainings.

- walking (one point noisy): mu per point, smallest first = most sensitive first;
- leave-one-out (every point of global placement noisy but one): mu with that point kept clean, largest first =
  the point whose staying digital buys the most;
- global (every point noisy): one mu per site and kind, drawn as a band.

A drop that ends well above chance (fitted a_min more than 10 points above 1/C) is partial: its mu is the midpoint
of a smaller drop, drawn hollow with its a_min. A curve that never left its upper plateau gives a lower bound on mu
(a triangle). Accuracy at the largest s is the mean over the draws at the largest level measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.common import (
    ACCURACY, NOISE_STD, NotEnoughRuns, Series, column, fit_row, fit_series, format_bound, format_interval,
    layer_labels, markdown_table, new_figure, plain_log_ticks, reported_error, save_figure, series_of, write_csv,
    write_text,
)
from walking_noise.report.walking import BOUND_CLIP, point_axis
from walking_noise.sites import SITES

#: ``noise.placement`` -> the mode's name in tables and figures, and its line style.
MODES = {"walking": ("walking", "-"), "leave_one_out": ("leave-one-out", "--"), "global": ("global", ":")}
#: Columns of the per-point table (CSV), in order.
TABLE_COLUMNS = ("mode", "site", "kind", "index", "point", "mu", "mu_err", "mu_lo68", "mu_hi68", "mu_text", "a_min", "a_min_err",
                 "partial_drop", "largest_s", "accuracy_at_largest_s", "clean_accuracy", "converged", "n_levels",
                 "n_runs", "n_draws", "reason")


def sensitivity_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The completed runs that evaluated trained weights."""
    runs = df[column(df, "weights_sha256").notna()]
    if "status" in runs.columns:
        runs = runs[runs["status"].fillna("COMPLETED") == "COMPLETED"]
    return runs[column(runs, "noise.kind") != "none"]


def _clean_accuracy(runs: pd.DataFrame) -> float | None:
    for extra in column(runs, "extra"):
        if isinstance(extra, dict) and extra.get("clean_accuracy") is not None:
            return float(extra["clean_accuracy"])
    return None


def _row(s: Series) -> dict[str, Any]:
    fit = fit_series(s, axis="log10")
    full = fit_row(s, fit)
    point = s.key.get("noise.injection_layer")
    placement = str(s.key.get("noise.placement"))
    levels = s.runs[NOISE_STD].to_numpy(float)
    largest = float(levels.max())
    accuracy = pd.to_numeric(s.runs[ACCURACY], errors="coerce").to_numpy(float)
    if fit.converged:
        text = format_interval(fit.mu, fit.mu_lo68, fit.mu_hi68, fit.axis, fit.error_flag or "")
    else:
        text = format_bound(fit.mu_lower_bound, fit.mu_upper_bound) or "no fit"
    labels = layer_labels(s.runs)
    return {
        "mode": MODES.get(placement, (placement, "-"))[0], "site": s.key.get("noise.site") or "activation",
        "kind": s.key.get("noise.kind"), "index": None if point is None else int(point),
        "point": "all" if point is None else labels.get(int(point), str(point)),
        "mu": fit.mu if fit.converged else None, "mu_err": reported_error(fit) if fit.converged else None,
        "mu_lo68": fit.mu_lo68 if fit.converged else None, "mu_hi68": fit.mu_hi68 if fit.converged else None,
        "mu_text": text, "a_min": fit.a_min if fit.converged else None,
        "a_min_err": fit.a_min_err if fit.converged else None, "partial_drop": full["partial_drop"],
        "largest_s": largest, "accuracy_at_largest_s": float(np.nanmean(accuracy[levels == largest])),
        "clean_accuracy": _clean_accuracy(s.runs), "converged": fit.converged, "n_levels": fit.n_levels,
        "n_runs": len(s.runs), "n_draws": int(column(s.runs, "seed").nunique()), "reason": fit.reason,
        "mu_lower_bound": fit.mu_lower_bound,
    }


def sensitivity_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (mode, site, kind, point) of the trained-weights runs in ``df`` (columns :data:`TABLE_COLUMNS`),
    in the order of the model's points."""
    runs = sensitivity_runs(df)
    if runs.empty:
        raise NotEnoughRuns("sensitivity: no runs that evaluate trained weights (a config with `weights: PATH`)")
    rows = [_row(s) for s in series_of(runs)]
    table = pd.DataFrame(rows)
    order = {name: i for i, (name, _) in enumerate(MODES.values())}
    table["_mode"] = table["mode"].map(order)
    table = table.sort_values(["kind", "_mode", "site", "index"], na_position="first", kind="stable")
    return table.drop(columns="_mode").reset_index(drop=True)


def ranking(table: pd.DataFrame) -> str:
    """Markdown: per (mode, site, kind) the points from the most sensitive (walking: smallest mu) or, for
    leave-one-out, from the one best kept clean (largest mu); lower bounds after the fitted midpoints."""
    lines = ["# Ranking", ""]
    for (mode, site, kind), group in table.groupby(["mode", "site", "kind"], sort=False):
        if mode == "global":
            continue
        fitted = group[group["converged"]].sort_values("mu", ascending=mode != "leave-one-out")
        bounded = group[~group["converged"]].sort_values("mu_lower_bound", na_position="last")
        what = ("most sensitive first (smallest mu)" if mode != "leave-one-out" else
                "the point best kept clean first (largest mu with it clean)")
        lines += [f"## {mode}, {kind} noise at the {site} site: {what}", ""]
        for number, (_, row) in enumerate(pd.concat([fitted, bounded]).iterrows(), 1):
            extra = []
            if row["partial_drop"]:
                extra.append(f"partial drop to a_min {row['a_min']:.2f}")
            if not row["converged"]:
                extra.append(f"accuracy {row['accuracy_at_largest_s']:.2f} at s = {row['largest_s']:.3g}")
            lines.append(f"{number}. `{row['point']}`: mu {row['mu_text']}" + (f" ({'; '.join(extra)})" if extra
                                                                                 else ""))
        lines.append("")
    return "\n".join(lines)


def _markdown_table(table: pd.DataFrame) -> str:
    headers = ["mode", "site", "kind", "point", "mu ± err", "a_min", "accuracy at largest s", "largest s", "draws",
               "runs"]
    rows = [[r["mode"], r["site"], r["kind"], r["point"], r["mu_text"],
             "" if r["a_min"] is None or pd.isna(r["a_min"]) else f"{r['a_min']:.2f}" + (" (partial)" if
                                                                                          r["partial_drop"] else ""),
             f"{r['accuracy_at_largest_s']:.3f}", f"{r['largest_s']:.3g}", r["n_draws"], r["n_runs"]]
            for _, r in table.iterrows()]
    clean = table["clean_accuracy"].dropna()
    head = f"Clean accuracy (s = 0): {clean.iloc[0]:.4f}.\n\n" if len(clean) else ""
    return "# Per-point sensitivity\n\n" + head + markdown_table(headers, rows)


def fig_sensitivity(table: pd.DataFrame, runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per noise kind, mu per point (log y): one curve per (mode, site), colour by site, line by mode; filled
    markers with error bars for full drops, hollow ones labelled with a_min for partial drops, triangles for lower
    bounds; global noise as a horizontal band (mu ± error)."""
    paths = []
    for kind, group in table.groupby("kind", sort=False):
        fig = new_figure(8.0, 5.0)
        ax = fig.subplots()
        used: set[int] = set()
        # a bound far above every midpoint (mu > 1e16 where the accuracy never drops) would squeeze them all into
        # the bottom of the log axis: it is drawn at BOUND_CLIP x the highest interval, its value written beside it
        tops = group.loc[group["converged"], "mu_hi68"].astype(float)
        ceiling = BOUND_CLIP * float(tops.max()) if tops.notna().any() else None
        for (mode, site), curve in group.groupby(["mode", "site"], sort=False):
            color, marker = SITES[site].color, SITES[site].marker
            style = next(line for name, line in MODES.values() if name == mode)
            label = f"{mode}, {site}"
            if mode == "global":
                row = curve.iloc[0]
                if row["converged"]:
                    ax.axhline(row["mu"], color=color, ls=style, lw=1, label=f"{label}: mu {row['mu_text']}")
                    ax.axhspan(row["mu_lo68"], row["mu_hi68"], color=color, alpha=0.12)
                continue
            shift = 0.12 * (mode == "leave-one-out")
            fitted = curve[curve["converged"]]
            x = fitted["index"].to_numpy(float) + shift
            mu = fitted["mu"].to_numpy(float)
            lo, hi = fitted["mu_lo68"].to_numpy(float), fitted["mu_hi68"].to_numpy(float)
            partial = fitted["partial_drop"].to_numpy(bool)
            used |= set(curve["index"].astype(int))
            # the line joins fitted points; it breaks at a point that only bounds mu (or has no fit)
            line = curve.sort_values("index")
            ax.plot(line["index"].to_numpy(float) + shift,
                    np.where(line["converged"].to_numpy(bool), line["mu"].to_numpy(float), np.nan), ls=style, lw=1,
                    color=color)
            ax.errorbar(x, mu, yerr=np.vstack([np.nan_to_num(mu - lo), np.nan_to_num(hi - mu)]), fmt="none",
                        color=color, lw=1, capsize=2)
            ax.plot(x[~partial], mu[~partial], marker, color=color, ls="none", ms=5, label=label)
            ax.plot(x[partial], mu[partial], marker, mfc="white", mec=color, ls="none", ms=7)
            for xi, yi, a in zip(x[partial], mu[partial], fitted["a_min"].to_numpy(float)[partial]):
                ax.annotate(f"a_min {a:.2f}", (xi, yi), textcoords="offset points", xytext=(3, 5), fontsize=6,
                            color=color, rotation=45)
            bound = curve[~curve["converged"] & curve["mu_lower_bound"].notna()]
            at = bound["mu_lower_bound"].to_numpy(float)
            drawn = np.minimum(at, ceiling) if ceiling else at
            bx = bound["index"].to_numpy(float) + shift
            ax.plot(bx, drawn, "^", mfc="none", mec=color, ms=7, ls="none")
            for xi, yi, value in zip(bx, drawn, at):
                if yi < value:  # drawn below its value: say the value
                    ax.annotate(f"> {value:.0e}", (xi, yi), textcoords="offset points", xytext=(0, -10), fontsize=6,
                                color=color, ha="center", va="top", rotation=90)
        if used:
            point_axis(ax, runs, used)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis, minor=False)
        ax.set_ylabel(f"midpoint noise level mu ({kind} noise std)")
        clean = group["clean_accuracy"].dropna()
        ax.set_title(f"Sensitivity of the trained model to {kind} noise at inference"
                     + (f" (clean accuracy {clean.iloc[0]:.3f})" if len(clean) else ""), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        fitted_all = group[group["converged"]]
        if fitted_all["partial_drop"].any():
            ax.plot([], [], "o", mfc="white", mec="gray", label="partial drop (labelled with its a_min)")
        if (~group["converged"] & group["mu_lower_bound"].notna()).any():
            ax.plot([], [], "^", mfc="none", mec="gray",
                    label="no drop in range: mu above the triangle (value written where drawn lower)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=7, frameon=False)
        paths.append(save_figure(fig, out_dir / f"sensitivity_mu_{kind}.png"))
    return paths


def write_sensitivity(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """The per-point table (``sensitivity.csv``, ``sensitivity.md``), the ranking (``sensitivity_ranking.md``) and
    the figure per noise kind (``sensitivity_mu_<kind>.png``) of the trained-weights runs in ``df``."""
    out_dir = Path(out_dir)
    table = sensitivity_table(df)
    figures = fig_sensitivity(table, sensitivity_runs(df), out_dir)
    return [*figures, write_text(_markdown_table(table), out_dir / "sensitivity.md"),
            write_text(ranking(table), out_dir / "sensitivity_ranking.md"),
            write_csv(table[list(TABLE_COLUMNS)], out_dir / "sensitivity.csv")]
