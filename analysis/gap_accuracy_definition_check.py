"""One-off check of results/mnist/gap.md (issue item 6, "which accuracy they averaged"): would another reading of a
run's final accuracy move the 100-epoch MLP midpoints toward the paper? Re-scores every stored run from its
per-epoch validation curve (mean of the last five epochs, as the paper says and the study uses; the last epoch; the
best epoch; the mean of the last ten) and fits each series with the report's own fit. Reads the committed per-run
export and, from the study, which runs each adaptive search chose (the authors'-grid runs of the same cells are a
different series and stay out); no training.

    .venv/bin/python analysis/gap_accuracy_definition_check.py [results/mnist/gap/runs.csv] [out.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from walking_noise.export import read_export
from walking_noise.report.common import ACCURACY, Series, fit_series, format_fit, markdown_table
from walking_noise.report.gap import measured_groups
from walking_noise.report.paper import paper_mu
from walking_noise.study import load_study
from walking_noise.training import final_accuracy

#: how a run's validation curve becomes its final accuracy
DEFINITIONS = {
    "mean of last 5 (paper, this study)": final_accuracy,  # the study's own rule, as stored
    "last epoch": lambda curve: float(curve[-1]),
    "best epoch": lambda curve: float(np.max(curve)),
    "mean of last 10": lambda curve: float(np.mean(curve[-10:])),
}


def rescored(runs: pd.DataFrame, definition) -> pd.DataFrame:
    """The runs with ``final_accuracy`` recomputed from each curve; diverged runs keep their chance score."""
    out = runs.copy()
    out[ACCURACY] = [acc if diverged else definition([float(v) for v in curve])
                     for acc, diverged, curve in zip(runs[ACCURACY], runs["diverged"], runs["val_accuracy"])]
    return out


def main(path: str = "results/mnist/gap/runs.csv", out: str | None = None,
         study: str = "seml_configs/mnist_gap.yaml") -> None:
    df = read_export(path)
    rows = []
    for grid, base, runs, _finished in measured_groups(df, load_study(study)):
        if (grid != "adaptive" or base["model"] != "mlp" or base["training"]["epochs"] != 100
                or base["noise"]["backward"] != "autograd"):
            continue
        kind, bn = base["noise"]["kind"], bool(base["batchnorm"])
        runs = runs[runs["status"] == "COMPLETED"]
        paper = paper_mu("mnist", "mlp", kind, bn)
        axis = "log10" if kind == "additive" else "linear"
        base_mu = None
        for name, definition in DEFINITIONS.items():
            fit = fit_series(Series({}, rescored(runs, definition)), axis=axis)
            mu = fit.mu if fit.converged else np.nan
            base_mu = mu if base_mu is None else base_mu
            inside = "inside" if paper and fit.converged and fit.mu_lo95 <= paper <= fit.mu_hi95 else "outside"
            rows.append([f"{kind} {'w/t' if bn else 'w/o'} BN", name, format_fit(fit), f"{mu / base_mu:.4f}",
                         f"{100 * (mu / paper - 1):+.1f} % (paper {inside} 95 %)" if paper else "",
                         f"{paper:g}" if paper else "", str(len(runs))])
    text = ("# Which accuracy: mu of the 100-epoch MLP cells under other readings of a run's final accuracy\n\n"
            f"From `{path}` (the runs of the cells' adaptive searches, `{study}`) by "
            "`analysis/gap_accuracy_definition_check.py`; fit axis log10 (additive) / linear (multiplicative), the "
            "report's fit; mu ± half its 68 % interval (seed jackknife, Student t).\n\n"
            + markdown_table(["cell", "final accuracy", "mu", "ratio to mean of last 5", "vs paper", "paper",
                              "runs"], rows))
    print(text)
    if out:
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", default="results/mnist/gap/runs.csv", help="the per-run export to read")
    parser.add_argument("out", nargs="?", default=None, help="Markdown file to write (default: print)")
    parser.add_argument("--study", default="seml_configs/mnist_gap.yaml", help="the study whose searches chose the runs")
    args = parser.parse_args()
    main(args.export, args.out, args.study)
