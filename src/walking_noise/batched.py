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
from walking_noise.models import NoisyNetwork, build_model, layer_table, weight_magnitudes
from walking_noise.noise import NoiseConfig, NoiseInjection, configure_noise, perturb
from walking_noise.training import (EVAL_BATCH, RunResult, final_accuracy, keep_freed_memory, make_optimizer,
                                   resolve_device, save_checkpoint)

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
    """One injection point for K members, each with its own additive/multiplicative std and phase."""

    def __init__(self, K: int):
        super().__init__()
        self.K = K
        self.register_buffer("additive", torch.zeros(K))
        self.register_buffer("multiplicative", torch.zeros(K))
        self.register_buffer("in_training", torch.ones(K, dtype=torch.bool))
        self.order = "multiply_then_add"
        self.straight_through = False

    def _std(self, std: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        if self.training:
            std = std * self.in_training
        if not bool(std.any()):
            return None
        if x.dim() != 4:  # member-major layouts (K, B, ...)
            return std.view(self.K, *([1] * (x.dim() - 1)))
        channels = x.shape[1] // self.K  # conv layout (B, K*C, H, W)
        return std.repeat_interleave(channels).view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        add, mul = self._std(self.additive, x), self._std(self.multiplicative, x)
        if add is None and mul is None:
            return x
        return perturb(x, add, mul, self.order, self.straight_through)


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
                op: nn.Module = PackedNoise(self.K)
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

    def configure(self, noises: Sequence[NoiseConfig]) -> list[list[int]]:
        """Set each member's noise from its config (global/walking as in :func:`configure_noise`)."""
        active = []
        probe = copy.deepcopy(self.template)
        for point in self.points:
            point.additive.zero_()
            point.multiplicative.zero_()
        for k, noise in enumerate(noises):
            on = configure_noise(probe, noise)
            active.append(on)
            for p in probe.injection_points:
                s = p.injection.setting
                self.points[p.index].additive[k] = s.additive_std
                self.points[p.index].multiplicative[k] = s.multiplicative_std
                self.points[p.index].in_training[k] = s.in_training
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


@torch.no_grad()
def evaluate_members(packed: PackedNetwork, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                     batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member (accuracy, mean loss) on a shared test set; non-finite logits count as wrong."""
    packed.eval()
    K = packed.K
    correct = torch.zeros(K, device=x.device, dtype=torch.float64)
    loss = torch.zeros(K, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = packed(xb.unsqueeze(0).expand(K, *xb.shape))
        finite = torch.isfinite(logits).all(dim=2)
        correct += ((logits.argmax(dim=2) == yb) & finite).sum(dim=1)
        loss += _member_losses(logits, yb.expand(K, -1), weight, mean=False)
    return correct / len(x), loss / len(x)


def _member_losses(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                   mean: bool = True) -> torch.Tensor:
    """Cross-entropy per member (K,), as ``nn.CrossEntropyLoss(weight)`` computes it for each member's batch."""
    K, B, C = logits.shape
    per = F.cross_entropy(logits.reshape(K * B, C), y.reshape(-1), weight=weight, reduction="none").view(K, B)
    norm = weight[y].view(K, B).sum(dim=1) if weight is not None else B
    batch_mean = per.sum(dim=1) / norm
    return batch_mean if mean else batch_mean * B


def train_members(configs: Sequence[RunConfig], data: DatasetSplits, *,
                  log: Callable[[str], None] | None = None,
                  keep_last: int = 0) -> tuple[list[RunResult], PackedNetwork, list[list[dict]]]:
    """Train every config (all with equal :func:`batch_key`) as one packed network.

    Returns one :class:`RunResult` per member (as :func:`training.train_run` would), the packed network, and, when
    ``keep_last`` > 0, per member the state dicts after each of the last ``keep_last`` epochs (for evaluating a
    clean model at many noise settings with the final-accuracy definition of the paper).
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
    K = len(configs)
    t = first.training
    opt, sched = make_optimizer(packed, first)
    orders = [torch.Generator().manual_seed(c.seed) for c in configs]
    augment_gen = torch.Generator().manual_seed(first.seed)
    torch.manual_seed(first.seed)  # the noise draws of this batch
    n, B = len(data.train_x), t.batch_size
    weight = data.class_weights
    curves = {name: [[] for _ in range(K)] for name in ("val_accuracy", "val_loss", "train_accuracy", "train_loss")}
    alive = torch.ones(K, dtype=torch.bool, device=device)
    diverged_epoch: list[int | None] = [None] * K
    snapshots: list[list[dict]] = [[] for _ in range(K)]
    loop_s = 0.0  # time in the training steps alone (no evaluation)
    for epoch in range(t.epochs):
        packed.train()
        loop_started = time.perf_counter()
        perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)  # (K, n)
        seen = 0
        loss_sum = torch.zeros(K, device=device)
        correct = torch.zeros(K, device=device)
        for start in range(0, n, B):
            idx = perm[:, start:start + B]
            if idx.shape[1] < 2 and first.batchnorm:
                continue
            xb, yb = data.train_x[idx], data.train_y[idx]  # (K, b, ...), (K, b)
            if data.augment is not None:
                xb = data.augment(xb.reshape(-1, *xb.shape[2:]), augment_gen).view_as(xb)
            logits = packed(xb)
            losses = _member_losses(logits, yb, weight)
            total = torch.where(alive & torch.isfinite(losses), losses, torch.zeros_like(losses)).sum()
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if first.weight_clamping:
                packed.clamp_()
            b = idx.shape[1]
            seen += b
            loss_sum += losses.detach() * b
            correct += (logits.detach().argmax(dim=2) == yb).sum(dim=1)
        if sched is not None:
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loop_s += time.perf_counter() - loop_started
        acc, vloss = evaluate_members(packed, data.test_x, data.test_y, weight)
        finite = packed.finite_members()
        for k in range(K):
            if diverged_epoch[k] is not None:
                continue
            for name, value in zip(curves, (acc[k], vloss[k], correct[k] / max(seen, 1), loss_sum[k] / max(seen, 1))):
                curves[name][k].append(float(value))
            if not bool(finite[k]):
                diverged_epoch[k] = epoch
        alive &= finite
        if keep_last and epoch >= t.epochs - keep_last:
            for k in range(K):
                snapshots[k].append(packed.unpack(k).state_dict())
        if log is not None:
            log(f"epoch {epoch + 1}/{t.epochs}  {K} members  val acc {float(acc.min()):.3f}..{float(acc.max()):.3f}")
    elapsed = time.perf_counter() - started
    results = []
    for k, cfg in enumerate(configs):
        model = packed.unpack(k)
        val = curves["val_accuracy"][k]
        padded = val + [val[-1]] * (t.epochs - len(val))
        checkpoint = save_checkpoint(model, cfg, cfg.checkpoint) if cfg.checkpoint else None
        results.append(RunResult(
            final_accuracy=final_accuracy(padded), weight_magnitudes=weight_magnitudes(model),
            diverged=diverged_epoch[k] is not None, diverged_epoch=diverged_epoch[k], epochs_run=len(val),
            active_points=active[k], layer_table=layer_table(model), checkpoint=checkpoint,
            preprocessing=dict(data.preprocessing), wall_time_s=elapsed / K, device=str(device),
            extra={"engine": "batched", "batch_members": K, "train_loop_s": loop_s},
            **{name: curves[name][k] for name in curves},
        ))
    return results, packed, snapshots


def clean_config(cfg: RunConfig) -> RunConfig:
    """The noise-free training run whose model an inference-only config evaluates."""
    return replace(cfg, noise=NoiseConfig(), checkpoint=None)


@torch.no_grad()
def evaluate_snapshots(snapshots: Sequence[dict], template: NoisyNetwork, cfg: RunConfig, data: DatasetSplits,
                       seed: int) -> dict[str, Any]:
    """Evaluate a clean model's last-epoch snapshots with ``cfg.noise``: the inference-only result of ``cfg``.

    The final accuracy is the mean over the snapshots (the last five epochs), as for a trained run.
    """
    from walking_noise.training import evaluate

    model = copy.deepcopy(template)
    active = configure_noise(model, cfg.noise)
    criterion = nn.CrossEntropyLoss(weight=data.class_weights)
    torch.manual_seed(seed)
    accs, losses = [], []
    for state in snapshots:
        model.load_state_dict(state)
        acc, loss = evaluate(model, data.test_x, data.test_y, criterion)
        accs.append(acc)
        losses.append(loss)
    return {"val_accuracy": accs, "val_loss": losses, "active_points": active}
