"""A study as a Slurm job array, config by config (how arrays ran before work units) and in work units, against the
local runner; on the single-node Slurm of ``slurm/local_cluster.sh`` (start it first, as root).

    .venv/bin/python benchmarks/array_walltime.py [--configs 32] [--epochs 3] [--tasks 2]

The same configs (MLP with BatchNorm on mnist_5k, global additive noise, levels x 2 seeds), each side into a fresh
store, timed from the submission until every config is stored:
- ``array, one config per unit``: ``submit --members 1``: every task trains its configs one after the other;
- ``array, work units``: ``submit``: compatible configs packed in one task (``plan_shares``);
- ``walking-noise run --workers TASKS``.
Ratios: config-by-config / units, and units / local runner.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _runner import time_local_runner  # noqa: E402 - after the path

STUDY = """\
seml:
  executable: experiments/walking_noise_experiment.py
  project_root_dir: {root}
  name: arraytime
slurm:
  - experiments_per_job: {per_task}
    sbatch_options:
      time: 0-01:00
      mem: 2G
      cpus-per-task: 1
fixed:
  dataset: mnist_5k
  model: mlp
  batchnorm: true
  training.epochs: {epochs}
  noise.kind: additive
grid:
  noise.noise_std: {{type: loguniform, min: 0.01, max: 10.0, num: {levels}}}
  seed: {{type: range, min: 0, max: 2, step: 1}}
"""


def _array(study_path: Path, store: Path, tasks: int, members: int | None) -> float:
    from walking_noise.slurm import submit
    from walking_noise.store import LocalStore
    from walking_noise.study import load_study

    study = load_study(study_path)
    started = time.perf_counter()
    submission = submit(study, LocalStore(store), tasks=tasks, members=members)
    assert submission is not None
    expected = len(study.configs)
    deadline = started + 3600
    while len(LocalStore(store).completed_hashes()) < expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the array did not finish within an hour ({store})")
        time.sleep(0.5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=32, help="levels x 2 seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        path = Path(tmp) / "arraytime.yaml"
        path.write_text(STUDY.format(root=ROOT, epochs=args.epochs, levels=args.configs // 2,
                                     per_task=-(-args.configs // args.tasks)))
        one_by_one = _array(path, Path(tmp) / "a", args.tasks, members=1)
        units = _array(path, Path(tmp) / "b", args.tasks, members=None)
        runner = time_local_runner(path, Path(tmp) / "c", args.tasks)
    print(f"{args.configs} configs, MLP + BatchNorm, {args.epochs} epochs on mnist_5k, {args.tasks} array tasks / "
          f"workers, local single-node Slurm")
    print(f"array, one config per unit: {one_by_one:7.1f} s")
    print(f"array, work units:          {units:7.1f} s   ({one_by_one / units:.2f}x faster)")
    print(f"walking-noise run:          {runner:7.1f} s   (array with units / runner: {units / runner:.2f})")


if __name__ == "__main__":
    main()
