"""Where noise can act in any PyTorch model: injection points discovered by tracing, and the hooks that inject there.

Point 0 is the model's input; then comes the output of every leaf module, in the order one forward pass on a sample
of the dataset's shape calls them (:func:`discover_points`): the *module points*, the paper's (``points:
modules``, the default). With ``points: operations`` the operations inside a ``forward`` are points too, in call
order among the module points (:mod:`walking_noise.operations`: residual additions, attention's matmuls and
softmax, functional activations, named ``layer1.0.add``, ``encoder.layers.0.self_attn.qk_matmul``); a list of kinds
(``points: matmul,softmax``) keeps the input and the points of those kinds. What the module points cover:

- a leaf module called more than once in a forward pass (torchvision's BasicBlock applies one ReLU twice) gives one
  point per call, named ``path#2``, ``path#3``, ...;
- ``Flatten``, ``Unflatten`` and ``Identity`` are views, not computations: no point;
- functional operations are not modules and have no module point: residual additions (``out += identity``),
  ``torch.cat``, ``F.relu`` called inside a ``forward``; their effect reaches the next module's input (with ``points:
  operations`` the operations of :data:`walking_noise.operations.OPERATIONS` have their own points).

Each point has a ``kind`` (conv, linear, norm, activation, pool, other) and a ``name``: the short layer name of the
paper's figures (``FC``, ``Conv``, ``BN``, ``ReLU``, ``MaxPool``) for the registered models, whose numbering is
the paper's, and the module path (``layer1.0.conv1``) for any other model.

Noise acts through hooks, so the model itself is not changed: the wrapper perturbs the input; a forward hook on a
leaf perturbs its output (the ``activation`` site) or, for the ``weight`` and ``mac`` sites of a Linear or Conv
point, adds the noise term computed from the layer's input (:func:`walking_noise.noise.site_noise`); an operation
point's noise is applied by :class:`walking_noise.operations.OperationMode`, entered only for a forward pass in
which an operation point injects or is watched by a forward hook on its injection module.

For a caller that walks noise point by point (a sensitivity analysis): ``NoisyNetwork(name, model, input_shape,
classes, points="operations").injection_points`` is the point list (index, name, kind, op), and
:func:`walking_noise.noise.configure_noise` with ``placement="walking"`` (or ``point.injection.set(...)``) sets the
noise at any index.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from walking_noise.noise import NoiseInjection, NoiseStream
from walking_noise.operations import OpCall, OperationMode
from walking_noise.sites import check_points, selected_kinds
#: Modules that only reshape (views): not injection points.
SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_ACTIVATION = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Softmax,
               nn.Hardswish, nn.Hardtanh, nn.Mish, nn.PReLU, nn.SELU)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: The paper's short layer names (the x-axis labels of its per-layer figures).
SHORT_NAMES = {nn.Conv2d: "Conv", nn.Linear: "FC", nn.BatchNorm1d: "BN", nn.BatchNorm2d: "BN", nn.ReLU: "ReLU",
               nn.MaxPool2d: "MaxPool"}


def point_kind(module: nn.Module | None) -> str:
    """The kind of a module point by its module: input, conv, linear, norm, activation, pool or other
    (:data:`walking_noise.sites.POINT_KINDS`)."""
    if module is None:
        return "input"
    for kind, types in (("conv", _CONV), ("linear", (nn.Linear,)), ("norm", _NORM), ("activation", _ACTIVATION),
                        ("pool", _POOL)):
        if isinstance(module, types):
            return kind
    return "other"


@dataclass(frozen=True)
class InjectionPoint:
    """A place where noise can be injected: the output of ``layer``'s ``call``-th call (``None``: the input), or, at
    an operation point, of the ``call``-th operation ``op`` run by ``layer`` (the module at ``path``) in a forward
    pass; ``params``: an operation's parameter operands."""

    index: int
    name: str
    path: str
    kind: str
    layer: nn.Module | None
    call: int
    injection: NoiseInjection
    op: str | None = None
    params: tuple[torch.Tensor, ...] = ()

    @property
    def is_batchnorm(self) -> bool:
        """A BatchNorm output (global placement of activation noise skips them): a BatchNorm module or
        ``F.batch_norm``."""
        return self.op == "batch_norm" if self.op else isinstance(self.layer, nn.modules.batchnorm._BatchNorm)

    @property
    def is_learnable(self) -> bool:
        """A conv or linear layer: the paper's "layers with learnable parameters", and where the weight and MAC
        sites exist."""
        return self.kind in ("conv", "linear")

    @property
    def label(self) -> str:
        """``"<index> <name>"``, the x-axis label of the paper's per-layer figures."""
        return f"{self.index} {self.name}"


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The leaf modules by path; a model that is itself one leaf (``nn.Linear(6, 3)``) is its own, path ``""``."""
    return [(path, m) for path, m in model.named_modules() if not list(m.children())
            and not isinstance(m, (NoiseInjection, *SHAPE_ONLY))]


@dataclass(frozen=True)
class Found:
    """One point found by tracing: ``module``'s ``call``-th call (None: the input), or its ``call``-th operation
    ``op`` (``operation``: what it computes, e.g. ``linear`` for ``op`` ``in_proj``)."""

    path: str
    module: nn.Module | None
    call: int
    kind: str
    op: str | None = None
    operation: str | None = None
    params: tuple[torch.Tensor, ...] = ()


class _Recorder:
    """Discovery's visitor of operations: wants every output (so attention is decomposed) and records each."""

    def __init__(self, model: nn.Module, found: list[Found]):
        self.modules, self.found = dict(model.named_modules()), found

    def needs(self, path: str, name: str, occurrence: int) -> bool:  # noqa: ARG002 - every operation
        return True

    def visit(self, call: OpCall) -> torch.Tensor:
        self.found.append(Found(call.path, self.modules[call.path], call.occurrence, call.kind, call.name,
                                call.operation, call.params))
        return call.output


