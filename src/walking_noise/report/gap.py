"""The gap to the paper's Table I, factor by factor (``seml_configs/mnist_gap.yaml``, ``results/mnist/gap.md``).

Each Table I cell (noise kind x BatchNorm) is measured under the protocol's factors one at a time:
- epochs: adaptive searches at several epoch counts (the authors trained MNIST for 100);
- fit axis: Eq. 1 fitted to the same runs on a log10 and on a linear noise axis (the paper does not say which it
  used for its log-spaced grids);
- backward mode: straight-through (the paper's words) against autograd through the drawn factor (the authors' code);
- grid density: the authors' dense grid against an adaptive grid at the same epochs;
- fit weights: Eq. 2 as written (each level weighted by its repeats' spread alone) against this project's default
  (spreads floored at 2 % of the accuracy range), on the same runs, at the longest training of each cell.
A factor's effect is the ratio of the two midpoints with its error: the two fits' seed-jackknife errors of log10 mu
added in quadrature (Welch-Satterthwaite degrees of freedom, Student t). That treats them as independent: right for
different trainings (epochs, backward, grid), conservative for the same runs fitted twice (fit axis, fit weights),
whose errors are positively correlated. The shift toward the paper is how much of the log-distance to the paper's
value it removes; the paper's value is tested against each midpoint's own law (:mod:`walking_noise.fit.errors`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from walking_noise.fit.errors import LEVELS
from walking_noise.registry import authors_epochs, display_model
from walking_noise.report.common import (
    NOISE_STD, NotEnoughRuns, Series, fit_series, format_interval, format_pm, markdown_table, new_figure,
    reported_error, save_figure, write_csv, write_text,
)
from walking_noise.report.paper import paper_mu

CELLS = (("additive", False), ("additive", True), ("multiplicative", False), ("multiplicative", True))
#: Eq. 2 as written weights a level by its repeats' spread alone; this tiny floor (0.01 % accuracy) only keeps a level
#: whose repeats agree exactly (e.g. all at chance) from getting an infinite weight.
EQ2_SPREAD_FLOOR = 1e-4


def _series(runs: pd.DataFrame) -> Series:
    return Series({}, runs)


def measured_groups(df: pd.DataFrame, study: Any) -> list[tuple[str, dict[str, Any], pd.DataFrame, bool]]:
    """The study's measured series: (grid ``adaptive`` or ``authors``, its base config with the native fit
    ``axis``, its runs, whether it is finished: its search ran to its end, or every grid run is stored)."""
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
    out = []
    for grid_name, base, hashes, finished in groups:
        runs = df[df["config_hash"].isin(hashes)]
        if not runs.empty:
            out.append((grid_name, base, runs, finished))
    return out


def measured_cells(df: pd.DataFrame, study: Any) -> pd.DataFrame:
    """One row per measured series of the study (:func:`measured_groups`): its cell, model, epochs, backward mode,
    grid, whether it is finished and mu on each fit axis (log10 fits only where the grid is log-spaced)."""
    rows = []
    for grid_name, base, runs, finished in measured_groups(df, study):
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
            row.update(_law_columns(fit, axis))
            row[f"reason_{axis}"] = "ok" if fit.converged else fit.reason
        row.update(_law_columns(fit_series(series, axis=base["axis"], spread_floor=EQ2_SPREAD_FLOOR), "eq2"))
        rows.append(row)
    if not rows:
        raise NotEnoughRuns("gap: no runs of the study in the store")
    return pd.DataFrame(rows).sort_values(["model", "noise.kind", "batchnorm", "grid", "backward", "epochs"],
                                          ignore_index=True)


#: The analysis choices the multiplicative remainder is measured under (issue 24): fit axis, level weights
#: (Eq. 2 as written, or spreads floored at 2 % of the range) and plateaus (fitted, or held at the extreme level
#: means, the paper's words for a_min and a_max).
COMBINATION_AXES = ("linear", "log10")
COMBINATION_WEIGHTS = {"floored (default)": None, "Eq. 2 as written": EQ2_SPREAD_FLOOR}
COMBINATION_PLATEAUS = ("fitted", "observed")


def combination_table(df: pd.DataFrame, study: Any, kind: str = "multiplicative",
                      model: str = "mlp") -> pd.DataFrame:
    """mu of ``model``'s ``kind`` cells at their longest autograd training under every combination of grid, fit
    axis, level weights and plateaus: one row each, with the 68 % interval and whether the fit converged. A log10
    fit leaves out the runs at s = 0 (the fit says so in its notes). Empty where the study has no such runs."""
    chosen = [(g, b, r, f) for g, b, r, f in measured_groups(df, study)
              if b["model"] == model and b["noise"]["kind"] == kind and b["noise"]["backward"] == "autograd"]
    if not chosen:
        return pd.DataFrame()
    longest = {bool(b["batchnorm"]): max(int(b2["training"]["epochs"]) for _, b2, _, _ in chosen
                                         if bool(b2["batchnorm"]) == bool(b["batchnorm"])) for _, b, _, _ in chosen}
    rows = []
    for grid_name, base, runs, finished in chosen:
        bn = bool(base["batchnorm"])
        if int(base["training"]["epochs"]) != longest[bn]:
            continue
        for axis in COMBINATION_AXES:
            for weights, floor in COMBINATION_WEIGHTS.items():
                for plateaus in COMBINATION_PLATEAUS:
                    fit = fit_series(_series(runs), axis=axis, spread_floor=floor, plateaus=plateaus)
                    rows.append({"model": model, "noise.kind": kind, "batchnorm": bn, "epochs": longest[bn],
                                 "grid": grid_name, "finished": bool(finished), "runs": len(runs),
                                 "levels": int(runs[NOISE_STD].nunique()), "seeds": int(runs["seed"].nunique()),
                                 "axis": axis, "weights": weights, "plateaus": plateaus,
                                 "converged": bool(fit.converged), "chi2_red": fit.params.get("chi2_red"),
                                 "paper_mu": paper_mu("mnist", model, kind, bn), **_law_columns(fit, "fit")})
    return pd.DataFrame(rows)


def combination_markdown(table: pd.DataFrame) -> str:
    """The combination table per cell, and its envelope (the smallest and largest converged mu) beside the
    paper's value."""
    parts = ["# Every cell's midpoint under every analysis choice\n\n"
             "At each cell's longest training, one row per grid (adaptive search or the authors' linspace(0, 2, 21)), fit axis (linear, or log10 "
             "of s > 0), level weights (spreads floored at 2 % of the accuracy range, or Eq. 2 as written) and "
             "plateaus (a_min and delta_a fitted, or held at the lowest and highest level means: the paper's "
             "'maximal and minimal achieved accuracy'). mu ± half its 68 % interval (seed jackknife, Student t).\n"]
    for (model, kind, bn, epochs), part in table.groupby(["model", "noise.kind", "batchnorm", "epochs"], sort=False):
        paper = part["paper_mu"].iloc[0]
        body = [[r["grid"] + ("" if r["finished"] else " (unfinished)"), f"{r['runs']} / {r['levels']} / "
                 f"{r['seeds']}", r["axis"], r["weights"], r["plateaus"],
                 _interval_cell(r, "fit") if r["converged"] else "n.c.",
                 f"{r['chi2_red']:.2g}" if r["converged"] and r["chi2_red"] is not None else "",
                 f"{100 * (r['mu_fit'] / paper - 1):+.1f} %" if r["converged"] and paper else ""]
                for _, r in part.iterrows()]
        envelope = "; ".join(_envelope(part[part["converged"] & (part["chi2_red"].astype(float) <= limit)], paper,
                                       what) for limit, what in ((np.inf, "converged"),
                                                                 (GOOD_CHI2_RED, f"with chi2_red <= {GOOD_CHI2_RED:g}")))
        parts.append(f"\n## {display_model(model)}, {kind} {'w/t' if bn else 'w/o'} BN, {epochs} epochs\n\n{envelope}.\n\n"
                     + markdown_table(["grid", "runs / levels / seeds", "axis", "weights", "plateaus", "mu",
                                       "chi2_red", "vs paper"], body) + "\n")
    return "".join(parts)


