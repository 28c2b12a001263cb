"""How sensitive is a trained model? Its weights evaluated under noise at inference, many runs at once.

A sensitivity measurement is an ordinary run (:class:`walking_noise.config.RunConfig`) whose config names trained
``weights``: it is evaluated, never trained. Its result is one pass over the whole test set with the noise its config
draws (``final_epochs_averaged`` 1), and its ``seed`` only names the draw, so runs that differ in seed are
independent noise draws of the same model: the "repeats" of a fit. The draws of test batch ``j`` at point ``p`` are
Philox at the run's own key (:meth:`RunConfig.noise_key`) and the coordinate (epoch 0, eval, ``j``), with test
batches of ``training.batch_size`` samples: exactly what the one-model evaluation of the run draws
(:func:`plain_evaluation`, the reference every result here must equal).

:class:`Evaluator` evaluates many runs of one model, weights, test set and batch size together:

- **Clean-prefix caching.** Per test batch, one clean forward pass records the output of every leaf call (and the
  input of every Linear/Conv call, for the weight and MAC sites). A run whose first noisy point is ``f`` then starts
  there: every leaf called before ``f`` returns its recorded output instead of computing (its ``forward`` is replaced
  for the evaluation; a forward hook would still compute it), so only the functional code between modules (a
  residual addition) runs again; for an ``nn.Sequential`` the top-level children before the one holding ``f`` are
  skipped altogether. For walking noise at ``p`` everything before ``p`` is computed once per test batch, whatever
  the number of levels and draws at ``p``.
- **Packing.** The runs that start at the same point are evaluated ``R`` at a time in the batch dimension
  (``R x B`` samples): each run's ``B`` samples get its own noise, drawn by that run's own injection point in the
  one-model code path, at its own level and key, block by block; the layers after the noise run once for all ``R``.
- **Bit-identical however packed.** The noise of a run is computed on exactly the tensors its one-model evaluation
  perturbs, so the draws never depend on packing. That the clean layers give each block of a pack the numbers they
  give a batch of ``B`` alone is a property of the arithmetic library (a matrix product may round a row differently
  when it sits beside other rows, and which kernel it picks depends on the number of rows): packs hold a power of
  two of runs, and the evaluator checks each pack size once per batch size on a clean pack of that many copies,
  layer by layer, packing fewer (down to run by run, still with the cached prefix) where it does not hold.
- **Exact kernels.** A ``MaxPool2d`` whose stride is its window (no padding, dilation or ceil mode) is computed as
  elementwise maxima of strided views: the same numbers as CPU ``max_pool2d``, which always fills an index tensor
  too and took half of LeNet-5's evaluation time.
- **Bounded memory.** The cache holds one test batch: :attr:`Evaluator.cache_bytes_per_sample` bytes per sample
  (every leaf call's output, the Linear/Conv inputs when a weight or MAC run needs them, and the outputs of an
  ``nn.Sequential``'s top-level children), so ``B x`` that in all; a pack is sized so that ``R x B`` samples of
  those activations stay under ``pack_bytes`` (default :data:`PACK_BYTES`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.files import file_sha256
from walking_noise.models import run_model, weight_magnitudes
from walking_noise.noise import EVAL, NoiseInjection, NoiseStream, configure_noise
from walking_noise.points import NoisyNetwork, layer_table
from walking_noise.training import (
    RunResult,
    SingleModel,
    count_correct,
    evaluate_members,
    load_run_dataset,
    member_losses,
    resolve_device,
)

logger = logging.getLogger(__name__)

#: Largest number of runs packed into one forward pass, per device type. On one CPU thread larger packs are slower
#: (their activations leave the cache; LeNet-5 on the 396-run grid of benchmarks/sensitivity_speed.py, 2026-12-06:
#: 1.5 s at 4 or 8 runs per pack, 1.9 s at 1, 2.2 s at 32-64); every pack size is also checked once for exactness.
MAX_PACK = {"cpu": 4}
#: ... and on other devices (a GPU gains from wide batches).
MAX_PACK_OTHER = 64
#: Memory a pack's activations may take (bytes): ``R x B x`` :attr:`Evaluator.cache_bytes_per_sample`.
PACK_BYTES = 256 * 2**20


# ---- trained weights ---------------------------------------------------------------------------------------


def _state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors a weights file holds: a plain ``state_dict``, or this library's checkpoint
    (:func:`walking_noise.training.save_checkpoint`, keys of the wrapped model prefixed ``model.``), or any dict with
    a ``state_dict`` entry."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - pickled objects other than tensors and plain data
        raise ValueError(f"weights file {path} holds no state_dict of tensors ({type(err).__name__}); save the model's "
                         f"weights with torch.save(model.state_dict(), PATH)") from None
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ValueError(f"weights file {path} holds a {type(saved).__name__}, not a state_dict of tensors; save the "
                         f"model's weights with torch.save(model.state_dict(), PATH)")
    return saved


def _keys_text(keys: Sequence[str], shown: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the trained weights of ``path`` into ``module`` (the user's model, not its noisy wrapper), strictly.

    A checkpoint of this library or of ``nn.DataParallel`` prefixes every key (``model.``, ``module.``): the prefix is
    dropped when that makes the keys match. A file that does not match is one ``ValueError`` naming the missing and
    unexpected keys, or the first tensor whose shape differs.
    """
    saved = _state_dict(path)
    expected = set(module.state_dict())
    candidates = [saved] + [{k[len(prefix):]: v for k, v in saved.items()} for prefix in ("model.", "module.")
                            if saved and all(k.startswith(prefix) for k in saved)]
    best = max(candidates, key=lambda c: (set(c) == expected, len(set(c) & expected)))
    missing, unexpected = expected - set(best), set(best) - expected
    if missing or unexpected:
        parts = ([f"missing keys {_keys_text(missing)}"] if missing else []) + (
            [f"unexpected keys {_keys_text(unexpected)}"] if unexpected else [])
        raise ValueError(f"weights file {path} does not match the model: {'; '.join(parts)} (were they saved from "
                         f"this model with these model_kwargs?)")
    own = module.state_dict()
    for name, tensor in best.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"weights file {path} does not match the model: {name} has shape {tuple(tensor.shape)} "
                             f"in the file and {tuple(own[name].shape)} in the model")
    module.load_state_dict(best, strict=True)


