"""Global noise (paper section IV, appendix A-B): Table I, Fig. 1 (a fitted curve), Fig. 6 (training curves) and
Fig. 7 (two stacked logistics).

Accuracies are plotted in percent; the fits are made on the stored fractions. Noise levels are the standard
deviation s of the injected Gaussian (activation units for additive noise, relative units for multiplicative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.report.common import (
    MIN_LEVELS, MIN_LEVELS_DOUBLE, NOISE_STD, NotEnoughRuns, Series, accuracy_points, column, dataset_name, display,
    diverged_levels, overflow_levels, fit_row, fit_series, format_bound, format_fit, markdown_table, model_name,
    new_figure, panel_grid, paper_runs, save_figure, series_of, short_name, sort_key, varying, wrap,
    write_csv, write_text,
)

KINDS = ("additive", "multiplicative")
#: The columns of Table I: (noise kind, BatchNorm) in the paper's order.
TABLE1_CELLS = (("additive", False), ("additive", True), ("multiplicative", False), ("multiplicative", True))
#: What distinguishes the cells and rows of Table I; any other config difference makes a separate table (variant).
TABLE1_AXES = ("dataset", "model", "batchnorm", "noise.kind")


def global_series(df: pd.DataFrame, min_levels: int = MIN_LEVELS) -> tuple[list[Series], list[Series]]:
    """(series with >= ``min_levels`` levels, all global series) of additive/multiplicative global noise."""
    every = series_of(paper_runs(df, KINDS, "global"))
    return [s for s in every if len(s.levels) >= min_levels], every


def _too_few(what: str, every: list[Series], need: int) -> NotEnoughRuns:
    if not every:
        return NotEnoughRuns(f"{what}: no completed runs with global additive or multiplicative noise")
    most = max(len(s.levels) for s in every)
    return NotEnoughRuns(f"{what}: {len(every)} global-noise series, but none has >= {need} distinct noise levels "
                         f"(at most {most}); a fit of Eq. 1 needs {need}")


def series_title(s: Series, extra: list[str] | None = None) -> str:
    """``"MNIST-5k MLP w/t BN, additive"`` plus any other config values that tell series apart."""
    k = s.key
    bn = "w/t BN" if k.get("batchnorm") else "w/o BN"
    title = f"{dataset_name(k.get('dataset'))} {model_name(k.get('model'))} {bn}, {k.get('noise.kind')}"
    if k.get("noise.placement") == "walking" and k.get("noise.injection_layer") is not None:
        title += f" at point {int(k['noise.injection_layer'])}"
    more = [f"{short_name(c)}={display(k.get(c))}" for c in (extra or []) if c not in TABLE1_AXES
            and c not in ("noise.injection_layer",)]
    return title + (f" ({', '.join(more)})" if more else "")


def _cell(fit_row_: dict[str, Any]) -> str:
    if fit_row_["converged"]:
        return format_fit(fit_row_)
    bound = format_bound(fit_row_.get("mu_lower_bound"), fit_row_.get("mu_upper_bound"))
    return "n.c." if bound is None else f"{bound} (n.c.)"


def table1(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Table I: the midpoint noise level mu of global noise per dataset, model, BatchNorm and noise kind.

    Writes ``table1_global_mu.md`` (the paper's layout, mu with its 68 % interval from the seed jackknife, flagged
    where it is not calibrated, see :mod:`walking_noise.fit.errors`; "n.c." = not converged, with the reason below
    the table) and
    ``table1_global_mu.csv`` (one row per series with every fit field). Series that differ in anything but
    dataset, model, BatchNorm and kind (e.g. noise only at inference) get a table of their own.
    """
    out_dir = Path(out_dir)
    good, every = global_series(df)
    if not good:
        raise _too_few("Table I", every, MIN_LEVELS)
    rows = [fit_row(s, fit_series(s)) for s in every]
    table = pd.DataFrame(rows)
    extra = [c for c in varying(every) if c not in TABLE1_AXES]
    variants: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        variants.setdefault(tuple(row.get(c) for c in extra), []).append(row)

    def rank(variant: tuple) -> tuple:
        values = dict(zip(extra, variant))
        return (values.get("noise.phase", "train_and_inference") != "train_and_inference",
                bool(values.get("weight_clamping", False)), [sort_key(v) for v in variant])

    lines = ["# Table I: robustness mu to globally injected Gaussian noise", "",
             "Midpoint noise level mu (noise std at half the accuracy drop, Eq. 1) with its 68 % interval "
             "(leave-one-seed-out jackknife, Student t with seeds - 1 dof; on a log10 fit axis symmetric in "
             "log10 mu, so +up/-down in mu; the 95 % interval and the half-width in decades are in the CSV). "
             "In parentheses where the interval cannot be calibrated: 2 seeds (1 dof: the scale is one "
             "difference, so one interval can be far off), no seeds, or a drop between two levels (then the "
             "bracket is the interval). "
             "n.c.: the fit did not converge (reasons below); > x: the curve never left its upper plateau up to x; "
             "†: some runs diverged (weights non-finite; scored at chance level, the levels are in the CSV).",
             ""]
    notes: list[str] = []
    for variant in sorted(variants, key=rank):
        vrows = variants[variant]
        if extra:
            lines += [f"## {', '.join(f'{short_name(c)} = {display(v)}' for c, v in zip(extra, variant))}", ""]
        body = []
        for dataset, model in sorted({(r.get("dataset"), r.get("model")) for r in vrows}, key=lambda t: tuple(
                sort_key(v) for v in t)):
            cells = []
            for kind, bn in TABLE1_CELLS:
                match = [r for r in vrows if r.get("dataset") == dataset and r.get("model") == model
                         and r.get("noise.kind") == kind and bool(r.get("batchnorm")) == bn]
                if not match:
                    cells.append("")
                    continue
                r = match[0]
                text = _cell(r) + (" †" if r["n_diverged"] else "")
                if not r["converged"]:
                    notes.append(f"{dataset_name(dataset)} {model_name(model)} {kind} "
                                 f"{'w/t' if bn else 'w/o'} BN: {r['reason']}")
                    text += f" [{len(notes)}]"
                cells.append(text)
            body.append([dataset_name(dataset), model_name(model), *cells])
        lines.append(markdown_table(["Dataset", "Model", "Additive w/o BN", "Additive w/t BN",
                                     "Multiplicative w/o BN", "Multiplicative w/t BN"], body))
    if notes:
        lines += ["Not converged:", ""] + [f"- [{i}] {n}" for i, n in enumerate(notes, 1)] + [""]
    axes = sorted(set(table["axis"]))
    lines.append(f"Fit axis: {', '.join(axes)} (log10 where the grid of noise levels is log-spaced); "
                 f"all fit fields in `table1_global_mu.csv`.")
    return [write_text("\n".join(lines) + "\n", out_dir / "table1_global_mu.md"),
            write_csv(table, out_dir / "table1_global_mu.csv")]


