"""The gap to the paper's Table I, factor by factor (``seml_configs/mnist_gap.yaml``, ``results/mnist/gap.md``).

Each Table I cell (noise kind x BatchNorm) is measured under the protocol's factors one at a time:
- epochs: adaptive searches at several epoch counts (the authors trained MNIST for 100);
- fit axis: Eq. 1 fitted to the same runs on a log10 and on a linear noise axis (the paper does not say which it
  used for its log-spaced grids);
- backward mode: straight-through (the paper's words) against autograd through the drawn factor (the authors' code);
- grid density: the authors' dense grid against an adaptive grid at the same epochs;
- fit weights: Eq. 2 as written (each level weighted by its repeats' spread alone) against this project's default
  (spreads floored at 2 % of the accuracy range), on the same runs, at the longest training of each cell.
A factor's effect is the ratio of the two midpoints with its error (errors of independent fits added in quadrature
in the log); the shift toward the paper is how much of the log-distance to the paper's value it removes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.registry import authors_epochs, display_model
from walking_noise.report.common import (
    NOISE_STD, NotEnoughRuns, Series, fit_series, format_pm, markdown_table, new_figure, reported_error, save_figure,
    write_csv, write_text,
)
from walking_noise.report.paper import paper_mu

CELLS = (("additive", False), ("additive", True), ("multiplicative", False), ("multiplicative", True))
#: Eq. 2 as written weights a level by its repeats' spread alone; this tiny floor (0.01 % accuracy) only keeps a level
#: whose repeats agree exactly (e.g. all at chance) from getting an infinite weight.
EQ2_SPREAD_FLOOR = 1e-4


def _series(runs: pd.DataFrame) -> Series:
    return Series({}, runs)


def measured_cells(df: pd.DataFrame, study: Any) -> pd.DataFrame:
    """One row per measured series of the study: its cell, model, epochs, backward mode, grid (``adaptive`` or
    ``authors``), whether it is finished (its search ran to its end, or every grid run is stored) and mu on each fit
    axis (log10 fits only where the grid is log-spaced)."""
    from walking_noise.selection import search_runs

    latest = {h: {"status": st, "result": {"final_accuracy": acc}}
              for h, st, acc in zip(df["config_hash"], df["status"], df["final_accuracy"])}
    groups: list[tuple[str, dict[str, Any], set[str], bool]] = []
    for base, settings, hashes, note in search_runs(study, latest):
        groups.append(("adaptive", {**base, "axis": settings.get("axis", "log10")}, hashes, note is None))
    grid: dict[tuple, set[str]] = {}
    bases: dict[tuple, dict[str, Any]] = {}
    for run in study.runs:
        config = run.values
        key = (config["model"], config["noise"]["kind"], config["batchnorm"], config["training"]["epochs"],
               config["noise"]["backward"])
        grid.setdefault(key, set()).add(run.hash)
        bases.setdefault(key, {**config, "axis": "log10" if config["noise"]["kind"] == "additive" else "linear"})
    completed = set(df.loc[df["status"] == "COMPLETED", "config_hash"])
    groups += [("authors", bases[key], hashes, hashes <= completed) for key, hashes in grid.items()]
    rows = []
    for grid_name, base, hashes, finished in groups:
        runs = df[df["config_hash"].isin(hashes)]
        if runs.empty:
            continue
        row = {"model": base["model"], "noise.kind": base["noise"]["kind"], "batchnorm": bool(base["batchnorm"]),
               "epochs": int(base["training"]["epochs"]), "backward": base["noise"]["backward"], "grid": grid_name,
               "finished": bool(finished), "runs": len(runs), "levels": int(runs[NOISE_STD].nunique()),
               "seeds": int(runs["seed"].nunique()),
               "native_axis": base["axis"], "paper_mu": paper_mu("mnist", base["model"], base["noise"]["kind"],
                                                                 base["batchnorm"])}
        series = _series(runs)
        for axis in ("log10", "linear"):
            if axis == "log10" and base["axis"] != "log10":
                continue  # a linear grid from 0: no log fit
            fit = fit_series(series, axis=axis)
            row[f"mu_{axis}"] = fit.mu if fit.converged else np.nan
            row[f"err_{axis}"] = reported_error(fit) if fit.converged else np.nan
            row[f"reason_{axis}"] = "ok" if fit.converged else fit.reason
        eq2 = fit_series(series, axis=base["axis"], spread_floor=EQ2_SPREAD_FLOOR)
        row["mu_eq2"] = eq2.mu if eq2.converged else np.nan
        row["err_eq2"] = reported_error(eq2) if eq2.converged else np.nan
        rows.append(row)
    if not rows:
        raise NotEnoughRuns("gap: no runs of the study in the store")
    return pd.DataFrame(rows).sort_values(["model", "noise.kind", "batchnorm", "grid", "backward", "epochs"],
                                          ignore_index=True)


def _cell(row: pd.Series) -> str:
    """A Table I cell as the tables name it: ``additive w/t BN``."""
    return f"{row['noise.kind']} {'w/t' if row['batchnorm'] else 'w/o'} BN"


def _mu(row: pd.Series) -> tuple[float, float]:
    """(mu, err) on the row's native axis."""
    axis = row["native_axis"]
    return float(row.get(f"mu_{axis}", np.nan)), float(row.get(f"err_{axis}", np.nan))


