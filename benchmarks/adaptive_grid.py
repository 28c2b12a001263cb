"""Runs needed for the same midpoint error: adaptive noise grid vs the paper's dense fixed grid.

    .venv/bin/python benchmarks/adaptive_grid.py [--epochs 5] [--kind additive]

The study: the MLP on the embedded MNIST subset (mnist_5k) with global noise, 5 seeds. The dense grid is the
authors' (additive: 17 levels log-spaced 1e-2..1e2; multiplicative: 21 levels 0..2). Its fit's relative error (the
quoted one, ``walking_noise.fit.errors.reported_error`` / mu) becomes the adaptive search's target; the script prints
both run counts and their ratio. Every run is really trained (with the batched engine). The README's rows were
measured before issue 27, with the covariance error ``mu_err / mu`` (``AdaptiveGrid.error="covariance"``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from walking_noise.adaptive import AdaptiveGrid, find_transition, relative_error
from walking_noise.batched import train_members
from walking_noise.config import RunConfig
from walking_noise.fit import fit_midpoint, reported_error
from walking_noise.training import load_run_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--kind", default="additive", choices=("additive", "multiplicative"))
    parser.add_argument("--levels-per-round", type=int, default=1)
    parser.add_argument("--refine-seeds", type=int, default=3)
    parser.add_argument("--design", default="variance", choices=("variance", "offsets"),
                        help="how a converged search places runs (walking_noise.adaptive.AdaptiveGrid.design)")
    args = parser.parse_args()
    data = load_run_dataset(RunConfig())
    trained: dict[tuple[float, int], float] = {}

    def measure(levels, seeds):
        todo = [(float(s), int(seed)) for s in levels for seed in seeds if (float(s), int(seed)) not in trained]
        cfgs = [RunConfig.from_dict({"seed": seed, "training": {"epochs": args.epochs},
                                     "noise": {"kind": args.kind, "noise_std": s}}) for s, seed in todo]
        for (s, seed), result in zip(todo, train_members(cfgs, data)[0] if cfgs else []):
            trained[(s, seed)] = result.final_accuracy
        return [(float(s), int(seed), trained[(float(s), int(seed))]) for s in levels for seed in seeds]

    axis = "log10" if args.kind == "additive" else "linear"
    dense_levels = np.logspace(-2, 2, 17) if axis == "log10" else np.linspace(0, 2, 21)
    start = time.perf_counter()
    dense = measure(dense_levels, range(5))
    x, seeds, y = map(np.array, zip(*dense))
    dense_fit = fit_midpoint(x, y, seeds=seeds, axis=axis)
    target = relative_error(dense_fit)
    print(f"dense grid: {len(dense)} runs, mu = {dense_fit.mu:.4g} +- {reported_error(dense_fit):.3g} "
          f"(rel. error {target:.3g}) [{time.perf_counter() - start:.0f} s]")
    trained.clear()  # the adaptive search pays for every run it uses
    start = time.perf_counter()
    low = 0.01 if axis == "log10" else 0.0
    grid = AdaptiveGrid(low, float(dense_levels[-1]), axis=axis, target_rel_err=target, max_runs=len(dense),
                        levels_per_round=args.levels_per_round, refine_seeds=args.refine_seeds, design=args.design)
    result = find_transition(measure, grid)
    fit = result.fit
    mu = f"{fit.mu:.4g} +- {reported_error(fit):.3g} (rel. error {relative_error(fit):.3g})" if fit.converged \
        else fit.reason
    print(f"adaptive:   {result.runs} runs in {len(result.rounds)} rounds, mu = {mu}; stopped: "
          f"{result.stopped_because} [{time.perf_counter() - start:.0f} s]")
    print(f"design {grid.design}, levels per round {grid.levels_per_round}, seeds coarse {grid.coarse_seeds} / "
          f"refine {grid.refine_seeds}; steps: {' '.join(result.steps)}")
    print(f"runs adaptive / dense = {result.runs / len(dense):.2f}")


if __name__ == "__main__":
    main()
