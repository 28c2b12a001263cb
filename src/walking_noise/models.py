"""The paper's three architectures with a numbered injection point after every layer (paper section III.C).

Every model is a :class:`NoisyNetwork`: a plain sequence of layers with a :class:`NoiseInjection` at the input
(index 0) and after every layer except ``Flatten`` (a view, not a computation). BatchNorm, when enabled, follows
every learnable layer but the classifier and precedes its ReLU, as in the authors' code. The numbering is the
paper's: LeNet-5 without BatchNorm has points 0-11, its FC 120->84 is point 9, ReLU 10 and the logits 11.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from walking_noise.noise import NoiseInjection, NoiseStream

LEARNABLE = (nn.Conv2d, nn.Linear)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_SHORT_NAMES = {
    nn.Conv2d: "Conv", nn.Linear: "FC", nn.BatchNorm1d: "BN", nn.BatchNorm2d: "BN",
    nn.ReLU: "ReLU", nn.MaxPool2d: "MaxPool",
}


@dataclass(frozen=True)
class InjectionPoint:
    """A place where noise can be injected: the output of ``layer`` (``None`` for the network input)."""

    index: int
    name: str
    layer: nn.Module | None
    injection: NoiseInjection

    @property
    def is_batchnorm(self) -> bool:
        return isinstance(self.layer, BATCHNORM)

    @property
    def is_learnable(self) -> bool:
        return isinstance(self.layer, LEARNABLE)

    @property
    def label(self) -> str:
        """``"<index> <name>"``, the x-axis label of the paper's per-layer figures."""
        return f"{self.index} {self.name}"


