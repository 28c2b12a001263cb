"""One training run with noise: train, evaluate every epoch, clamp, summarise (paper section III.D).

The final accuracy is the mean validation accuracy of the last epochs, measured with the noise of the inference
phase: the last five, as in the paper, for runs of ten epochs or more; for shorter runs the second half (the last
``max(1, epochs // 2)``), so that a 3-epoch run does not average in its first epoch (:func:`final_epochs`). The
number averaged is stored with the result (``final_epochs_averaged``).

A sample whose logits are not all finite counts as a random guess: 1/C of a correct prediction for C classes
(:func:`count_correct`). So a run whose weights became non-finite (``diverged``, e.g. multiplicative s = 1e16
without BatchNorm) measures chance level, the paper's a_min "equivalent to random predictions", never less; the
fraction of such samples per epoch is stored as ``val_nonfinite`` (non-zero in a run that did not diverge: its
activations overflowed float32 at this noise level). Divergence is recorded, not raised.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits, load_dataset
from walking_noise.models import clamp_weights, run_model, weight_magnitudes
from walking_noise.points import NoisyNetwork, layer_table
from walking_noise.noise import EVAL, TRAIN, NoiseStream, configure_noise
from walking_noise.files import atomic_write
from walking_noise.store import CURVES

logger = logging.getLogger(__name__)

FINAL_EPOCHS = 5  # the paper's rule: the mean of the last five epochs
EVAL_BATCH = 2048
ALLOCATOR_ENV = "WALKING_NOISE_MALLOC"  # "default" leaves the C allocator as it is
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the kernel.

    Why: every training step allocates and frees activation-sized tensors (a 128-sample batch of 32 MLP members is
    13 MB at the input). glibc serves such sizes with fresh ``mmap`` pages, so each step pays a page fault per 4 KiB
    touched, which made the batched MLP step measurably slower (``benchmarks/batched_throughput.py``). Disabling
    mmap and heap trimming lets the freed blocks be reused; a training process then keeps its peak footprint until it
    exits. Idempotent; returns whether the setting is in effect (False off glibc or with
    ``WALKING_NOISE_MALLOC=default``).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if os.environ.get(ALLOCATOR_ENV, "keep") == "default":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        _allocator_tuned = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        _allocator_tuned = False
    return _allocator_tuned


@dataclass
class RunResult:
    """What one run measured; every field is a plain Python type so it can be stored as JSON or in MongoDB.

    Accuracies are fractions in [0, 1]; losses are mean cross-entropy per sample; ``val_nonfinite`` is the fraction
    of test samples per epoch whose logits were not all finite (each counted as a random guess).
    """

    final_accuracy: float
    final_epochs_averaged: int
    val_accuracy: list[float]
    val_loss: list[float]
    val_nonfinite: list[float]
    train_accuracy: list[float]
    train_loss: list[float]
    weight_magnitudes: dict[str, float]
    diverged: bool
    diverged_epoch: int | None
    epochs_run: int
    active_points: list[int]
    layer_table: list[dict]
    checkpoint: str | None
    preprocessing: dict
    wall_time_s: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts and lists (what ``dataclasses.asdict`` gives for these plain fields, at a
        fraction of its cost: a scan stores hundreds of these per second)."""
        return {f.name: _plain_copy(getattr(self, f.name)) for f in fields(self)}


def _plain_copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain_copy(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain_copy(item) for key, item in value.items()}
    return value


