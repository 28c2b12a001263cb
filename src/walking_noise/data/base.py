"""Shared pieces of the dataset package: the :class:`DatasetSplits` container and helpers.

Every loader returns whole splits as in-memory tensors because the training loop indexes them
directly (no ``DataLoader``). Helpers here are deliberately small and deterministic: splits are
drawn with ``numpy.random.RandomState`` whose stream numpy guarantees to stay fixed across versions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

#: Environment variable consulted when ``data_dir`` is None (file-based datasets only).
DATA_DIR_ENV = "WALKING_NOISE_DATA"

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
Found = TypeVar("Found")


@dataclass
class DatasetSplits:
    """Train and test split of one dataset, held as tensors in memory.

    ``test_x``/``test_y`` are the official test split and serve as validation data. ``preprocessing``
    is a JSON-able record of source, scaling, normalisation and augmentation, stored with every run.
    ``augment`` (if not None) maps a training batch and a ``torch.Generator`` to an augmented batch of
    the same shape; it is deterministic given the generator state.
    """

    name: str
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    num_classes: int
    input_shape: tuple[int, ...]
    class_weights: torch.Tensor | None = field(default=None, repr=False)
    preprocessing: dict = field(default_factory=dict, repr=False)
    augment: AugmentFn | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{self.name}: {split}_x has {x.shape[0]} rows but {split}_y has {y.shape[0]}")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name}: {split}_x has per-example shape {tuple(x.shape[1:])}, "
                    f"expected input_shape {tuple(self.input_shape)}"
                )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """Return ``data_dir`` as a Path; None means ``$WALKING_NOISE_DATA`` if set, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.cwd() / "data"


def missing_files_error(dataset: str, searched: Sequence[Path], how_to_get: str) -> FileNotFoundError:
    """Build a FileNotFoundError that lists every path looked for and how to obtain the files."""
    lines = "\n".join(f"  - {p}" for p in searched)
    return FileNotFoundError(
        f"Dataset {dataset!r} not found. Looked for:\n{lines}\n{how_to_get}\n"
        f"(If data_dir is None the loader uses ${DATA_DIR_ENV}, else ./data.)"
    )


def locate_files(name: str, data_dir: str | os.PathLike | None, find: Callable[[Path], Found | None],
                 searched: Callable[[Path], Sequence[Path]], how_to_get: str, download: bool,
                 fetch: Callable[[Path], object]) -> Found:
    """Where a file-based dataset lies under ``data_dir`` (:func:`resolve_data_dir`): ``find(root)`` (None: not
    there); with ``download``, ``fetch(root)`` first (cluster use; nothing downloads by default); else an error that
    lists ``searched(root)`` and how to get the files."""
    root = resolve_data_dir(data_dir)
    found = find(root)
    if found is None and download:
        root.mkdir(parents=True, exist_ok=True)
        fetch(root)
        found = find(root)
    if found is None:
        raise missing_files_error(name, searched(root), how_to_get)
    return found


def reject_augment(name: str, augment: bool | None,
                   why: str = "the reference setup uses no augmentation for it") -> None:
    """Raise if augmentation is requested for a dataset that defines none (the paper uses none)."""
    if augment:
        raise ValueError(f"augment=True is not supported for {name!r}: {why}. Pass augment=None or augment=False.")


def stratified_split(
    labels: np.ndarray, test_per_class: Callable[[int], int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split; returns (train_idx, test_idx), each in a seeded shuffled order.

    ``test_per_class(n_c)`` gives how many of the ``n_c`` examples of a class go to the test split.
    Both index arrays are shuffled so that "the first N" contains all classes.
    """
    rng = np.random.RandomState(seed)
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        k = test_per_class(idx.size)
        test_parts.append(idx[:k])
        train_parts.append(idx[k:])
    train_idx = np.concatenate(train_parts)
    test_idx = np.concatenate(test_parts)
    return train_idx[rng.permutation(train_idx.size)], test_idx[rng.permutation(test_idx.size)]


def take_first(splits: DatasetSplits, max_train: int | None, max_test: int | None) -> DatasetSplits:
    """Keep only the first ``max_train``/``max_test`` examples (for tiny, fast runs); records it."""
    for label, value in (("max_train", max_train), ("max_test", max_test)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{label} must be a positive int or None, got {value!r}")
    if max_train is not None:
        splits.train_x, splits.train_y = splits.train_x[:max_train], splits.train_y[:max_train]
    if max_test is not None:
        splits.test_x, splits.test_y = splits.test_x[:max_test], splits.test_y[:max_test]
    splits.preprocessing["max_train"] = max_train
    splits.preprocessing["max_test"] = max_test
    splits.preprocessing["n_train"] = int(splits.train_x.shape[0])
    splits.preprocessing["n_test"] = int(splits.test_x.shape[0])
    return splits


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for x of shape (N, C, ...), returns float32."""
    shape = (1, len(mean)) + (1,) * (x.dim() - 2)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return ((x - m) / s).to(torch.float32)