def _law_columns(fit: Any, name: str) -> dict[str, Any]:
    """A fit's midpoint and quoted law as the columns ``mu_<name>`` (noise std), ``err_<name>`` (half the 68 %
    interval), ``lo68_<name>``, ``hi68_<name>``, ``se_<name>`` (its scale in log10 mu, decades), ``dof_<name>`` and
    ``flag_<name>``; NaN where the fit did not converge."""
    ok = fit.converged and fit.mu
    se = fit.interval_se
    if ok and se is not None and fit.axis != "log10":
        se = se / (fit.mu * math.log(10.0))  # the law of a linear fit, in decades near mu
    return {f"mu_{name}": fit.mu if ok else np.nan, f"err_{name}": reported_error(fit) if ok else np.nan,
            f"lo68_{name}": fit.mu_lo68 if ok else np.nan, f"hi68_{name}": fit.mu_hi68 if ok else np.nan,
            f"se_{name}": se if ok and se is not None else np.nan,
            f"dof_{name}": fit.interval_dof if ok and fit.interval_dof is not None else np.nan,
            f"flag_{name}": fit.error_flag if ok else ""}


class Law(NamedTuple):
    """A midpoint and its quoted law: mu (noise std), half its 68 % interval, its scale in log10 mu (decades) and
    degrees of freedom (NaN: normal)."""

    mu: float
    err: float
    se: float
    dof: float

    @classmethod
    def of(cls, row: pd.Series, name: str) -> "Law":
        """The law in ``row``'s columns ``<field>_<name>``; a row with only ``mu`` and ``err`` (NaN ``se``) reads
        its error as a normal standard error."""
        mu, err = float(row.get(f"mu_{name}", np.nan)), float(row.get(f"err_{name}", np.nan))
        se, dof = float(row.get(f"se_{name}", np.nan)), float(row.get(f"dof_{name}", np.nan))
        if not np.isfinite(se) and mu > 0:
            se, dof = err / (mu * math.log(10.0)), np.nan
        return cls(mu, err, se, dof)

    def quantile(self, q: float) -> float:
        return float(stats.norm.ppf(q) if not np.isfinite(self.dof) else stats.t.ppf(q, self.dof))


