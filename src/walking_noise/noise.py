"""Gaussian noise where analog hardware is noisy (paper section III.A-B): at three sites, global or walking.

The paper names three places of noise in a matrix-multiplication accelerator and studies the last; all three are
here, chosen by ``noise.site`` (one :class:`NoiseInjection` per injection point holds the setting):

- ``activation`` (the paper's): the output of a layer is perturbed, ``x * N(1, s^2)`` or ``x + N(0, s^2)``,
  drawn per element and per forward pass;
- ``weight`` (read-out noise): a Linear or Conv layer computes with ``W * N(1, s^2)`` or ``W + N(0, s^2)``, drawn
  per weight element once per forward pass (one mini-batch reads the weights once, so every sample of a batch sees
  the same noisy weights);
- ``mac`` (noise inside the multiply-accumulate): ``y_j = sum_i w_ji x_i (1 + e_ji)``, whose exact distribution is
  ``y_j + N(0, s^2 sum_i (w_ji x_i)^2)``: one extra matmul (or conv) of the squares gives the std, drawn per output
  element and forward pass; additive noise per product gives ``y_j + N(0, s^2 fan_in)``. The std of this term is a
  constant of the chain rule, so both backward modes pass the output gradient through unchanged (the exact
  per-product factors are not drawn one by one).

:func:`configure_noise` sets every point of a model for the paper's two placements: *global* (every eligible point:
every point but BatchNorm outputs for activations, every Linear/Conv point for weights and MACs) and *walking*
(only ``injection_layer``). Noise is drawn in the forward pass only; with ``backward: straight_through`` the gradient
w.r.t. the noisy quantity is exactly the identity, with ``autograd`` the drawn noise is a constant of the chain rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import BACKWARD_MODES, MIXED_ORDERS, SITES, NoiseConfig, check_choice, check_std
from walking_noise.gaussian import key_array, philox_normal, standard_normal_like

if TYPE_CHECKING:  # pragma: no cover
    from walking_noise.points import NoisyNetwork

class StraightThrough(torch.autograd.Function):
    """Returns the noisy value forward, passes the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return noisy

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


#: Draw tags: which of a point's draws a counter names (4 bits of the counter). ``perturb`` draws tag 0 for the
#: multiplicative and tag 1 for the additive part; each site adds its offset, so its draws never share numbers.
MULTIPLICATIVE_DRAW, ADDITIVE_DRAW = 0, 1
SITE_TAG_OFFSET = {"activation": 0, "weight": 2, "mac": 4}
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
class PointSetting:
    """The noise of one injection point: stds, phase, order of mixed noise, backward mode and site."""

    additive_std: float = 0.0
    multiplicative_std: float = 0.0
    in_training: bool = True
    order: str = "multiply_then_add"
    backward: str = "autograd"
    site: str = "activation"


def layer_map(layer: nn.Module) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
    """(apply(x, weight): the layer's linear map without bias, fan-in per output) of a Linear or Conv layer."""
    if isinstance(layer, nn.Linear):
        return (lambda x, w: F.linear(x, w)), layer.in_features
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        return (lambda x, w: layer._conv_forward(x, w, None)), layer.in_channels // layer.groups * math.prod(
            layer.kernel_size)
    raise ValueError(f"the weight and MAC sites exist for Linear and Conv layers only, not {type(layer).__name__}")


def site_noise(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, apply: Callable[..., torch.Tensor],
               fan_in: int, site: str, additive: float | torch.Tensor | None,
               multiplicative: float | torch.Tensor | None, order: str, straight_through: bool,
               draw_weight: Draw, draw_output: Draw) -> torch.Tensor:
    """A layer's output ``y = apply(x, weight) + bias`` with the noise of ``site`` (``weight`` or ``mac``).

    ``weight``: ``y + apply(x, W_noisy - W)``, so one extra matmul (with ``W_noisy`` = :func:`perturb` of ``W``,
    whose backward mode holds for the weight). ``mac``: ``y + s * sqrt(apply(x^2, W^2)) * z`` (multiplicative) and
    ``+ s * sqrt(fan_in) * z`` (additive). Stds may be tensors broadcasting against the weight (weight site) or the
    output (MAC site), one per member of a packed layer. Shared by the one-model and the batched engine.
    """
    if site == "weight":
        delta = perturb(weight, additive, multiplicative, order, straight_through, draw_weight) - weight
        return y + apply(x, delta)
    out = y
    if multiplicative is not None:
        with torch.no_grad():  # the std of the MAC noise: a constant of the chain rule
            std = apply(x * x, weight * weight).clamp_min_(0).sqrt_()
        out = out + draw_output(MULTIPLICATIVE_DRAW).mul_(std).mul_(multiplicative)
    if additive is not None:
        out = out + draw_output(ADDITIVE_DRAW).mul_(additive * math.sqrt(fan_in))
    return out


