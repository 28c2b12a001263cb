"""Many runs at once: K configurations that share data, architecture, BatchNorm and clamping trained as one model.

Same meaning as :mod:`walking_noise.training` (tested against it): member k starts from exactly the weights the
one-model path builds for its seed, sees its own data order (the same permutation the one-model path draws), and
has its own optimiser state, BatchNorm statistics, noise level, injection point, phase and noise draws. The members
are packed into one network (stacked FC weights multiplied with ``baddbmm``, convolutions computed by the method
measured fastest for the layer's shapes, :func:`choose_conv_method`, BatchNorm over members x channels), so a step
costs one set of kernel launches for all K members (per member for a convolution where that is faster). Adam, the
cosine schedule and clamping act elementwise, so on stacked tensors they are exactly K independent optimisers.

Layouts inside the packed network: FC activations are ``(K, B, F)``; conv activations ``(B, K*C, H, W)``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.models import run_model
from walking_noise.noise import (
    ADDITIVE_DRAW,
    MULTIPLICATIVE_DRAW,
    Draw,
    NoiseConfig,
    NoiseStream,
    PointNoise,
    Std,
    configure_noise,
)
from walking_noise.points import NoisyNetwork
from walking_noise.sites import DISTRIBUTIONS, SITES
from walking_noise.training import (
    RunResult,
    SingleModel,
    evaluate,
    fit_members,
    keep_freed_memory,
    resolve_device,
)

logger = logging.getLogger(__name__)

# Config fields members of one batch may differ in; everything else must be equal.
MEMBER_FIELDS = ("seed",)
MEMBER_NOISE_FIELDS = ("kind", "noise_std", "placement", "injection_layer", "phase", "additive_std",
                       "multiplicative_std", "amplitude", "ratio")


def batch_key(cfg: RunConfig) -> tuple:
    """Configs with equal keys can train in one batch."""
    d = cfg.to_dict()
    for name in MEMBER_FIELDS + ("checkpoint",):
        d.pop(name)
    noise = d.pop("noise")
    for name in MEMBER_NOISE_FIELDS:
        noise.pop(name)
    return repr(sorted(d.items())) + repr(sorted(noise.items())),


class _Stacked(nn.Module):
    """Base of packed layers: the K members' copies of one layer."""

    K: int


class _PackedMap(_Stacked):
    """A packed Linear or Conv layer: what the weight and MAC sites need besides ``forward``."""

    weight: nn.Parameter
    fan_in: int

    def apply(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's linear map with ``weight`` and no bias, in the packed layout."""
        raise NotImplementedError

    def weight_layout(self, z: torch.Tensor) -> torch.Tensor:
        """(K, n) draws in each member's one-model weight order, as a tensor shaped like the packed weight."""
        raise NotImplementedError

    def weight_std(self, std: torch.Tensor) -> torch.Tensor:
        """Per-member stds (K,) shaped to broadcast against the packed weight."""
        raise NotImplementedError


class PackedLinear(_PackedMap):
    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.K = len(layers)
        self.fan_in = layers[0].in_features
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in layers]).contiguous())  # (K, in, out)
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).unsqueeze(1).contiguous())  # (K,1,out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def apply(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, weight)

    def weight_layout(self, z: torch.Tensor) -> torch.Tensor:
        K, n_in, n_out = self.weight.shape
        return z.view(K, n_out, n_in).transpose(1, 2)  # one-model weights are (out, in)

    def weight_std(self, std: torch.Tensor) -> torch.Tensor:
        return std.view(self.K, 1, 1)

    def member(self, k: int, target: nn.Linear) -> None:
        target.weight.data.copy_(self.weight[k].t())
        target.bias.data.copy_(self.bias[k, 0])

    def weight_of(self, k: int) -> torch.Tensor:
        return self.weight[k]


#: How a packed convolution can compute its K members from the grouped layout ``(B, K*C, H, W)``: one convolution
#: grouped over members, the same in the channels-last memory layout (oneDNN's preferred one), or one convolution
#: per member. They compute the same numbers up to float rounding; their speed depends on the shapes, the device
#: and the thread count, so :func:`choose_conv_method` measures them.
CONV_METHODS = ("grouped", "channels_last", "per_member")
#: A first layer whose members all read one input ``(B, C, H, W)`` (same data order, no input noise; see
#: :class:`_ToConv`) can also be one dense convolution with the K filter banks stacked (``stacked``); the other
#: methods then tile the input K times first.
SHARED_INPUT_METHODS = ("stacked",) + CONV_METHODS
#: Environment variable that forces one of :data:`CONV_METHODS` for every packed convolution (benchmarks and tests;
#: a shared input is then tiled, as before the measured choice).
CONV_METHOD_ENV = "WALKING_NOISE_PACKED_CONV"
#: Measured choices of this process: key of :func:`_conv_key` -> (method, {method: seconds per step}).
CONV_CHOICES: dict[tuple, tuple[str, dict[str, float]]] = {}