class NoisyNetwork(nn.Module):
    """A feed-forward network whose every intermediate activation passes an injection point."""

    def __init__(self, name: str, layers: Sequence[nn.Module], input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.name = name
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        sequence: list[nn.Module] = [NoiseInjection(0)]
        points: list[tuple[str, nn.Module | None, NoiseInjection]] = [("Input", None, sequence[0])]
        for layer in layers:
            sequence.append(layer)
            if isinstance(layer, nn.Flatten):
                continue
            injection = NoiseInjection(len(points))
            sequence.append(injection)
            points.append((_SHORT_NAMES.get(type(layer), type(layer).__name__), layer, injection))
        self.net = nn.Sequential(*sequence)
        self._points = [InjectionPoint(i, name, layer, inj) for i, (name, layer, inj) in enumerate(points)]

    @property
    def injection_points(self) -> list[InjectionPoint]:
        return list(self._points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def use_stream(self, stream: NoiseStream | None) -> None:
        """Draw the noise of every point from ``stream`` (one member); None: from torch's default generator."""
        for p in self._points:
            p.injection.stream = stream

    @property
    def stream(self) -> NoiseStream | None:
        return self._points[0].injection.stream

    def learnable_layers(self) -> list[InjectionPoint]:
        """Points after conv/FC layers: the paper's "layers with learnable parameters" (Table II's layer IDs)."""
        return [p for p in self._points if p.is_learnable]


def _bn(batchnorm: bool, channels: int, two_d: bool) -> list[nn.Module]:
    if not batchnorm:
        return []
    return [nn.BatchNorm2d(channels) if two_d else nn.BatchNorm1d(channels)]


def _flat_size(layers: Sequence[nn.Module], input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(nn.Sequential(*layers).eval()(torch.zeros(1, *input_shape)).numel())


def mlp(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False,
        hidden: Sequence[int] = (64, 64, 64)) -> NoisyNetwork:
    """Three hidden FC layers of 64 with ReLU (the authors' ``RL_TFC``): 8 points, 11 with BatchNorm."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(torch.tensor(input_shape).prod())
    for h in hidden:
        layers += [nn.Linear(width, h), *_bn(batchnorm, h, False), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return NoisyNetwork("mlp", layers, input_shape, num_classes)


def lenet5(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> NoisyNetwork:
    """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, FC 120, FC 84, FC classes: 12 points, 16 with BatchNorm."""
    features: list[nn.Module] = [
        nn.Conv2d(input_shape[0], 6, 5), *_bn(batchnorm, 6, True), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), *_bn(batchnorm, 16, True), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    ]
    flat = _flat_size(features, input_shape)
    classifier: list[nn.Module] = [
        nn.Linear(flat, 120), *_bn(batchnorm, 120, False), nn.ReLU(),
        nn.Linear(120, 84), *_bn(batchnorm, 84, False), nn.ReLU(),
        nn.Linear(84, num_classes),
    ]
    return NoisyNetwork("lenet5", features + classifier, input_shape, num_classes)


def cnn_s(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> NoisyNetwork:
    """CNN-S of "Hello Edge" (Zhang et al. 2017) for 49x10 MFCCs, without its low-rank linear layer.

    conv 28@10x4 stride 1, conv 30@10x4 stride (2, 1), valid padding, FC 128, FC classes: 8 points, 11 with BN.
    """
    features: list[nn.Module] = [
        nn.Conv2d(input_shape[0], 28, (10, 4), stride=1), *_bn(batchnorm, 28, True), nn.ReLU(),
        nn.Conv2d(28, 30, (10, 4), stride=(2, 1)), *_bn(batchnorm, 30, True), nn.ReLU(), nn.Flatten(),
    ]
    flat = _flat_size(features, input_shape)
    classifier: list[nn.Module] = [
        nn.Linear(flat, 128), *_bn(batchnorm, 128, False), nn.ReLU(), nn.Linear(128, num_classes),
    ]
    return NoisyNetwork("cnn_s", features + classifier, input_shape, num_classes)


MODELS: dict[str, Callable[..., NoisyNetwork]] = {"mlp": mlp, "lenet5": lenet5, "cnn_s": cnn_s}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> NoisyNetwork:
    """Build a registered model; an unknown name is an error listing the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(MODELS)}")
    try:
        return MODELS[name](tuple(input_shape), num_classes, batchnorm=batchnorm)
    except RuntimeError as err:  # e.g. LeNet-5 on 8x8 digits: the feature maps vanish
        raise ValueError(f"model {name!r} cannot take inputs of shape {tuple(input_shape)}: {err}") from err


@lru_cache(maxsize=64)
def point_names(name: str, input_shape: tuple[int, ...], num_classes: int, batchnorm: bool) -> tuple[str, ...]:
    """The labels ("<index> <name>") of a model's injection points, cached: configs are validated by the thousand."""
    return tuple(p.label for p in build_model(name, input_shape, num_classes, batchnorm).injection_points)


@lru_cache(maxsize=64)
def _layer_table_cached(name: str, dataset: str, batchnorm: bool) -> str:
    import json

    from walking_noise.data import DATASET_SHAPES

    shape, classes = DATASET_SHAPES[dataset]
    return json.dumps(layer_table(build_model(name, shape, classes, batchnorm)))


def layer_table_for(name: str, dataset: str, batchnorm: bool) -> list[dict]:
    """The layer table of a registered model on a dataset's input shape, without loading the data."""
    import json

    return json.loads(_layer_table_cached(name, dataset, batchnorm))


def layer_table(model: NoisyNetwork) -> list[dict]:
    """One row per injection point: index, name, output shape (per sample) and the layer's parameter count."""
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
            "output_shape": list(shapes[p.index]),
            "parameters": sum(t.numel() for t in p.layer.parameters()) if p.layer is not None else 0,
        }
        for p in model.injection_points
    ]


def format_layer_table(rows: list[dict]) -> str:
    """The layer table as aligned text, as printed by ``walking-noise layers``."""
    lines = [f"{'index':>5}  {'name':<8} {'output shape':<16} {'parameters':>10}"]
    for r in rows:
        shape = "x".join(str(d) for d in r["output_shape"])
        lines.append(f"{r['index']:>5}  {r['name']:<8} {shape:<16} {r['parameters']:>10}")
    return "\n".join(lines)


def clamp_weights(model: nn.Module, limit: float = 1.0) -> None:
    """Clamp the weights (not biases, not BatchNorm) of every conv/FC layer to [-limit, limit], in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LEARNABLE):
                module.weight.clamp_(-limit, limit)


def weight_magnitudes(model: NoisyNetwork) -> dict[str, float]:
    """Mean |w| of every learnable layer, keyed by its point label (``"1 Conv"``), for the paper's Table II."""
    return {p.label: float(p.layer.weight.detach().abs().mean()) for p in model.learnable_layers()}