def plot_fit(ax: Any, s: Series, fit: Any, title: str, *, second: Any = None) -> None:
    """Accuracy (percent) vs noise with error bars (std over seeds) and the fitted curve on ``ax``."""
    pts = accuracy_points(s)
    log = fit.axis == "log10"
    if log:
        pts = pts[pts["noise_std"] > 0]
    over = set(overflow_levels(s))
    used = pts[~pts["noise_std"].isin(over)]
    ax.errorbar(used["noise_std"], 100 * used["mean"], yerr=100 * used["std"], fmt="o", ms=4, capsize=3,
                color="tab:blue", label="runs (mean ± std over seeds)")
    left_out = pts[pts["noise_std"].isin(over)]
    if len(left_out):
        ax.plot(left_out["noise_std"], 100 * left_out["mean"], "o", mfc="none", mec="gray", ms=5,
                label="left out of the fit: float32 overflow")
    bad = pts[pts["noise_std"].isin(diverged_levels(s))]
    if len(bad):
        ax.plot(bad["noise_std"], 100 * bad["mean"], "x", color="tab:red", ms=8, mew=1.5,
                label="some runs diverged (scored at chance)")
    lo, hi = float(pts["noise_std"].min()), float(pts["noise_std"].max())
    grid = np.logspace(np.log10(lo), np.log10(hi), 300) if log else np.linspace(lo, hi, 300)
    for f, style, color, name in ((fit, "-", "tab:orange", fit.model), (second, "--", "tab:green",
                                                                          second.model if second else "")):
        if f is None or f.params.get("a_min") is None:
            continue
        text = f"{name} logistic: mu = {format_fit(f)}" if f.converged else \
            f"{name} logistic (not converged)"
        ax.plot(grid, 100 * f.predict(grid), style, color=color, lw=1.6, label=text)
        if f.converged and f.mu is not None:
            ax.axvline(f.mu, color=color, ls=":", lw=1)
    if not fit.converged:
        ax.text(0.02, 0.03, "not converged: " + wrap(fit.reason, 60), transform=ax.transAxes, fontsize=6,
                va="bottom", color="tab:red")
    if log:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("noise std s" + (" (log axis; s = 0 not shown)" if log and (s.levels == 0).any() else ""),
                  fontsize=8)
    ax.set_ylabel("validation accuracy (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper right")
    ax.grid(alpha=0.3)