def final_epochs(epochs: int) -> int:
    """How many final epochs the final accuracy averages: 5 (the paper) from 10 epochs on, else the second half."""
    return FINAL_EPOCHS if epochs >= 2 * FINAL_EPOCHS else max(1, epochs // 2)


def final_accuracy(curve: list[float], epochs: int | None = None) -> float:
    """Mean of the last :func:`final_epochs` (of ``epochs``, default the curve's length) accuracies of ``curve``."""
    if not curve:
        raise ValueError("no epoch was evaluated, so there is no final accuracy")
    tail = curve[-final_epochs(len(curve) if epochs is None else epochs):]
    return float(sum(tail) / len(tail))


def padded_curve(curve: list[float], epochs: int) -> list[float]:
    """A curve of a run that stopped early (diverged) extended to ``epochs`` with its last value: a model with
    non-finite weights stays non-finite under every further step, so each skipped epoch would measure the same."""
    return curve + [curve[-1]] * (epochs - len(curve))


def count_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(expected correct predictions, samples with non-finite logits), summed over the last-but-one dim.

    ``logits`` (..., B, C), ``y`` (..., B). A sample whose logits are not all finite counts as a random guess,
    1/C correct: a diverged or overflowing model then scores chance level, never below it.
    """
    finite = torch.isfinite(logits).all(dim=-1)
    hits = ((logits.argmax(dim=-1) == y) & finite).sum(dim=-1).to(torch.float64)
    guesses = (~finite).sum(dim=-1).to(torch.float64)
    return hits + guesses / logits.shape[-1], guesses


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no GPU; use device=cpu or auto")
    return torch.device(device)


class FusedAdam:
    """Adam (no AMSGrad) exactly as ``torch.optim.Adam(fused=True)`` computes it, without ``torch.optim``.

    Why: building the first ``torch.optim`` optimiser of a process imports ``torch._dynamo`` (over a second), which a
    campaign of one process per config pays once per config. This calls the same fused kernel (one pass over all
    parameters) with the same state, so results equal ``torch.optim.Adam(fused=True)`` (tested).
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 - gradients are always dropped
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([self.params[i] for i in live], [self.params[i].grad for i in live],
                           [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live], [], steps,
                           lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay,
                           eps=self.eps, amsgrad=False, maximize=False)


_FUSED_ADAM_WORKS: dict[str, bool] = {}


def _fused_adam_works(device: torch.device) -> bool:
    """Whether this torch build has the fused Adam kernel for ``device`` (CPU: torch >= 2.4), probed once."""
    if device.type not in ("cpu", "cuda"):
        return False
    if device.type not in _FUSED_ADAM_WORKS:
        try:
            probe = torch.nn.Parameter(torch.zeros(2, device=device))
            probe.grad = torch.ones_like(probe)
            FusedAdam([probe], lr=0.1).step()
            _FUSED_ADAM_WORKS[device.type] = bool(torch.isfinite(probe).all())
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):
            _FUSED_ADAM_WORKS[device.type] = False
    return _FUSED_ADAM_WORKS[device.type]


class CosineSchedule:
    """``CosineAnnealingLR(T_max=epochs, eta_min=0)`` for :class:`FusedAdam`, in its closed form."""

    def __init__(self, optimizer: FusedAdam, epochs: int):
        self.optimizer, self.epochs, self.base_lr, self.epoch = optimizer, epochs, optimizer.lr, 0

    def step(self) -> None:
        self.epoch += 1
        self.optimizer.lr = self.base_lr * (1 + math.cos(math.pi * self.epoch / self.epochs)) / 2


def make_optimizer(model: nn.Module, cfg: RunConfig) -> tuple[Any, Any]:
    """The optimiser and LR schedule of ``cfg.training``; shared by the one-model and the batched engine.

    The fused kernels (one pass over all parameters instead of one per Adam/SGD sub-step) make the batched MLP step
    faster on the CPU; the arithmetic is that of the usual implementation. Adam on the CPU or a GPU is
    :class:`FusedAdam` where this torch has the kernel; anything else comes from ``torch.optim``.
    """
    t = cfg.training
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if t.optimizer == "adam" and _fused_adam_works(device):
        adam = FusedAdam(params, lr=t.lr, weight_decay=t.weight_decay)
        return adam, CosineSchedule(adam, t.epochs) if t.schedule == "cosine" else None
    if t.optimizer == "adam":
        cls, options = torch.optim.Adam, {"lr": t.lr, "weight_decay": t.weight_decay}
    else:
        cls, options = torch.optim.SGD, {"lr": t.lr, "momentum": t.momentum, "weight_decay": t.weight_decay}
    try:  # fused CPU kernels need torch >= 2.4; older builds and other devices get the default implementation
        opt: torch.optim.Optimizer = cls(params, fused=device.type in ("cpu", "cuda"), **options)
    except (RuntimeError, TypeError):
        opt = cls(params, **options)
    if t.schedule == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    return opt, None


def _finite_parameters(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def save_checkpoint(model: NoisyNetwork, cfg: RunConfig, path: str | os.PathLike) -> str:
    """Write the trained weights and the config atomically (a crash never leaves half a checkpoint)."""
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "config": cfg.to_dict()}, buffer)
    atomic_write(Path(path), buffer.getvalue())
    return str(path)