def _cell(row: pd.Series) -> str:
    """A Table I cell as the tables name it: ``additive w/t BN``."""
    return f"{row['noise.kind']} {'w/t' if row['batchnorm'] else 'w/o'} BN"


def _mu(row: pd.Series) -> Law:
    """The midpoint and its law on the row's native axis."""
    return Law.of(row, row["native_axis"])


def resolved_midpoint(mu: float, err: float) -> bool:
    """Whether a midpoint says where the drop is: finite, with an error below its value. An unfinished search after
    one round can fit mu = 1 +- 88; drawn, that point would set the axis and flatten every measured one."""
    return bool(np.isfinite(mu) and np.isfinite(err) and 0 < err < abs(mu))


def _ratio(a: Law, b: Law) -> tuple[float, Law]:
    """a / b and the law of log10(a / b): the two scales in quadrature (independent fits), Welch-Satterthwaite
    degrees of freedom (normal where either law is)."""
    if not (np.isfinite(a.mu) and np.isfinite(b.mu)) or a.mu <= 0 or b.mu <= 0:
        return np.nan, Law(np.nan, np.nan, np.nan, np.nan)
    r = a.mu / b.mu
    se = math.hypot(a.se, b.se)
    dof = (se**4 / (a.se**4 / a.dof + b.se**4 / b.dof)
           if np.isfinite(a.dof) and np.isfinite(b.dof) and se > 0 else np.nan)
    law = Law(r, np.nan, se, dof)
    return r, law._replace(err=r * (10.0 ** (law.quantile(0.5 + LEVELS["68"] / 2) * se) - 1.0) if se > 0 else 0.0)


