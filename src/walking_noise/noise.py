"""Noise where analog hardware is noisy (paper section III.A-B): at three sites, global or walking.

The paper names three places of noise in a matrix-multiplication accelerator and studies the first; all three are
here, chosen by ``noise.site`` (one entry each of :data:`walking_noise.sites.SITES`; one :class:`NoiseInjection`
per injection point holds the setting). With ``u`` the unit-variance draw of ``noise.distribution`` (Gaussian, the
paper's, or uniform: :data:`walking_noise.sites.DISTRIBUTIONS`) and ``s`` the noise std:

- ``activation`` (the paper's): the output of a layer is perturbed, ``x * (1 + s u)`` or ``x + s u``, drawn per
  element and per forward pass;
- ``weight`` (read-out noise): a Linear or Conv layer computes with ``W * (1 + s u)`` or ``W + s u``, drawn per
  weight element once per forward pass (one mini-batch reads the weights once, so every sample of a batch sees
  the same noisy weights); at an operation point (:mod:`walking_noise.operations`), the parameter operand of
  ``F.linear``, a convolution or a matmul;
- ``mac`` (noise inside the multiply-accumulate, Gaussian only): ``y_j = sum_i w_ji x_i (1 + e_ji)``, whose exact
  distribution is ``y_j + N(0, s^2 sum_i (w_ji x_i)^2)``: one extra matmul (or conv) of the squares gives the std,
  drawn per output element and forward pass; additive noise per product gives ``y_j + N(0, s^2 fan_in)``. A matmul
  of two activations (``q @ k^T``) is a multiply-accumulate too: the same formula, both operands as inputs. The std of
  this term is a constant of the chain rule, so both backward modes pass the output gradient through unchanged (the
  exact per-product factors are not drawn one by one). A sum of uniform products is not uniform, so the site refuses
  ``uniform`` rather than draw a law it was not asked for.

How a site applies its noise is one function of :data:`SITE_NOISE`, shared by the one-model engine
(:class:`NoiseInjection`) and the packed one (:class:`walking_noise.batched.PackedNoise`) through
:class:`PointNoise`; how a distribution's draws come from the stream's standard normals is one function of
:data:`UNIT_DRAWS`.

:func:`configure_noise` sets every point of a model for the paper's two placements, *global* (every eligible point:
every point but BatchNorm outputs for activations, every Linear/Conv point for weights, those and every matmul for
MACs) and *walking* (only ``injection_layer``), and for *leave-one-out* (every eligible point but
``injection_layer``). Noise is drawn in the forward pass only; with ``backward: straight_through`` the gradient
w.r.t. the noisy quantity is exactly the identity, with ``autograd`` the drawn noise is a constant of the chain rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import BACKWARD_MODES, MIXED_ORDERS, NoiseConfig, check_choice, check_std
from walking_noise.gaussian import key_array, philox_normal, standard_normal_like
from walking_noise.sites import DISTRIBUTIONS, SITES, NoiseDistribution, NoiseSite


class HasInjectionPoints(Protocol):
    """What :func:`configure_noise` needs of a network (:class:`walking_noise.points.NoisyNetwork` is one): its name
    and its numbered points, each with ``index``, ``label``, ``kind``, ``is_batchnorm`` and its ``injection``."""

    name: str

    @property
    def injection_points(self) -> Sequence[Any]: ...


class StraightThrough(torch.autograd.Function):
    """Returns the noisy value forward, passes the incoming gradient unchanged backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return noisy

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


#: Draw tags: which of a point's draws a counter names (4 bits of the counter). ``perturb`` draws tag 0 for the
#: multiplicative and tag 1 for the additive part; each site adds its ``tag_offset``, so its draws never share numbers.
MULTIPLICATIVE_DRAW, ADDITIVE_DRAW = 0, 1
#: Phases of a forward pass in a draw coordinate.
TRAIN, EVAL = 0, 1

