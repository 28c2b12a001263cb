"""mu from this library's fit against psignifit 4's, on committed real curves (issue 27's cross-check).

    PYTHONPATH=src .venv/bin/python analysis/psignifit_check.py [--out results/psignifit_check]

Needs psignifit (``pip install psignifit``; 4.3 was used). The curves: the four MNIST MLP cells of Table I trained
for the authors' 100 epochs (``results/mnist/gap/runs.csv``) and walking additive noise through the MLP with
BatchNorm at points 0, 4 and 8, noise only at inference and noise in training (``results/mnist/report/runs.csv``).
Each curve is fitted by :func:`walking_noise.report.common.fit_series` (its quoted interval) and by
:func:`walking_noise.fit.crosscheck.psignifit_midpoint` on the counts (accuracy x 10,000 MNIST test images, summed
over seeds per level). They agree when the two midpoints differ by at most half the width of our 95 % interval.
Writes ``psignifit_check.md`` and ``psignifit_check.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from walking_noise.export import read_export
from walking_noise.fit.crosscheck import psignifit_midpoint
from walking_noise.report.common import Series, fit_series, format_fit, markdown_table, paper_runs, select

ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST = 10_000  # images in MNIST's test set: the trials behind one run's accuracy


def curves() -> list[tuple[str, pd.DataFrame]]:
    """(name, runs) of every curve the check fits."""
    out = []
    gap = read_export(ROOT / "results" / "mnist" / "gap" / "runs.csv")
    cells = select(paper_runs(gap, ("additive", "multiplicative"), "global"), model="mlp",
                   **{"training.epochs": 100, "noise.backward": "autograd"})
    for (kind, bn), runs in cells.groupby(["noise.kind", "batchnorm"]):
        out.append((f"MLP, {kind}, {'w/t' if bn else 'w/o'} BN, 100 epochs (gap study)", runs))
    report = read_export(ROOT / "results" / "mnist" / "report" / "runs.csv")
    walking = select(paper_runs(report, "additive", "walking"), weight_clamping=False)
    for phase, name in (("inference", "noise only at inference"), ("train_and_inference", "noise in training")):
        for point in (0, 4, 8):
            runs = select(walking, **{"noise.phase": phase, "noise.injection_layer": point})
            out.append((f"MLP w/t BN, walking additive at point {point}, {name}", runs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "psignifit_check")
    args = parser.parse_args()
    rows = []
    for name, runs in curves():
        fit = fit_series(Series({}, runs))
        theirs = psignifit_midpoint(runs["noise.noise_std"], runs["final_accuracy"], MNIST_TEST, fit.axis)
        half = (fit.mu_hi95 - fit.mu_lo95) / 2
        rows.append({"curve": name, "axis": fit.axis, "seeds": runs["seed"].nunique(), "levels": fit.n_levels,
                     "mu": fit.mu, "mu_lo95": fit.mu_lo95, "mu_hi95": fit.mu_hi95, "flag": fit.error_flag,
                     "quoted": format_fit(fit), "psignifit_mu": theirs["mu"], "psignifit_lo95": theirs["lo95"],
                     "psignifit_hi95": theirs["hi95"], "psignifit_eta": theirs["eta"],
                     "difference": theirs["mu"] - fit.mu, "half_width95": half,
                     "agree": abs(theirs["mu"] - fit.mu) <= half, "seconds": theirs["seconds"]})
        print(f"{name}: {fit.mu:.5g} vs psignifit {theirs['mu']:.5g} ({theirs['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "psignifit_check.csv", index=False)
    body = [[r["curve"], r["quoted"], f"{r['mu_lo95']:.4g} .. {r['mu_hi95']:.4g}", f"{r['psignifit_mu']:.5g}",
             f"{r['psignifit_lo95']:.4g} .. {r['psignifit_hi95']:.4g}", f"{r['psignifit_eta']:.2g}",
             f"{r['difference'] / r['half_width95']:+.2f}" if r["half_width95"] > 0 else "",
             "yes" if r["agree"] else "no"] for r in rows]
    text = ["# mu here and in psignifit 4", "",
            f"`PYTHONPATH=src .venv/bin/python analysis/psignifit_check.py` (psignifit "
            f"{_version()}, Python {sys.version.split()[0]}).", "",
            "Here: `fit_series` (Eq. 1, weighted least squares, 68 % interval from the seed jackknife with Student t). "
            "psignifit: a falling logistic (`neg_logistic`, `yes/no`: both asymptotes free) with a beta-binomial "
            "likelihood on the counts (accuracy x 10,000 test images, summed over seeds per level); its threshold at "
            "half-way between the asymptotes is mu, on the same axis (log10 of the noise std where the fit is on "
            "log10); MAP estimate and 95 % credible interval. d / half: the difference of the two midpoints in units "
            "of half our 95 % interval; they agree where |d / half| <= 1.", "",
            markdown_table(["Curve", "Here (68 %)", "Here 95 %", "psignifit mu", "psignifit 95 %", "eta",
                            "d / half", "agree"], body), ""]
    (args.out / "psignifit_check.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'psignifit_check.md'}; agree: {int(table['agree'].sum())} of {len(table)}")


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("psignifit")
    except Exception:  # noqa: BLE001 - a version string is decoration
        return "unknown version"


if __name__ == "__main__":
    main()