def _p_no_change(ratio: float, law: Law) -> float:
    """Two-sided p-value of "the factor changes nothing" (ratio 1) under the ratio's law."""
    if not (np.isfinite(ratio) and ratio > 0 and law.se > 0):
        return np.nan
    t = abs(math.log10(ratio)) / law.se
    return float(2 * (stats.norm.sf(t) if not np.isfinite(law.dof) else stats.t.sf(t, law.dof)))


def _versus_paper(after: Law, paper: float | None) -> tuple[float, bool | None]:
    """Where the paper's mu lies in the law of ``after``, as a standard normal quantile (as a pull: 0 at mu, +-1.96
    at the edges of the 95 % interval), and whether it lies inside the 95 % interval."""
    if not paper or not (np.isfinite(after.mu) and after.mu > 0 and after.se > 0):
        return np.nan, None
    t = (math.log10(after.mu) - math.log10(paper)) / after.se
    cdf = stats.norm.cdf(t) if not np.isfinite(after.dof) else stats.t.cdf(t, after.dof)
    return float(stats.norm.ppf(np.clip(cdf, 1e-16, 1 - 1e-16))), bool(abs(t) <= after.quantile(0.975))


def _closes(before: Law, after: Law, paper: float | None) -> float:
    """The share of the log-distance to the paper's mu that going from ``before`` to ``after`` removes; NaN where
    the paper's mu lies inside the 95 % interval of ``before`` (there is no measured gap to close, and dividing by
    the tiny remaining distance would print a huge, meaningless share)."""
    if not paper or not (np.isfinite(before.mu) and np.isfinite(after.mu)) or before.mu <= 0 or after.mu <= 0:
        return np.nan
    if _versus_paper(before, paper)[1]:  # the paper's mu inside the 95 % interval of before: no measured gap
        return np.nan
    return math.log(after.mu / before.mu) / math.log(paper / before.mu)