def discover_points(model: nn.Module, sample: torch.Tensor, operations: bool = False) -> list[Found]:
    """Every injection point of ``model``: the input, then each call of a leaf module (and, with ``operations``,
    each operation of :data:`walking_noise.operations.OPERATIONS`) in one traced forward pass on ``sample``, in call
    order (eval mode, gradients on as in training, so fused inference paths are not taken; the model is left as it
    was)."""
    found: list[Found] = [Found("input", None, 1, "input")]
    seen: Counter = Counter()

    def record(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
            seen[path] += 1
            found.append(Found(path, module, seen[path], point_kind(module)))
        return hook

    handles = [m.register_forward_hook(record(path)) for path, m in _leaves(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():  # as in training: fused inference paths (attention) would skip their modules
            if operations:
                with OperationMode(model, _Recorder(model, found)).running():
                    model(sample)
            else:
                model(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return found


def _labels(found: list[Found], short_names: bool) -> list[str]:
    """The points' names: ``Input``; a module point's path (``#k`` for the k-th of several calls), or its short
    layer name (registered models) or type (a one-leaf model); an operation point's module path, operation name and
    occurrence (``layer1.0.add``, ``encoder.layers.0.add#2``), or ``path.op.operation`` where that would repeat a
    module point's name (a weight used by a module and by a functional call)."""
    multi = {(f.path, f.op) for f in found if f.call > 1}
    labels = []
    for f in found:
        if f.module is None:
            label = "Input"
        elif f.op is None and (short_names or not f.path):
            label = SHORT_NAMES.get(type(f.module), type(f.module).__name__) if short_names else \
                type(f.module).__name__
        else:
            label = ".".join(part for part in (f.path, f.op) if part)
            label += f"#{f.call}" if (f.path, f.op) in multi else ""
        labels.append(label)
    taken = {label for label, f in zip(labels, found) if f.op is None}
    return [f"{label}.{f.operation}" if f.op is not None and label in taken else label
            for label, f in zip(labels, found)]


class NoisyNetwork(nn.Module):
    """Any model with a numbered injection point at its input and after every leaf module call (and, with
    ``points="operations"`` or a list of kinds, at its operations: :mod:`walking_noise.operations`).

    ``model`` is kept as it is (its ``state_dict`` keys get the prefix ``model.``); ``input_shape`` is one sample's
    shape, used to trace the points. ``short_names``: name points by the paper's short layer names instead of their
    module paths (the registered models). ``points``: which points (:data:`walking_noise.sites.POINT_SETS`).
    """

    def __init__(self, name: str, model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *,
                 short_names: bool = False, points: str = "modules"):
        super().__init__()
        if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
            # the fused inference path of attention layers calls none of their submodules, whose points would then
            # get no noise at evaluation: use the module path (same results, a little slower)
            torch.backends.mha.set_fastpath_enabled(False)
        self.name = name
        self.model = model
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.points = check_points(points)
        found = discover_points(model, torch.zeros(2, *self.input_shape), operations=self.points != "modules")
        labels = _labels(found, short_names)
        kinds = selected_kinds(self.points)
        kept = [(f, label) for f, label in zip(found, labels) if kinds is None or f.kind in kinds]
        self.injections = nn.ModuleList(NoiseInjection(i) for i in range(len(kept)))
        self._points = [InjectionPoint(i, label, f.path if f.module is not None else "", f.kind, f.module, f.call,
                                       self.injections[i], f.op, f.params) for i, (f, label) in enumerate(kept)]
        self._calls: Counter = Counter()  # calls of each leaf (by path) in the running forward pass
        self._by_path: dict[str, dict[int, InjectionPoint]] = {}
        for p in self._points[1:]:
            if p.op is None:
                self._by_path.setdefault(p.path, {})[p.call] = p
        for path, calls in self._by_path.items():
            # a partial of a bound method: a deep copy of the network hooks its own copy (closures would not)
            next(iter(calls.values())).layer.register_forward_hook(partial(self._after_layer, path))
        #: operation points by (module path, operation name, occurrence), and the calls of each (path, name) traced
        self._operations = {(p.path, p.op, p.call): p for p in self._points if p.op is not None}
        self._traced = Counter((f.path, f.op) for f in found if f.op is not None)
        self._mode: OperationMode | None = None

    @property
    def injection_points(self) -> list[InjectionPoint]:
        return list(self._points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls.clear()
        x = self.injections[0](x)
        if any(self._wanted(p) for p in self._operations.values()):
            mode = OperationMode(self.model, self)
            self._mode = mode
            try:
                with mode.running():
                    out = self.model(x)
            finally:
                self._mode = None
            self._check_operations(mode.counts)
        else:
            out = self.model(x)
        for p in self._points[1:]:  # never silently wrong: a point set to inject must have been reached
            if p.op is None and p.injection.active and self._calls[p.path] < p.call:
                raise RuntimeError(f"noise at point {p.label} was not applied: {p.path} was called "
                                   f"{self._calls[p.path]} time(s) in this forward pass, not {p.call} as when the "
                                   f"points were traced (a fused or input-dependent path of the model?)")
        return out

    @staticmethod
    def _wanted(point: InjectionPoint) -> bool:
        """An operation point injects, or a forward hook on its injection module watches its output."""
        return point.injection.active or bool(point.injection._forward_hooks)

    def needs(self, path: str, name: str, occurrence: int) -> bool:
        """(:class:`walking_noise.operations.Visitor`) whether that operation's output is wanted."""
        point = self._operations.get((path, name, occurrence))
        return point is not None and self._wanted(point)

    def visit(self, call: OpCall) -> torch.Tensor:
        """(:class:`walking_noise.operations.Visitor`) an operation's output through its point's injection."""
        point = self._operations.get((call.path, call.name, call.occurrence))
        if point is None:
            return call.output
        if call.operands is not None:
            return point.injection.after_layer(call.operands, call.operands.x, call.output)
        return point.injection(call.output)

    def _check_operations(self, counts: Counter) -> None:
        """Never silently wrong: an injecting operation point's module must have run that operation as often as when
        the points were traced (else its occurrences are other operations than the traced ones)."""
        for (path, name, _), p in self._operations.items():
            if p.injection.active and counts[(path, name)] != self._traced[(path, name)]:
                where = path or type(self.model).__name__
                raise RuntimeError(
                    f"noise at point {p.label} was not applied where it was traced: {where} ran {name} "
                    f"{counts[(path, name)]} time(s) in this forward pass and {self._traced[(path, name)]} when the "
                    f"points were traced, so its forward takes a path that depends on the input or the mode "
                    f"(data-dependent control flow in {where}.forward); operation points hold for the traced path "
                    f"only: use points: modules for this model, or make that branch independent of the data")

    def _after_layer(self, path: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """The forward hook of every leaf with a point: this call's point perturbs the output (or, for the weight
        and MAC sites, adds the noise term computed from the layer's input)."""
        self._calls[path] += 1
        point = self._by_path[path].get(self._calls[path])
        if point is None:
            return output
        if self._mode is None:
            return point.injection.after_layer(module, inputs[0], output)
        with self._mode.pause():  # the point's own noise is no operation of the model
            return point.injection.after_layer(module, inputs[0], output)

    def use_stream(self, stream: NoiseStream | None) -> None:
        """Draw the noise of every point from ``stream`` (one member); None: from torch's default generator."""
        for injection in self.injections:
            injection.stream = stream

    @property
    def stream(self) -> NoiseStream | None:
        return self.injections[0].stream

    def learnable_layers(self) -> list[InjectionPoint]:
        """Points after conv/FC modules: the paper's "layers with learnable parameters" (Table II's layer IDs)."""
        return [p for p in self._points if p.is_learnable and p.call == 1 and p.op is None]


def layer_table(model: NoisyNetwork) -> list[dict]:
    """One row per injection point: index, name, kind, module path, output shape (per sample) and the layer's
    parameter count (counted at its first call); an operation point's row has its operation name ``op`` too."""
    shapes: dict[int, tuple[int, ...]] = {}
    handles = [
        p.injection.register_forward_hook(lambda _m, _i, out, i=p.index: shapes.__setitem__(i, tuple(out.shape[1:])))
        for p in model.injection_points
    ]
    was_training = model.training
    settings = [p.injection.setting for p in model.injection_points]
    try:
        model.eval()
        for p in model.injection_points:  # a shape probe, not a measurement: it draws no noise
            p.injection.clear()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, *model.input_shape, device=device))
    finally:
        model.train(was_training)
        for p, setting in zip(model.injection_points, settings):
            p.injection.setting = setting
        for h in handles:
            h.remove()
    return [_row(p, shapes[p.index]) for p in model.injection_points]


def _row(p: InjectionPoint, shape: tuple[int, ...]) -> dict:
    """A point's layer-table row; an operation point's has ``op`` too, and counts its parameter operands."""
    row = {"index": p.index, "name": p.name, "kind": p.kind, "path": p.path, "output_shape": list(shape)}
    if p.op is None:
        row["parameters"] = sum(t.numel() for t in p.layer.parameters()) if p.layer is not None and p.call == 1 else 0
        return row
    return {**row, "parameters": sum(t.numel() for t in p.params) if p.call == 1 else 0, "op": p.op}


def format_layer_table(rows: list[dict]) -> str:
    """The layer table as aligned text, as printed by ``walking-noise layers``."""
    width = max([8] + [len(r["name"]) for r in rows])
    lines = [f"{'index':>5}  {'name':<{width}} {'kind':<10} {'output shape':<16} {'parameters':>10}"]
    for r in rows:
        shape = "x".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['index']:>5}  {r['name']:<{width}} {r.get('kind', ''):<10} {shape:<16} "
                     f"{r['parameters']:>10}")
    return "\n".join(lines)