def load_checkpoint(path: str | os.PathLike, dataset: DatasetSplits | None = None) -> tuple[NoisyNetwork, RunConfig]:
    """Rebuild a model saved by :func:`save_checkpoint` (noise cleared), e.g. to examine activations (Fig. 4)."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = RunConfig.from_dict(saved["config"])
    data = dataset if dataset is not None else load_run_dataset(cfg)
    model = run_model(cfg, data.input_shape, data.num_classes)
    model.load_state_dict(saved["state_dict"])
    return model, cfg


def load_run_dataset(cfg: RunConfig, device: torch.device | None = None) -> DatasetSplits:
    """The dataset a run trains on, as tensors on ``device``."""
    data = load_dataset(cfg.dataset, cfg.data_dir, normalize=cfg.normalize, augment=cfg.augment,
                        max_train=cfg.max_train, max_test=cfg.max_test)
    return move_dataset(data, device) if device is not None and device.type != "cpu" else data


def move_dataset(data: DatasetSplits, device: torch.device) -> DatasetSplits:
    """A copy of ``data`` with every tensor on ``device``: the whole dataset stays there, no per-batch copies."""
    from dataclasses import replace

    moved = replace(data, **{name: getattr(data, name).to(device) for name in ("train_x", "train_y", "test_x",
                                                                              "test_y")})
    if data.class_weights is not None:
        moved.class_weights = data.class_weights.to(device)
    return moved


class SingleModel(nn.Module):
    """One :class:`NoisyNetwork` seen as a pack of K = 1 members, so one training loop serves both engines.

    ``forward`` maps ``(1, B, *input_shape)`` to logits ``(1, B, classes)``; the methods are those of
    :class:`walking_noise.batched.PackedNetwork` that the loop uses.
    """

    K = 1

    def __init__(self, model: NoisyNetwork):
        super().__init__()
        self.model = model

    @property
    def template(self) -> NoisyNetwork:
        """The architecture (as :attr:`PackedNetwork.template`): the model itself."""
        return self.model

    @property
    def stream(self) -> NoiseStream | None:
        return getattr(self.model, "stream", None)  # any module can be evaluated; only a NoisyNetwork draws noise

    def use_stream(self, stream: NoiseStream) -> None:
        self.model.use_stream(stream)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[0]).unsqueeze(0)

    def clamp_(self) -> None:
        clamp_weights(self.model)

    def finite_members(self) -> torch.Tensor:
        return torch.tensor([_finite_parameters(self.model)])

    def unpack(self, k: int) -> NoisyNetwork:  # noqa: ARG002 - the only member
        return self.model


def member_losses(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                  mean: bool = True) -> torch.Tensor:
    """Cross-entropy per member (K,), as ``nn.CrossEntropyLoss(weight)`` computes it for each member's batch."""
    K, B, C = logits.shape
    per = F.cross_entropy(logits.reshape(K * B, C), y.reshape(-1), weight=weight, reduction="none").view(K, B)
    norm = weight[y].view(K, B).sum(dim=1) if weight is not None else B
    batch_mean = per.sum(dim=1) / norm
    return batch_mean if mean else batch_mean * B


@torch.no_grad()
def evaluate_members(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                     epoch: int = 0, batch_size: int = EVAL_BATCH) -> tuple[torch.Tensor, ...]:
    """Per-member (accuracy, mean loss, fraction of non-finite samples) of a K-member model on a shared test set.

    Non-finite logits count as random guesses (:func:`count_correct`); eval batch j draws the noise of the model's
    stream at (``epoch``, eval, j), so evaluating a run again draws the same noise.
    """
    model.eval()
    K = model.K
    correct = torch.zeros(K, dtype=torch.float64, device=x.device)
    nonfinite = torch.zeros(K, dtype=torch.float64, device=x.device)
    loss = torch.zeros(K, device=x.device)
    stream = model.stream
    for j, start in enumerate(range(0, len(x), batch_size)):
        if stream is not None:
            stream.at(epoch, EVAL, j)
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb.unsqueeze(0).expand(K, *xb.shape))
        hits, guesses = count_correct(logits, yb)
        correct += hits
        nonfinite += guesses
        loss += member_losses(logits, yb.expand(K, -1), weight, mean=False)
    return correct / len(x), loss / len(x), nonfinite / len(x)


def evaluate(model: NoisyNetwork, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
             epoch: int = 0) -> tuple[float, float, float]:
    """(accuracy, mean loss, non-finite fraction) of one model, as :func:`evaluate_members` measures it."""
    return tuple(float(v[0]) for v in evaluate_members(SingleModel(model), x, y, weight, epoch))  # type: ignore