def factor_table(cells: pd.DataFrame, model: str = "mlp") -> pd.DataFrame:
    """Per cell and factor: the midpoint ratio it causes, its error and p-value (module docstring), the share of the
    log-distance to the paper it closes (1: all of it, 0: none, < 0: it moves away), where the paper lies in the
    law of the result (``after_vs_paper_z``, a standard normal quantile) and whether inside its 95 % interval. Only
    finished series enter: a search cut short has a midpoint from its first rounds, which says too little to
    compare."""
    out = []
    done = cells[cells["finished"]]
    for kind, bn in CELLS:
        mine = done[(done["model"] == model) & (done["noise.kind"] == kind) & (done["batchnorm"] == bn)]
        if mine.empty:
            continue
        paper = paper_mu("mnist", model, kind, bn)
        auto = mine[(mine["grid"] == "adaptive") & (mine["backward"] == "autograd")].set_index("epochs")
        epochs = sorted(auto.index)
        factors: list[tuple[str, Law, Law]] = []
        for low, high in zip(epochs, epochs[1:]):
            factors.append((f"epochs {low} -> {high}", _mu(auto.loc[high]), _mu(auto.loc[low])))
        if kind == "additive":
            for ep in epochs:
                row = auto.loc[ep]
                factors.append((f"fit axis log10 -> linear ({ep} epochs)", Law.of(row, "linear"),
                                Law.of(row, "log10")))
        if epochs:
            row = auto.loc[epochs[-1]]
            factors.append((f"fit weights 2 % floor -> Eq. 2 as written ({epochs[-1]} epochs)", Law.of(row, "eq2"),
                            _mu(row)))
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
            ratio, law = _ratio(after, before)
            z, inside = _versus_paper(after, paper)
            out.append({"noise.kind": kind, "batchnorm": bn, "factor": name, "mu_before": before.mu,
                        "err_before": before.err, "mu_after": after.mu, "err_after": after.err, "ratio": ratio,
                        "ratio_err": law.err, "ratio_se_log10": law.se, "ratio_dof": law.dof,
                        "ratio_p": _p_no_change(ratio, law),
                        "closes_gap": _closes(before, after, paper), "after_vs_paper_z": z,
                        "paper_in_95": inside, "paper_mu": paper})
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
        span: list[float] = []  # what the y range shows: every drawn midpoint with its error, the paper's
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
                bars = _bars(part, axis)
                span += _extent(part[f"mu_{axis}"], bars)
                ax.errorbar(part["epochs"], part[f"mu_{axis}"], yerr=bars, fmt=style, capsize=3,
                            color=color, label=label)
                drawn += len(part)
                if kind == "additive" and "mu_linear" in part:
                    linear = _bars(part, "linear")
                    span += _extent(part["mu_linear"], linear)
                    ax.errorbar(part["epochs"], part["mu_linear"], yerr=linear, fmt="^:", capsize=3,
                                color="tab:gray", label="here, linear fit of the same runs")
            for _, row in every[~every["finished"]].iterrows():
                mu, err = _mu(row).mu, _mu(row).err
                label = f"{backward.replace('_', '-')}, search unfinished ({row['runs']} runs)"
                if resolved_midpoint(mu, err):  # a search cut short: its midpoint so far, drawn hollow and named
                    span += [mu - err, mu + err]
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
        span = [v for v in span if math.isfinite(v)]
        if span:
            low, high = min(span), max(span)
            ax.set_ylim(low - 0.08 * (high - low + 1e-9), high + 0.08 * (high - low + 1e-9))
        for part, style, color, label in straight:
            axis = part["native_axis"].iloc[0]
            bottom = ax.get_ylim()[0]
            inside = part[f"mu_{axis}"] >= bottom
            ax.errorbar(part["epochs"][inside], part[f"mu_{axis}"][inside], yerr=_bars(part[inside], axis),
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
    low, high = int(adaptive["seeds"].min()), int(adaptive["seeds"].max())
    seeds = f"{low} seeds" if low == high else f"{low}-{high} seeds per series"
    fig.suptitle(f"Midpoint noise level of global noise against training epochs (adaptive grids, {seeds})"
                 + ("; hollow: search not finished" if drew_unfinished else ""), fontsize=10)
    name = "gap_mu_vs_epochs.png" if model == "mlp" else f"gap_mu_vs_epochs_{model}.png"
    return save_figure(fig, out_dir / name)


#: The chi2_red up to which a combination's fit counts as describing its curve, for the narrower envelope.
GOOD_CHI2_RED = 3.0


def _envelope(ok: pd.DataFrame, paper: float | None, what: str) -> str:
    """``envelope (converged): mu = a .. b over n (x % .. y % of the paper's p), the paper inside/outside``."""
    if ok.empty or not paper:
        return f"no {what} fit"
    low, high = float(ok["mu_fit"].min()), float(ok["mu_fit"].max())
    return (f"envelope ({what}): mu = {low:.3g} .. {high:.3g} over {len(ok)} combinations "
            f"({100 * (low / paper - 1):+.1f} % .. {100 * (high / paper - 1):+.1f} % of the paper's {paper:g}), the "
            f"paper's value {'inside' if low <= paper <= high else 'outside'}")


def _combination_outputs(df: pd.DataFrame, study: Any, out_dir: Path) -> list[Path]:
    tables = [combination_table(df, study, kind=kind, model=model) for model in ("mlp", "lenet5")
              for kind in ("multiplicative", "additive")]
    tables = [t for t in tables if not t.empty]
    if not tables:
        return []
    table = pd.concat(tables, ignore_index=True)
    return [write_csv(table, out_dir / "gap_combinations.csv"),
            write_text(combination_markdown(table), out_dir / "gap_combinations.md")]


def _interval_cell(row: pd.Series, axis: str) -> str:
    return format_interval(row[f"mu_{axis}"], row.get(f"lo68_{axis}"), row.get(f"hi68_{axis}"), axis,
                           row.get(f"flag_{axis}") or "")


def _extent(mu: Any, bars: np.ndarray) -> list[float]:
    """The lower and upper ends of error bars ``bars`` ((2, n), as :func:`_bars` gives) around ``mu``: what a
    figure's y range must hold."""
    mu = np.asarray(mu, dtype=float)
    return list(mu - bars[0]) + list(mu + bars[1])


def _bars(part: pd.DataFrame, axis: str) -> np.ndarray:
    """(2, n) error bars of the 68 % intervals (asymmetric for log10 fits); +-err where the rows have no interval."""
    mu, err = part[f"mu_{axis}"].to_numpy(float), part[f"err_{axis}"].to_numpy(float)
    lo = part.get(f"lo68_{axis}", pd.Series(mu - err)).to_numpy(float)
    hi = part.get(f"hi68_{axis}", pd.Series(mu + err)).to_numpy(float)
    return np.vstack([mu - lo, hi - mu])


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
             format_pm(r["ratio"], r["ratio_err"]), f"{r['ratio_p']:.2g}" if np.isfinite(r["ratio_p"]) else "",
             f"{r['closes_gap']:+.2f}" if np.isfinite(r["closes_gap"]) else "no gap before",
             (f"{r['after_vs_paper_z']:+.1f} ({'inside' if r['paper_in_95'] else 'outside'} 95 %)"
              if np.isfinite(r["after_vs_paper_z"]) else ""),
             f"{r['paper_mu']:g}"] for _, r in factors.iterrows()]
    text = ("# The gap to Table I, factor by factor\n\n"
            "Each row changes one factor of the protocol and keeps the rest. mu ± half its 68 % interval (seed "
            "jackknife, Student t); ratio = mu after / mu before, its error from both fits' errors in quadrature "
            "(conservative where both fit the same runs: fit axis, fit weights), p = two-sided p-value of 'no "
            "change' (one test per row; among many rows some p < 0.05 arise by chance); closes = share of the "
            "log-distance to the paper's mu that the change removes (1: all, 0: none, negative: away from the "
            "paper; 'no gap before' where the paper's mu lies in the 95 % interval of mu before); paper = where the "
            "paper's mu lies in the law of mu after, as a standard normal quantile (0: at mu, +-1.96: at the edges "
            "of the 95 % interval; the paper's own error is not published).\n\n"
            + markdown_table(["Cell", "Factor", "mu before", "mu after", "ratio", "p", "closes", "paper in mu after",
                              "paper"], body))
    cell_rows = [[r["model"], _cell(r), r["epochs"],
                  r["backward"].replace("_", "-"), r["grid"], "yes" if r["finished"] else "no",
                  f"{r['runs']} / {r['levels']} / {r['seeds']}",
                  _interval_cell(r, "log10") if np.isfinite(r.get("mu_log10", np.nan)) else "",
                  _interval_cell(r, "linear") if np.isfinite(r["mu_linear"]) else "n.c.",
                  f"{r['paper_mu']:g}" if r["paper_mu"] else ""] for _, r in cells.iterrows()]
    cells_text = ("# Every measured series of the gap study\n\nfinished: the search ran to its end (or every grid "
                  "run is stored); an unfinished search's mu comes from its first rounds only. mu with its 68 % "
                  "interval (seed jackknife, Student t; +up/-down where a log10 fit makes it asymmetric).\n\n"
                  + markdown_table(["model", "cell", "epochs", "backward", "grid", "finished", "runs / levels / seeds",
                                    "mu, log10 fit", "mu, linear fit", "paper"], cell_rows))
    return [write_csv(cells, out_dir / "gap_cells.csv"), write_text(cells_text, out_dir / "gap_cells.md"),
            write_csv(factors, out_dir / "gap_factors.csv"),
            write_text(text, out_dir / "gap_factors.md"), write_text(study_table(study), out_dir / "gap_study.md"),
            *_combination_outputs(df, study, out_dir),
            *(gap_figure(cells, out_dir, m) for m in models)]


__all__ = ["combination_markdown", "combination_table", "factor_table", "gap_figure", "measured_cells", "measured_groups", "study_table", "write_gap"]