def _conv_key(layer: "PackedConv2d", x: torch.Tensor) -> tuple:
    return (tuple(x.shape), tuple(layer.weight.shape), layer.K, layer.stride, layer.padding, x.requires_grad,
            x.device.type, torch.get_num_threads())


def conv_method_timings(layer: "PackedConv2d", x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Seconds of one training step of ``layer`` (forward, then backward to the weights and, if ``x`` needs it, to
    the input) on random tensors of ``x``'s shape, per method (:data:`CONV_METHODS`, or :data:`SHARED_INPUT_METHODS`
    for a shared input): best of ``repeats`` after a warm-up. A whole step, because the backward passes of grouped
    convolutions are where they lose on a CPU."""
    methods = SHARED_INPUT_METHODS if layer.shared_input(x) else CONV_METHODS
    with torch.enable_grad():
        xs = torch.randn(x.shape, device=x.device).requires_grad_(x.requires_grad)
        weight = layer.weight.detach().clone().requires_grad_()
        bias = layer.bias.detach().clone().requires_grad_()
        grad = None
        timings = {}
        for method in methods:
            best = math.inf
            for i in range(repeats + 1):
                started = time.perf_counter()
                y = layer.conv(xs, weight, bias, method)
                grad = torch.randn_like(y) if grad is None else grad
                y.backward(grad)
                if x.device.type == "cuda":
                    torch.cuda.synchronize(x.device)
                if i:  # the first call is the warm-up (allocations, kernel selection)
                    best = min(best, time.perf_counter() - started)
            timings[method] = best
    return timings


def choose_conv_method(layer: "PackedConv2d", x: torch.Tensor) -> str:
    """The fastest method for ``layer`` on inputs shaped like ``x``, measured once per shape, device and thread count
    in a process (:data:`CONV_CHOICES`); :data:`CONV_METHOD_ENV` forces one. On a GPU the grouped convolution (cuDNN
    runs groups in one kernel), unmeasured."""
    forced = os.environ.get(CONV_METHOD_ENV)
    if forced:
        if forced not in CONV_METHODS:
            raise ValueError(f"{CONV_METHOD_ENV}={forced!r}: not one of {', '.join(CONV_METHODS)}")
        return forced
    if x.device.type != "cpu":
        return "grouped"
    key = _conv_key(layer, x)
    if key not in CONV_CHOICES:
        timings = conv_method_timings(layer, x)
        method = min(timings, key=timings.__getitem__)
        CONV_CHOICES[key] = (method, timings)
        logger.debug("packed conv %s on %s: %s -> %s", tuple(layer.weight.shape), tuple(x.shape),
                     ", ".join(f"{m} {1e3 * t:.1f} ms" for m, t in timings.items()), method)
    return CONV_CHOICES[key][0]


class PackedConv2d(_PackedMap):
    """K convolutions in the grouped layout: input ``(B, K*C_in, H, W)`` (or ``(B, C_in, H, W)`` read by every
    member), output ``(B, K*C_out, H', W')``; how the K convolutions are computed is measured at the first call
    (:func:`choose_conv_method`)."""

    def __init__(self, layers: Sequence[nn.Conv2d]):
        super().__init__()
        self.K = len(layers)
        first = layers[0]
        self.stride, self.padding = first.stride, first.padding
        self.fan_in = first.in_channels * math.prod(first.kernel_size)
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).contiguous())  # (K*out, in, kh, kw)
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).contiguous())
        self.in_channels, self.out_channels = first.in_channels, first.out_channels
        self.methods: dict[bool, str] = {}  # shared input or not -> method, chosen at the first such call

    def shared_input(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is one input every member reads, ``(B, C_in, H, W)``, rather than the grouped layout."""
        return x.shape[1] == self.in_channels

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             method: str | None = None) -> torch.Tensor:
        """The K members' convolutions of ``x`` with ``weight`` and ``bias`` in the packed layouts, by ``method``
        (None: the layer's, measured at its first call with this kind of input)."""
        shared = self.shared_input(x)
        if method is None:
            if shared not in self.methods:
                self.methods[shared] = choose_conv_method(self, x)
            method = self.methods[shared]
        if shared:
            if method == "stacked":  # one dense conv, K*C_out output channels: the grouped output layout
                return F.conv2d(x, weight, bias, self.stride, self.padding)
            x = x.repeat(1, self.K, 1, 1)  # member k's channels k*C..(k+1)*C-1, as _ToConv lays them out
        if method == "per_member":  # split, not sliced: the backward of a split is one concatenation, that of K
            # slices K zero-filled tensors of the whole input
            biases = [None] * self.K if bias is None else bias.split(self.out_channels)
            return torch.cat([F.conv2d(xk, wk, bk, self.stride, self.padding) for xk, wk, bk in
                              zip(x.split(self.in_channels, dim=1), weight.split(self.out_channels), biases)], dim=1)
        if method == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            return F.conv2d(x, weight, bias, self.stride, self.padding, groups=self.K).contiguous()
        return F.conv2d(x, weight, bias, self.stride, self.padding, groups=self.K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, self.bias)

    def apply(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.conv(x, weight, None)

    def weight_layout(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(self.weight.shape)  # member-major, each member's block in one-model order

    def weight_std(self, std: torch.Tensor) -> torch.Tensor:
        return std.repeat_interleave(self.out_channels).view(-1, 1, 1, 1)

    def member(self, k: int, target: nn.Conv2d) -> None:
        c = self.out_channels
        target.weight.data.copy_(self.weight[k * c:(k + 1) * c])
        target.bias.data.copy_(self.bias[k * c:(k + 1) * c])

    def weight_of(self, k: int) -> torch.Tensor:
        c = self.out_channels
        return self.weight[k * c:(k + 1) * c]


class PackedBatchNorm(_Stacked):
    """BatchNorm over K x C channels; FC inputs ``(K, B, C)`` are normalised over B per member and channel."""

    def __init__(self, layers: Sequence[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        self.K = len(layers)
        first = layers[0]
        self.eps, self.momentum, self.C = first.eps, first.momentum, first.num_features
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).contiguous())
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).contiguous())
        self.register_buffer("running_mean", torch.cat([m.running_mean for m in layers]).clone())
        self.register_buffer("running_var", torch.cat([m.running_var for m in layers]).clone())
        self.num_batches = int(first.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches += 1
        if x.dim() == 3:  # FC layout (K, B, C) -> (B, K*C)
            K, B, C = x.shape
            y = F.batch_norm(x.transpose(0, 1).reshape(B, K * C), self.running_mean, self.running_var,
                             self.weight, self.bias, self.training, self.momentum, self.eps)
            return y.view(B, K, C).transpose(0, 1).contiguous()  # strided (K, B, C) makes every later op slow
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)

    def member(self, k: int, target: nn.modules.batchnorm._BatchNorm) -> None:
        s = slice(k * self.C, (k + 1) * self.C)
        target.weight.data.copy_(self.weight[s])
        target.bias.data.copy_(self.bias[s])
        target.running_mean.copy_(self.running_mean[s])
        target.running_var.copy_(self.running_var[s])
        target.num_batches_tracked.fill_(self.num_batches)


