"""What the studies in seml_configs/ cost, from per-run costs measured on this machine.

    .venv/bin/python benchmarks/campaign_cost.py [--device cpu|cuda] [--seconds 20]

1. Measures, per model and dataset shape, the wall time of one training epoch with its evaluation, per member and
   training sample, on the engine the runner uses (MLP packed 16 members on a CPU, 64 on a GPU; conv models one at
   a time on a CPU, 64 packed on a GPU), on random inputs of the dataset's shape (speed does not depend on the
   values), 4,096 training and 1,024 test samples.
2. Expands every study (SEML's parser) and adds up: a run trained with noise costs epochs x training samples; the
   inference-only runs of one seed share one clean training; evaluations of train-once-evaluate-many are counted
   at the measured rate. Adaptive searches count their ``max_runs`` (an upper bound).
3. Prints core-hours per study: dense grids as written, and with adaptive grids (runs x 0.15: the measured ratio of
   runs for the same mu error, ``benchmarks/adaptive_grid.py``: 13 vs 85 additive, 13 vs 105 multiplicative).
Dataset sizes: MNIST 60,000 / 10,000, CIFAR-10 50,000 / 10,000, GSC 12-class about 85,500 / 4,900.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SIZES = {"mnist": (60000, 10000), "mnist_5k": (4000, 1000), "cifar10": (50000, 10000),
         "speech_commands": (85500, 4900), "digits": (1437, 360)}
ADAPTIVE_FACTOR = 0.15


def measure(model: str, dataset: str, device: str, members: int, model_kwargs: dict | None = None) -> float:
    """Seconds per member and training sample of one epoch (with its share of evaluation)."""
    import torch

    from walking_noise.batched import train_members
    from walking_noise.config import RunConfig
    from walking_noise.data import DatasetSplits
    from walking_noise.registry import DATASETS

    entry = DATASETS[dataset]
    g = torch.Generator().manual_seed(0)
    n, m = 4096, 1024
    x = torch.randn(n + m, *entry.input_shape, generator=g)
    y = torch.randint(0, entry.num_classes, (n + m,), generator=g)
    data = DatasetSplits(name=dataset, train_x=x[:n].to(device), train_y=y[:n].to(device), test_x=x[n:].to(device),
                         test_y=y[n:].to(device), num_classes=entry.num_classes, input_shape=entry.input_shape,
                         class_weights=None, preprocessing={}, augment=None)
    configs = [RunConfig.from_dict({"dataset": dataset, "model": model, "model_kwargs": model_kwargs,
                                    "batchnorm": model_kwargs is None, "seed": s,
                                    "device": device, "training": {"epochs": 1},
                                    "noise": {"kind": "additive", "noise_std": 0.1}}) for s in range(members)]
    train_members(configs, data)  # warm-up
    started = time.perf_counter()
    train_members(configs, data)
    return (time.perf_counter() - started) / (members * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    from walking_noise.config import RunConfig
    from walking_noise.registry import MODELS, is_foreign
    from walking_noise.study import load_study
    from walking_noise.units import is_inference_only

    torch.set_num_threads(1)
    gpu = args.device == "cuda"

    def members(cfg: RunConfig) -> int:  # as the runner packs (walking_noise.units.auto_members)
        if is_foreign(cfg.model):
            return 1
        return 64 if gpu else 16 if MODELS[cfg.model].packs_on_cpu else 1
    rates: dict[tuple[str, str], float] = {}
    studies = sorted(p for p in (ROOT / "seml_configs").glob("*.yaml") if not p.name.endswith(".bundled.yaml"))
    rows = []
    for path in studies:
        study = load_study(path)
        cost, runs = 0.0, len(study.configs)
        clean: dict[tuple, int] = {}
        for config in study.configs:
            cfg = RunConfig.from_dict(config)
            key = (cfg.model, cfg.dataset)
            if key not in rates:
                rates[key] = measure(cfg.model, cfg.dataset, args.device, members(cfg), cfg.model_kwargs)
            train, test = SIZES[key[1]]
            if cfg.max_train:
                train = min(train, cfg.max_train)
            if is_inference_only(cfg):
                clean[(key, cfg.seed, cfg.training.epochs, cfg.batchnorm)] = train
                cost += rates[key] * test * min(5, cfg.training.epochs) / 3  # evaluations only
            else:
                cost += rates[key] * train * cfg.training.epochs
        for (key, _seed, epochs, _bn), train in clean.items():
            cost += rates[key] * train * epochs
        for base, settings in study.searches:
            cfg = RunConfig.from_dict(base)
            key = (cfg.model, cfg.dataset)
            if key not in rates:
                rates[key] = measure(cfg.model, cfg.dataset, args.device, members(cfg), cfg.model_kwargs)
            budget = int(settings.get("max_runs", 200))
            runs += budget
            cost += rates[key] * SIZES[cfg.dataset][0] * cfg.training.epochs * budget
        rows.append((path.stem, runs, cost / 3600))
    print(f"device {args.device}; seconds per member and training sample (one epoch with its evaluation):")
    for (model, dataset), rate in sorted(rates.items()):
        print(f"  {model:<28} {dataset:<16} {rate * 1e6:8.2f} us")
    print(f"\n{'study':<28}{'runs':>9}{'core-hours':>12}{'adaptive (x0.15)':>18}")
    for name, runs, hours in rows:
        print(f"{name:<28}{runs:>9}{hours:>12.1f}{hours * ADAPTIVE_FACTOR:>18.1f}")
    paper = [r for r in rows if r[0] in ("table1_global_noise", "walking_additive", "walking_multiplicative")]
    total_runs, total = sum(r[1] for r in paper), sum(r[2] for r in paper)
    print(f"{'paper campaign (3 studies)':<28}{total_runs:>9}{total:>12.1f}{total * ADAPTIVE_FACTOR:>18.1f}")


if __name__ == "__main__":
    main()