def resolved_midpoint(mu: float, err: float) -> bool:
    """Whether a midpoint says where the drop is: finite, with an error below its value. An unfinished search after
    one round can fit mu = 1 +- 88; drawn, that point would set the axis and flatten every measured one."""
    return bool(np.isfinite(mu) and np.isfinite(err) and 0 < err < abs(mu))


def _ratio(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """a / b with the error of the ratio (independent relative errors in quadrature)."""
    if not (np.isfinite(a[0]) and np.isfinite(b[0])) or b[0] == 0:
        return np.nan, np.nan
    r = a[0] / b[0]
    return r, abs(r) * math.hypot(a[1] / a[0], b[1] / b[0])


def _closes(before: tuple[float, float], after: tuple[float, float], paper: float | None) -> float:
    """The share of the log-distance to the paper's mu that going from ``before`` to ``after`` removes; NaN where
    ``before`` already lies within its error of the paper (there is no measured gap to close, and dividing by the
    tiny remaining distance would print a huge, meaningless share)."""
    if not paper or not (np.isfinite(before[0]) and np.isfinite(after[0])) or before[0] <= 0 or after[0] <= 0:
        return np.nan
    if abs(before[0] - paper) <= (before[1] if np.isfinite(before[1]) else 0.0):
        return np.nan
    return math.log(after[0] / before[0]) / math.log(paper / before[0])


def factor_table(cells: pd.DataFrame, model: str = "mlp") -> pd.DataFrame:
    """Per cell and factor: the midpoint ratio it causes, its error, the share of the log-distance to the
    paper it closes (1: all of it, 0: none, < 0: it moves away) and how far the result lies from the paper in units
    of its own error. Only finished series enter: a search cut short has a midpoint from its first rounds, which
    says too little to compare."""
    out = []
    done = cells[cells["finished"]]
    for kind, bn in CELLS:
        mine = done[(done["model"] == model) & (done["noise.kind"] == kind) & (done["batchnorm"] == bn)]
        if mine.empty:
            continue
        paper = paper_mu("mnist", model, kind, bn)
        auto = mine[(mine["grid"] == "adaptive") & (mine["backward"] == "autograd")].set_index("epochs")
        epochs = sorted(auto.index)
        factors: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
        for low, high in zip(epochs, epochs[1:]):
            factors.append((f"epochs {low} -> {high}", _mu(auto.loc[high]), _mu(auto.loc[low])))
        if kind == "additive":
            for ep in epochs:
                row = auto.loc[ep]
                factors.append((f"fit axis log10 -> linear ({ep} epochs)",
                                (float(row.get("mu_linear", np.nan)), float(row.get("err_linear", np.nan))),
                                (float(row.get("mu_log10", np.nan)), float(row.get("err_log10", np.nan)))))
        if epochs:
            row = auto.loc[epochs[-1]]
            factors.append((f"fit weights 2 % floor -> Eq. 2 as written ({epochs[-1]} epochs)",
                            (float(row["mu_eq2"]), float(row["err_eq2"])), _mu(row)))
        straight = mine[(mine["grid"] == "adaptive") & (mine["backward"] == "straight_through")]
        for _, st in straight.iterrows():
            if st["epochs"] in auto.index:
                factors.append((f"backward autograd -> straight-through ({st['epochs']} epochs)", _mu(st),
                                _mu(auto.loc[st["epochs"]])))
        for _, dense in mine[mine["grid"] == "authors"].iterrows():
            if dense["epochs"] in auto.index:
                factors.append((f"grid adaptive -> authors' ({dense['epochs']} epochs)", _mu(dense),
                                _mu(auto.loc[dense["epochs"]])))
        for name, after, before in factors:
            ratio, err = _ratio(after, before)
            out.append({"noise.kind": kind, "batchnorm": bn, "factor": name, "mu_before": before[0],
                        "err_before": before[1], "mu_after": after[0], "err_after": after[1], "ratio": ratio,
                        "ratio_err": err, "closes_gap": _closes(before, after, paper),
                        "after_vs_paper_sigma": (after[0] - paper) / after[1] if paper and after[1] > 0 else np.nan,
                        "paper_mu": paper})
    return pd.DataFrame(out)


def gap_figure(cells: pd.DataFrame, out_dir: Path, model: str = "mlp") -> Path:
    """mu against epochs per cell (adaptive grids; both backward modes where measured), the paper's value as a
    line; a series whose search is unfinished is drawn hollow and named, or only named while its midpoint is not
    resolved (see ``resolved_midpoint``)."""
    from matplotlib.ticker import NullLocator

    present = [(k, bn) for k, bn in CELLS if ((cells["model"] == model) & (cells["noise.kind"] == k)
                                                & (cells["batchnorm"] == bn)).any()]
    shown = present if model != "mlp" and present else list(CELLS)  # the MLP: all four Table I cells, always
    rows = 2 if len(shown) > 2 else 1
    ours = cells[cells["model"] == model]
    authors = authors_epochs("mnist", model)
    ticks = sorted({int(e) for e in ours["epochs"]} | ({authors} if authors else set()))  # only epochs with data
    fig = new_figure(9.0, 3.0 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, 2 if len(shown) > 1 else 1, squeeze=False)).ravel()
    straight: list[tuple[pd.DataFrame, str, str, str]] = []
    for ax, (kind, bn) in zip(axes, shown):
        mine = cells[(cells["model"] == model) & (cells["noise.kind"] == kind) & (cells["batchnorm"] == bn)
                     & (cells["grid"] == "adaptive")]
        drawn = 0  # midpoints drawn in this cell
        span: list[float] = []  # the values the y range shows: autograd midpoints with errors, the paper's
        for backward, style, color in (("autograd", "o-", "tab:blue"), ("straight_through", "s--", "tab:green")):
            every = mine[mine["backward"] == backward].sort_values("epochs")
            part = every[every["finished"]]
            if not part.empty:
                axis = part["native_axis"].iloc[0]
                label = f"here, {backward.replace('_', '-')} ({axis} fit)"
                if backward == "straight_through":  # far below: named with its values, drawn at the axis' edge
                    label += ": mu = " + ", ".join(f"{m:.3g} ({e} ep.)" for m, e in zip(part[f"mu_{axis}"],
                                                                                          part["epochs"]))
                    straight.append((part, style, color, label))
                    drawn += len(part)
                    continue
                span += list(part[f"mu_{axis}"] - part[f"err_{axis}"]) + list(part[f"mu_{axis}"] + part[f"err_{axis}"])
                ax.errorbar(part["epochs"], part[f"mu_{axis}"], yerr=part[f"err_{axis}"], fmt=style, capsize=3,
                            color=color, label=label)
                drawn += len(part)
                if kind == "additive" and "mu_linear" in part:
                    ax.errorbar(part["epochs"], part["mu_linear"], yerr=part["err_linear"], fmt="^:", capsize=3,
                                color="tab:gray", label="here, linear fit of the same runs")
            for _, row in every[~every["finished"]].iterrows():
                mu, err = _mu(row)
                label = f"{backward.replace('_', '-')}, search unfinished ({row['runs']} runs)"
                if resolved_midpoint(mu, err):  # a search cut short: its midpoint so far, drawn hollow and named
                    ax.errorbar([row["epochs"]], [mu], yerr=[err], fmt=style[0], mfc="none", color=color,
                                capsize=3, alpha=0.7, label=label)
                    drawn += 1
                else:  # its first rounds do not locate mu yet: named in the legend, not drawn as a value
                    ax.plot([], [], style[0], mfc="none", color=color, alpha=0.7,
                            label=f"{label}: mu not resolved yet")
        if not drawn:  # nothing measured or fitted in this cell yet
            ax.text(0.5, 0.5, f"no converged fit yet ({int(mine['runs'].sum())} runs)", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="0.4")
        paper = paper_mu("mnist", model, kind, bn)
        if paper:
            ax.axhline(paper, color="tab:red", lw=1, label=f"paper: {paper:g} ({authors} epochs)")
            span.append(paper)
        if span:
            low, high = min(span), max(span)
            ax.set_ylim(low - 0.08 * (high - low + 1e-9), high + 0.08 * (high - low + 1e-9))
        for part, style, color, label in straight:
            axis = part["native_axis"].iloc[0]
            bottom = ax.get_ylim()[0]
            inside = part[f"mu_{axis}"] >= bottom
            ax.errorbar(part["epochs"][inside], part[f"mu_{axis}"][inside], yerr=part[f"err_{axis}"][inside],
                        fmt=style, capsize=3, color=color)
            ax.plot(part["epochs"][~inside], [bottom] * int((~inside).sum()), "v", color=color, ms=8, clip_on=False,
                    label=label + ("; below the axis" if (~inside).any() else ""))
        straight.clear()
        ax.set_xscale("log")
        ax.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("epochs")
        ax.set_ylabel("midpoint noise level mu")
        ax.set_title(f"MNIST {display_model(model)}, {kind}, {'with' if bn else 'without'} BatchNorm", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    adaptive = cells[(cells["model"] == model) & (cells["grid"] == "adaptive")]
    drew_unfinished = bool((~adaptive["finished"]).any())
    seeds = int(adaptive["seeds"].max())
    fig.suptitle(f"Midpoint noise level of global noise against training epochs (adaptive grids, {seeds} seeds)"
                 + ("; hollow: search not finished" if drew_unfinished else ""), fontsize=10)
    name = "gap_mu_vs_epochs.png" if model == "mlp" else f"gap_mu_vs_epochs_{model}.png"
    return save_figure(fig, out_dir / name)


def study_table(study: Any) -> str:
    """What the study runs, one row per (model, epochs, kind, BatchNorm, backward, grid): the table gap.md shows."""
    rows: dict[tuple, list[int]] = {}
    for config in study.configs:
        key = (config["model"], config["training"]["epochs"], config["noise"]["kind"], config["batchnorm"],
               config["noise"]["backward"], "authors' grid")
        rows.setdefault(key, [0, 0])[0] += 1
    for base, settings in study.searches:
        key = (base["model"], base["training"]["epochs"], base["noise"]["kind"], base["batchnorm"],
               base["noise"]["backward"], f"adaptive, seeds {len(settings.get('seeds', ()))}, "
                                           f"at most {settings.get('max_runs', 200)} runs")
        rows.setdefault(key, [0, 0])[1] += 1
    body = [[m, e, k, "w/t" if bn else "w/o", b, g, runs or "", searches or ""]
            for (m, e, k, bn, b, g), (runs, searches) in sorted(rows.items(), key=lambda t: (
                t[0][0], int(t[0][1]), t[0][2], t[0][3], t[0][4], t[0][5]))]
    return markdown_table(["model", "epochs", "noise", "BN", "backward", "grid", "runs", "searches"], body)


def write_gap(df: pd.DataFrame, study: Any, out_dir: str | Path) -> list[Path]:
    """The gap study's outputs: per-series midpoints (CSV), the factor table (CSV and Markdown) and the figure."""
    out_dir = Path(out_dir)
    cells = measured_cells(df, study)
    models = [m for m in ("mlp", "lenet5") if (cells["model"] == m).any()]
    factors = pd.concat([factor_table(cells, m).assign(model=m) for m in models], ignore_index=True)
    body = [[f"{display_model(r['model'])}, {_cell(r)}", r["factor"],
             format_pm(r["mu_before"], r["err_before"]), format_pm(r["mu_after"], r["err_after"]),
             format_pm(r["ratio"], r["ratio_err"]),
             f"{r['closes_gap']:+.2f}" if np.isfinite(r["closes_gap"]) else "no gap before",
             f"{r['after_vs_paper_sigma']:+.1f} sigma" if np.isfinite(r["after_vs_paper_sigma"]) else "",
             f"{r['paper_mu']:g}"] for _, r in factors.iterrows()]
    text = ("# The gap to Table I, factor by factor\n\n"
            "Each row changes one factor of the protocol and keeps the rest. ratio = mu after / mu before (its error "
            "from both fits); closes = share of the log-distance to the paper's mu that the change removes (1: all, "
            "0: none, negative: away from the paper; 'no gap before' where mu before lies within its error of the "
            "paper); after - paper = (mu after - paper) / error of mu after (the paper's own error is not "
            "published).\n\n"
            + markdown_table(["Cell", "Factor", "mu before", "mu after", "ratio", "closes", "after - paper", "paper"],
                             body))
    cell_rows = [[r["model"], _cell(r), r["epochs"],
                  r["backward"].replace("_", "-"), r["grid"], "yes" if r["finished"] else "no",
                  f"{r['runs']} / {r['levels']} / {r['seeds']}",
                  format_pm(r.get("mu_log10", np.nan), r.get("err_log10", np.nan))
                  if np.isfinite(r.get("mu_log10", np.nan)) else "",
                  format_pm(r["mu_linear"], r["err_linear"]) if np.isfinite(r["mu_linear"]) else "n.c.",
                  f"{r['paper_mu']:g}" if r["paper_mu"] else ""] for _, r in cells.iterrows()]
    cells_text = ("# Every measured series of the gap study\n\nfinished: the search ran to its end (or every grid "
                  "run is stored); an unfinished search's mu comes from its first rounds only.\n\n"
                  + markdown_table(["model", "cell", "epochs", "backward", "grid", "finished", "runs / levels / seeds",
                                    "mu, log10 fit", "mu, linear fit", "paper"], cell_rows))
    return [write_csv(cells, out_dir / "gap_cells.csv"), write_text(cells_text, out_dir / "gap_cells.md"),
            write_csv(factors, out_dir / "gap_factors.csv"),
            write_text(text, out_dir / "gap_factors.md"), write_text(study_table(study), out_dir / "gap_study.md"),
            *(gap_figure(cells, out_dir, m) for m in models)]


__all__ = ["factor_table", "gap_figure", "measured_cells", "study_table", "write_gap"]
