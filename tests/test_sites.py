"""The three noise sites against their formulas: with known weights and input, the mean and variance of a layer's
output over many forward passes; weight noise shared by a batch, MAC noise not; both engines, both backward modes,
both distributions; and the site table itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from walking_noise import batched
from walking_noise.batched import CONV_METHOD_ENV, CONV_METHODS, SHARED_INPUT_METHODS, PackedConv2d
from walking_noise.config import NoiseConfig
from walking_noise.models import build_model
from walking_noise.noise import EVAL, SITE_NOISE, UNIT_DRAWS, NoiseStream, configure_noise
from walking_noise.points import NoisyNetwork
from walking_noise.sites import DISTRIBUTIONS, SITES

from _packing import assert_members_compute_alone_what_the_pack_computes
from _probes import check_moments as _check_moments
from _probes import outputs as _outputs

def _single_layer(layer: nn.Module, shape: tuple[int, ...]) -> NoisyNetwork:
    return NoisyNetwork("probe", nn.Sequential(layer), shape, 1)


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.fill_(0.5)
    return layer


@pytest.fixture
def known():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 5, generator=g)
    x = torch.randn(1, 5, generator=g)
    return weight, x


@pytest.mark.parametrize("distribution", ["gaussian", "uniform"])
@pytest.mark.parametrize("kind", ["multiplicative", "additive"])
def test_weight_site_has_the_read_out_noise_variance(known, kind, distribution):
    weight, x = known
    model = _single_layer(_linear(weight), (5,))
    s = 0.3
    configure_noise(model, NoiseConfig(kind=kind, noise_std=s, site="weight", distribution=distribution))
    outs = _outputs(model, x)[:, 0, :]
    clean = (x @ weight.t() + 0.5)[0].double()
    if kind == "multiplicative":  # y_j = sum_i w_ji (1 + s z_ji) x_i
        var = s**2 * ((weight * x) ** 2).sum(1)
    else:  # y_j = sum_i (w_ji + s z_ji) x_i
        var = s**2 * (x**2).sum().expand(3)
    _check_moments(outs, clean, var.double())


@pytest.mark.parametrize("kind", ["multiplicative", "additive"])
def test_mac_site_has_the_per_product_noise_variance(known, kind):
    weight, x = known
    model = _single_layer(_linear(weight), (5,))
    s = 0.2
    configure_noise(model, NoiseConfig(kind=kind, noise_std=s, site="mac"))
    outs = _outputs(model, x)[:, 0, :]
    clean = (x @ weight.t() + 0.5)[0].double()
    var = s**2 * ((weight * x) ** 2).sum(1) if kind == "multiplicative" else torch.full((3,), s**2 * 5)
    _check_moments(outs, clean, var.double())


def test_conv_weight_and_mac_sites_follow_the_receptive_field():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        clean = conv(x)[0].double()
        products = nn.functional.conv2d(x**2, conv.weight**2, None, 1, 1)[0].double()  # sum over the field
    for site in ("weight", "mac"):
        model = _single_layer(conv, (2, 5, 5))
        configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=0.25, site=site))
        outs = _outputs(model, x, passes=3000)[:, 0]
        _check_moments(outs, clean, 0.25**2 * products)


def test_transposed_conv_weight_and_mac_sites_follow_the_scattered_products():
    """A transposed convolution's output sums input x weight products scattered by the stride: the variance of
    its weight and MAC noise is the transposed convolution of the squares (``output_padding`` kept)."""
    torch.manual_seed(2)
    deconv = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        clean = deconv(x)[0].double()
        products = nn.functional.conv_transpose2d(x**2, deconv.weight**2, None, 2, 1, 1)[0].double()
    for site in ("weight", "mac"):
        model = _single_layer(deconv, (2, 3, 3))
        assert configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=0.25, site=site)) == [1]
        _check_moments(_outputs(model, x, passes=1500)[:, 0], clean, 0.25**2 * products)


def test_uniform_weight_noise_is_bounded_by_the_uniform_read_out(known):
    """Each weight's uniform draw lies within sqrt(3) s of it, so y_j moves by at most sqrt(3) s sum_i |w_ji x_i|
    (multiplicative): the bound is reached by no Gaussian, so it tells the laws apart."""
    weight, x = known
    model = _single_layer(_linear(weight), (5,))
    s = 0.3
    configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=s, site="weight", distribution="uniform"))
    shift = (_outputs(model, x)[:, 0, :] - (x @ weight.t() + 0.5)[0].double()).abs()
    bound = 3**0.5 * s * (weight * x).abs().sum(1).double()
    assert torch.all(shift.max(0).values <= bound * (1 + 1e-5))
    assert torch.all(shift.max(0).values >= 0.5 * bound)  # 4000 passes come near it


def test_weight_noise_is_one_draw_per_batch_and_mac_noise_one_per_sample(known):
    weight, x = known
    batch = x.expand(2, 5)  # the same sample twice in one batch
    for site, shared in (("weight", True), ("mac", False)):
        model = _single_layer(_linear(weight), (5,))
        configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=0.3, site=site))
        outs = _outputs(model, batch, passes=500)
        assert torch.equal(outs[:, 0], outs[:, 1]) == shared


def test_the_activation_site_is_unchanged(known):
    weight, x = known
    model = _single_layer(_linear(weight), (5,))
    configure_noise(model, NoiseConfig(kind="additive", noise_std=0.4, placement="walking", injection_layer=1))
    outs = _outputs(model, x)[:, 0, :]
    _check_moments(outs, (x @ weight.t() + 0.5)[0].double(), torch.full((3,), 0.16, dtype=torch.float64))


@pytest.mark.parametrize("site", ["weight", "mac"])
def test_sites_exist_at_linear_and_conv_points_only(site):
    model = build_model("lenet5", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=rf"{SITES[site].points} only\); valid: 1 Conv, 4 Conv, 7 FC, 9 FC, 11 FC"):
        configure_noise(model, NoiseConfig(kind="additive", noise_std=1.0, site=site, placement="walking",
                                           injection_layer=2))
    assert configure_noise(model, NoiseConfig(kind="additive", noise_std=1.0, site=site)) == [1, 4, 7, 9, 11]


def test_straight_through_passes_the_weight_gradient_through_the_read_out_noise(known):
    weight, x = known
    grads = {}
    for backward in ("autograd", "straight_through"):
        model = _single_layer(_linear(weight), (5,))
        configure_noise(model, NoiseConfig(kind="multiplicative", noise_std=0.5, site="weight", backward=backward))
        model.use_stream(NoiseStream([7]))
        model.train()
        model.stream.at(0, 0, 0)
        out = model(x)
        out.sum().backward()
        grads[backward] = model.model[0].weight.grad.clone()
    clean = torch.ones(3, 1) * x  # d sum(y) / dW without noise: x for every output
    assert torch.allclose(grads["straight_through"], clean)
    assert not torch.allclose(grads["autograd"], clean)  # the drawn factor (1 + s z) scales it


@pytest.mark.parametrize("site, distribution", [("weight", "gaussian"), ("mac", "gaussian"),
                                                ("activation", "uniform"), ("weight", "uniform")])
@pytest.mark.parametrize("model_name, shape", [("mlp", (1, 28, 28)), ("lenet5", (3, 32, 32))])
def test_a_packed_member_gets_its_one_model_site_noise(site, distribution, model_name, shape):
    torch.manual_seed(0)
    members = [build_model(model_name, shape, 10) for _ in range(3)]
    noises = [NoiseConfig(kind="multiplicative", noise_std=s, site=site, distribution=distribution)
              for s in (0.1, 0.4, 0.0)]
    assert_members_compute_alone_what_the_pack_computes(members, noises, torch.randn(4, *shape), at=(2, EVAL, 1),
                                                        tol=1e-4)


@pytest.mark.parametrize("method", SHARED_INPUT_METHODS)
@pytest.mark.parametrize("site", ["activation", "weight", "mac"])
@pytest.mark.parametrize("model_name, shape", [("lenet5", (3, 32, 32)), ("cnn_s", (1, 49, 10))])
@pytest.mark.parametrize("input_noise", [True, False], ids=["noisy-input", "clean-input"])
def test_every_packed_conv_method_computes_each_members_own_noisy_network(method, site, model_name, shape,
                                                                          input_noise, monkeypatch):
    """Each way of computing a packed convolution, with noise at every site: with activation noise at the input
    (global) every member's first convolution reads its own input; without (walking at the first conv, or a site
    inside layers) all members read one input tensor, which ``stacked`` convolves once with the stacked filters and
    the other methods tile. ``stacked`` exists only for a shared input; own inputs then use the grouped method."""
    chosen = []

    def choose(layer, x):
        own = not layer.shared_input(x)
        chosen.append((layer.in_channels, own))
        return "grouped" if own and method == "stacked" else method

    monkeypatch.setattr(batched, "choose_conv_method", choose)
    torch.manual_seed(0)
    members = [build_model(model_name, shape, 12) for _ in range(3)]
    where = {} if input_noise else {"placement": "walking", "injection_layer": 1}
    noises = [NoiseConfig(kind="multiplicative", noise_std=s, site=site, **where) for s in (0.1, 0.4, 0.0)]
    assert_members_compute_alone_what_the_pack_computes(members, noises, torch.randn(4, *shape), at=(2, EVAL, 1),
                                                        tol=1e-4)
    own_inputs = input_noise and site == "activation"  # the weight and MAC sites draw nothing at the input point
    assert chosen[0] == (shape[0], own_inputs)  # the pack's first conv: its members' own inputs or one shared input
    assert len(chosen) == 2  # one choice per layer, kept for every later call


def test_a_packed_conv_method_is_measured_once_per_shape_and_forced_by_the_environment(monkeypatch):
    torch.manual_seed(0)
    conv = PackedConv2d([nn.Conv2d(2, 3, 3) for _ in range(4)])
    x = torch.randn(5, 8, 9, 9)
    timings = batched.conv_method_timings(conv, x, repeats=1)
    assert set(timings) == set(CONV_METHODS) and all(t > 0 for t in timings.values())
    assert set(batched.conv_method_timings(conv, x[:, :2], repeats=1)) == set(SHARED_INPUT_METHODS)
    monkeypatch.setattr(batched, "CONV_CHOICES", {})
    method = batched.choose_conv_method(conv, x)
    assert method in CONV_METHODS and list(batched.CONV_CHOICES.values())[0][0] == method
    monkeypatch.setattr(batched, "conv_method_timings", lambda *a, **k: pytest.fail("measured twice"))
    assert batched.choose_conv_method(conv, x) == method
    monkeypatch.setenv(CONV_METHOD_ENV, "per_member")
    assert batched.choose_conv_method(conv, x) == "per_member"
    monkeypatch.setenv(CONV_METHOD_ENV, "fastest")
    with pytest.raises(ValueError, match="not one of"):
        batched.choose_conv_method(conv, x)


def test_every_site_and_distribution_of_the_tables_has_its_torch_implementation():
    assert set(SITE_NOISE) == set(SITES)
    assert set(UNIT_DRAWS) == set(DISTRIBUTIONS)


def test_sites_keep_their_draw_tags_and_never_share_them():
    """The tag offsets are part of every stored run's draws: activation 0, weight 2, MAC 4, each site owning two tags
    (multiplicative, additive) of the counter's 4 bits."""
    assert {name: site.tag_offset for name, site in SITES.items()} == {"activation": 0, "weight": 2, "mac": 4}
    tags = [site.tag_offset + t for site in SITES.values() for t in (0, 1)]
    assert len(set(tags)) == len(tags) and max(tags) < 16


@pytest.mark.parametrize("site", ["weight", "mac"])
def test_a_model_without_linear_or_conv_layers_is_refused_for_a_layer_site(site):
    from walking_noise.config import RunConfig
    from walking_noise.models import check_model

    cfg = RunConfig.from_dict({"model": "torch.nn:LayerNorm", "model_kwargs": {"normalized_shape": 28},
                               "noise": {"kind": "additive", "noise_std": 0.1, "site": site}})
    with pytest.raises(ValueError, match=f"noise.site {site} exists at {SITES[site].points} only; torch.nn:LayerNorm "
                                         f"has none"):
        check_model(cfg)