@dataclass
class _Members:
    """What the training loop keeps per member (K of them): measured curves, divergence, snapshots."""

    device: torch.device  # where the members train
    curves: dict[str, list[list[float]]]  # name in CURVES -> per member, one value per epoch measured
    alive: torch.Tensor  # (K,) bool: weights still finite (a dead member's loss no longer trains the network)
    diverged_epoch: list[int | None]
    snapshots: list[list[dict]]
    loop_s: float = 0.0  # time in the training steps alone (no evaluation): the in-loop rate of the benchmarks

    @classmethod
    def start(cls, K: int, device: torch.device) -> "_Members":
        return cls(device, {name: [[] for _ in range(K)] for name in CURVES},
                   torch.ones(K, dtype=torch.bool, device=device), [None] * K, [[] for _ in range(K)])


def fit_members(model: nn.Module, configs: Sequence[RunConfig], data: DatasetSplits, active: list[list[int]], *,
                engine: str, started: float, log_epochs: bool = False,
                keep_last: int = 0) -> tuple[list[RunResult], list[list[dict]]]:
    """The training loop of both engines: train the K members of ``model`` (a :class:`SingleModel` or a
    :class:`walking_noise.batched.PackedNetwork`, noise configured) on ``data`` and measure each every epoch.

    Member k draws everything random from its own config: its data order and augmentation from a generator seeded
    with its seed, its noise from its stream (key from its config, coordinate = epoch, phase, batch number). A member
    whose weights become non-finite stops being measured (its curve is padded, see :func:`padded_curve`); training
    ends when every member has. Returns one :class:`RunResult` per member and, with ``keep_last`` > 0, per member
    the state dicts after each of the last ``keep_last`` epochs.
    """
    first = configs[0]
    epochs = first.training.epochs
    model.use_stream(NoiseStream([c.noise_key for c in configs]))
    opt, sched = make_optimizer(model, first)
    orders = [torch.Generator().manual_seed(c.seed) for c in configs]
    state = _Members.start(len(configs), next(model.parameters()).device)
    for epoch in range(epochs):
        loss_sum, correct, seen = _train_epoch(model, first, data, orders, opt, sched, state, epoch)
        acc, vloss = _measure_epoch(model, data, state, epoch, loss_sum, correct, seen)
        if keep_last and epoch >= epochs - keep_last:
            for k in range(len(configs)):
                state.snapshots[k].append(copy.deepcopy(model.unpack(k).state_dict()))
        _log_epoch(state, epoch, epochs, acc, vloss, log_epochs)
        if not bool(state.alive.any()):
            break
    results = _member_results(model, configs, data, active, state, engine, time.perf_counter() - started)
    return results, state.snapshots


