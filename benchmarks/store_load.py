"""How fast does ``runs_from_store`` load a big local store? (The paper ran over 200,000 experiments.)

Writes N synthetic run documents of realistic size (a full config, four 100-epoch curves, a 12-row layer table,
weight magnitudes, preprocessing record; about 9 kB of JSON each) into a fresh local store, spread over 16 segment
files as 16 writer processes would leave them, then times :func:`walking_noise.results.runs_from_store`.

    python benchmarks/store_load.py                 # N = 20,000
    python benchmarks/store_load.py --large         # also N = 200,000 (about 2 GB of JSON on disk, ~6 GB RAM peak)
    python benchmarks/store_load.py --n 5000 --keep /tmp/store

The timings it prints are the measurement (the README's speed table quotes them).

The documents are written straight into the segment files in the store's line format (one JSON document per line),
without the per-document fsync of :meth:`LocalStore.put`, so that writing does not dominate the benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from walking_noise.results import REPORT_FIELDS, runs_from_store  # noqa: E402
from walking_noise.store import config_hash  # noqa: E402

SEGMENTS = 16
EPOCHS = 100
LAYERS = [("Input", [3, 32, 32], 0), ("Conv", [6, 28, 28], 456), ("ReLU", [6, 28, 28], 0),
          ("MaxPool", [6, 14, 14], 0), ("Conv", [16, 10, 10], 2416), ("ReLU", [16, 10, 10], 0),
          ("MaxPool", [16, 5, 5], 0), ("FC", [120], 48120), ("ReLU", [120], 0), ("FC", [84], 10164),
          ("ReLU", [84], 0), ("FC", [10], 850)]


def synthetic_document(i: int, rng: random.Random) -> dict:
    """One COMPLETED run of a walking-noise grid, shaped like ``campaign.run_document`` of ``train_run``'s result."""
    kind = ("additive", "multiplicative")[i % 2]
    config = {
        "dataset": "cifar10", "model": "lenet5", "batchnorm": bool(i // 2 % 2),
        "noise": {"kind": kind, "noise_std": 10 ** rng.uniform(-3, 3), "placement": "walking",
                  "injection_layer": i % 12, "phase": "train_and_inference", "backward": "autograd",
                  "additive_std": None, "multiplicative_std": None, "amplitude": None, "ratio": None,
                  "mixed_order": "multiply_then_add"},
        "training": {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "epochs": EPOCHS, "batch_size": 128,
                     "weight_decay": 0.0, "momentum": 0.9},
        "weight_clamping": bool(i // 4 % 2), "seed": i // 48 % 3 + 3 * (i // 144), "data_dir": None,
        "normalize": None, "augment": None, "max_train": None, "max_test": None, "checkpoint": None, "device": "cuda",
    }
    curve = [rng.random() for _ in range(EPOCHS)]
    result = {
        "final_accuracy": sum(curve[-5:]) / 5, "val_accuracy": curve,
        "val_loss": [rng.uniform(0, 3) for _ in range(EPOCHS)],
        "train_accuracy": [rng.random() for _ in range(EPOCHS)],
        "train_loss": [rng.uniform(0, 3) for _ in range(EPOCHS)],
        "weight_magnitudes": {f"{j} {name}": rng.uniform(0, 2) for j, (name, _, p) in enumerate(LAYERS) if p},
        "diverged": False, "diverged_epoch": None, "epochs_run": EPOCHS, "active_points": [i % 12],
        "layer_table": [{"index": j, "name": name, "output_shape": shape, "parameters": p}
                        for j, (name, shape, p) in enumerate(LAYERS)],
        "checkpoint": None,
        "preprocessing": {"source": "cifar-10-batches-py", "scale": "x/255", "normalize": {
            "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}, "augment": "crop4+flip"},
        "wall_time_s": rng.uniform(100, 1000), "device": "cuda", "extra": {},
    }
    return {"config": config, "config_hash": config_hash(config), "status": "COMPLETED", "study": "bench",
            "start_time": "2024-01-01T00:00:00+00:00", "stop_time": "2024-01-01T00:10:00+00:00",
            "host": {"hostname": f"node{i % SEGMENTS:02d}", "pid": 1000 + i % SEGMENTS}, "result": result}


def write_store(path: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` documents round-robin into 16 segments; return the bytes written."""
    rng = random.Random(seed)
    segments = path / "runs"
    segments.mkdir(parents=True, exist_ok=True)
    files = [open(segments / f"node{k:02d}-{1000 + k}-bench.jsonl", "w") for k in range(SEGMENTS)]
    try:
        for i in range(n):
            files[i % SEGMENTS].write(json.dumps(synthetic_document(i, rng), separators=(",", ":")) + "\n")
    finally:
        for f in files:
            f.close()
    return sum(p.stat().st_size for p in segments.glob("*.jsonl"))


def bench(n: int, keep: Path | None, repeats: int) -> None:
    root = keep or Path(tempfile.mkdtemp(prefix="wn-store-bench-"))
    try:
        t0 = time.perf_counter()
        size = write_store(root, n)
        print(f"N = {n:,}: wrote {size / 1e6:,.0f} MB in {SEGMENTS} segments in {time.perf_counter() - t0:.1f} s")
        for fields, label in ((None, "all result fields"), (REPORT_FIELDS, "report fields: 1 of 4 curves")):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                df = runs_from_store(root, fields=fields)
                best = min(best, time.perf_counter() - t0)
                assert len(df) == n, (len(df), n)
                del df
            print(f"  runs_from_store ({label}): {best:.2f} s = {n / best:,.0f} runs/s")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="number of runs (repeatable); default 20,000")
    parser.add_argument("--large", action="store_true", help="also 200,000 runs")
    parser.add_argument("--repeats", type=int, default=1, help="time each load this often, report the best")
    parser.add_argument("--keep", type=Path, default=None, help="write the store here and keep it")
    args = parser.parse_args()
    sizes = args.n or [20_000]
    if args.large:
        sizes.append(200_000)
    for n in sizes:
        bench(n, args.keep / str(n) if args.keep else None, args.repeats)


if __name__ == "__main__":
    main()
