"""The registered models and datasets, one table row each; importing this module needs no torch.

A row says everything the rest of the library asks about a model or dataset (config validation, the runner's
packing, the report's names), so adding one is adding a row; :data:`AUTHORS_EPOCHS` is the paper's training length
per (dataset, model). A model not in the table is
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
    ``display``: the name in tables and figures; ``packs_on_cpu``: whether the batched engine packs it on a CPU (the
    one rule, read by :func:`walking_noise.units.auto_members`; on a GPU every registered model packs). It is set from
    ``benchmarks/batched_throughput.py --threads 1`` on a 2-core CPU, 2026-12-05: packed LeNet-5 trains at 1.1x one
    model's member-samples/s with seeds per member and 1.5x for a pack of one seed (walking campaigns), CNN-S at
    1.04-1.10x, since each packed convolution is computed by the method measured fastest for its shapes
    (:func:`walking_noise.batched.choose_conv_method`); with every convolution grouped they ran at 0.8x and 1.05x.
    """

    name: str
    builder: str
    display: str
    packs_on_cpu: bool


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: ``loader`` (``module:function``), one sample's ``input_shape``, ``num_classes`` and its
    ``display`` name."""

    name: str
    loader: str
    input_shape: tuple[int, ...]
    num_classes: int
    display: str


MODELS: dict[str, ModelEntry] = {e.name: e for e in (
    ModelEntry("mlp", "walking_noise.models:mlp", "MLP", packs_on_cpu=True),
    ModelEntry("lenet5", "walking_noise.models:lenet5", "LeNet-5", packs_on_cpu=True),
    ModelEntry("cnn_s", "walking_noise.models:cnn_s", "CNN-S", packs_on_cpu=True),
)}

DATASETS: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("mnist_5k", "walking_noise.data.embedded:load_mnist_5k", (1, 28, 28), 10, "MNIST-5k"),
    DatasetEntry("digits", "walking_noise.data.embedded:load_digits", (1, 8, 8), 10, "Digits"),
    DatasetEntry("mnist", "walking_noise.data.mnist:load_mnist", (1, 28, 28), 10, "MNIST"),
    DatasetEntry("cifar10", "walking_noise.data.cifar10:load_cifar10", (3, 32, 32), 10, "CIFAR-10"),
    DatasetEntry("speech_commands", "walking_noise.data.speech_commands:load_speech_commands", (1, 49, 10), 12,
                 "GSC"),
)}

#: The epochs the authors trained each (dataset, model) of the paper for: ``num_epochs`` of every config in their
#: code's ``experiment_configs/`` (UniHD-CEG/walking-noise at ec1a086: MNIST/mlp_* 100, MNIST/LeNet5_* 50,
#: CIFAR10/mlp_TFC_* 200, CIFAR10/LeNet5_* 300, GSC2/mlp_* and GSC2/CNN_* 150). The study files of the paper's
#: campaign use these (``tests/test_seml_configs.py`` checks it); the report states them beside a reproduced cell.
AUTHORS_EPOCHS: dict[tuple[str, str], int] = {
    ("mnist", "mlp"): 100, ("mnist", "lenet5"): 50,
    ("cifar10", "mlp"): 200, ("cifar10", "lenet5"): 300,
    ("speech_commands", "mlp"): 150, ("speech_commands", "cnn_s"): 150,
}


def authors_epochs(dataset: object, model: object) -> int | None:
    """The epochs the authors trained ``model`` on ``dataset`` for (None: not a pair of the paper)."""
    return AUTHORS_EPOCHS.get((str(dataset), str(model)))

#: ``package.module:callable``: a model (or a test set) from outside the registry.
FOREIGN_MODEL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_foreign(model: str) -> bool:
    """Whether ``model`` names a callable outside the registry (``package.module:callable``)."""
    return model not in MODELS and bool(FOREIGN_MODEL.match(model))


def is_foreign_dataset(dataset: str) -> bool:
    """Whether ``dataset`` names a callable outside the registry that returns a test set
    (:func:`walking_noise.data.load_test_set`): test data only, for evaluating trained weights."""
    return isinstance(dataset, str) and dataset not in DATASETS and bool(FOREIGN_MODEL.match(dataset))


def check_model_name(model: str) -> None:
    """A registered name or ``package.module:callable``; else an error naming both forms."""
    if model in MODELS or is_foreign(model):
        return
    raise ValueError(f"unknown model {model!r}; valid choices: {', '.join(MODELS)}, or any nn.Module as "
                     f"package.module:callable (e.g. torchvision.models:resnet18 with model_kwargs)")


def check_dataset_name(dataset: str) -> None:
    """A registered name or ``package.module:callable`` (a test set, for trained weights); else an error naming
    both forms."""
    if dataset in DATASETS or is_foreign_dataset(dataset):
        return
    raise ValueError(f"unknown dataset {dataset!r}; valid choices: {', '.join(DATASETS)}, or a test set as "
                     f"package.module:callable (returning (x, y) tensors or a torch Dataset; with weights only)")


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