def _train_epoch(model: nn.Module, first: RunConfig, data: DatasetSplits, orders: list[torch.Generator], opt: Any,
                 sched: Any, state: _Members, epoch: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One epoch of training steps for all members at once: per member, the summed loss and correct predictions
    (weighted by batch size) and the number of samples seen. The time of the steps is added to ``state.loop_s``."""
    model.train()
    loop_started = time.perf_counter()
    stream, device, K = model.stream, state.device, len(orders)
    n, B = len(data.train_x), first.training.batch_size
    perm = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)  # (K, n)
    # members with one data order (the same seed) read one batch tensor, expanded over K like an evaluation batch: the
    # packed network's first convolution then computes them all from it (batched._ToConv)
    shared = K > 1 and data.augment is None and bool((perm == perm[:1]).all())
    seen = 0
    loss_sum = torch.zeros(K, device=device)
    correct = torch.zeros(K, device=device)
    for step, start in enumerate(range(0, n, B)):
        idx = perm[:, start:start + B]
        if idx.shape[1] < 2 and first.batchnorm:  # BatchNorm cannot normalise a batch of one sample
            continue
        stream.at(epoch, TRAIN, step)
        yb = data.train_y[idx]  # (K, b)
        # index_select of the flat index, not x[idx]: the same tensor, 2-3x faster (the gather was 13 % of a packed
        # MLP step at K = 32, benchmarks/batched_throughput.py)
        xb = data.train_x.index_select(0, idx[0] if shared else idx.reshape(-1))
        xb = xb.unsqueeze(0).expand(K, *xb.shape) if shared else xb.view(*idx.shape, *xb.shape[1:])  # (K, b, ...)
        if data.augment is not None:
            xb = torch.stack([data.augment(xb[k], orders[k]) for k in range(K)])
        logits = model(xb)
        losses = member_losses(logits, yb, data.class_weights)
        total = torch.where(state.alive & torch.isfinite(losses), losses, torch.zeros_like(losses)).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if first.weight_clamping:
            model.clamp_()
        b = idx.shape[1]
        seen += b
        loss_sum += losses.detach() * b
        correct += (logits.detach().argmax(dim=2) == yb).sum(dim=1)
    if sched is not None:
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    state.loop_s += time.perf_counter() - loop_started
    return loss_sum, correct, seen


def _measure_epoch(model: nn.Module, data: DatasetSplits, state: _Members, epoch: int, loss_sum: torch.Tensor,
                   correct: torch.Tensor, seen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate every member after ``epoch`` and append its values to its curves, unless it diverged before; a
    member whose weights are non-finite now is marked diverged at this epoch. Returns validation accuracy and loss."""
    acc, vloss, nonfinite = evaluate_members(model, data.test_x, data.test_y, data.class_weights, epoch)
    finite = model.finite_members().to(state.device)
    for k in range(len(state.diverged_epoch)):
        if state.diverged_epoch[k] is not None:
            continue
        values = (acc[k], vloss[k], nonfinite[k], correct[k] / max(seen, 1), loss_sum[k] / max(seen, 1))
        for name, value in zip(CURVES, values):
            state.curves[name][k].append(float(value))
        if not bool(finite[k]):
            state.diverged_epoch[k] = epoch
    state.alive &= finite
    return acc, vloss


def _log_epoch(state: _Members, epoch: int, epochs: int, acc: torch.Tensor, vloss: torch.Tensor,
               log_epochs: bool) -> None:
    """The epoch's INFO line (with ``log_epochs``) and one line per member that diverged in it."""
    K = len(state.diverged_epoch)
    if log_epochs:
        if K == 1:
            logger.info("epoch %d/%d  train loss %.4f  val acc %.4f  val loss %.4f", epoch + 1, epochs,
                        state.curves["train_loss"][0][-1], float(acc[0]), float(vloss[0]))
        else:
            logger.info("epoch %d/%d  %d members  val acc %.3f..%.3f", epoch + 1, epochs, K, float(acc.min()),
                        float(acc.max()))
    for k in range(K):
        if state.diverged_epoch[k] == epoch:
            logger.info("member %d diverged at epoch %d: non-finite weights", k, epoch + 1)


def _member_results(model: nn.Module, configs: Sequence[RunConfig], data: DatasetSplits, active: list[list[int]],
                    state: _Members, engine: str, elapsed: float) -> list[RunResult]:
    """One :class:`RunResult` per member (its checkpoint saved if its config asks), the wall time shared evenly."""
    epochs, K = configs[0].training.epochs, len(configs)
    results = []
    for k, cfg in enumerate(configs):
        member = model.unpack(k)
        checkpoint = save_checkpoint(member, cfg, cfg.checkpoint) if cfg.checkpoint else None
        val = state.curves["val_accuracy"][k]
        results.append(RunResult(
            final_accuracy=final_accuracy(padded_curve(val, epochs)), final_epochs_averaged=final_epochs(epochs),
            weight_magnitudes=weight_magnitudes(member), diverged=state.diverged_epoch[k] is not None,
            diverged_epoch=state.diverged_epoch[k], epochs_run=len(val), active_points=active[k],
            layer_table=layer_table(member), checkpoint=checkpoint, preprocessing=dict(data.preprocessing),
            wall_time_s=elapsed / K, device=str(state.device),
            extra={"engine": engine, "batch_members": K, "train_loop_s": state.loop_s},
            **{name: state.curves[name][k] for name in CURVES},
        ))
    return results


def train_run(cfg: RunConfig, data: DatasetSplits | None = None, log_epochs: bool = False) -> RunResult:
    """Train one model of ``cfg`` and return what it measured.

    ``data`` may be passed in to share one loaded dataset between runs (it is not modified); ``log_epochs``: one
    INFO line per epoch (logger ``walking_noise.training``). Deterministic for a
    fixed config: its seed fixes the initial weights and the data order, its noise key (:attr:`RunConfig.noise_key`)
    the noise draws; the batched engine gives the same member the same draws (:func:`fit_members`).
    """
    started = time.perf_counter()
    keep_freed_memory()
    device = resolve_device(cfg.device)
    if data is None:
        data = load_run_dataset(cfg, device)
    torch.manual_seed(cfg.seed)
    model = run_model(cfg, data.input_shape, data.num_classes).to(device)
    active = configure_noise(model, cfg.noise)
    results, _ = fit_members(SingleModel(model), [cfg], data, [active], engine="single", started=started,
                             log_epochs=log_epochs)
    return results[0]
