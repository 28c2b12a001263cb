"""One-off check of results/mnist/gap.md: how far does fixing Eq. 1's lower plateau a_min at chance (0.1) instead of
fitting it move the 100-epoch multiplicative MLP midpoints? Reads the committed per-run export; no training.

    .venv/bin/python analysis/gap_fixed_amin_check.py [results/mnist/gap/runs.csv]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from walking_noise.fit import DEFAULT_SPREAD_FLOOR_FRACTION, logistic
from walking_noise.registry import DATASETS

CHANCE = 1.0 / DATASETS["mnist"].num_classes


def main(path: str = "results/mnist/gap/runs.csv") -> None:
    df = pd.read_csv(path)
    df = df[(df["model"] == "mlp") & (df["noise.kind"] == "multiplicative") & (df["training.epochs"] == 100)
            & (df["noise.backward"] == "autograd") & (df["status"] == "COMPLETED")]
    for bn, runs in df.groupby("batchnorm"):
        levels = runs.groupby("noise.noise_std")["final_accuracy"].agg(["mean", "std"])
        x, y = levels.index.to_numpy(float), levels["mean"].to_numpy(float)
        spread = np.maximum(levels["std"].fillna(0).to_numpy(float),
                            DEFAULT_SPREAD_FLOOR_FRACTION * (y.max() - y.min()))  # fit_midpoint's default floor
        free, _ = curve_fit(logistic, x, y, p0=[0.9, -0.1, 0.9, 0.1], sigma=spread, absolute_sigma=True, maxfev=20000)
        fixed, cov = curve_fit(lambda s, mu, w, d: logistic(s, mu, w, d, CHANCE), x, y, p0=[0.9, -0.1, 0.9],
                               sigma=spread, absolute_sigma=True, maxfev=20000)
        print(f"{'w/t' if bn else 'w/o'} BN: a_min fitted {free[3]:.4f} -> mu {free[0]:.4f}; "
              f"a_min = {CHANCE} -> mu {fixed[0]:.4f} +- {np.sqrt(cov[0, 0]):.4f} ({fixed[0] / free[0] - 1:+.1%})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", default="results/mnist/gap/runs.csv", help="the per-run export to read")
    args = parser.parse_args()
    main(args.export)
