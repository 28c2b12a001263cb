"""The registered models and datasets, one table row each; importing this module needs no torch.

A row says everything the rest of the library asks about a model or dataset (config validation, the runner's
packing, the report's names, the study files' epochs), so adding one is adding a row. A model not in the table is
named ``package.module:callable`` (e.g. ``torchvision.models:resnet18`` with ``model_kwargs: {num_classes: 10}``):
any ``nn.Module`` whose injection points are discovered by tracing (:mod:`walking_noise.points`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    ``builder``: ``module:function(input_shape, num_classes, batchnorm=...)`` returning an ``nn.Sequential``;
    ``display``: the name in tables and figures; ``packs_on_cpu``: whether the batched engine packs it on a CPU
    (grouped convolutions on a CPU are slower than separate ones, ``benchmarks/batched_throughput.py``; on a GPU
    every registered model packs).
    """

    name: str
    builder: str
    display: str
    packs_on_cpu: bool


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``loader`` (``module:function``), one sample's ``input_shape``, ``num_classes``, its
    ``display`` name and the epochs the authors trained on it (``authors_epochs``; None: not in the paper)."""

    name: str
    loader: str
    input_shape: tuple[int, ...]
    num_classes: int
    display: str
    authors_epochs: int | None


MODELS: dict[str, ModelEntry] = {e.name: e for e in (
    ModelEntry("mlp", "walking_noise.models:mlp", "MLP", packs_on_cpu=True),
    ModelEntry("lenet5", "walking_noise.models:lenet5", "LeNet-5", packs_on_cpu=False),
    ModelEntry("cnn_s", "walking_noise.models:cnn_s", "CNN-S", packs_on_cpu=False),
)}

DATASETS: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("mnist_5k", "walking_noise.data.embedded:load_mnist_5k", (1, 28, 28), 10, "MNIST-5k", None),
    DatasetEntry("digits", "walking_noise.data.embedded:load_digits", (1, 8, 8), 10, "Digits", None),
    DatasetEntry("mnist", "walking_noise.data.mnist:load_mnist", (1, 28, 28), 10, "MNIST", 100),
    DatasetEntry("cifar10", "walking_noise.data.cifar10:load_cifar10", (3, 32, 32), 10, "CIFAR-10", 300),
    DatasetEntry("speech_commands", "walking_noise.data.speech_commands:load_speech_commands", (1, 49, 10), 12,
                 "GSC", 150),
)}

#: ``package.module:callable``: a model from outside the registry.
FOREIGN_MODEL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_foreign(model: str) -> bool:
    """Whether ``model`` names a callable outside the registry (``package.module:callable``)."""
    return model not in MODELS and bool(FOREIGN_MODEL.match(model))


def check_model_name(model: str) -> None:
    """A registered name or ``package.module:callable``; else an error naming both forms."""
    if model in MODELS or is_foreign(model):
        return
    raise ValueError(f"unknown model {model!r}; valid choices: {', '.join(MODELS)}, or any nn.Module as "
                     f"package.module:callable (e.g. torchvision.models:resnet18 with model_kwargs)")


def check_dataset_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}")


def display_model(model: object) -> str:
    entry = MODELS.get(str(model))
    return entry.display if entry else str(model).rsplit(":", 1)[-1]


def display_dataset(dataset: object) -> str:
    entry = DATASETS.get(str(dataset))
    return entry.display if entry else str(dataset)


def resolve(spec: str) -> object:
    """The object named ``module:attribute`` (imported now)."""
    import importlib

    module, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {spec!r} ({type(err).__name__}: {err}); give package.module:callable of "
                         f"an installed package") from err
