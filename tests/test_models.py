"""Injection points: the paper's numbering, walking placement, global placement, clamping."""

import pytest
import torch
from torch import nn

from walking_noise.models import build_model, clamp_weights, weight_magnitudes
from walking_noise.points import layer_table
from walking_noise.noise import NoiseConfig, configure_noise

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "gsc": (1, 49, 10)}


def _names(model):
    return [p.name for p in model.injection_points]


def test_lenet5_without_batchnorm_matches_the_paper_numbering():
    model = build_model("lenet5", SHAPES["cifar10"], 10)
    rows = layer_table(model)
    assert len(rows) == 12  # input + 11 points after layers
    assert _names(model) == ["Input", "Conv", "ReLU", "MaxPool", "Conv", "ReLU", "MaxPool",
                             "FC", "ReLU", "FC", "ReLU", "FC"]
    fc2 = model.injection_points[9]
    assert fc2.layer.weight.shape == (84, 120)  # "84x120" weights, layer 9
    assert rows[9]["parameters"] == 84 * 120 + 84
    assert rows[9]["output_shape"] == [84]
    assert rows[10]["name"] == "ReLU" and rows[11]["output_shape"] == [10]
    assert rows[0]["output_shape"] == [3, 32, 32]
    assert rows[7]["parameters"] == 16 * 5 * 5 * 120 + 120  # CIFAR: 16x5x5 features


def test_lenet5_with_batchnorm_has_16_points():
    model = build_model("lenet5", SHAPES["mnist"], 10, batchnorm=True)
    names = _names(model)
    assert len(names) == 16
    assert [i for i, p in enumerate(model.injection_points) if p.is_batchnorm] == [2, 6, 10, 13]
    assert model.injection_points[7].layer.__class__ is nn.ReLU  # BN before ReLU


@pytest.mark.parametrize("name, shape, plain, with_bn", [("mlp", "mnist", 8, 11), ("mlp", "cifar10", 8, 11),
                                                         ("cnn_s", "gsc", 8, 11), ("lenet5", "mnist", 12, 16)])
def test_point_counts(name, shape, plain, with_bn):
    classes = 12 if shape == "gsc" else 10
    assert len(build_model(name, SHAPES[shape], classes).injection_points) == plain
    assert len(build_model(name, SHAPES[shape], classes, batchnorm=True).injection_points) == with_bn


def test_cnn_s_shapes_follow_hello_edge():
    rows = layer_table(build_model("cnn_s", SHAPES["gsc"], 12))
    assert rows[1]["output_shape"] == [28, 40, 7]
    assert rows[3]["output_shape"] == [30, 16, 4]
    assert rows[5]["output_shape"] == [128] and rows[7]["output_shape"] == [12]


def _activations(model, x, seed):
    out = {}
    handles = [p.injection.register_forward_hook(lambda _m, _i, o, k=p.index: out.__setitem__(k, o.clone()))
               for p in model.injection_points]
    torch.manual_seed(seed)
    model(x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("name, shape, bn", [("lenet5", "cifar10", True), ("lenet5", "cifar10", False),
                                             ("mlp", "mnist", True), ("cnn_s", "gsc", False)])
def test_walking_noise_changes_only_its_point_and_later(name, shape, bn):
    torch.manual_seed(0)
    model = build_model(name, SHAPES[shape], 12 if shape == "gsc" else 10, batchnorm=bn).eval()
    x = torch.rand(8, *SHAPES[shape])
    clean = _activations(model, x, seed=1)
    n = len(model.injection_points)
    for i in range(n):
        active = configure_noise(model, NoiseConfig(kind="additive", noise_std=3.0, placement="walking",
                                                    injection_layer=i))
        assert active == [i]
        noisy = _activations(model, x, seed=1)
        for k in range(i):
            assert torch.equal(noisy[k], clean[k]), f"point {k} changed by noise injected at {i}"
        assert not torch.equal(noisy[i], clean[i])
        assert not torch.equal(noisy[n - 1], clean[n - 1])


def test_global_noise_skips_batchnorm_outputs():
    model = build_model("lenet5", SHAPES["mnist"], 10, batchnorm=True).eval()
    active = configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=0.5))
    bn = [p.index for p in model.injection_points if p.is_batchnorm]
    assert active == [p.index for p in model.injection_points if p.index not in bn]
    seen = {}
    for p in model.injection_points:
        p.injection.register_forward_hook(lambda _m, i, o, k=p.index: seen.__setitem__(k, torch.equal(i[0], o)))
    model(torch.rand(4, *SHAPES["mnist"]))
    assert all(seen[k] for k in bn)
    assert not any(seen[k] for k in active)


def test_walking_noise_may_hit_a_batchnorm_output():
    model = build_model("mlp", SHAPES["mnist"], 10, batchnorm=True)
    assert configure_noise(model, NoiseConfig(kind="additive", noise_std=1.0, placement="walking",
                                              injection_layer=2)) == [2]
    assert model.injection_points[2].is_batchnorm


@pytest.mark.parametrize("index", [12, -1, 100])
def test_out_of_range_injection_layer_names_the_valid_points(index):
    model = build_model("lenet5", SHAPES["mnist"], 10)
    with pytest.raises(ValueError, match=r"valid: 0 Input, 1 Conv, 2 ReLU"):
        configure_noise(model, NoiseConfig(kind="additive", noise_std=1.0, placement="walking",
                                           injection_layer=index))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="valid choices: mlp, lenet5, cnn_s"):
        build_model("resnet", SHAPES["mnist"], 10)


def test_clamping_keeps_every_weight_in_unit_interval_and_spares_batchnorm():
    model = build_model("lenet5", SHAPES["mnist"], 10, batchnorm=True)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50.0)
    bn_before = [m.weight.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    clamp_weights(model)
    for p in model.learnable_layers():
        assert float(p.layer.weight.detach().abs().max()) <= 1.0
    assert all(torch.equal(a, m.weight) for a, m in zip(bn_before, [m for m in model.modules()
                                                                    if isinstance(m, nn.BatchNorm2d)]))
    mags = weight_magnitudes(model)
    assert list(mags) == ["1 Conv", "5 Conv", "9 FC", "12 FC", "15 FC"]
    assert all(0 < v <= 1 for v in mags.values())
