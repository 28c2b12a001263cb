"""One training run with noise: train, evaluate every epoch, clamp, summarise (paper section III.D).

The final accuracy is the mean validation accuracy of the last five epochs, measured with the noise of the
inference phase. A run that diverges (non-finite weights, e.g. multiplicative s = 1e16) is not an exception: it is
recorded as diverged with what it measured, and NaN/inf logits count as wrong predictions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits, load_dataset
from walking_noise.models import NoisyNetwork, build_model, clamp_weights, layer_table, weight_magnitudes
from walking_noise.noise import configure_noise

FINAL_EPOCHS = 5
EVAL_BATCH = 2048
ALLOCATOR_ENV = "WALKING_NOISE_MALLOC"  # "default" leaves the C allocator as it is
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the kernel.

    Why: every training step allocates and frees activation-sized tensors (a 128-sample batch of 32 MLP members is
    13 MB at the input). glibc serves such sizes with fresh ``mmap`` pages, so each step pays a page fault per 4 KiB
    touched; on the 2-core reference VM that made one noise addition 24 ms instead of 1.5 ms, and the whole batched
    MLP step about 15 % slower (``benchmarks/batched_throughput.py``). Disabling mmap and heap trimming lets the
    freed blocks be reused; a training process then keeps its peak footprint until it exits. Idempotent; returns
    whether the setting is in effect (False off glibc or with ``WALKING_NOISE_MALLOC=default``).
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

    Accuracies are fractions in [0, 1]; losses are mean cross-entropy per sample.
    """

    final_accuracy: float
    val_accuracy: list[float]
    val_loss: list[float]
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
        return asdict(self)


def final_accuracy(curve: list[float], last: int = FINAL_EPOCHS) -> float:
    """Mean of the last ``last`` epochs' accuracies (fewer when fewer epochs were run)."""
    if not curve:
        raise ValueError("no epoch was evaluated, so there is no final accuracy")
    tail = curve[-last:]
    return float(sum(tail) / len(tail))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no GPU; use device=cpu or auto")
    return torch.device(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module,
             batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """(accuracy, mean loss) in eval mode; a sample whose logits are not all finite counts as wrong."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        finite = torch.isfinite(logits).all(dim=1)
        correct += int(((logits.argmax(dim=1) == yb) & finite).sum())
        loss_sum += float(criterion(logits, yb)) * len(xb)
    return correct / len(x), loss_sum / len(x)


class FusedAdam:
    """Adam (no AMSGrad) exactly as ``torch.optim.Adam(fused=True)`` computes it, without ``torch.optim``.

    Why: building the first ``torch.optim`` optimiser of a process imports ``torch._dynamo`` (1.1-1.5 s here), which a
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

    The fused kernels (one pass over all parameters instead of one per Adam/SGD sub-step) made the batched MLP step
    about 9 % faster on the CPU; the arithmetic is that of the usual implementation. Adam on the CPU or a GPU is
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str | os.PathLike, dataset: DatasetSplits | None = None) -> tuple[NoisyNetwork, RunConfig]:
    """Rebuild a model saved by :func:`save_checkpoint` (noise cleared), e.g. to examine activations (Fig. 4)."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = RunConfig.from_dict(saved["config"])
    data = dataset if dataset is not None else load_run_dataset(cfg)
    model = build_model(cfg.model, data.input_shape, data.num_classes, batchnorm=cfg.batchnorm)
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


def train_run(cfg: RunConfig, data: DatasetSplits | None = None,
              log: Callable[[str], None] | None = None) -> RunResult:
    """Train one model of ``cfg`` and return what it measured.

    ``data`` may be passed in to share one loaded dataset between runs (it is not modified). Deterministic on the
    CPU for a fixed ``cfg.seed``: the seed fixes the initial weights, the data order and the noise draws.
    """
    started = time.perf_counter()
    keep_freed_memory()
    device = resolve_device(cfg.device)
    if data is None:
        data = load_run_dataset(cfg, device)
    torch.manual_seed(cfg.seed)
    order = torch.Generator(device="cpu").manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.num_classes, batchnorm=cfg.batchnorm).to(device)
    active = configure_noise(model, cfg.noise)
    criterion = nn.CrossEntropyLoss(weight=data.class_weights)
    optimizer, scheduler = make_optimizer(model, cfg)
    batch = cfg.training.batch_size
    n = len(data.train_x)
    curves: dict[str, list[float]] = {"val_accuracy": [], "val_loss": [], "train_accuracy": [], "train_loss": []}
    diverged_epoch: int | None = None

    loop_s = 0.0  # time in the training steps alone (no evaluation): the in-loop rate of the benchmarks
    for epoch in range(cfg.training.epochs):
        model.train()
        loop_started = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        seen, correct, loss_sum = 0, 0, 0.0
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            if len(idx) < 2 and cfg.batchnorm:  # BatchNorm cannot normalise a batch of one sample
                continue
            xb, yb = data.train_x[idx], data.train_y[idx]
            if data.augment is not None:
                xb = data.augment(xb, order)
            logits = model(xb)
            loss = criterion(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.weight_clamping:
                clamp_weights(model)
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(dim=1) == yb).sum())
        if scheduler is not None:
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        loop_s += time.perf_counter() - loop_started
        val_acc, val_loss = evaluate(model, data.test_x, data.test_y, criterion)
        for key, value in zip(curves, (val_acc, val_loss, correct / max(seen, 1), loss_sum / max(seen, 1))):
            curves[key].append(value)
        if log is not None:
            log(f"epoch {epoch + 1}/{cfg.training.epochs}  train loss {curves['train_loss'][-1]:.4f}  "
                f"val acc {val_acc:.4f}  val loss {val_loss:.4f}")
        if not _finite_parameters(model):
            diverged_epoch = epoch
            if log is not None:
                log(f"diverged at epoch {epoch + 1}: non-finite weights; stopping")
            break

    # A model with non-finite weights stays non-finite under every further step, so the epochs it skipped would
    # have measured exactly what its last evaluation measured: the final accuracy extends the curve with it.
    remaining = cfg.training.epochs - len(curves["val_accuracy"])
    padded = curves["val_accuracy"] + [curves["val_accuracy"][-1]] * remaining
    checkpoint = save_checkpoint(model, cfg, cfg.checkpoint) if cfg.checkpoint else None
    return RunResult(
        final_accuracy=final_accuracy(padded),
        weight_magnitudes=weight_magnitudes(model),
        diverged=diverged_epoch is not None,
        diverged_epoch=diverged_epoch,
        epochs_run=len(curves["val_accuracy"]),
        active_points=active,
        layer_table=layer_table(model),
        checkpoint=checkpoint,
        preprocessing=dict(data.preprocessing),
        wall_time_s=time.perf_counter() - started,
        device=str(device),
        extra={"train_loop_s": loop_s},
        **curves,
    )
