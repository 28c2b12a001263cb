"""The paper's three architectures as plain ``nn.Sequential`` models, and how any model becomes a noisy one.

The builders are ordinary modules without any noise in them; :func:`build_model` wraps one (or any ``nn.Module``
named ``package.module:callable``) in a :class:`walking_noise.points.NoisyNetwork`, which discovers the injection
points by tracing. BatchNorm, when enabled, follows every learnable layer but the classifier and precedes its
ReLU, as in the authors' code. The discovered numbering is the paper's: LeNet-5 without BatchNorm has points 0-11,
its FC 120->84 is point 9, ReLU 10 and the logits 11 (``Flatten`` is a view, not a point).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from walking_noise.config import ONE_POINT_PLACEMENTS, RunConfig
from walking_noise.data import dataset_shape
from walking_noise.noise import noisy_points
from walking_noise.points import NoisyNetwork, layer_table
from walking_noise.registry import MODELS, check_model_name, is_foreign, resolve
from walking_noise.sites import SITES

LEARNABLE = (nn.Conv2d, nn.Linear)


def _bn(batchnorm: bool, channels: int, two_d: bool) -> list[nn.Module]:
    if not batchnorm:
        return []
    return [nn.BatchNorm2d(channels) if two_d else nn.BatchNorm1d(channels)]


def _flat_size(layers: Sequence[nn.Module], input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(nn.Sequential(*layers).eval()(torch.zeros(1, *input_shape)).numel())


def mlp(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False,
        hidden: Sequence[int] = (64, 64, 64)) -> nn.Sequential:
    """Three hidden FC layers of 64 with ReLU (the authors' ``RL_TFC``): 8 points, 11 with BatchNorm."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(torch.tensor(input_shape).prod())
    for h in hidden:
        layers += [nn.Linear(width, h), *_bn(batchnorm, h, False), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def lenet5(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> nn.Sequential:
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
    return nn.Sequential(*features, *classifier)


def cnn_s(input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False) -> nn.Sequential:
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
    return nn.Sequential(*features, *classifier)


def _call_foreign(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``package.module:callable(**kwargs)``; what is not callable, refuses the arguments or returns no
    ``nn.Module`` is one ``ValueError`` that names the model and the cause (never a bare ``TypeError``)."""
    target = resolve(name)
    if not callable(target):
        raise ValueError(f"model {name} is a {type(target).__name__}, not a callable that builds an nn.Module")
    try:
        built = target(**kwargs)
    except TypeError as err:
        given = ", ".join(kwargs) or "none"
        raise ValueError(f"model {name} cannot be built with model_kwargs {kwargs or '{}'} (keywords given: {given}): "
                         f"{err}") from err
    if not isinstance(built, nn.Module):
        raise ValueError(f"model {name}(**model_kwargs) returned a {type(built).__name__}, not an nn.Module")
    return built


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, batchnorm: bool = False,
                model_kwargs: dict[str, Any] | None = None, points: str = "modules") -> NoisyNetwork:
    """A registered model (:data:`walking_noise.registry.MODELS`) or ``package.module:callable(**model_kwargs)``,
    as a :class:`NoisyNetwork` with the injection points ``points`` (:data:`walking_noise.sites.POINT_SETS`); an
    unknown name, or a model that cannot take the input, is a clear error."""
    check_model_name(name)
    shape = tuple(input_shape)
    if is_foreign(name):
        if batchnorm:
            raise ValueError(f"batchnorm applies to the registered models ({', '.join(MODELS)}); {name} is built as "
                             f"it is")
        built = _call_foreign(name, dict(model_kwargs or {}))
    else:
        if model_kwargs:
            raise ValueError(f"model_kwargs apply to models given as package.module:callable, not to {name!r}")
        built = resolve(MODELS[name].builder)(shape, num_classes, batchnorm=batchnorm)  # type: ignore[operator]
    try:
        return NoisyNetwork(name, built, shape, num_classes, short_names=not is_foreign(name), points=points)
    except RuntimeError as err:  # e.g. LeNet-5 on 8x8 digits: the feature maps vanish
        raise ValueError(f"model {name!r} cannot take inputs of shape {shape}: {err}") from err


def run_model(cfg: RunConfig, input_shape: tuple[int, ...], num_classes: int) -> NoisyNetwork:
    """The model of a run (its architecture, BatchNorm, keyword arguments and injection points), weights drawn from
    torch's current generator."""
    return build_model(cfg.model, input_shape, num_classes, cfg.batchnorm, cfg.model_kwargs, cfg.points)


@lru_cache(maxsize=64)
def _point_table(name: str, dataset: str, batchnorm: bool, kwargs_json: str, points: str) -> str:
    input_shape, num_classes = dataset_shape(dataset)
    model = build_model(name, input_shape, num_classes, batchnorm, json.loads(kwargs_json) or None, points)
    return json.dumps({"rows": layer_table(model),
                       "batchnorm": [p.index for p in model.injection_points if p.is_batchnorm]})


def _cached_points(name: str, dataset: str, batchnorm: bool, model_kwargs: dict[str, Any] | None,
                   points: str = "modules") -> dict[str, Any]:
    return json.loads(_point_table(name, dataset, batchnorm, json.dumps(model_kwargs or {}, sort_keys=True), points))


def layer_table_for(name: str, dataset: str, batchnorm: bool, model_kwargs: dict[str, Any] | None = None,
                    points: str = "modules") -> list[dict]:
    """The layer table (injection points ``points``) of a model on a dataset's input shape, without loading the
    data (a test set given as a callable is loaded once); cached, since configs are validated by the thousand."""
    return _cached_points(name, dataset, batchnorm, model_kwargs, points)["rows"]


@dataclass(frozen=True)
class _TablePoint:
    """An injection point as a row of a layer table describes it: what placement rules need, without the model."""

    index: int
    label: str
    kind: str
    is_batchnorm: bool


def check_model(cfg: RunConfig) -> None:
    """The model of ``cfg`` must build on its dataset's input (a callable that takes its ``model_kwargs``), and its
    injection point must exist there among its ``points`` (where the site acts, :data:`walking_noise.sites.SITES`:
    a Linear/Conv point for the weight site, also a matmul for MAC; for leave-one-out a point global noise reaches):
    say so when a study is loaded or a SEML experiment added, not after the dataset is, in one ``ValueError`` naming
    the model and the cause. Builds the model once per (model, dataset, BatchNorm, kwargs, points); an analysis of
    stored runs never needs it."""
    table = _cached_points(cfg.model, cfg.dataset, cfg.batchnorm, cfg.model_kwargs, cfg.points)
    noise = cfg.noise
    if noise.kind == "none" or (noise.placement in ONE_POINT_PLACEMENTS and noise.injection_layer is None):
        return
    site = SITES[noise.site]
    points = [_TablePoint(r["index"], f"{r['index']} {r['name']}", r.get("kind"), r["index"] in table["batchnorm"])
              for r in table["rows"]]
    if not any(site.acts_at(p.kind) for p in points):
        raise ValueError(f"noise.site {site.name} exists at {site.points} only; {cfg.model} has none")
    bn = "" if is_foreign(cfg.model) else f" {'with' if cfg.batchnorm else 'without'} BatchNorm"
    try:
        noisy_points(points, site, noise.placement, noise.injection_layer, f"{cfg.model}{bn} on {cfg.dataset}")
    except ValueError as err:
        raise ValueError(f"noise.{err}") from None


def clamp_weights(model: nn.Module, limit: float = 1.0) -> None:
    """Clamp the weights (not biases, not BatchNorm) of every conv/FC layer to [-limit, limit], in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LEARNABLE):
                module.weight.clamp_(-limit, limit)


def weight_magnitudes(model: NoisyNetwork) -> dict[str, float]:
    """Mean |w| of every learnable layer, keyed by its point label (``"1 Conv"``), for the paper's Table II."""
    return {p.label: float(p.layer.weight.detach().abs().mean()) for p in model.learnable_layers()}