Draw = Callable[[int], torch.Tensor]
#: A noise std: a float, or a tensor of per-member stds broadcasting against what it perturbs.
Std = float | torch.Tensor


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
    """``x`` with fresh noise: ``x * (1 + multiplicative u)`` and ``+ additive u`` in ``order``.

    A std of None skips that kind; a std may be a tensor broadcasting against ``x`` (one per member of a batched
    model). ``draw(tag)`` gives the unit-variance draws ``u`` of the noise's distribution shaped like ``x`` for
    ``MULTIPLICATIVE_DRAW``/``ADDITIVE_DRAW`` (None: Gaussian, keyed by torch's default generator). With ``straight_through`` the gradient w.r.t. ``x`` is exactly the
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


_RSQRT2, _SQRT3 = 1.0 / math.sqrt(2.0), math.sqrt(3.0)


def _uniform(z: torch.Tensor) -> torch.Tensor:
    """Unit-variance uniform draws ``sqrt(3) (2 Phi(z) - 1)`` from standard normals ``z`` (``Phi`` the normal CDF,
    ``2 Phi(z) - 1 = erf(z / sqrt(2))``, computed without the cancellation near 0): an elementwise map, so a member's
    draws stay bit-identical in every engine and layout."""
    return torch.erf(z * _RSQRT2).mul_(_SQRT3)


#: How each distribution (:data:`walking_noise.sites.DISTRIBUTIONS`) makes its unit-variance draws from the
#: stream's standard normals. The Gaussian draws are the normals themselves: no operation, so runs stored before
#: distributions existed keep their numbers bit for bit.
UNIT_DRAWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gaussian": lambda z: z, "uniform": _uniform}


class PointNoise(nn.Module):
    """What both engines' injection points share: a site's noise, applied by its function of :data:`SITE_NOISE`.

    An engine supplies its layout: :meth:`stds` (the stds drawn in this pass), :meth:`at_output` and
    :meth:`at_weight` (stds shaped against, and unit draws laid out like, a point's output or a layer's weight) and
    :meth:`linear_map` (a layer's map without bias). A site acting on the output (``in_layer`` false) perturbs what
    passes the point (:meth:`forward`, the input point included); a site inside a layer adds its term in
    :meth:`after_layer`. Either way the result passes :meth:`forward`, so forward hooks see every point's output.
    """

    site: NoiseSite
    distribution: NoiseDistribution
    order: str
    straight_through: bool

    def stds(self) -> tuple[Std | None, Std | None]:
        """(additive, multiplicative) std drawn in this pass; None for a kind nobody draws."""
        raise NotImplementedError

    def at_output(self, y: torch.Tensor, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        """(shape a std against ``y``, unit draws like ``y`` by tag) for draws tagged ``offset + tag``."""
        raise NotImplementedError

    def at_weight(self, layer: nn.Module, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        """(shape a std against ``layer``'s weight, unit draws like the weight by tag), tagged ``offset + tag``."""
        raise NotImplementedError

    def linear_map(self, layer: nn.Module) -> tuple[torch.Tensor, Callable[..., torch.Tensor], int]:
        """(weight, apply(x, weight): the layer's map without bias, fan-in per output) of a Linear or Conv layer."""
        raise NotImplementedError

    def unit(self, z: torch.Tensor) -> torch.Tensor:
        """This point's distribution's unit-variance draws from standard normals ``z``."""
        return UNIT_DRAWS[self.distribution.name](z)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` with the noise of a site acting on outputs (unchanged for a site inside a layer, or inactive)."""
        return y if self.site.in_layer else site_noise(self, None, None, y)

    def after_layer(self, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The output ``y`` of ``layer`` on input ``x`` with this point's noise, whatever its site."""
        return self(site_noise(self, layer, x, y) if self.site.in_layer else y)


def site_noise(point: PointNoise, layer: nn.Module | None, x: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """``y`` (the output of ``layer`` on ``x``; both None at a point without a layer) with the noise of ``point``'s
    site in this pass: its :data:`SITE_NOISE` function, or ``y`` itself while no std is drawn."""
    additive, multiplicative = point.stds()
    if additive is None and multiplicative is None:
        return y
    return SITE_NOISE[point.site.name](point, layer, x, y, additive, multiplicative)


def _shaped(shape: Callable[[Std], Std], std: Std | None) -> Std | None:
    return None if std is None else shape(std)


def _activation_noise(point: PointNoise, layer: nn.Module | None, x: torch.Tensor | None, y: torch.Tensor,
                      additive: Std | None, multiplicative: Std | None) -> torch.Tensor:
    """The output ``y`` perturbed elementwise (:func:`perturb`)."""
    shape, draw = point.at_output(y, point.site.tag_offset)
    return perturb(y, _shaped(shape, additive), _shaped(shape, multiplicative), point.order, point.straight_through,
                   draw)


def _weight_noise(point: PointNoise, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, additive: Std | None,
                  multiplicative: Std | None) -> torch.Tensor:
    """``y + apply(x, W_noisy - W)``: one extra matmul, with ``W_noisy`` = :func:`perturb` of ``W`` (whose backward
    mode holds for the weight)."""
    weight, apply, _ = point.linear_map(layer)
    shape, draw = point.at_weight(layer, point.site.tag_offset)
    delta = perturb(weight, _shaped(shape, additive), _shaped(shape, multiplicative), point.order,
                    point.straight_through, draw) - weight
    return y + apply(x, delta)


def _mac_noise(point: PointNoise, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, additive: Std | None,
               multiplicative: Std | None) -> torch.Tensor:
    """``y + s * sqrt(apply(x^2, W^2)) * z`` (multiplicative) and ``+ s * sqrt(fan_in) * z`` (additive): the exact
    Gaussian sum of per-product noise over the fan-in, drawn per output element."""
    weight, apply, fan_in = point.linear_map(layer)
    shape, draw = point.at_output(y, point.site.tag_offset)
    out = y
    if multiplicative is not None:
        with torch.no_grad():  # the std of the MAC noise: a constant of the chain rule
            std = apply(x * x, weight * weight).clamp_min_(0).sqrt_()
        out = out + draw(MULTIPLICATIVE_DRAW).mul_(std).mul_(shape(multiplicative))
    if additive is not None:
        out = out + draw(ADDITIVE_DRAW).mul_(shape(additive) * math.sqrt(fan_in))
    return out


#: How each site (:data:`walking_noise.sites.SITES`) applies its noise, for both engines:
#: ``f(point, layer, x, y, additive, multiplicative)`` -> the noisy output.
SITE_NOISE: dict[str, Callable[..., torch.Tensor]] = {
    "activation": _activation_noise, "weight": _weight_noise, "mac": _mac_noise,
}


@dataclass
class PointSetting:
    """The noise of one injection point: stds, phase, order of mixed noise, backward mode, site and distribution."""

    additive_std: float = 0.0
    multiplicative_std: float = 0.0
    in_training: bool = True
    order: str = "multiply_then_add"
    backward: str = "autograd"
    site: NoiseSite = SITES["activation"]
    distribution: NoiseDistribution = DISTRIBUTIONS["gaussian"]


@dataclass(frozen=True)
class OperandMap:
    """An operation that is linear in each of its two operands, as the weight and MAC sites see an operation point
    (:mod:`walking_noise.operations`): its input ``x``, its ``weight`` operand (a parameter; for a product of two
    activations, ``q @ k^T``, the second one), ``apply(x, weight)``: the operation on them without bias (and
    without its scalar factor folded elsewhere), and ``fan_in``: the products summed per output element."""

    x: torch.Tensor
    weight: torch.Tensor
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    fan_in: int


_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def layer_map(layer: nn.Module | OperandMap) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
    """(apply(x, weight): the layer's linear map without bias, fan-in per output) of a Linear, Conv or ConvTranspose
    layer, or of an operation point's :class:`OperandMap`.

    A transposed convolution is counted as the convolution of its zero-inserted input that computes it: fan-in
    ``in_channels / groups * prod(kernel_size)`` as for a convolution (the padding zeros of a convolution count as
    products too); its map uses the module's ``output_padding`` (an ``output_size`` given at call time is not seen).
    """
    if isinstance(layer, OperandMap):
        return layer.apply, layer.fan_in
    if isinstance(layer, nn.Linear):
        return (lambda x, w: F.linear(x, w)), layer.in_features
    if isinstance(layer, nn.modules.conv._ConvNd):
        fan_in = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        if not layer.transposed:
            return (lambda x, w: layer._conv_forward(x, w, None)), fan_in
        transposed = _TRANSPOSED[len(layer.kernel_size)]
        return (lambda x, w: transposed(x, w, None, layer.stride, layer.padding, layer.output_padding, layer.groups,
                                        layer.dilation)), fan_in
    raise ValueError(f"the weight and MAC sites exist for Linear and Conv layers and matmuls only, not "
                     f"{type(layer).__name__}")


class NoiseInjection(PointNoise):
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
            order: str = "multiply_then_add", backward: str = "autograd", site: str = "activation",
            distribution: str = "gaussian") -> None:
        noise_site = SITES[check_choice(site, SITES, "noise site")]
        noise_site.check_distribution(check_choice(distribution, DISTRIBUTIONS, "noise distribution"))
        self.setting = PointSetting(
            check_std(additive_std, "additive_std"), check_std(multiplicative_std, "multiplicative_std"),
            in_training, check_choice(order, MIXED_ORDERS, "mixed noise order"),
            check_choice(backward, BACKWARD_MODES, "backward mode"), noise_site, DISTRIBUTIONS[distribution],
        )

    def clear(self) -> None:
        self.setting = PointSetting()

    @property
    def site(self) -> NoiseSite:
        return self.setting.site

    @property
    def distribution(self) -> NoiseDistribution:
        return self.setting.distribution

    @property
    def order(self) -> str:
        return self.setting.order

    @property
    def straight_through(self) -> bool:
        return self.setting.backward == "straight_through"

    def stds(self) -> tuple[float | None, float | None]:
        s = self.setting
        return (s.additive_std or None, s.multiplicative_std or None) if self.active else (None, None)

    def _draw(self, like: torch.Tensor, offset: int) -> Draw:
        stream = self.stream
        if stream is None:
            return lambda _tag: self.unit(standard_normal_like(like))
        return lambda tag: self.unit(stream.normal(self.index, tag + offset, like.numel(), like.device)).view(
            like.shape)

    def at_output(self, y: torch.Tensor, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        return (lambda std: std), self._draw(y, offset)

    def at_weight(self, layer: nn.Module, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        return (lambda std: std), self._draw(layer.weight, offset)

    def linear_map(self, layer: nn.Module) -> tuple[torch.Tensor, Callable[..., torch.Tensor], int]:
        apply, fan_in = layer_map(layer)
        return layer.weight, apply, fan_in

    def extra_repr(self) -> str:
        s = self.setting
        return (f"additive_std={s.additive_std:g}, multiplicative_std={s.multiplicative_std:g}, "
                f"in_training={s.in_training}, site={s.site.name}, distribution={s.distribution.name}")


def eligible_points(points: Sequence[Any], site: NoiseSite) -> list[Any]:
    """The points ``site`` applies to under global placement (:meth:`walking_noise.sites.NoiseSite.placed_globally`):
    for activations every point but BatchNorm outputs (the paper keeps the injected amount equal with and without
    BN), for weights every Linear/Conv point, for MACs those and every matmul (:data:`walking_noise.sites.SITES`)."""
    return [p for p in points if site.placed_globally(p.kind, p.is_batchnorm)]


def noisy_points(points: Sequence[Any], site: NoiseSite, placement: str, index: int | None,
                 name: str = "the model") -> list[Any]:
    """The points a placement puts noise at: global, every eligible point (:func:`eligible_points`); walking, the
    point ``index``, where the site can act (it may be a BatchNorm output for activations, it must be a Linear/Conv
    point for the weight and MAC sites); leave-one-out, every eligible point except ``index``, which must be
    eligible. A bad ``index`` is a ``ValueError`` that names the valid points."""
    if placement == "global":
        return eligible_points(points, site)
    valid = eligible_points(points, site) if placement == "leave_one_out" else [p for p in points
                                                                                if site.acts_at(p.kind)]
    if index is None or index not in {p.index for p in valid}:
        names = ", ".join(p.label for p in valid)
        if placement == "leave_one_out":
            raise ValueError(f"injection_layer {index} is not a point global noise reaches in {name}{site.where}, so "
                             f"it cannot be the one left clean; valid for leave-one-out: {names}")
        raise ValueError(f"injection_layer {index} is not an injection point of {name}{site.where}; valid: {names}")
    return [p for p in valid if p.index == index] if placement == "walking" else [p for p in valid
                                                                                    if p.index != index]


def configure_noise(model: HasInjectionPoints, config: NoiseConfig) -> list[int]:
    """Set every injection point of ``model`` from ``config``; return the indices that now inject.

    Global placement: every eligible point (:func:`eligible_points`). Walking placement: exactly
    ``config.injection_layer``, which may be a BatchNorm output for activations and must be where the site can act
    (:meth:`walking_noise.sites.NoiseSite.acts_at`: a Linear/Conv point for weights, also a matmul for MACs; else a
    ``ValueError`` names the valid points). Leave-one-out: every eligible point except ``config.injection_layer``
    (which stays clean).
    """
    points = model.injection_points
    site = SITES[config.site]
    additive, multiplicative = config.stds
    hits = set() if config.kind == "none" else {
        p.index for p in noisy_points(points, site, config.placement, config.injection_layer, model.name)}
    active = []
    for point in points:
        if point.index in hits and (additive > 0 or multiplicative > 0):
            point.injection.set(additive, multiplicative, in_training=config.phase == "train_and_inference",
                                order=config.mixed_order, backward=config.backward, site=config.site,
                                distribution=config.distribution)
            active.append(point.index)
        else:
            point.injection.clear()
    return active
