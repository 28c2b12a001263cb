"""A SEML bundle of N configs against N single SEML experiments, run as ``seml start`` runs them, without MongoDB.

    .venv/bin/python benchmarks/seml_bundle.py [--configs 8] [--epochs 3]

The same N configs (MLP with BatchNorm on mnist_5k, global additive noise, levels x 2 seeds):
- ``single, in process``: the Sacred experiment ``experiments/walking_noise_experiment.py`` run once per config in
  this process (``ex.run``, what a SEML job runs for each experiment, minus the process start);
- ``single, one process each``: ``python experiments/walking_noise_experiment.py with ...`` per config, one after
  the other (how a Slurm job with ``experiments_per_job`` runs SEML experiments);
- ``bundle``: one experiment whose ``bundle.members`` lists the N configs (what ``walking-noise bundle`` writes),
  in process and in its own process.
Ratios are single / bundle for the same work.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
logging.getLogger().setLevel(logging.WARNING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    import torch
    import walking_noise_experiment as exp

    torch.set_num_threads(1)
    base = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "training": {"epochs": args.epochs},
            "noise": {"kind": "additive"}}
    levels = [0.01 * 10 ** (3 * i / max(1, args.configs // 2 - 1)) for i in range(args.configs // 2)]
    members = [{"seed": s, "noise": {"noise_std": level}} for level in levels for s in (0, 1)]
    singles = [{**base, "seed": m["seed"], "noise": {**base["noise"], **m["noise"]}} for m in members]
    bundle = {**base, "bundle": {"members": members}}

    def in_process(config: dict) -> float:
        started = time.perf_counter()
        run = exp.ex.run(config_updates=config, options={"--loglevel": "WARNING"})
        assert run.status == "COMPLETED"
        return time.perf_counter() - started

    def own_process(config: dict) -> float:
        started = time.perf_counter()
        updates = [f"{k}={v!r}" for k, v in _flat(config).items()]  # Sacred parses Python literals
        subprocess.run([sys.executable, str(ROOT / "experiments" / "walking_noise_experiment.py"), "-l", "WARNING",
                        "with", *updates], check=True, capture_output=True, cwd=ROOT,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        return time.perf_counter() - started

    in_process(singles[0])  # warm-up: imports, the embedded dataset, the compiled generator
    single_in = sum(in_process(c) for c in singles)
    bundle_in = in_process(bundle)
    single_own = sum(own_process(c) for c in singles)
    bundle_own = own_process(bundle)
    print(f"{args.configs} configs: MLP + BatchNorm on mnist_5k, {args.epochs} epochs, 1 thread")
    print(f"in process:       single experiments {single_in:6.1f} s, one bundle {bundle_in:6.1f} s, "
          f"ratio {single_in / bundle_in:.2f}x")
    print(f"one process each: single experiments {single_own:6.1f} s, one bundle {bundle_own:6.1f} s, "
          f"ratio {single_own / bundle_own:.2f}x")


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "bundle":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


if __name__ == "__main__":
    main()
