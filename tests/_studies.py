"""The tiny study the runner, Slurm and claims tests share: 2 noise levels x 3 seeds of the MLP on mnist_5k."""

from __future__ import annotations

from pathlib import Path

TINY = """\
# 2 noise levels x 3 seeds = 6 experiments
seml:
  executable: exp.py
  name: tiny
  output_dir: logs
slurm:
  - experiments_per_job: {per_job}
    sbatch_options:
      time: 0-00:10
      mem: 1G
      cpus-per-task: 1
fixed:
  dataset: mnist_5k
  model: mlp
  max_train: {max_train}
  max_test: 300
  training.epochs: {epochs}
  device: cpu
  noise.kind: additive
grid:
  noise.noise_std:
    type: choice
    options: {levels}
  seed:
    type: range
    min: 0
    max: {seeds}
    step: 1
"""


def tiny_text(**fmt: object) -> str:
    """The tiny study's YAML; ``max_train``, ``epochs``, ``per_job`` (Slurm), ``levels`` and ``seeds`` may vary."""
    return TINY.format(**{"max_train": 600, "epochs": 1, "per_job": 3, "levels": "[0.1, 1.0]", "seeds": 3, **fmt})


def tiny_study(tmp_path: Path, text: str | None = None, name: str = "tiny.yaml", **fmt: object) -> Path:
    """Write a study YAML (the tiny one unless ``text``) and SEML's stand-in executable into ``tmp_path``."""
    (tmp_path / "exp.py").write_text("# stand-in executable for read_config\n")
    path = tmp_path / name
    path.write_text(text if text is not None else tiny_text(**fmt))
    return path