def trained_network(cfg: RunConfig, data: DatasetSplits) -> NoisyNetwork:
    """The model of ``cfg`` with its trained weights, in eval mode, noise cleared, on ``cfg.device``.

    The weights file must still be the one the config names (its sha256, :attr:`RunConfig.weights_sha256`); the
    model's output must have a logit for every class of the test set.
    """
    if cfg.weights is None:
        raise ValueError(f"this run evaluates the weights with sha256 {cfg.weights_sha256} but names no file to read "
                         f"them from: set weights: PATH")
    found = file_sha256(cfg.weights)
    if found != cfg.weights_sha256:
        raise ValueError(f"weights file {cfg.weights} has changed since the run was configured (sha256 {found[:12]}, "
                         f"configured {str(cfg.weights_sha256)[:12]}): configure the runs again (a new study load)")
    net = run_model(cfg, data.input_shape, data.num_classes)
    load_weights(net.model, cfg.weights)
    with torch.no_grad():
        logits = net.eval()(data.test_x[:1])
    if logits.dim() != 2 or logits.shape[-1] < data.num_classes:
        raise ValueError(f"model {cfg.model} outputs shape {tuple(logits.shape[1:])} per sample, but the test set has "
                         f"{data.num_classes} classes: a classifier must output one logit per class")
    return net.to(resolve_device(cfg.device))


# ---- the reference ---------------------------------------------------------------------------------------------


