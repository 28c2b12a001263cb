"""Gaussian noise injection into activations (paper section III.A-B).

A :class:`NoiseInjection` module sits after every layer of a model (and one at the input). Each point holds its own
additive and multiplicative standard deviation; :func:`configure_noise` sets them for the two placements of the
paper: *global* (the same ``noise_std`` at every point except BatchNorm outputs) and *walking* (only the point
``injection_layer``). Noise is drawn fresh per element and per forward pass, in the forward pass only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from walking_noise.config import (
    BACKWARD_MODES,
    MIXED_ORDERS,
    NoiseConfig,
    check_choice,
    check_std,
)
from walking_noise.gaussian import key_array, philox_normal, standard_normal_like

if TYPE_CHECKING:  # pragma: no cover
    from walking_noise.models import NoisyNetwork

class StraightThrough(torch.autograd.Function):
    """Returns the noisy value forward, passes the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return noisy

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


#: Draw tags: which of a point's draws a counter names (4 bits of the counter).
MULTIPLICATIVE_DRAW, ADDITIVE_DRAW = 0, 1
#: Phases of a forward pass in a draw coordinate.
TRAIN, EVAL = 0, 1

Draw = Callable[[int], torch.Tensor]


class NoiseStream:
    """Which random numbers the injection points of one network draw, so that a run's noise is its own.

    ``keys`` holds one 64-bit key per member (one for a plain model, K for a packed one), derived from the run's
    config alone (:meth:`walking_noise.config.RunConfig.noise_key`). The engines name every forward pass by its
    coordinate (``epoch``, ``phase`` train/eval, ``step`` = batch number in that epoch) with :meth:`at`; a draw at
    injection point ``p`` is then Philox at counter (step, epoch, p << 8 | phase << 4 | tag) with the member's key
    (:func:`walking_noise.gaussian.philox_normal`). The noise a member sees therefore depends only on its config and
    on where in training it is: not on its batch companions, its position in a pack, the engine, the device, or on
    how many other draws happened before.
    """

    def __init__(self, keys: Sequence[int]):
        self.keys = tuple(int(k) for k in keys)
        self._keys = key_array(self.keys)
        self.epoch, self.phase, self.step = 0, EVAL, 0

    def at(self, epoch: int, phase: int, step: int) -> NoiseStream:
        """Name the next forward pass (returns self, for chaining)."""
        self.epoch, self.phase, self.step = int(epoch), int(phase), int(step)
        return self

    def normal(self, point: int, tag: int, per_member: int, device: torch.device,
               active: Sequence[bool] | None = None) -> torch.Tensor:
        """(K, per_member) standard normals of draw ``tag`` at injection point ``point`` in the current pass."""
        counter = (self.step, self.epoch, (int(point) << 8) | (self.phase << 4) | int(tag))
        return philox_normal(self._keys, counter, per_member, device=device, active=active)

    def __repr__(self) -> str:
        return f"NoiseStream({len(self.keys)} member(s), epoch={self.epoch}, phase={self.phase}, step={self.step})"


def perturb(x: torch.Tensor, additive: float | torch.Tensor | None, multiplicative: float | torch.Tensor | None,
            order: str = "multiply_then_add", straight_through: bool = False, draw: Draw | None = None) -> torch.Tensor:
    """``x`` with fresh Gaussian noise: ``x * N(1, multiplicative^2)`` and ``+ N(0, additive^2)`` in ``order``.

    A std of None skips that kind; a std may be a tensor broadcasting against ``x`` (one per member of a batched
    model). ``draw(tag)`` gives standard normals shaped like ``x`` for ``MULTIPLICATIVE_DRAW``/``ADDITIVE_DRAW``
    (None: keyed by torch's default generator). With ``straight_through`` the gradient w.r.t. ``x`` is exactly the
    identity, else the drawn noise is a constant of the chain rule. Shared by the one-model and the batched points.
    """
    draw = draw or (lambda _tag: standard_normal_like(x))
    noisy = x.detach() if straight_through else x
    steps = ("mul", "add") if order == "multiply_then_add" else ("add", "mul")
    for step in steps:
        if step == "mul" and multiplicative is not None:
            factor = draw(MULTIPLICATIVE_DRAW).mul_(multiplicative).add_(1.0)  # N(1, s^2), a constant of autograd
            noisy = noisy * factor
        elif step == "add" and additive is not None:
            noisy = draw(ADDITIVE_DRAW).mul_(additive).add_(noisy)  # in place: no second large buffer
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

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index  # the injection point's number: part of every draw's coordinate
        self.setting = _PointSetting()
        self.stream: NoiseStream | None = None  # set by NoisyNetwork.use_stream; None: torch's default generator

    @property
    def active(self) -> bool:
        s = self.setting
        return (s.additive_std > 0 or s.multiplicative_std > 0) and (s.in_training or not self.training)

    def set(self, additive_std: float = 0.0, multiplicative_std: float = 0.0, *, in_training: bool = True,
            order: str = "multiply_then_add", backward: str = "autograd") -> None:
        self.setting = _PointSetting(
            check_std(additive_std, "additive_std"), check_std(multiplicative_std, "multiplicative_std"),
            in_training, check_choice(order, MIXED_ORDERS, "mixed noise order"),
            check_choice(backward, BACKWARD_MODES, "backward mode"),
        )

    def clear(self) -> None:
        self.setting = _PointSetting()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        s = self.setting
        stream = self.stream
        draw = None if stream is None else (
            lambda tag: stream.normal(self.index, tag, x.numel(), x.device).view(x.shape))
        return perturb(x, s.additive_std or None, s.multiplicative_std or None, s.order,
                       s.backward == "straight_through", draw)

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

