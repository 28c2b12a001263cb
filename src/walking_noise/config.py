"""The configuration of one training run, validated in one place.

A run is plain data: the same nested dict comes from a SEML YAML grid, the Sacred experiment, the local runner or
the command line, and :meth:`RunConfig.from_dict` rejects an unknown key or a bad value with a message that names
it before any training starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from walking_noise.noise import NoiseConfig

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")
DEVICES = ("cpu", "cuda", "auto")


def _reject_unknown(cls: type, values: dict[str, Any], section: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {section} setting(s) {sorted(unknown)}; valid keys: {sorted(known)}")


def _positive(value: Any, what: str, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and int(value) == value
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{what} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimiser and schedule; defaults are the authors' (Adam, lr 1e-3, cosine annealing, batch 128)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "cosine"
    epochs: int = 10
    batch_size: int = 128
    weight_decay: float = 0.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid choices: {', '.join(SCHEDULES)}")
        _positive(self.lr, "training.lr")
        _positive(self.epochs, "training.epochs", integer=True)
        _positive(self.batch_size, "training.batch_size", integer=True)
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"training.weight_decay must be >= 0, got {self.weight_decay!r}")
        object.__setattr__(self, "epochs", int(self.epochs))
        object.__setattr__(self, "batch_size", int(self.batch_size))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one experiment of the paper: data, model, noise, training, clamping, seed.

    ``data_dir`` is where file-based datasets live (ignored by the embedded ones); ``normalize`` and ``augment``
    override the dataset's defaults (None keeps them); ``max_train``/``max_test`` cut the dataset for quick runs;
    ``checkpoint`` is a file path to save the trained model to (None: no checkpoint).
    """

    dataset: str = "mnist_5k"
    model: str = "mlp"
    batchnorm: bool = False
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    weight_clamping: bool = False
    seed: int = 0
    data_dir: str | None = None
    normalize: bool | None = None
    augment: bool | None = None
    max_train: int | None = None
    max_test: int | None = None
    checkpoint: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        from walking_noise.data import DATASETS
        from walking_noise.models import MODELS

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid choices: {', '.join(MODELS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid choices: {', '.join(DEVICES)}")
        for name in ("batchnorm", "weight_clamping"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("max_train", "max_test"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name, integer=True)
        self._check_injection_layer()

    def _check_injection_layer(self) -> None:
        """A walking point must exist in this model: say so now, not after the dataset is loaded."""
        from walking_noise.data import DATASET_SHAPES
        from walking_noise.models import point_names

        index = self.noise.injection_layer
        if self.noise.placement != "walking" or self.noise.kind == "none" or index is None:
            return
        shape, classes = DATASET_SHAPES[self.dataset]
        try:
            names = point_names(self.model, shape, classes, self.batchnorm)
        except ValueError:
            return  # the model cannot take this input at all; building it reports that
        if not 0 <= index < len(names):
            raise ValueError(
                f"noise.injection_layer {index} is out of range for {self.model} "
                f"{'with' if self.batchnorm else 'without'} BatchNorm on {self.dataset}: valid 0..{len(names) - 1} "
                f"({', '.join(names)})"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a nested dict (``noise`` and ``training`` as sub-dicts), rejecting unknown keys."""
        values = dict(values)
        _reject_unknown(cls, values, "run")
        noise = values.pop("noise", None)
        training = values.pop("training", None)
        _reject_unknown(TrainingConfig, dict(training or {}), "training")
        return cls(
            noise=noise if isinstance(noise, NoiseConfig) else NoiseConfig.from_dict(dict(noise or {})),
            training=training if isinstance(training, TrainingConfig) else TrainingConfig(**dict(training or {})),
            **values,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