def plain_evaluation(net: NoisyNetwork, cfg: RunConfig, data: DatasetSplits) -> tuple[float, float, float]:
    """(accuracy, mean loss, non-finite fraction) of ``cfg`` on ``net`` by the one-model path: every point set by
    :func:`walking_noise.noise.configure_noise`, the whole network computed for every test batch of
    ``training.batch_size`` samples, batch ``j`` drawing at (epoch 0, eval, ``j``). What :class:`Evaluator` must
    compute, bit for bit; also the naive loop of ``benchmarks/sensitivity_speed.py``. ``net`` is left clean."""
    try:
        configure_noise(net, cfg.noise)
        net.use_stream(NoiseStream([cfg.noise_key]))
        acc, loss, nonfinite = evaluate_members(SingleModel(net), data.test_x, data.test_y, data.class_weights, 0,
                                                cfg.training.batch_size)
    finally:
        for p in net.injection_points:
            p.injection.clear()
        net.use_stream(None)
    return float(acc[0]), float(loss[0]), float(nonfinite[0])


# ---- the engine ----------------------------------------------------------------------------------------------


@dataclass
class _RunNoise:
    """One run's noise: its own injection point at each position that injects (configured as the one-model path
    configures the model's own; None where the run adds no noise), its stream, and the positions that inject."""

    injections: list[NoiseInjection | None]
    stream: NoiseStream
    active: list[int]

    @property
    def first(self) -> int | None:
        return min(self.active) if self.active else None


class _Setting:
    """Stands in for a point's injection while :func:`configure_noise` sets a run: remembers what it was told, so
    that only the points that inject get an injection of their own (building one per point and run cost more than
    the evaluation of a small model)."""

    def __init__(self) -> None:
        self.told: tuple[tuple, dict] | None = None

    def set(self, *args: Any, **kwargs: Any) -> None:
        self.told = (args, kwargs)

    def clear(self) -> None:
        self.told = None


@dataclass
class _Proxy:
    """What :func:`configure_noise` needs: a name and points (here with stand-ins for the injections)."""

    name: str
    injection_points: list[Any]


def run_noise(net: NoisyNetwork, cfg: RunConfig, proxy: _Proxy | None = None) -> _RunNoise:
    """The injection points of one run, set from ``cfg.noise`` as :func:`configure_noise` sets a model's (``proxy``:
    a proxy of ``net`` from :func:`noise_proxy`, reused from run to run)."""
    proxy = proxy or noise_proxy(net)
    active = configure_noise(proxy, cfg.noise)
    stream = NoiseStream([cfg.noise_key])
    injections: list[NoiseInjection | None] = [None] * len(proxy.injection_points)
    for i in active:
        args, kwargs = proxy.injection_points[i].injection.told
        injection = NoiseInjection(i).eval()
        injection.set(*args, **kwargs)
        injection.stream = stream
        injections[i] = injection
    return _RunNoise(injections, stream, active)


def noise_proxy(net: NoisyNetwork) -> _Proxy:
    """The points of ``net``, each with a :class:`_Setting` for :func:`configure_noise` to set."""
    return _Proxy(net.name, [replace(p, injection=_Setting()) for p in net.injection_points])