class PackedNoise(PointNoise):
    """One injection point for K members, each with its own additive/multiplicative std, phase and noise stream.

    Member k's draws are its own stream's (:class:`walking_noise.noise.NoiseStream`) in its own element order, the
    order of the one-model tensor, whatever the packed layout: the same numbers as when it trains alone. The members
    of one pack share the site, the distribution, the mixed-noise order and the backward mode. The site's noise is
    :class:`walking_noise.noise.PointNoise`'s, as in the one-model engine; this class gives the packed layouts.
    """

    def __init__(self, K: int, index: int):
        super().__init__()
        self.K, self.index = K, index
        self.register_buffer("additive", torch.zeros(K))
        self.register_buffer("multiplicative", torch.zeros(K))
        self.register_buffer("in_training", torch.ones(K, dtype=torch.bool))
        self.order = "multiply_then_add"
        self.straight_through = False
        self.site = SITES["activation"]
        self.distribution = DISTRIBUTIONS["gaussian"]
        self.stream: NoiseStream | None = None
        # which members draw at all, per (training mode, draw tag): known on the host, so no device sync per step
        self._drawing: dict[tuple[bool, int], list[bool]] = {}

    def set_members(self, additive: Sequence[float], multiplicative: Sequence[float],
                    in_training: Sequence[bool]) -> None:
        self.additive.copy_(torch.tensor(additive))
        self.multiplicative.copy_(torch.tensor(multiplicative))
        self.in_training.copy_(torch.tensor(in_training))
        for training in (True, False):
            for tag, stds in ((MULTIPLICATIVE_DRAW, multiplicative), (ADDITIVE_DRAW, additive)):
                self._drawing[(training, tag)] = [s > 0 and (t or not training) for s, t in zip(stds, in_training)]

    def _member_std(self, std: torch.Tensor, tag: int) -> torch.Tensor | None:
        """Per-member stds (K,) of draw ``tag`` in the current phase; None if no member draws it."""
        if not any(self._drawing.get((self.training, tag), ())):
            return None
        return std * self.in_training if self.training else std

    def _layout(self, std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-member stds (K,) shaped to broadcast against the activation ``x``."""
        if x.dim() != 4:  # member-major layouts (K, B, ...)
            return std.view(self.K, *([1] * (x.dim() - 1)))
        channels = x.shape[1] // self.K  # conv layout (B, K*C, H, W)
        return std.repeat_interleave(channels).view(1, -1, *([1] * (x.dim() - 2)))

    def _normal(self, tag: int, offset: int, per_member: int, device: torch.device) -> torch.Tensor:
        """(K, per_member) unit draws of the members' distribution, from their streams' standard normals."""
        if self.stream is None:
            raise RuntimeError("a packed network draws noise only from member streams: call use_stream first")
        return self.unit(self.stream.normal(self.index, tag + offset, per_member, device,
                                            self._drawing[(self.training, tag)]))

    def _draw(self, x: torch.Tensor, tag: int, offset: int) -> torch.Tensor:
        """Unit draws in ``x``'s layout; member k's part is its stream's draw in its one-model order."""
        if x.dim() != 4:  # (K, B, ...): member k's part is contiguous and in one-model order
            return self._normal(tag, offset, x[0].numel(), x.device).view(x.shape)
        B, KC, H, W = x.shape  # conv layout: member k owns channels k*C..(k+1)*C-1 of every sample
        z = self._normal(tag, offset, B * (KC // self.K) * H * W, x.device)
        return z.view(self.K, B, KC // self.K, H, W).transpose(0, 1).reshape(B, KC, H, W)

    def stds(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (self._member_std(self.additive, ADDITIVE_DRAW),
                self._member_std(self.multiplicative, MULTIPLICATIVE_DRAW))

    def at_output(self, y: torch.Tensor, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        return (lambda std: self._layout(std, y)), (lambda tag: self._draw(y, tag, offset))

    def at_weight(self, layer: _PackedMap, offset: int) -> tuple[Callable[[Std], Std], Draw]:
        per_member = layer.weight.numel() // self.K
        return layer.weight_std, (lambda tag: layer.weight_layout(self._normal(tag, offset, per_member,
                                                                                 layer.weight.device)))

    def linear_map(self, layer: _PackedMap) -> tuple[torch.Tensor, Callable[..., torch.Tensor], int]:
        return layer.weight, layer.apply, layer.fan_in


class _PackedPoint(nn.Module):
    """A packed layer followed by its injection point: the point sees the layer's input for the weight/MAC sites."""

    def __init__(self, layer: nn.Module, noise: PackedNoise):
        super().__init__()
        self.layer, self.noise = layer, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise.after_layer(self.layer, x, self.layer(x))


class _ToConv(nn.Module):
    """(K, B, C, H, W) member-major input -> (B, K*C, H, W) grouped-conv layout; an input every member shares (one
    tensor expanded over K, as evaluation and same-seed training pass it, with no input noise drawn) stays
    ``(B, C, H, W)``, and the first convolution may compute all members from it at once (:meth:`PackedConv2d.conv`,
    method ``stacked``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, B = x.shape[:2]
        if K > 1 and x.stride(0) == 0:
            return x[0]
        return x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])


class _Flatten(nn.Module):
    """Flatten to FC layout (K, B, F) from the grouped-conv layout or from member-major input."""

    def __init__(self, K: int, from_conv: bool):
        super().__init__()
        self.K, self.from_conv = K, from_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_conv:  # (B, K*C, H, W) -> (K, B, C*H*W)
            return x.reshape(x.shape[0], self.K, -1).transpose(0, 1)
        return x.reshape(x.shape[0], x.shape[1], -1)  # (K, B, ...) -> (K, B, F)


#: How the batched engine packs each layer type of the registered models: (layer types, packed class).
PACKED_LAYERS: tuple[tuple[tuple[type, ...], type[_Stacked]], ...] = (
    ((nn.Linear,), PackedLinear),
    ((nn.Conv2d,), PackedConv2d),
    ((nn.BatchNorm1d, nn.BatchNorm2d), PackedBatchNorm),
)
#: Layers without parameters that act on every layout as they are.
SHARED_LAYERS = (nn.ReLU, nn.MaxPool2d)


def packable(model: NoisyNetwork) -> bool:
    """Whether the batched engine can pack ``model``: an ``nn.Sequential`` of the layer types it knows, whose points
    are all module points (it packs layers; an operation point, :mod:`walking_noise.operations`, runs on the
    one-model path; a Sequential has none, so the registered models pack with ``points: operations`` too)."""
    known = tuple(t for types, _ in PACKED_LAYERS for t in types) + SHARED_LAYERS + (nn.Flatten,)
    return isinstance(model.model, nn.Sequential) and all(isinstance(m, known) for m in model.model) and \
        all(p.op is None for p in model.injection_points)


class PackedNetwork(nn.Module):
    """K copies of one :class:`NoisyNetwork` architecture (an ``nn.Sequential`` of :data:`PACKED_LAYERS` and
    :data:`SHARED_LAYERS`) trained as one module; ``forward`` maps ``(K, B, *input_shape)`` to logits
    ``(K, B, classes)``."""

    def __init__(self, members: Sequence[NoisyNetwork]):
        super().__init__()
        self.K = len(members)
        self.template = copy.deepcopy(members[0])
        if not packable(self.template):
            raise TypeError(f"the batched engine cannot pack {self.template.name}: it packs an nn.Sequential of "
                            f"Linear, Conv2d, BatchNorm, ReLU, MaxPool2d and Flatten layers, without operation "
                            f"points")
        at = {p.path: p.index for p in self.template.injection_points[1:]}
        self.points: list[PackedNoise] = [PackedNoise(self.K, 0)]
        ops: list[nn.Module] = [self.points[0]]
        conv_layout = False
        for path, layers in zip((name for name, _ in self.template.model.named_children()),
                                zip(*(m.model for m in members))):
            first = layers[0]
            packed = next((cls for types, cls in PACKED_LAYERS if isinstance(first, types)), None)
            if isinstance(first, nn.Flatten):
                ops.append(_Flatten(self.K, from_conv=conv_layout))
                conv_layout = False
                continue
            if isinstance(first, nn.Conv2d) and not conv_layout:
                ops.append(_ToConv())
                conv_layout = True
            op: nn.Module = packed(layers) if packed is not None else copy.deepcopy(first)  # type: ignore[call-arg]
            if path in at:
                noise = PackedNoise(self.K, at[path])
                self.points.append(noise)
                op = _PackedPoint(op, noise)
            ops.append(op)
        self.ops = nn.Sequential(*ops)
        self._layers = [m for m in self.ops.modules() if isinstance(m, _Stacked)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)

    def use_stream(self, stream: NoiseStream) -> None:
        """Draw member k's noise from ``stream`` with key ``stream.keys[k]``."""
        if len(stream.keys) != self.K:
            raise ValueError(f"a stream of {len(stream.keys)} keys for {self.K} members")
        for point in self.points:
            point.stream = stream

    @property
    def stream(self) -> NoiseStream | None:
        return self.points[0].stream

    def configure(self, noises: Sequence[NoiseConfig]) -> list[list[int]]:
        """Set each member's noise from its config (global/walking as in :func:`configure_noise`)."""
        shared = {(n.mixed_order, n.backward, n.site, n.distribution) for n in noises}
        if len(shared) > 1:
            raise ValueError("members of one batch must share noise.mixed_order, noise.backward, noise.site and "
                             "noise.distribution")
        order, backward, site, distribution = shared.pop()
        active = []
        probe = copy.deepcopy(self.template)
        settings = []
        for noise in noises:
            active.append(configure_noise(probe, noise))
            settings.append([p.injection.setting for p in probe.injection_points])
        for point, per_member in zip(self.points, zip(*settings)):
            point.set_members([s.additive_std for s in per_member], [s.multiplicative_std for s in per_member],
                              [s.in_training for s in per_member])
            point.order, point.straight_through = order, backward == "straight_through"
            point.site, point.distribution = SITES[site], DISTRIBUTIONS[distribution]
        return active

    def unpack(self, k: int) -> NoisyNetwork:
        """Member k as a one-model :class:`NoisyNetwork` (noise cleared), e.g. for checkpoints and probes."""
        model = copy.deepcopy(self.template)
        kinds = tuple(t for types, _ in PACKED_LAYERS for t in types)
        targets = [m for m in model.model if isinstance(m, kinds)]
        with torch.no_grad():
            for packed, target in zip(self._layers, targets):
                packed.member(k, target)
        for p in model.injection_points:
            p.injection.clear()
        return model

    def clamp_(self, limit: float = 1.0) -> None:
        with torch.no_grad():
            for layer in self._layers:
                if isinstance(layer, _PackedMap):
                    layer.weight.clamp_(-limit, limit)

    def finite_members(self) -> torch.Tensor:
        """Bool (K,): members whose every parameter is finite."""
        ok = torch.ones(self.K, dtype=torch.bool, device=self.points[0].additive.device)
        for layer in self._layers:
            for tensor in (layer.weight, layer.bias):
                ok &= torch.isfinite(tensor.detach().reshape(self.K, -1)).all(dim=1)
        return ok


def train_members(configs: Sequence[RunConfig], data: DatasetSplits, *, log_epochs: bool = False,
                  keep_last: int = 0) -> tuple[list[RunResult], PackedNetwork | SingleModel, list[list[dict]]]:
    """Train every config (all with equal :func:`batch_key`) as one packed network (one config: on the one-model
    path, which also takes models the batched engine cannot pack).

    Returns one :class:`RunResult` per member (as :func:`training.train_run` would, with the same random draws:
    :func:`walking_noise.training.fit_members`), the network (its ``template`` is the members' architecture), and,
    when ``keep_last`` > 0, per member the state dicts after each of the last ``keep_last`` epochs (for evaluating
    a clean model at many noise settings).
    """
    started = time.perf_counter()
    keep_freed_memory()
    keys = {batch_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("train_members needs configs that differ only in seed and noise level/point/phase")
    first = configs[0]
    device = resolve_device(first.device)
    members = []
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        members.append(run_model(cfg, data.input_shape, data.num_classes))
    if len(members) == 1:  # one member: the one-model path (any model; the same draws as packed)
        model: PackedNetwork | SingleModel = SingleModel(members[0].to(device))
        active = [configure_noise(members[0], first.noise)]
    else:
        model = PackedNetwork(members).to(device)
        active = model.configure([c.noise for c in configs])
    results, snapshots = fit_members(model, configs, data, active, engine="batched" if len(members) > 1 else "single",
                                     started=started, log_epochs=log_epochs, keep_last=keep_last)
    return results, model, snapshots


def clean_config(cfg: RunConfig) -> RunConfig:
    """The noise-free training run whose model an inference-only config evaluates."""
    return replace(cfg, noise=NoiseConfig(), checkpoint=None)


@torch.no_grad()
def evaluate_snapshots(snapshots: Sequence[dict], template: NoisyNetwork, cfg: RunConfig, data: DatasetSplits,
                       first_epoch: int) -> dict[str, Any]:
    """Evaluate a clean model's snapshots (after epochs ``first_epoch``, ``first_epoch + 1``, ...) with ``cfg.noise``:
    the inference-only result of ``cfg``, with the noise ``cfg``'s own run draws at those epochs' evaluations."""
    model = copy.deepcopy(template)
    active = configure_noise(model, cfg.noise)
    model.use_stream(NoiseStream([cfg.noise_key]))
    curves: dict[str, list[float]] = {"val_accuracy": [], "val_loss": [], "val_nonfinite": []}
    for epoch, state in enumerate(snapshots, first_epoch):
        model.load_state_dict(state)
        for name, value in zip(curves, evaluate(model, data.test_x, data.test_y, data.class_weights, epoch)):
            curves[name].append(value)
    return {**curves, "active_points": active}
