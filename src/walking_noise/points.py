"""Where noise can act in any PyTorch model: injection points discovered by tracing, and the hooks that inject there.

Point 0 is the model's input; then comes the output of every leaf module, in the order one forward pass on a sample
of the dataset's shape calls them (:func:`discover_points`). What the list covers:

- a leaf module called more than once in a forward pass (torchvision's BasicBlock applies one ReLU twice) gives one
  point per call, named ``path#2``, ``path#3``, ...;
- ``Flatten``, ``Unflatten`` and ``Identity`` are views, not computations: no point;
- functional operations are not modules and have no point: residual additions (``out += identity``), ``torch.cat``,
  ``F.relu`` called inside a ``forward``; their effect reaches the next module's input. A container that does work
  in its own ``forward`` besides calling children is covered only through those children.

Each point has a ``kind`` (conv, linear, norm, activation, pool, other) and a ``name``: the short layer name of the
paper's figures (``FC``, ``Conv``, ``BN``, ``ReLU``, ``MaxPool``) for the registered models, whose numbering is
the paper's, and the module path (``layer1.0.conv1``) for any other model.

Noise acts through hooks, so the model itself is not changed: the wrapper perturbs the input; a forward hook on a
leaf perturbs its output (the ``activation`` site) or, for the ``weight`` and ``mac`` sites of a Linear or Conv
point, adds the noise term computed from the layer's input (:func:`walking_noise.noise.site_noise`).
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

POINT_KINDS = ("input", "conv", "linear", "norm", "activation", "pool", "other")
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
    """The kind of an injection point by its module: input, conv, linear, norm, activation, pool or other."""
    if module is None:
        return "input"
    for kind, types in (("conv", _CONV), ("linear", (nn.Linear,)), ("norm", _NORM), ("activation", _ACTIVATION),
                        ("pool", _POOL)):
        if isinstance(module, types):
            return kind
    return "other"


@dataclass(frozen=True)
class InjectionPoint:
    """A place where noise can be injected: the output of ``layer``'s ``call``-th call (``None``: the input)."""

    index: int
    name: str
    path: str
    kind: str
    layer: nn.Module | None
    call: int
    injection: NoiseInjection

    @property
    def is_batchnorm(self) -> bool:
        return isinstance(self.layer, nn.modules.batchnorm._BatchNorm)

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


def discover_points(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, nn.Module | None, int]]:
    """``(path, module, call)`` of every injection point of ``model``: the input, then each call of a leaf module
    in one traced forward pass on ``sample`` (eval mode, no gradient; the model is left as it was)."""
    calls: list[tuple[str, nn.Module, int]] = []
    seen: Counter = Counter()

    def record(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, _inputs: Any, _output: Any) -> None:
            seen[path] += 1
            calls.append((path, module, seen[path]))
        return hook

    handles = [m.register_forward_hook(record(path)) for path, m in _leaves(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():  # as in training: fused inference paths (attention) would skip their modules
            model(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [("input", None, 1), *calls]


class NoisyNetwork(nn.Module):
    """Any model with a numbered injection point at its input and after every leaf module call.

    ``model`` is kept as it is (its ``state_dict`` keys get the prefix ``model.``); ``input_shape`` is one sample's
    shape, used to trace the points. ``short_names``: name points by the paper's short layer names instead of their
    module paths (the registered models).
    """

    def __init__(self, name: str, model: nn.Module, input_shape: tuple[int, ...], num_classes: int, *,
                 short_names: bool = False):
        super().__init__()
        if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
            # the fused inference path of attention layers calls none of their submodules, whose points would then
            # get no noise at evaluation: use the module path (same results, a little slower)
            torch.backends.mha.set_fastpath_enabled(False)
        self.name = name
        self.model = model
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        found = discover_points(model, torch.zeros(2, *self.input_shape))
        self.injections = nn.ModuleList(NoiseInjection(i) for i in range(len(found)))
        multi = {path for path, _, call in found if call > 1}
        points = []
        for i, (path, module, call) in enumerate(found):
            kind = point_kind(module)
            if module is None:
                label = "Input"
            elif short_names or not path:  # a model that is one leaf: its point is named by its type
                label = SHORT_NAMES.get(type(module), type(module).__name__) if short_names else type(module).__name__
            else:
                label = path + (f"#{call}" if path in multi else "")
            points.append(InjectionPoint(i, label, path if module is not None else "", kind, module, call,
                                         self.injections[i]))
        self._points = points
        self._calls: Counter = Counter()  # calls of each leaf (by path) in the running forward pass
        self._by_path: dict[str, dict[int, InjectionPoint]] = {}
        for p in points[1:]:
            self._by_path.setdefault(p.path, {})[p.call] = p
        for path, calls in self._by_path.items():
            # a partial of a bound method: a deep copy of the network hooks its own copy (closures would not)
            next(iter(calls.values())).layer.register_forward_hook(partial(self._after_layer, path))

    @property
    def injection_points(self) -> list[InjectionPoint]:
        return list(self._points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._calls.clear()
        out = self.model(self.injections[0](x))
        for p in self._points[1:]:  # never silently wrong: a point set to inject must have been reached
            if p.injection.active and self._calls[p.path] < p.call:
                raise RuntimeError(f"noise at point {p.label} was not applied: {p.path} was called "
                                   f"{self._calls[p.path]} time(s) in this forward pass, not {p.call} as when the "
                                   f"points were traced (a fused or input-dependent path of the model?)")
        return out

    def _after_layer(self, path: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """The forward hook of every leaf with a point: this call's point perturbs the output (or, for the weight
        and MAC sites, adds the noise term computed from the layer's input)."""
        self._calls[path] += 1
        point = self._by_path[path].get(self._calls[path])
        if point is None:
            return output
        return point.injection.after_layer(module, inputs[0], output)

    def use_stream(self, stream: NoiseStream | None) -> None:
        """Draw the noise of every point from ``stream`` (one member); None: from torch's default generator."""
        for injection in self.injections:
            injection.stream = stream

    @property
    def stream(self) -> NoiseStream | None:
        return self.injections[0].stream

    def learnable_layers(self) -> list[InjectionPoint]:
        """Points after conv/FC layers: the paper's "layers with learnable parameters" (Table II's layer IDs)."""
        return [p for p in self._points if p.is_learnable and p.call == 1]


def layer_table(model: NoisyNetwork) -> list[dict]:
    """One row per injection point: index, name, kind, module path, output shape (per sample) and the layer's
    parameter count (counted at its first call)."""
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
    return [
        {
            "index": p.index,
            "name": p.name,
            "kind": p.kind,
            "path": p.path,
            "output_shape": list(shapes[p.index]),
            "parameters": sum(t.numel() for t in p.layer.parameters()) if p.layer is not None and p.call == 1 else 0,
        }
        for p in model.injection_points
    ]


def format_layer_table(rows: list[dict]) -> str:
    """The layer table as aligned text, as printed by ``walking-noise layers``."""
    width = max([8] + [len(r["name"]) for r in rows])
    lines = [f"{'index':>5}  {'name':<{width}} {'kind':<10} {'output shape':<16} {'parameters':>10}"]
    for r in rows:
        shape = "x".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['index']:>5}  {r['name']:<{width}} {r.get('kind', ''):<10} {shape:<16} "
                     f"{r['parameters']:>10}")
    return "\n".join(lines)