def _window_max(size: int) -> Any:
    """The max over ``size x size`` windows at stride ``size`` (what ``max_pool2d`` without padding, dilation or
    ceil mode computes) as ``size**2 - 1`` elementwise maxima of strided views: the same numbers (a maximum is exact,
    and a NaN in a window gives NaN in both), without the index tensor CPU ``max_pool2d`` always fills; 4-6x faster
    for LeNet-5's pools on one CPU thread."""

    def pool(x: torch.Tensor) -> torch.Tensor:
        h, w = (x.shape[-2] // size) * size, (x.shape[-1] // size) * size
        out = x[..., 0:h:size, 0:w:size]
        for i in range(size):
            for j in range(size):
                if i or j:
                    out = torch.maximum(out, x[..., i:h:size, j:w:size])
        return out

    return pool


def _fast_equivalent(module: nn.Module) -> Any:
    """A faster computation of ``module``'s forward with exactly its numbers, or None (see :func:`_window_max`)."""
    if type(module) is nn.MaxPool2d and not module.return_indices and not module.ceil_mode:
        k, stride, pad, dil = (module.kernel_size, module.stride, module.padding, module.dilation)
        k = k if isinstance(k, int) else (k[0] if len(set(k)) == 1 else None)
        stride = stride if isinstance(stride, int) else (stride[0] if len(set(stride)) == 1 else None)
        if k and k == stride and pad in (0, (0, 0)) and dil in (1, (1, 1)):
            return _window_max(k)
    return None


def _tile(value: Any, R: int) -> Any:
    """``R`` copies of a recorded output along the batch dimension (always a new tensor: later code may write into
    it in place, e.g. ``out += identity``)."""
    if isinstance(value, torch.Tensor):
        return value.clone() if R == 1 else value.repeat(R, *([1] * (value.dim() - 1)))
    if isinstance(value, (tuple, list)):
        return type(value)(_tile(v, R) for v in value)
    return value


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


@dataclass
class _Call:
    """One module call of a clean pass: its output, the last point position reached when it returned, and every
    module's call count then (so that a pass that skips the call continues counting where the clean pass did)."""

    output: Any
    last: int
    calls: Counter


@dataclass
class _Pass:
    """The state of one forward pass through the evaluator's module overrides."""

    R: int = 1
    first: int = 0  # the first noisy position: module calls that end before it return their recorded output
    runs: list[_RunNoise] = field(default_factory=list)
    record: dict[tuple[int, int], _Call] | None = None  # a recording pass: (module, call) -> what the call gave
    inputs: dict[int, torch.Tensor] | None = None  # a recording pass: position -> input of a Linear/Conv call
    calls: Counter = field(default_factory=Counter)
    last: int = 0  # the last point position reached
    reached: set[int] = field(default_factory=set)


@dataclass
class _Batch:
    """The clean forward pass of one test batch: what every run of the batch reuses."""

    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    calls: dict[tuple[int, int], _Call]
    inputs: dict[int, torch.Tensor]


class Evaluator:
    """Evaluate many runs of one trained model on one test set (the module docstring says how).

    ``net`` is the trained model (:func:`trained_network`); ``batch_size`` the test batch of every run (the runs'
    ``training.batch_size``); ``pack_bytes`` bounds the activations of one packed pass (bytes).
    """

    def __init__(self, net: NoisyNetwork, data: DatasetSplits, batch_size: int, *, pack_bytes: int = PACK_BYTES):
        self.net = net.eval()
        for p in net.injection_points:
            p.injection.clear()
        self.data, self.batch_size, self.pack_bytes = data, int(batch_size), int(pack_bytes)
        device = next(iter(net.parameters()), torch.zeros(0)).device
        self.test_x, self.test_y = data.test_x.to(device), data.test_y.to(device)
        self.weight = data.class_weights.to(device) if data.class_weights is not None else None
        self.points = net.injection_points
        self._position = {(id(p.layer), p.call): p.index for p in self.points[1:]}
        self._in_layer = {p.index for p in self.points if p.layer is not None and p.is_learnable}
        self._modules = [m for _, m in net.model.named_modules()]
        self._packs: dict[tuple[int, int], bool] = {}  # (batch size, runs packed) -> packing computes exactly
        self.cache_bytes_per_sample = 0
        self._pass = _Pass()
        self._batch: _Batch | None = None
        self.clean_accuracy: float | None = None

    # ---- module overrides ----

    def _install(self) -> None:
        for module in self._modules:
            original = module.forward
            fast = _fast_equivalent(module)
            if fast is not None:
                original = lambda x, _f=fast: _f(x)  # noqa: E731 - one positional input, as the module takes
            module.forward = lambda *a, _m=module, _f=original, **k: self._call(_m, _f, *a, **k)

    def _uninstall(self) -> None:
        for module in self._modules:
            module.__dict__.pop("forward", None)

    def _call(self, module: nn.Module, original: Any, *args: Any, **kwargs: Any) -> Any:
        """Every module call of the model during an evaluation: recorded (clean pass), skipped when it ends before
        the pack's first noisy point (its recorded output, ``R`` times), or computed, with the runs' noise at a
        point."""
        state = self._pass
        state.calls[id(module)] += 1
        key = (id(module), state.calls[id(module)])
        pos = self._position.get(key)
        if pos is not None:
            state.last = pos
            state.reached.add(pos)
        if state.record is not None:
            out = original(*args, **kwargs)
            state.record[key] = _Call(_tile(out, 1), state.last, state.calls.copy())
            if state.inputs is not None and pos in self._in_layer:
                state.inputs[pos] = args[0].clone()
            return out
        done = self._batch.calls.get(key) if self._batch is not None else None
        if done is not None and done.last < state.first:
            state.calls = done.calls.copy()
            state.last = done.last
            return _tile(done.output, state.R)
        if pos is not None and pos == state.first:  # every run of the pack starts here, from the clean output
            y, x = done.output, self._batch.inputs.get(pos)
            noisy = [run.injections[pos] for run in state.runs]
            return torch.cat([inj.after_layer(module, x, y) for inj in noisy]) if state.R > 1 else \
                noisy[0].after_layer(module, x, y)
        if type(module).forward is nn.Sequential.forward and len(args) == 1 and not kwargs:
            out = self._sequential(module, args[0])
        else:
            out = original(*args, **kwargs)
        noisy = [run.injections[pos] if pos in run.active else None for run in state.runs] if pos else []
        if not any(noisy):
            return out
        if state.R == 1:
            return noisy[0].after_layer(module, args[0], out)
        ys, xs = out.chunk(state.R), args[0].chunk(state.R)
        return torch.cat([inj.after_layer(module, x, y) if inj is not None else y
                          for inj, x, y in zip(noisy, xs, ys)])

    def _sequential(self, module: nn.Sequential, x: Any) -> Any:
        """An ``nn.Sequential`` that holds the first noisy point: its children that end before the point are not
        called at all; the first one that does not starts from the recorded output of the one before."""
        state, skipped = self._pass, None
        for child in module:
            done = self._batch.calls.get((id(child), state.calls[id(child)] + 1))
            if done is not None and done.last < state.first:
                skipped = done
                continue
            if skipped is not None:
                state.calls, state.last = skipped.calls.copy(), skipped.last
                starts = self._position.get((id(child), state.calls[id(child)] + 1)) == state.first
                # the child that computes the first noisy point starts from its own recorded output (see _call),
                # not from its input: R copies of that input would be made for nothing
                x, skipped = (skipped.output if starts else _tile(skipped.output, state.R)), None
            x = child(x)
        if skipped is not None:
            state.calls, state.last = skipped.calls.copy(), skipped.last
            x = _tile(skipped.output, state.R)
        return x

    # ---- passes ----

    def _forward(self, x: torch.Tensor, state: _Pass) -> torch.Tensor:
        self._pass = state
        return self.net.model(x)

    def _record(self, x: torch.Tensor, y: torch.Tensor, inputs: bool) -> _Batch:
        """The clean pass of one test batch: every module call's output (and the Linear/Conv inputs), the logits."""
        self._batch = None
        state = _Pass(record={}, inputs={} if inputs else None)
        logits = self._forward(x, state)
        batch = _Batch(x, y, logits, state.record, state.inputs or {})
        total = sum(_nbytes(v) for v in (*(c.output for c in batch.calls.values()), *batch.inputs.values()))
        self.cache_bytes_per_sample = max(self.cache_bytes_per_sample, -(-total // len(x)))
        finite = torch.isfinite(logits).all(dim=-1)
        if not bool(finite.all()):
            raise ValueError(f"the model's output without noise (s = 0) is not finite for {int((~finite).sum())} of "
                             f"{len(x)} samples of a test batch: a trained model must give finite logits before "
                             f"noise is added (check the weights and the inputs' preprocessing)")
        return batch

    def _packs_exactly(self, batch: _Batch, R: int) -> bool:
        """Whether a clean pack of ``R`` copies gives, at every module call and at the output, exactly ``R`` copies
        of what the batch alone gives (batch-invariant arithmetic, batch-first layouts). Checked for every pack size
        used, once per batch size: a matrix library may pick another kernel (and rounding) by the number of rows,
        so exactness at one pack size says nothing about another (one CPU's sgemm: the MLP's first layer with 128
        rows is exact packed up to 24 copies on two threads, not from 25)."""
        size = len(batch.x)
        if R == 1:
            return True
        if (size, R) not in self._packs:
            state = _Pass(R=R, record={})
            self._batch, kept = None, batch
            try:
                logits = self._forward(_tile(batch.x, R), state)
            finally:
                self._batch = kept
            self._packs[size, R] = _same(logits, _tile(batch.logits, R)) and all(
                key in batch.calls and _same(call.output, _tile(batch.calls[key].output, R))
                for key, call in state.record.items())
            if not self._packs[size, R]:
                logger.info("%s: %d packed runs would not compute exactly what one batch of %d computes on this "
                            "device; packing fewer", self.net.name, R, size)
        return self._packs[size, R]

    def evaluate(self, configs: Sequence[RunConfig]) -> list[tuple[float, float, float, list[int]]]:
        """(accuracy, mean loss, non-finite fraction, active points) of every config, each exactly as
        :func:`plain_evaluation` computes it."""
        proxy = noise_proxy(self.net)
        runs = [run_noise(self.net, cfg, proxy) for cfg in configs]
        inputs = any(self._in_layer & set(run.active) for run in runs)
        n = len(runs)
        correct = torch.zeros(n, dtype=torch.float64, device=self.test_x.device)
        nonfinite = torch.zeros(n, dtype=torch.float64, device=self.test_x.device)
        loss = torch.zeros(n, device=self.test_x.device)
        starts: dict[int | None, list[int]] = {}
        for i, run in enumerate(runs):
            starts.setdefault(run.first, []).append(i)
        clean_correct = 0.0
        self._install()
        try:
            with torch.no_grad():
                for j, start in enumerate(range(0, len(self.test_x), self.batch_size)):
                    xb, yb = self.test_x[start:start + self.batch_size], self.test_y[start:start + self.batch_size]
                    self._batch = self._record(xb, yb, inputs)
                    clean_correct += float(count_correct(self._batch.logits.unsqueeze(0), yb)[0][0])
                    cap = self._pack_cap(len(xb))
                    for first, members in starts.items():
                        at = 0
                        while at < len(members):
                            R = self._pack_size(len(members) - at, cap)
                            chosen, at = members[at:at + R], at + R
                            logits = self._run_pack([runs[i] for i in chosen], first, j)
                            hits, guesses = count_correct(logits, yb.expand(len(chosen), -1))
                            index = torch.tensor(chosen, device=correct.device)
                            correct[index] += hits
                            nonfinite[index] += guesses
                            loss[index] += member_losses(logits, yb.expand(len(chosen), -1), self.weight, mean=False)
        finally:
            self._uninstall()
            self._batch = None  # type: ignore[assignment]
        N = len(self.test_x)
        self.clean_accuracy = clean_correct / N
        return [(float(correct[i] / N), float(loss[i] / N), float(nonfinite[i] / N), runs[i].active)
                for i in range(n)]

    def _pack_cap(self, batch: int) -> int:
        """The most runs one pass may hold: :data:`MAX_PACK` of the device, and ``R x batch`` samples of cached
        activations within ``pack_bytes``."""
        per_pack = max(1, batch * self.cache_bytes_per_sample)
        most = MAX_PACK.get(self.test_x.device.type, MAX_PACK_OTHER)
        return max(1, min(most, self.pack_bytes // per_pack))

    def _pack_size(self, left: int, cap: int) -> int:
        """The next pack: the largest power of two up to ``left`` and ``cap`` whose packing is exact (so that a
        batch size meets at most seven pack sizes, each checked once); 1 at worst."""
        R = 1 << (min(left, cap).bit_length() - 1)
        while R > 1 and not self._packs_exactly(self._batch, R):
            R //= 2
        return R

    def _run_pack(self, runs: list[_RunNoise], first: int | None, j: int) -> torch.Tensor:
        """Logits (R, B, classes) of ``runs``, which all start at position ``first`` (None: no noise at all)."""
        R, batch = len(runs), self._batch
        if first is None:
            return batch.logits.unsqueeze(0).expand(R, *batch.logits.shape)
        for run in runs:
            run.stream.at(0, EVAL, j)
        if first == 0:
            x = torch.cat([run.injections[0](batch.x) for run in runs]) if R > 1 else runs[0].injections[0](batch.x)
        else:
            x = _tile(batch.x, R)
        state = _Pass(R=R, first=first, runs=runs)
        logits = self._forward(x, state)
        for run in runs:
            missed = [p for p in run.active if p > 0 and p not in state.reached]
            if missed:
                raise RuntimeError(f"noise at point {self.points[missed[0]].label} was not applied: its module was "
                                   f"not called as often as when the points were traced (a fused or input-dependent "
                                   f"path of the model?)")
        return logits.view(R, len(batch.x), -1)


# ---- runs ------------------------------------------------------------------------------------------------------


def evaluation_key(cfg: RunConfig) -> tuple:
    """Runs with equal keys share one :class:`Evaluator`: the same model, weights, test set and batch size."""
    return ("weights", cfg.weights_sha256, cfg.weights, cfg.model, repr(sorted((cfg.model_kwargs or {}).items())),
            cfg.batchnorm, cfg.dataset, cfg.data_dir, cfg.normalize, cfg.max_test, cfg.training.batch_size, cfg.device)


def evaluator_for(cfg: RunConfig, data: DatasetSplits | None = None) -> Evaluator:
    """A new :class:`Evaluator` of ``cfg``'s trained model on its test set (loaded unless given)."""
    data = data if data is not None else load_run_dataset(cfg, resolve_device(cfg.device))
    return Evaluator(trained_network(cfg, data), data, cfg.training.batch_size)


def evaluate_runs(configs: Sequence[RunConfig], data: DatasetSplits | None = None,
                  evaluator: Evaluator | None = None) -> list[RunResult]:
    """Evaluate runs of one trained model (equal :func:`evaluation_key`) and return one :class:`RunResult` each:
    one evaluation of the test set (``final_epochs_averaged`` 1, ``epochs_run`` 0), ``extra`` saying
    ``evaluated``, the weights' sha256 and the engine."""
    started = time.perf_counter()
    keys = {evaluation_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("evaluate_runs needs runs of one model, weights file, test set and batch size")
    evaluator = evaluator or evaluator_for(configs[0], data)
    measured = evaluator.evaluate(configs)
    net, data = evaluator.net, evaluator.data
    table, magnitudes = layer_table(net), weight_magnitudes(net)
    elapsed = time.perf_counter() - started
    return [RunResult(
        final_accuracy=acc, final_epochs_averaged=1, val_accuracy=[acc], val_loss=[loss], val_nonfinite=[nonfinite],
        train_accuracy=[], train_loss=[], weight_magnitudes=dict(magnitudes), diverged=False, diverged_epoch=None,
        epochs_run=0, active_points=active, layer_table=copy.deepcopy(table), checkpoint=None,
        preprocessing=dict(data.preprocessing), wall_time_s=elapsed / len(configs),
        device=str(evaluator.test_x.device),
        extra={"engine": "evaluate_weights", "evaluated": True, "weights_sha256": cfg.weights_sha256,
               "clean_accuracy": evaluator.clean_accuracy, "runs_evaluated_together": len(configs),
               "cache_bytes_per_sample": evaluator.cache_bytes_per_sample},
    ) for cfg, (acc, loss, nonfinite, active) in zip(configs, measured)]
