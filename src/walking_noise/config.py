"""The configuration of one training run, validated in one place.

A run is plain data: the same nested dict comes from a SEML YAML grid, the Sacred experiment, the local runner or
the command line, and :meth:`RunConfig.from_dict` rejects an unknown key or a bad value with a message that names
it before any training starts.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from walking_noise.files import file_sha256
from walking_noise.identity import SEML_KEYS, config_hash, noise_key
from walking_noise.registry import check_dataset_name, check_model_name, is_foreign, is_foreign_dataset
from walking_noise.sites import DISTRIBUTIONS, SITES, check_points

NOISE_KINDS = ("none", "additive", "multiplicative", "mixed")
PLACEMENTS = ("global", "walking", "leave_one_out")
#: Placements that name one injection point (``injection_layer``): the only noisy one, or the only clean one.
ONE_POINT_PLACEMENTS = ("walking", "leave_one_out")
PHASES = ("train_and_inference", "inference")
BACKWARD_MODES = ("autograd", "straight_through")
MIXED_ORDERS = ("multiply_then_add", "add_then_multiply")


def check_choice(value: Any, choices: Collection[str], what: str) -> str:
    """``value`` if it is one of ``choices`` (a tuple, or a registry keyed by name), else a ``ValueError`` naming
    them."""
    if value not in tuple(choices):  # a tuple: an unhashable value is just not a choice
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")
    return value


#: The largest noise std whose effect the float32 arithmetic of a model can still represent. Beyond about 1e18
#: multiplicative noise overflows float32 (BatchNorm squares the activations; sqrt(float32 max) = 1.8e19), and every
#: run then measures the same arithmetic artefact, not robustness. 1e16 leaves a factor 10^3 for the sums over a
#: batch and a layer's fan-in; it is also the paper's largest level (MNIST, multiplicative).
NOISE_CEILING = 1e16


def check_std(value: Any, what: str) -> float:
    try:
        std = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number >= 0, got {value!r}") from None
    if math.isnan(std) or std < 0:
        raise ValueError(f"{what} must be a standard deviation >= 0, got {value!r}")
    if std > NOISE_CEILING:
        raise ValueError(f"{what} {std:g} exceeds {NOISE_CEILING:g}, the largest noise float32 arithmetic represents "
                         f"(beyond it activations overflow and every run measures the same artefact)")
    return std


@dataclass(frozen=True)
class NoiseConfig:
    """What noise a run injects, where and when; validated on construction.

    ``kind``: ``additive`` (x + N(0, s^2)), ``multiplicative`` (x * N(1, s^2)), ``mixed`` (both at the same point)
    or ``none``. ``noise_std`` is s in activation units (additive) or relative units (multiplicative).
    For ``mixed``, give ``additive_std`` and ``multiplicative_std`` directly, or a total ``amplitude`` A and a
    ``ratio`` r (additive std A*r, multiplicative std A*(1-r)), as the authors' combined sweeps did.
    ``placement``: ``global`` (every point but BatchNorm outputs), ``walking`` (only ``injection_layer``) or
    ``leave_one_out`` (every point of global placement except ``injection_layer``, which stays clean: which single
    layer should stay digital?).
    ``phase``: ``train_and_inference`` or ``inference`` (model trained clean, evaluated noisy).
    ``backward``: ``autograd`` (the drawn noise is a constant of the chain rule; the authors' code) or
    ``straight_through`` (gradient w.r.t. the input is exactly the identity).
    ``site``: where the noise acts (:mod:`walking_noise.noise`): ``activation`` (a layer's output, the paper's),
    ``weight`` (read-out: ``W * N(1, s^2)`` or ``W + N(0, s^2)``, drawn per forward pass) or ``mac`` (each product
    of a multiply-accumulate); ``weight`` exists at Linear and Conv points only, ``mac`` there and at matmuls of two
    activations (operation points) (:data:`walking_noise.sites.SITES`).
    ``distribution``: the law of the noise, with std s whatever the law: ``gaussian`` (the paper's) or ``uniform``
    (``U(-sqrt(3) s, sqrt(3) s)``; not at the ``mac`` site, whose closed-form sum is exact for Gaussian products
    only) (:data:`walking_noise.sites.DISTRIBUTIONS`).
    """

    kind: str = "none"
    noise_std: float = 0.0
    placement: str = "global"
    injection_layer: int | None = None
    phase: str = "train_and_inference"
    backward: str = "autograd"
    additive_std: float | None = None
    multiplicative_std: float | None = None
    amplitude: float | None = None
    ratio: float | None = None
    mixed_order: str = "multiply_then_add"
    site: str = "activation"
    distribution: str = "gaussian"

    def __post_init__(self) -> None:
        check_choice(self.kind, NOISE_KINDS, "noise kind")
        check_choice(self.placement, PLACEMENTS, "noise placement")
        check_choice(self.phase, PHASES, "noise phase")
        check_choice(self.backward, BACKWARD_MODES, "backward mode")
        check_choice(self.mixed_order, MIXED_ORDERS, "mixed noise order")
        check_choice(self.site, SITES, "noise site")
        check_choice(self.distribution, DISTRIBUTIONS, "noise distribution")
        SITES[self.site].check_distribution(self.distribution)
        object.__setattr__(self, "noise_std", check_std(self.noise_std, "noise_std"))
        if self.placement in ONE_POINT_PLACEMENTS and self.kind != "none":
            if self.injection_layer is None or isinstance(self.injection_layer, bool):
                raise ValueError(f"{self.placement.replace('_', '-')} noise needs injection_layer (an integer index "
                                 f"of an injection point: the noisy one for walking, the clean one for "
                                 f"leave-one-out)")
            if int(self.injection_layer) != self.injection_layer:
                raise ValueError(f"injection_layer must be an integer, got {self.injection_layer!r}")
            object.__setattr__(self, "injection_layer", int(self.injection_layer))
        if self.kind == "mixed":
            self._check_mixed()

    def _check_mixed(self) -> None:
        direct = self.additive_std is not None or self.multiplicative_std is not None
        total = self.amplitude is not None or self.ratio is not None
        if direct == total:
            raise ValueError(
                "mixed noise needs either additive_std and multiplicative_std, or amplitude and ratio "
                "(additive std = amplitude*ratio, multiplicative std = amplitude*(1-ratio)), not both or neither"
            )
        if total:
            if self.amplitude is None or self.ratio is None:
                raise ValueError("mixed noise given by total amplitude needs both amplitude and ratio")
            check_std(self.amplitude, "amplitude")
            if not 0.0 <= float(self.ratio) <= 1.0:
                raise ValueError(f"ratio must lie in [0, 1], got {self.ratio!r}")
        else:
            check_std(self.additive_std or 0.0, "additive_std")
            check_std(self.multiplicative_std or 0.0, "multiplicative_std")

    @property
    def stds(self) -> tuple[float, float]:
        """(additive std, multiplicative std) applied at an active point."""
        if self.kind == "additive":
            return self.noise_std, 0.0
        if self.kind == "multiplicative":
            return 0.0, self.noise_std
        if self.kind == "mixed":
            if self.amplitude is not None:
                amplitude, ratio = float(self.amplitude), float(self.ratio)  # type: ignore[arg-type]
                return amplitude * ratio, amplitude * (1.0 - ratio)
            return float(self.additive_std or 0.0), float(self.multiplicative_std or 0.0)
        return 0.0, 0.0

    @property
    def in_training(self) -> bool:
        """Whether noise is drawn while training (else only at evaluation)."""
        return self.kind != "none" and self.phase == "train_and_inference" and any(self.stds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> NoiseConfig:
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown noise setting(s) {sorted(unknown)}; valid keys: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**values)


#: Keys of a study's experiment that expand into several runs: a bundle, an adaptive noise-grid search.
EXPANSION_KEYS = ("bundle", "adaptive")
#: Keys of an experiment's config that are not part of a run's definition.
NON_RUN_KEYS = SEML_KEYS + EXPANSION_KEYS


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """``{"noise": {"kind": "additive"}}`` -> ``{"noise.kind": "additive"}``; non-dict values are kept as they are.

    Loading 200,000 runs flattens each config, so the usual two levels go without a recursive call.
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            inner = prefix + key + "."
            for key2, value2 in value.items():
                if isinstance(value2, dict):
                    flat.update(flatten(value2, inner + key2 + "."))
                else:
                    flat[inner + key2] = value2
        else:
            flat[prefix + key] = value
    return flat


def set_dotted(nested: dict[str, Any], key: str, value: Any) -> None:
    """Set ``nested["noise"]["kind"] = value`` for ``key = "noise.kind"``, creating sections on the way."""
    *parents, leaf = key.split(".")
    node = nested
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"noise.kind": "additive"}`` -> ``{"noise": {"kind": "additive"}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        set_dotted(nested, key, value)
    return nested


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
    ``checkpoint`` is a file path to save the trained model to (None: no checkpoint). ``points``: which injection
    points the model has, so what ``noise.injection_layer`` numbers (:data:`walking_noise.sites.POINT_SETS`):
    ``modules`` (the paper's: the input and every leaf module's output), ``operations`` (those and the operations
    inside a ``forward``: residual additions, attention's matmuls and softmax, functional activations) or a
    comma-separated list of point kinds (``matmul,softmax``).
    """

    dataset: str = "mnist_5k"
    model: str = "mlp"
    model_kwargs: dict[str, Any] | None = None
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
    weights: str | None = None
    weights_sha256: str | None = None
    points: str = "modules"

    def __post_init__(self) -> None:
        check_dataset_name(self.dataset)
        object.__setattr__(self, "points", check_points(self.points))
        self._check_weights()
        check_model_name(self.model)
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a mapping of keyword arguments, got {self.model_kwargs!r}")
        if self.model_kwargs and not is_foreign(self.model):
            raise ValueError(f"model_kwargs apply to models given as package.module:callable, not to {self.model!r}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid choices: {', '.join(DEVICES)}")
        for name in ("batchnorm", "weight_clamping"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                hint = (" (Sacred's command line reads Python literals: write True or False)"
                        if isinstance(value, str) and value.lower() in ("true", "false") else "")
                raise ValueError(f"{name} must be true or false, got {value!r}{hint}")
        if self.batchnorm and is_foreign(self.model):
            raise ValueError(f"batchnorm applies to the registered models; {self.model} is built as it is")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("max_train", "max_test"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), name, integer=True)

    def _check_weights(self) -> None:
        """Trained weights: a readable file (its sha256 filled in), noise at inference only; a test set given as a
        callable needs them (it has no training split)."""
        if self.weights is not None:
            if not isinstance(self.weights, str) or not self.weights:
                raise ValueError(f"weights must be the path of a trained model's file, got {self.weights!r}")
            if self.weights_sha256 is None:
                try:
                    object.__setattr__(self, "weights_sha256", file_sha256(self.weights))
                except FileNotFoundError as err:
                    raise ValueError(str(err)) from None
        if self.evaluated and self.noise.in_training:
            raise ValueError("a run with trained weights is evaluated, never trained: its noise acts at inference only "
                             "(set noise.phase: inference)")
        if is_foreign_dataset(self.dataset) and not self.evaluated:
            raise ValueError(f"dataset {self.dataset} is a test set given as a callable: it can evaluate trained "
                             f"weights (weights: PATH), not train a model; for training use one of the registered "
                             f"datasets")

    @property
    def evaluated(self) -> bool:
        """Whether this run evaluates trained weights (never trains): :mod:`walking_noise.sensitivity`."""
        return self.weights is not None or self.weights_sha256 is not None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a nested dict (``noise`` and ``training`` as sub-dicts), rejecting unknown keys. Whether the
        injection point exists in the model needs the model (torch): :func:`walking_noise.models.check_model`."""
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

    @property
    def noise_key(self) -> int:
        """The 64-bit key of this run's noise stream (:func:`walking_noise.identity.noise_key`)."""
        return noise_key(self.to_dict())


@dataclass(frozen=True)
class Run:
    """One run as it travels from a study to the store: the validated config, the same as the plain nested dict a
    run document stores (defaults filled in), and its identity (:func:`walking_noise.identity.config_hash`).
    Built once, where a study is loaded; nothing downstream parses the dict again."""

    config: RunConfig
    values: dict[str, Any]
    hash: str

    @classmethod
    def from_config(cls, config: RunConfig) -> Run:
        values = config.to_dict()
        return cls(config, values, config_hash(values))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Run:
        """A run from an expanded SEML config or a stored one (SEML and expansion keys are ignored)."""
        return cls.from_config(RunConfig.from_dict({k: v for k, v in values.items() if k not in NON_RUN_KEYS}))
