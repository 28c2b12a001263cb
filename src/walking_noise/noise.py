"""Gaussian noise injection into activations (paper section III.A-B).

A :class:`NoiseInjection` module sits after every layer of a model (and one at the input). Each point holds its own
additive and multiplicative standard deviation; :func:`configure_noise` sets them for the two placements of the
paper: *global* (the same ``noise_std`` at every point except BatchNorm outputs) and *walking* (only the point
``injection_layer``). Noise is drawn fresh per element and per forward pass, in the forward pass only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from walking_noise.gaussian import standard_normal_like

if TYPE_CHECKING:  # pragma: no cover
    from walking_noise.models import NoisyNetwork

NOISE_KINDS = ("none", "additive", "multiplicative", "mixed")
PLACEMENTS = ("global", "walking")
PHASES = ("train_and_inference", "inference")
BACKWARD_MODES = ("autograd", "straight_through")
MIXED_ORDERS = ("multiply_then_add", "add_then_multiply")


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")
    return value


def _std(value: Any, what: str) -> float:
    try:
        std = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number >= 0, got {value!r}") from None
    if math.isnan(std) or std < 0:
        raise ValueError(f"{what} must be a standard deviation >= 0, got {value!r}")
    return std


@dataclass(frozen=True)
class NoiseConfig:
    """What noise a run injects, where and when; validated on construction.

    ``kind``: ``additive`` (x + N(0, s^2)), ``multiplicative`` (x * N(1, s^2)), ``mixed`` (both at the same point)
    or ``none``. ``noise_std`` is s in activation units (additive) or relative units (multiplicative).
    For ``mixed``, give ``additive_std`` and ``multiplicative_std`` directly, or a total ``amplitude`` A and a
    ``ratio`` r (additive std A*r, multiplicative std A*(1-r)), as the authors' combined sweeps did.
    ``placement``: ``global`` (every point but BatchNorm outputs) or ``walking`` (only ``injection_layer``).
    ``phase``: ``train_and_inference`` or ``inference`` (model trained clean, evaluated noisy).
    ``backward``: ``autograd`` (the drawn noise is a constant of the chain rule; the authors' code) or
    ``straight_through`` (gradient w.r.t. the input is exactly the identity).
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

    def __post_init__(self) -> None:
        _choice(self.kind, NOISE_KINDS, "noise kind")
        _choice(self.placement, PLACEMENTS, "noise placement")
        _choice(self.phase, PHASES, "noise phase")
        _choice(self.backward, BACKWARD_MODES, "backward mode")
        _choice(self.mixed_order, MIXED_ORDERS, "mixed noise order")
        object.__setattr__(self, "noise_std", _std(self.noise_std, "noise_std"))
        if self.placement == "walking" and self.kind != "none":
            if self.injection_layer is None or isinstance(self.injection_layer, bool):
                raise ValueError("walking noise needs injection_layer (an integer index of an injection point)")
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
            _std(self.amplitude, "amplitude")
            if not 0.0 <= float(self.ratio) <= 1.0:
                raise ValueError(f"ratio must lie in [0, 1], got {self.ratio!r}")
        else:
            _std(self.additive_std or 0.0, "additive_std")
            _std(self.multiplicative_std or 0.0, "multiplicative_std")

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


class StraightThrough(torch.autograd.Function):
    """Returns the noisy value forward, passes the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return noisy

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


def perturb(x: torch.Tensor, additive: float | torch.Tensor | None, multiplicative: float | torch.Tensor | None,
            order: str = "multiply_then_add", straight_through: bool = False) -> torch.Tensor:
    """``x`` with fresh Gaussian noise: ``x * N(1, multiplicative^2)`` and ``+ N(0, additive^2)`` in ``order``.

    A std of None skips that kind; a std may be a tensor broadcasting against ``x`` (one per member of a batched
    model). With ``straight_through`` the gradient w.r.t. ``x`` is exactly the identity, else the drawn noise is a
    constant of the chain rule. Shared by the one-model and the batched injection points.
    """
    noisy = x.detach() if straight_through else x
    steps = ("mul", "add") if order == "multiply_then_add" else ("add", "mul")
    for step in steps:
        if step == "mul" and multiplicative is not None:
            factor = standard_normal_like(noisy).mul_(multiplicative).add_(1.0)  # N(1, s^2), a constant of autograd
            noisy = noisy * factor
        elif step == "add" and additive is not None:
            noisy = standard_normal_like(noisy).mul_(additive).add_(noisy)  # in place: no second large buffer
    return StraightThrough.apply(x, noisy) if straight_through else noisy


@dataclass
class _PointSetting:
    additive_std: float = 0.0
    multiplicative_std: float = 0.0
    in_training: bool = True
    order: str = "multiply_then_add"
    backward: str = "autograd"


class NoiseInjection(nn.Module):
    """One injection point: perturbs the activation passing through it, identity while its stds are zero.

    In training mode (``module.training``) noise is drawn only if the point is set to inject during training,
    so one model object serves both phases of the paper.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setting = _PointSetting()

    @property
    def active(self) -> bool:
        s = self.setting
        return (s.additive_std > 0 or s.multiplicative_std > 0) and (s.in_training or not self.training)

    def set(self, additive_std: float = 0.0, multiplicative_std: float = 0.0, *, in_training: bool = True,
            order: str = "multiply_then_add", backward: str = "autograd") -> None:
        self.setting = _PointSetting(
            _std(additive_std, "additive_std"), _std(multiplicative_std, "multiplicative_std"),
            in_training, _choice(order, MIXED_ORDERS, "mixed noise order"),
            _choice(backward, BACKWARD_MODES, "backward mode"),
        )

    def clear(self) -> None:
        self.setting = _PointSetting()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        s = self.setting
        return perturb(x, s.additive_std or None, s.multiplicative_std or None, s.order,
                       s.backward == "straight_through")

    def extra_repr(self) -> str:
        s = self.setting
        return f"additive_std={s.additive_std:g}, multiplicative_std={s.multiplicative_std:g}, in_training={s.in_training}"


def configure_noise(model: NoisyNetwork, config: NoiseConfig) -> list[int]:
    """Set every injection point of ``model`` from ``config``; return the indices that now inject.

    Global placement skips BatchNorm outputs (the paper keeps the injected amount equal with and without BN);
    walking placement injects at exactly ``config.injection_layer``, which may be a BatchNorm output.
    """
    points = model.injection_points
    if config.placement == "walking" and config.kind != "none":
        index = config.injection_layer
        if index is None or not 0 <= index < len(points):
            names = ", ".join(f"{p.index} {p.name}" for p in points)
            raise ValueError(
                f"injection_layer {index} is out of range for {model.name} with {len(points)} injection points "
                f"(valid: 0..{len(points) - 1}: {names})"
            )
    additive, multiplicative = config.stds
    active = []
    for point in points:
        if config.placement == "global":
            hit = not point.is_batchnorm
        else:
            hit = point.index == config.injection_layer
        if hit and config.kind != "none" and (additive > 0 or multiplicative > 0):
            point.injection.set(additive, multiplicative, in_training=config.phase == "train_and_inference",
                                order=config.mixed_order, backward=config.backward)
            active.append(point.index)
        else:
            point.injection.clear()
    return active