class NoiseInjection(nn.Module):
    """One injection point: perturbs what passes it (the layer's output, or its weights or MACs), identity while
    its stds are zero.

    In training mode (``module.training``) noise is drawn only if the point is set to inject during training,
    so one model object serves both phases of the paper.
    """

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index  # the injection point's number: part of every draw's coordinate
        self.setting = PointSetting()
        self.stream: NoiseStream | None = None  # set by NoisyNetwork.use_stream; None: torch's default generator

    @property
    def active(self) -> bool:
        s = self.setting
        return (s.additive_std > 0 or s.multiplicative_std > 0) and (s.in_training or not self.training)

    def set(self, additive_std: float = 0.0, multiplicative_std: float = 0.0, *, in_training: bool = True,
            order: str = "multiply_then_add", backward: str = "autograd", site: str = "activation") -> None:
        self.setting = PointSetting(
            check_std(additive_std, "additive_std"), check_std(multiplicative_std, "multiplicative_std"),
            in_training, check_choice(order, MIXED_ORDERS, "mixed noise order"),
            check_choice(backward, BACKWARD_MODES, "backward mode"), check_choice(site, SITES, "noise site"),
        )

    def clear(self) -> None:
        self.setting = PointSetting()

    def _draw(self, like: torch.Tensor, offset: int) -> Draw:
        stream = self.stream
        if stream is None:
            return lambda _tag: standard_normal_like(like)
        return lambda tag: stream.normal(self.index, tag + offset, like.numel(), like.device).view(like.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the activation noise of this point (unchanged for another site or while inactive)."""
        s = self.setting
        if not self.active or s.site != "activation":
            return x
        return perturb(x, s.additive_std or None, s.multiplicative_std or None, s.order,
                       s.backward == "straight_through", self._draw(x, 0))

    def after_layer(self, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The output ``y`` of ``layer`` on input ``x`` with this point's noise, whatever its site."""
        s = self.setting
        if not self.active or s.site == "activation":
            return self(y)
        apply, fan_in = layer_map(layer)
        return site_noise(y, x, layer.weight, apply, fan_in, s.site, s.additive_std or None,
                          s.multiplicative_std or None, s.order, s.backward == "straight_through",
                          self._draw(layer.weight, SITE_TAG_OFFSET["weight"]),
                          self._draw(y, SITE_TAG_OFFSET["mac"]))

    def extra_repr(self) -> str:
        s = self.setting
        return (f"additive_std={s.additive_std:g}, multiplicative_std={s.multiplicative_std:g}, "
                f"in_training={s.in_training}, site={s.site}")


def eligible_points(points: Sequence[Any], site: str) -> list[Any]:
    """The points a site applies to under global placement: for activations every point but BatchNorm outputs (the
    paper keeps the injected amount equal with and without BN), for weights and MACs every Linear/Conv point."""
    if site == "activation":
        return [p for p in points if not p.is_batchnorm]
    return [p for p in points if p.is_learnable]


def configure_noise(model: NoisyNetwork, config: NoiseConfig) -> list[int]:
    """Set every injection point of ``model`` from ``config``; return the indices that now inject.

    Global placement: every eligible point (:func:`eligible_points`). Walking placement: exactly
    ``config.injection_layer``, which may be a BatchNorm output for activations and must be a Linear/Conv point for
    the weight and MAC sites (else a ``ValueError`` names the valid points).
    """
    points = model.injection_points
    if config.placement == "walking" and config.kind != "none":
        index = config.injection_layer
        valid = points if config.site == "activation" else eligible_points(points, config.site)
        if index is None or index not in {p.index for p in valid}:
            names = ", ".join(p.label for p in valid)
            where = "" if config.site == "activation" else f" at the {config.site} site (Linear/Conv points only)"
            raise ValueError(f"injection_layer {index} is not an injection point of {model.name}{where}; "
                             f"valid: {names}")
    additive, multiplicative = config.stds
    hits = {p.index for p in eligible_points(points, config.site)} if config.placement == "global" else \
        {config.injection_layer}
    active = []
    for point in points:
        if point.index in hits and config.kind != "none" and (additive > 0 or multiplicative > 0):
            point.injection.set(additive, multiplicative, in_training=config.phase == "train_and_inference",
                                order=config.mixed_order, backward=config.backward, site=config.site)
            active.append(point.index)
        else:
            point.injection.clear()
    return active