def fig1_fit(df: pd.DataFrame, out_dir: str | Path, *, max_panels: int = 12) -> list[Path]:
    """Fig. 1: accuracy vs global noise with error bars and the fitted logistic, one panel per series.

    Writes ``fig1_fit.png`` (and ``fig1_fit_2.png``, ... when there are more than ``max_panels`` series).
    """
    out_dir = Path(out_dir)
    good, every = global_series(df)
    if not good:
        raise _too_few("Fig. 1", every, MIN_LEVELS)
    extra = varying(good)
    return _panel_pages(good, lambda ax, s: plot_fit(ax, s, fit_series(s), wrap(series_title(s, extra), 60)),
                        out_dir / "fig1_fit.png", "Fig. 1: accuracy vs globally injected noise, logistic fit (Eq. 1)",
                        max_panels=max_panels, max_cols=3, panel_size=(4.2, 3.3))


def _panel_pages(series: list[Series], draw: Any, path: Path, title: str, *, max_panels: int, max_cols: int,
                 panel_size: tuple[float, float]) -> list[Path]:
    """One panel per series drawn by ``draw(ax, series)``, ``max_panels`` to a PNG: ``path``, then ``<stem>_2``..."""
    paths = []
    for page, start in enumerate(range(0, len(series), max_panels), 1):
        chunk = series[start:start + max_panels]
        rows, cols = panel_grid(len(chunk), max_cols)
        fig = new_figure(panel_size[0] * cols, panel_size[1] * rows)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, s in zip(axes, chunk):
            draw(ax, s)
        for ax in axes[len(chunk):]:
            ax.set_visible(False)
        fig.suptitle(wrap(title, int(13 * panel_size[0] * cols)), fontsize=10)  # ~13 characters per inch
        name = path.name if page == 1 else f"{path.stem}_{page}{path.suffix}"
        paths.append(save_figure(fig, path.parent / name))
    return paths


def _curve_levels(s: Series, max_levels: int) -> np.ndarray:
    """Up to ``max_levels`` levels of a series, centred on its transition (where the epochs matter most): the
    lowest level, the highest, and the rest nearest the level with the half-way mean accuracy."""
    levels = s.levels
    if len(levels) <= max_levels:
        return levels
    pts = accuracy_points(s)
    half = (pts["mean"].max() + pts["mean"].min()) / 2
    centre = int(np.argmin(np.abs(pts["mean"].to_numpy() - half)))
    order = np.argsort(np.abs(np.arange(len(levels)) - centre), kind="stable")
    keep = {0, len(levels) - 1, *order[:max_levels - 2].tolist()}
    return levels[sorted(keep)]


