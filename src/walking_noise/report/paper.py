"""The paper's own numbers, and a table that puts every reproduced Table I cell beside them.

The values are the published Table I (midpoint noise level mu of global noise); they are reference data to
compare with, never used to make a result. A cell is compared only when its runs are the paper's setting: noise in
training and inference, unclamped weights, default noise backward. Any other setting (epochs, grid) is stated in
the row so a difference can be read against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.fit.compare import versus_value
from walking_noise.registry import authors_epochs
from walking_noise.report.common import (
    NotEnoughRuns, column, dataset_name, fit_row, fit_series, format_fit, markdown_table, model_name, write_csv,
    write_text,
)
from walking_noise.report.global_noise import global_series

#: Table I of the paper: (dataset, model) -> {(noise kind, BatchNorm): mu}.
PAPER_TABLE1: dict[tuple[str, str], dict[tuple[str, bool], float]] = {
    ("mnist", "mlp"): {("additive", False): 1.69, ("additive", True): 1.57,
                       ("multiplicative", False): 0.942, ("multiplicative", True): 0.952},
    ("mnist", "lenet5"): {("additive", False): 1.34, ("additive", True): 1.61,
                          ("multiplicative", False): 0.946, ("multiplicative", True): 0.966},
    ("cifar10", "mlp"): {("additive", False): 2.89, ("additive", True): 2.11,
                         ("multiplicative", False): 0.655, ("multiplicative", True): 0.642},
    ("cifar10", "lenet5"): {("additive", False): 1.62, ("additive", True): 1.95,
                            ("multiplicative", False): 0.625, ("multiplicative", True): 0.629},
    ("speech_commands", "mlp"): {("additive", False): 5.83, ("additive", True): 2.06,
                                 ("multiplicative", False): 0.670, ("multiplicative", True): 0.667},
    ("speech_commands", "cnn_s"): {("additive", False): 7.89, ("additive", True): 3.73,
                                   ("multiplicative", False): 0.916, ("multiplicative", True): 0.772},
}


def paper_mu(dataset: Any, model: Any, kind: Any, batchnorm: Any) -> float | None:
    """The paper's Table I mu for a cell, or None where the paper has no such cell."""
    return PAPER_TABLE1.get((str(dataset), str(model)), {}).get((str(kind), bool(batchnorm)))


def _paper_setting(row: dict[str, Any]) -> bool:
    return (row.get("noise.phase", "train_and_inference") == "train_and_inference"
            and not bool(row.get("weight_clamping") or False)
            and row.get("noise.backward", "autograd") == "autograd")


def table1_vs_paper(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Every Table I cell that the paper also has, beside the paper's mu: ratio, whether the paper lies in our 95 %
    interval and the p-value of "equal", and what the runs were (epochs vs the paper's, levels, seeds, runs). Writes ``table1_vs_paper.md``
    and ``table1_vs_paper.csv``."""
    out_dir = Path(out_dir)
    _, every = global_series(df)
    rows = []
    for series in every:
        fit = fit_series(series)
        row = fit_row(series, fit)
        paper = paper_mu(row.get("dataset"), row.get("model"), row.get("noise.kind"), row.get("batchnorm"))
        if paper is None or not _paper_setting(row):
            continue
        mu = row["mu"] if row["converged"] else None
        versus = versus_value(fit, paper)
        epochs = column(series.runs, "training.epochs").dropna().unique()
        rows.append({
            "dataset": row.get("dataset"), "model": row.get("model"), "noise.kind": row.get("noise.kind"),
            "batchnorm": bool(row.get("batchnorm")), "mu": mu, "mu_err": row["mu_err"],
            "mu_lo68": row["mu_lo68"], "mu_hi68": row["mu_hi68"], "mu_lo95": row["mu_lo95"],
            "mu_hi95": row["mu_hi95"], "axis": row["axis"], "error_flag": row["error_flag"], "paper_mu": paper,
            "ratio": mu / paper if mu is not None else np.nan,
            "paper_in_95": (bool(row["mu_lo95"] <= paper <= row["mu_hi95"]) if mu is not None else None),
            "p_vs_paper": versus.p if versus is not None else np.nan,
            "epochs": int(epochs[0]) if len(epochs) == 1 else None,
            "paper_epochs": authors_epochs(row.get("dataset"), row.get("model")),
            "n_levels": row["n_levels"], "n_seeds": row["n_seeds"], "n_runs": len(series.runs),
            "converged": row["converged"], "reason": row["reason"], "chi2_red": row["chi2_red"],
        })
    if not rows:
        raise NotEnoughRuns("Table I vs paper: no global-noise series in the paper's setting (noise in training, "
                            "unclamped) for a dataset and model of the paper's Table I")
    table = pd.DataFrame(rows).sort_values(["dataset", "model", "noise.kind", "batchnorm"], ignore_index=True)
    body = []
    for r in table.to_dict("records"):
        here = format_fit(r) if r["converged"] else f"n.c. ({r['reason']})"
        inside = "" if r["paper_in_95"] is None else ("yes" if r["paper_in_95"] else "no")
        body.append([dataset_name(r["dataset"]), model_name(r["model"]), r["noise.kind"],
                     "w/t" if r["batchnorm"] else "w/o", f"{r['paper_mu']:g}", here,
                     f"{r['ratio']:.3f}" if np.isfinite(r["ratio"]) else "", inside,
                     f"{r['p_vs_paper']:.2g}" if np.isfinite(r["p_vs_paper"]) else "",
                     f"{r['epochs']} / {r['paper_epochs']}", f"{r['n_levels']} / {r['n_seeds']} / {r['n_runs']}"])
    lines = ["# Table I beside the paper", "",
             "mu of global noise here (68 % interval from the seed jackknife with Student t, flagged where not "
             "calibrated) and in the paper's Table I, which quotes no error. Paper in 95 %: whether the paper's mu "
             "lies inside our 95 % interval; p: two-sided p-value of log10 mu = log10 paper under our interval's "
             "law (a test of one cell; over many cells some p < 0.05 arise by chance). Epochs: here / paper. "
             "Runs: distinct noise levels / seeds / runs of the fitted series.", "",
             markdown_table(["Dataset", "Model", "Noise", "BN", "Paper mu", "Here mu", "Here / paper",
                             "Paper in 95 %", "p", "Epochs", "Levels / seeds / runs"], body),
             f"{len(table)} cells from {int(table['n_runs'].sum())} runs."]
    return [write_text("\n".join(lines) + "\n", out_dir / "table1_vs_paper.md"),
            write_csv(table, out_dir / "table1_vs_paper.csv")]


__all__ = ["PAPER_TABLE1", "paper_mu", "table1_vs_paper"]
