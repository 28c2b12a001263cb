"""The MNIST reproduction command end to end, on a small slice: one Table I cell (MLP without BatchNorm,
multiplicative global noise) at five noise levels and two seeds, from MNIST files in the real IDX format.

The images are real digits (the embedded MNIST subset, written as IDX files), so the cell's curve really drops; the
test checks the pipeline (study YAML -> runner -> store -> report -> comparison with the paper), not the paper's
value.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from walking_noise.data.embedded import mnist_5k_path
from walking_noise.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from walking_noise.store import LocalStore

ROOT = Path(__file__).resolve().parents[1]
LEVELS = [0.0, 0.5, 1.0, 1.5, 2.0]


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_small_mnist(root: Path, n_train: int = 4000, n_test: int = 1000) -> Path:
    """torchvision's layout (``MNIST/raw/*-ubyte.gz``) with real digits from the embedded subset."""
    table = np.loadtxt(mnist_5k_path(), delimiter=",", dtype=np.int64)
    order = np.random.RandomState(0).permutation(len(table))  # the file is sorted by label
    images = table[order, :784].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[order, 784].astype(np.uint8)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    parts = {"train": slice(0, n_train), "t10k": slice(n_train, n_train + n_test)}
    for name, part in parts.items():
        write_idx(raw / f"{name}-images-idx3-ubyte.gz", images[part], IDX_IMAGES_MAGIC)
        write_idx(raw / f"{name}-labels-idx1-ubyte.gz", labels[part], IDX_LABELS_MAGIC)
    return root


@pytest.mark.slow
def test_the_reproduction_command_rebuilds_one_table1_cell_from_scratch(tmp_path):
    data = write_small_mnist(tmp_path / "data")
    store, out = tmp_path / "store", tmp_path / "report"
    cmd = ["bash", str(ROOT / "scripts" / "reproduce_mnist.sh"), "--data-dir", str(data), "--store", str(store),
           "--out", str(out), "--workers", "1",
           "--filter", "model=mlp", "--filter", "noise.placement=global", "--filter", "batchnorm=false",
           "--filter", "noise.kind=multiplicative", "--filter", "seed=[0, 1]",
           "--filter", f"noise.noise_std={LEVELS}", "--set", "training.epochs=4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    docs = list(LocalStore(store).documents())
    assert len(docs) == len(LEVELS) * 2 and all(d["status"] == "COMPLETED" for d in docs)
    assert {d["config"]["noise"]["noise_std"] for d in docs} == set(LEVELS)
    assert {d["config"]["data_dir"] for d in docs} == {str(data)}
    assert all(len(d["result"]["val_accuracy"]) == 4 for d in docs)
    clean = [d["result"]["final_accuracy"] for d in docs if d["config"]["noise"]["noise_std"] == 0.0]
    noisy = [d["result"]["final_accuracy"] for d in docs if d["config"]["noise"]["noise_std"] == 2.0]
    assert min(clean) > 0.6 and max(noisy) < min(clean) - 0.2  # real digits, and the noise really hurts

    cell = pd.read_csv(out / "table1_vs_paper.csv")
    assert len(cell) == 1
    row = cell.iloc[0]
    assert (row["dataset"], row["model"], row["noise.kind"], bool(row["batchnorm"])) == (
        "mnist", "mlp", "multiplicative", False)
    assert row["paper_mu"] == pytest.approx(0.942) and row["paper_epochs"] == 100 and row["epochs"] == 4
    assert (row["n_levels"], row["n_seeds"], row["n_runs"]) == (5, 2, 10)
    assert bool(row["converged"]) and 0.0 < row["mu"] < 2.0
    assert row["ratio"] == pytest.approx(row["mu"] / 0.942)
    assert "0.942" in (out / "table1_vs_paper.md").read_text()
    assert (out / "fig1_fit.png").stat().st_size > 10_000
    assert "Table I beside the paper" in (out / "index.md").read_text()
    assert "training" in (out / "run.log").read_text()

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)  # resumable: nothing new
    assert again.returncode == 0
    assert len(list(LocalStore(store).documents())) == len(docs)