def fig6_training_curves(df: pd.DataFrame, out_dir: str | Path, *, max_levels: int = 7,
                         max_panels: int = 8) -> list[Path]:
    """Fig. 6: validation accuracy per epoch (mean over seeds) under global noise, one panel per series, at the
    levels around each series' transition: whether the final accuracies (mean of the last five epochs) come from
    converged training. Writes ``fig6_training_curves.png`` (``_2``, ... beyond ``max_panels`` series).
    """
    out_dir = Path(out_dir)
    _, every = global_series(df)
    usable = [s for s in every if len(s.levels) >= 2 and any(isinstance(v, list) and v
                                                             for v in column(s.runs, "val_accuracy"))]
    if not usable:
        raise NotEnoughRuns("Fig. 6: no global-noise series with >= 2 noise levels and stored validation curves")
    extra = varying(usable)
    from matplotlib.ticker import MaxNLocator

    styles = list(zip(("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                       "tab:olive", "tab:cyan", "tab:gray"), "osD^v<>ph*"))  # neighbours differ in colour and marker

    def draw(ax: Any, s: Series) -> None:
        levels = _curve_levels(s, max_levels)
        for i, level in enumerate(levels):
            curves = [c for c, x in zip(column(s.runs, "val_accuracy"), s.runs[NOISE_STD]) if x == level
                      and isinstance(c, list) and c]
            if not curves:
                continue
            n = max(len(c) for c in curves)
            padded = 100 * np.array([c + [np.nan] * (n - len(c)) for c in curves], dtype=float)
            epochs, (color, marker) = np.arange(1, n + 1), styles[i % len(styles)]
            ax.plot(epochs, np.nanmean(padded, axis=0), "-", marker=marker, ms=4, color=color,
                    label=f"s = {level:.3g} ({len(curves)})")
            if len(curves) > 1:  # the spread over seeds
                ax.fill_between(epochs, np.nanmin(padded, axis=0), np.nanmax(padded, axis=0), color=color,
                                alpha=0.2, lw=0)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation accuracy (%)", fontsize=8)
        ax.set_title(wrap(series_title(s, extra), 48), fontsize=8)
        ax.legend(fontsize=7, ncol=2, title="noise std (seeds); band: min..max over seeds", title_fontsize=7,
                  loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        ax.grid(alpha=0.3)

    return _panel_pages(usable, draw, out_dir / "fig6_training_curves.png",
                        "Fig. 6: validation accuracy per epoch under global noise (mean over seeds, band: min..max), "
                        "levels around each transition", max_panels=max_panels, max_cols=4, panel_size=(4.0, 4.3))


# A step of the double logistic smaller than this (accuracy as a fraction) is within the seed spread, not a drop:
# the levels between it and the real step are the upper or lower plateau of one drop, not an intermediate one.
MIN_STEP_DROP = 0.05


def plateau_levels(s: Series, fit: Any) -> list[float]:
    """The measured noise levels that lie between the two steps of a double-logistic ``fit`` (more than two
    sigma past the first midpoint and before the second, on the fit axis): the data's own evidence of an
    intermediate plateau (appendix B). None for a single logistic; none when either step drops accuracy by less
    than :data:`MIN_STEP_DROP` or has its midpoint outside the measured levels (a one-drop curve that the double
    fits with a second step that is negligible or extrapolated: the levels "between" are then an outer plateau)."""
    p = fit.params
    if fit.model != "double" or p.get("sigma1") is None or p.get("sigma2") is None:
        return []
    if min(abs(p.get("delta_a1") or 0.0), abs(p.get("delta_a2") or 0.0)) < MIN_STEP_DROP:
        return []
    log = fit.axis == "log10"
    steps = [((p.get("log10_mu1") if log else p.get("mu1")), abs(p["sigma1"])),
             ((p.get("log10_mu2") if log else p.get("mu2")), abs(p["sigma2"]))]
    if steps[0][0] is None or steps[1][0] is None:
        return []
    (m1, s1), (m2, s2) = sorted(steps)
    levels = [v for v in s.levels if v > 0 or not log]
    x = [float(np.log10(v)) if log else float(v) for v in levels]
    if not x or not min(x) < m1 <= m2 < max(x):
        return []
    return [v for v, t in zip(levels, x) if m1 + 2 * s1 < t < m2 - 2 * s2]


def fig7_double_logistic(df: pd.DataFrame, out_dir: str | Path, *, max_panels: int = 4) -> list[Path]:
    """Fig. 7: two stacked logistics (appendix B) compared with one, on the series where the double fits best.

    Candidates are all series (global and walking) with >= 8 noise levels, ranked: an intermediate plateau in the
    data first (>= 2 measured levels between the two steps, :func:`plateau_levels`), then the AIC choice of
    ``model="auto"``, then the AIC gain. Each panel states how many measured levels lie on a plateau, so no panel
    claims one its data do not show. Writes ``fig7_double_logistic.png`` and ``fig7_double_logistic.csv`` (both fits
    of every panel, with ``plateau_levels``).
    """
    out_dir = Path(out_dir)
    every = series_of(paper_runs(df, KINDS, ("global", "walking")))
    candidates = [s for s in every if len(s.levels) >= MIN_LEVELS_DOUBLE]
    if not candidates:
        most = max((len(s.levels) for s in every), default=0)
        raise NotEnoughRuns(f"Fig. 7: the double logistic needs a series with >= {MIN_LEVELS_DOUBLE} noise levels; "
                            f"the most any series has is {most}")
    scored = []
    for s in candidates:
        auto, double = fit_series(s, model="auto"), fit_series(s, model="double")
        on_plateau = plateau_levels(s, double) if double.converged else []
        scored.append((len(on_plateau) >= 2, auto.model == "double", auto.params.get("auto_delta_aic") or -np.inf,
                       s, auto, on_plateau))
    scored.sort(key=lambda t: (not t[0], not t[1], -t[2]))
    chosen = scored[:max_panels]
    extra = varying([c[3] for c in scored])  # what tells the candidates apart, even where the chosen panels share it
    rows, cols = panel_grid(len(chosen), 2)
    fig = new_figure(5.2 * cols, 3.9 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    table = []
    for ax, (plateau, _, _, s, auto, on_plateau) in zip(axes, chosen):
        double, single = fit_series(s, model="double"), fit_series(s)
        if plateau:
            evidence = (f"plateau: {len(on_plateau)} levels between the steps "
                        f"(s = {min(on_plateau):.3g}..{max(on_plateau):.3g})")
        else:
            evidence = f"no plateau in the data ({len(on_plateau)} level(s) between the steps)"
        plot_fit(ax, s, double, wrap(series_title(s, extra), 70) + f"\nAIC prefers the {auto.model}; {evidence}",
                 second=single)
        for f in (double, single):
            table.append({**fit_row(s, f), "plateau_levels": len(on_plateau) if f is double else None})
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    n_plateau = sum(c[0] for c in chosen)
    fig.suptitle(wrap(f"Fig. 7 style: two stacked logistics vs one, on the series of these runs the double fits best "
                      f"({n_plateau} of {len(chosen)} show an intermediate plateau). mu of the double: where it "
                      f"crosses half-way between its outer plateaus, not either step's midpoint. (The paper's Fig. 7 "
                      f"is LeNet-5 on CIFAR-10 without BatchNorm, multiplicative noise at its third layer.)",
                      int(13 * 5.2 * cols)), fontsize=9)
    return [save_figure(fig, out_dir / "fig7_double_logistic.png"),
            write_csv(pd.DataFrame(table), out_dir / "fig7_double_logistic.csv")]


__all__ = ["table1", "fig1_fit", "fig6_training_curves", "fig7_double_logistic", "series_title", "plot_fit"]
