"""Many runs at once: K configurations that share data, architecture, BatchNorm and clamping trained as one model.

Same meaning as :mod:`walking_noise.training` (tested against it): member k starts from exactly the weights the
one-model path builds for its seed, sees its own data order (the same permutation the one-model path draws), and
has its own optimiser state, BatchNorm statistics, noise level, injection point, phase and noise draws. The members
are packed into one network (stacked FC weights multiplied with ``baddbmm``, convolutions grouped over members,
BatchNorm over members x channels), so a step costs one set of kernel launches for all K members. Adam, the cosine
schedule and clamping act elementwise, so on stacked tensors they are exactly K independent optimisers.

Layouts inside the packed network: FC activations are ``(K, B, F)``; conv activations ``(B, K*C, H, W)``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.models import NoisyNetwork, build_model
from walking_noise.noise import (
    ADDITIVE_DRAW,
    MULTIPLICATIVE_DRAW,
    NoiseConfig,
    NoiseInjection,
    NoiseStream,
    configure_noise,
    perturb,
)
from walking_noise.training import (
    RunResult,
    evaluate,
    fit_members,
    keep_freed_memory,
    resolve_device,
)

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


class PackedLinear(_Stacked):
    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.K = len(layers)
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in layers]).contiguous())  # (K, in, out)
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).unsqueeze(1).contiguous())  # (K,1,out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def member(self, k: int, target: nn.Linear) -> None:
        target.weight.data.copy_(self.weight[k].t())
        target.bias.data.copy_(self.bias[k, 0])

    def weight_of(self, k: int) -> torch.Tensor:
        return self.weight[k]


class PackedConv2d(_Stacked):
    def __init__(self, layers: Sequence[nn.Conv2d]):
        super().__init__()
        self.K = len(layers)
        first = layers[0]
        self.stride, self.padding = first.stride, first.padding
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]).contiguous())  # (K*out, in, kh, kw)
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]).contiguous())
        self.out_channels = first.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.K)

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


class PackedNoise(nn.Module):
    """One injection point for K members, each with its own additive/multiplicative std, phase and noise stream.

    Member k's draws are its own stream's (:class:`walking_noise.noise.NoiseStream`) in its own element order, the
    order of the one-model tensor, whatever the packed layout: the same numbers as when it trains alone.
    """

    def __init__(self, K: int, index: int):
        super().__init__()
        self.K, self.index = K, index
        self.register_buffer("additive", torch.zeros(K))
        self.register_buffer("multiplicative", torch.zeros(K))
        self.register_buffer("in_training", torch.ones(K, dtype=torch.bool))
        self.order = "multiply_then_add"
        self.straight_through = False
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

    def _std(self, std: torch.Tensor, tag: int, x: torch.Tensor) -> torch.Tensor | None:
        if not any(self._drawing.get((self.training, tag), ())):
            return None
        if self.training:
            std = std * self.in_training
        if x.dim() != 4:  # member-major layouts (K, B, ...)
            return std.view(self.K, *([1] * (x.dim() - 1)))
        channels = x.shape[1] // self.K  # conv layout (B, K*C, H, W)
        return std.repeat_interleave(channels).view(1, -1, *([1] * (x.dim() - 2)))

    def _draw(self, x: torch.Tensor, tag: int) -> torch.Tensor:
        """Standard normals in ``x``'s layout; member k's part is its stream's draw in its one-model order."""
        active = self._drawing[(self.training, tag)]
        if x.dim() != 4:  # (K, B, ...): member k's part is contiguous and in one-model order
            return self.stream.normal(self.index, tag, x[0].numel(), x.device, active).view(x.shape)
        B, KC, H, W = x.shape  # conv layout: member k owns channels k*C..(k+1)*C-1 of every sample
        z = self.stream.normal(self.index, tag, B * (KC // self.K) * H * W, x.device, active)
        return z.view(self.K, B, KC // self.K, H, W).transpose(0, 1).reshape(B, KC, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        add = self._std(self.additive, ADDITIVE_DRAW, x)
        mul = self._std(self.multiplicative, MULTIPLICATIVE_DRAW, x)
        if add is None and mul is None:
            return x
        if self.stream is None:
            raise RuntimeError("a packed network draws noise only from member streams: call use_stream first")
        return perturb(x, add, mul, self.order, self.straight_through, lambda tag: self._draw(x, tag))


class _ToConv(nn.Module):
    """(K, B, C, H, W) member-major input -> (B, K*C, H, W) grouped-conv layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, B = x.shape[:2]
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


class PackedNetwork(nn.Module):
    """K copies of one :class:`NoisyNetwork` architecture trained as one module; ``forward`` maps
    ``(K, B, *input_shape)`` to logits ``(K, B, classes)``."""

    def __init__(self, members: Sequence[NoisyNetwork]):
        super().__init__()
        self.K = len(members)
        self.template = copy.deepcopy(members[0])
        self.points: list[PackedNoise] = []
        ops: list[nn.Module] = []
        conv_layout = False
        for layers in zip(*(m.net for m in members)):
            first = layers[0]
            if isinstance(first, NoiseInjection):
                op: nn.Module = PackedNoise(self.K, first.index)
                self.points.append(op)  # type: ignore[arg-type]
            elif isinstance(first, nn.Linear):
                op = PackedLinear(layers)  # type: ignore[arg-type]
            elif isinstance(first, nn.Conv2d):
                if not conv_layout:
                    ops.append(_ToConv())
                    conv_layout = True
                op = PackedConv2d(layers)  # type: ignore[arg-type]
            elif isinstance(first, (nn.BatchNorm1d, nn.BatchNorm2d)):
                op = PackedBatchNorm(layers)  # type: ignore[arg-type]
            elif isinstance(first, nn.Flatten):
                op = _Flatten(self.K, from_conv=conv_layout)
                conv_layout = False
            elif isinstance(first, (nn.ReLU, nn.MaxPool2d)):
                op = copy.deepcopy(first)
            else:
                raise TypeError(f"the batched engine cannot pack {type(first).__name__}")
            ops.append(op)
        self.ops = nn.Sequential(*ops)
        self._layers = [op for op in ops if isinstance(op, _Stacked)]

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
        active = []
        probe = copy.deepcopy(self.template)
        settings = []
        for noise in noises:
            active.append(configure_noise(probe, noise))
            settings.append([p.injection.setting for p in probe.injection_points])
        for point, per_member in zip(self.points, zip(*settings)):
            point.set_members([s.additive_std for s in per_member], [s.multiplicative_std for s in per_member],
                              [s.in_training for s in per_member])
        orders = {n.mixed_order for n in noises}
        backwards = {n.backward for n in noises}
        if len(orders) > 1 or len(backwards) > 1:
            raise ValueError("members of one batch must share noise.mixed_order and noise.backward")
        for point in self.points:
            point.order = next(iter(orders))
            point.straight_through = backwards == {"straight_through"}
        return active

    def unpack(self, k: int) -> NoisyNetwork:
        """Member k as a one-model :class:`NoisyNetwork` (noise cleared), e.g. for checkpoints and probes."""
        model = copy.deepcopy(self.template)
        targets = [m for m in model.net if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d))]
        with torch.no_grad():
            for packed, target in zip(self._layers, targets):
                packed.member(k, target)
        for p in model.injection_points:
            p.injection.clear()
        return model

    def clamp_(self, limit: float = 1.0) -> None:
        with torch.no_grad():
            for layer in self._layers:
                if isinstance(layer, (PackedLinear, PackedConv2d)):
                    layer.weight.clamp_(-limit, limit)

    def finite_members(self) -> torch.Tensor:
        """Bool (K,): members whose every parameter is finite."""
        ok = torch.ones(self.K, dtype=torch.bool, device=self.points[0].additive.device)
        for layer in self._layers:
            for tensor in (layer.weight, layer.bias):
                ok &= torch.isfinite(tensor.detach().reshape(self.K, -1)).all(dim=1)
        return ok


def train_members(configs: Sequence[RunConfig], data: DatasetSplits, *,
                  log: Callable[[str], None] | None = None,
                  keep_last: int = 0) -> tuple[list[RunResult], PackedNetwork, list[list[dict]]]:
    """Train every config (all with equal :func:`batch_key`) as one packed network.

    Returns one :class:`RunResult` per member (as :func:`training.train_run` would, with the same random draws:
    :func:`walking_noise.training.fit_members`), the packed network, and, when ``keep_last`` > 0, per member the
    state dicts after each of the last ``keep_last`` epochs (for evaluating a clean model at many noise settings).
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
        members.append(build_model(cfg.model, data.input_shape, data.num_classes, batchnorm=cfg.batchnorm))
    packed = PackedNetwork(members).to(device)
    active = packed.configure([c.noise for c in configs])
    results, snapshots = fit_members(packed, configs, data, active, engine="batched", started=started, log=log,
                                     keep_last=keep_last)
    return results, packed, snapshots


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
