"""Whole-campaign wall time: the local runner vs one process per config as a plain SEML campaign runs it.

    .venv/bin/python benchmarks/campaign_walltime.py [--model mlp|lenet5] [--configs 16] [--epochs 3] [--workers 2]

Both sides run the same configs (global additive noise, levels x seeds, on the embedded dataset) on this machine:
- ``per process``: ``python experiments/walking_noise_experiment.py with ...`` once per config, ``--workers`` at a
  time (what Slurm does with one experiment per job): process start, imports, data loading and training each time.
  Each process gets cores / workers threads (``OMP_NUM_THREADS``), as a Slurm job gets only its ``cpus-per-task``:
  left at torch's default, every process would use all cores and the oversubscribed processes run 2-10x slower,
  erratically, which would flatter the ratio;
- ``local runner``: ``walking-noise run STUDY --workers N`` into a fresh store (batches, shared data, one start).
The ratio is per-process time / runner time for the same work.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _runner import time_local_runner

ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
seml:
  executable: experiments/walking_noise_experiment.py
  project_root_dir: {root}
  name: walltime
fixed:
  dataset: mnist_5k
  model: {model}
  batchnorm: true
  training.epochs: {epochs}
  device: {device}
  noise.kind: additive
grid:
  noise.noise_std:
    type: loguniform
    min: 0.01
    max: 10.0
    num: {levels}
  seed:
    type: range
    min: 0
    max: {seeds}
    step: 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=("mlp", "lenet5"))
    parser.add_argument("--configs", type=int, default=16, help="levels x 2 seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a lent GPU")
    args = parser.parse_args()
    from walking_noise.study import load_study

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "walltime.yaml"
        path.write_text(STUDY.format(root=ROOT, model=args.model, epochs=args.epochs, levels=args.configs // 2,
                                     seeds=2, device=args.device))
        configs = load_study(path).configs
        env_python = sys.executable
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.workers))}

        def one(cfg: dict) -> None:
            updates = [f"seed={cfg['seed']}", f"model={cfg['model']}", "batchnorm=True", f"device={args.device}",
                       f"training.epochs={cfg['training']['epochs']}", "noise.kind=additive",
                       f"noise.noise_std={cfg['noise']['noise_std']!r}"]
            subprocess.run([env_python, str(ROOT / "experiments" / "walking_noise_experiment.py"), "-l", "WARNING",
                            "with", *updates], check=True, capture_output=True, cwd=ROOT, env=env)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(one, configs))
        per_process = time.perf_counter() - start

        runner = time_local_runner(path, Path(tmp) / "store", args.workers)
    print(f"{len(configs)} configs, {args.model} + BatchNorm, {args.epochs} epochs on mnist_5k, {args.workers} workers, "
          f"device {args.device}")
    print(f"one process per config (SEML-style): {per_process:7.1f} s")
    print(f"local runner (batched):              {runner:7.1f} s")
    print(f"ratio: {per_process / runner:.2f}x")


if __name__ == "__main__":
    main()
