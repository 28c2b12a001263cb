"""Adaptive searches of a walking-noise study: side by side in lockstep vs one after the other.

    .venv/bin/python benchmarks/lockstep_searches.py [--points 8] [--epochs 3] [--max-train 2000]

The study: the MLP with BatchNorm on the embedded MNIST subset, additive walking noise trained in, one adaptive
search per injection point (seeds 0..2). Both ways train in this process with the batched engine and run the same
searches; lockstep plans each round's runs of all searches together, so they share batches, where one search at a
time trains only its own few runs per batch. A run's noise draws depend on the batch it trains in, so the two ways
measure slightly different accuracies and may choose slightly different levels; the run counts are printed to show
the work is comparable. Prints the wall time of each, the runs trained and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from walking_noise.searches import run_searches, train_search
from walking_noise.store import LocalStore
from walking_noise.study import study_run
from walking_noise.units import init_worker


def searches(points: int, epochs: int, max_train: int) -> list[tuple[dict, dict]]:
    out = []
    for point in range(points):
        base = study_run({"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "max_train": max_train,
                          "training": {"epochs": epochs},
                          "noise": {"kind": "additive", "placement": "walking", "injection_layer": point}}).values
        out.append((base, {"low": 0.01, "high": 1e4, "seeds": (0, 1, 2), "target_rel_err": 0.1, "max_runs": 21}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=2000)
    args = parser.parse_args()
    todo = searches(args.points, args.epochs, args.max_train)
    results = {}
    for way in ("one after the other", "lockstep"):
        with tempfile.TemporaryDirectory() as folder:
            store = LocalStore(folder)
            init_worker(folder, torch.get_num_threads())
            start = time.perf_counter()
            if way == "lockstep":
                found = run_searches(todo, "bench", store)
            else:
                found = [train_search(base, settings, "bench", store) for base, settings in todo]
            wall = time.perf_counter() - start
            runs = len(list(store.documents()))
        mus = [f"{r.fit.mu:.3g}" if r.fit.converged else "n.c." for r in found]
        results[way] = wall
        print(f"{way:>20}: {wall:7.1f} s, {runs} runs, mu per point {' '.join(mus)}", flush=True)
    print(f"lockstep speed-up: {results['one after the other'] / results['lockstep']:.2f}x "
          f"({args.points} searches, {args.epochs} epochs, {args.max_train} training samples, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
