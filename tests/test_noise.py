"""The noise itself: statistics per kind and distribution, fresh draws, phases, and the gradient of each backward
mode."""

import math

import pytest
import torch

from walking_noise.config import RunConfig
from walking_noise.noise import EVAL, NoiseConfig, NoiseInjection, NoiseStream
from walking_noise.identity import config_hash

N = 400_000


def _point(additive=0.0, multiplicative=0.0, **kw) -> NoiseInjection:
    point = NoiseInjection()
    point.set(additive, multiplicative, **kw)
    return point


def _stats(y: torch.Tensor) -> tuple[float, float]:
    return float(y.mean()), float(y.std())


@pytest.mark.parametrize("s", [0.1, 1.0, 10.0])
def test_additive_noise_has_zero_mean_and_std_s(s):
    torch.manual_seed(0)
    x = torch.full((N,), 3.0)
    mean, std = _stats(_point(additive=s)(x))
    assert mean == pytest.approx(3.0, abs=5 * s / math.sqrt(N))
    assert std == pytest.approx(s, rel=0.01)


@pytest.mark.parametrize("s", [0.1, 0.5, 2.0])
def test_multiplicative_noise_has_mean_x_and_std_x_times_s(s):
    torch.manual_seed(1)
    x = torch.full((N,), -2.0)
    mean, std = _stats(_point(multiplicative=s)(x))
    assert mean == pytest.approx(-2.0, abs=5 * 2 * s / math.sqrt(N))
    assert std == pytest.approx(2.0 * s, rel=0.01)
    # the multiplicative factor itself is N(1, s^2)
    factor = _point(multiplicative=s)(torch.ones(N))
    assert float(factor.mean()) == pytest.approx(1.0, abs=5 * s / math.sqrt(N))


def test_mixed_noise_variance_depends_on_order():
    torch.manual_seed(2)
    c, a, m = 2.0, 0.5, 0.3
    x = torch.full((N,), c)
    _, std_ma = _stats(_point(a, m, order="multiply_then_add")(x))
    _, std_am = _stats(_point(a, m, order="add_then_multiply")(x))
    assert std_ma == pytest.approx(math.sqrt((c * m) ** 2 + a**2), rel=0.01)
    assert std_am == pytest.approx(math.sqrt((c * m) ** 2 + a**2 + (a * m) ** 2), rel=0.01)


def test_mixed_noise_from_amplitude_and_ratio():
    cfg = NoiseConfig(kind="mixed", amplitude=2.0, ratio=0.25)
    assert cfg.stds == pytest.approx((0.5, 1.5))
    assert NoiseConfig(kind="mixed", additive_std=0.1, multiplicative_std=0.2).stds == (0.1, 0.2)
    with pytest.raises(ValueError, match="either additive_std"):
        NoiseConfig(kind="mixed", amplitude=1.0, ratio=0.5, additive_std=0.1)
    with pytest.raises(ValueError, match="ratio"):
        NoiseConfig(kind="mixed", amplitude=1.0, ratio=1.5)


def test_zero_std_is_identity_and_draws_are_fresh_and_independent():
    x = torch.randn(1000)
    assert _point()(x) is x
    point = _point(additive=1.0)
    first, second = point(x) - x, point(x) - x
    assert not torch.equal(first, second)
    corr = float(torch.corrcoef(torch.stack([first, second]))[0, 1])
    assert abs(corr) < 0.15
    # independent per element: neighbouring elements uncorrelated
    big = point(torch.zeros(N))
    assert abs(float(torch.corrcoef(torch.stack([big[:-1], big[1:]]))[0, 1])) < 0.01


def test_inference_only_noise_is_off_in_training_mode():
    x = torch.randn(100)
    point = _point(additive=1.0, in_training=False)
    point.train()
    assert torch.equal(point(x), x)
    point.eval()
    assert not torch.equal(point(x), x)
    always = _point(additive=1.0, in_training=True)
    always.train()
    assert not torch.equal(always(x), x)


@pytest.mark.parametrize("backward", ["autograd", "straight_through"])
def test_additive_gradient_is_the_identity(backward):
    x = torch.randn(1000, requires_grad=True)
    upstream = torch.randn(1000)
    _point(additive=5.0, backward=backward)(x).backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_multiplicative_autograd_gradient_is_scaled_by_the_drawn_factor():
    torch.manual_seed(3)
    x = (torch.rand(1000) + 0.5).requires_grad_()
    upstream = torch.randn(1000)
    y = _point(multiplicative=0.7, backward="autograd")(x)
    y.backward(upstream)
    factor = (y / x).detach()
    assert torch.allclose(x.grad, upstream * factor, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(x.grad, upstream)


def test_multiplicative_straight_through_gradient_is_exactly_the_identity():
    x = torch.randn(1000, requires_grad=True)
    upstream = torch.randn(1000)
    y = _point(multiplicative=0.7, backward="straight_through")(x)
    assert not torch.equal(y.detach(), x.detach())  # forward is noisy
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_huge_multiplicative_noise_stays_finite_in_float32():
    y = _point(multiplicative=1e16)(torch.ones(10_000))
    assert bool(torch.isfinite(y).all())
    assert float(y.abs().max()) > 1e16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "additive", "noise_std": -0.1}, "noise_std must be"),
        ({"kind": "gaussian"}, "valid choices: none, additive, multiplicative, mixed"),
        ({"kind": "additive", "placement": "walking"}, "injection_layer"),
        ({"kind": "additive", "placement": "everywhere"}, "valid choices: global, walking"),
        ({"kind": "additive", "phase": "training"}, "train_and_inference, inference"),
        ({"kind": "additive", "backward": "ste"}, "autograd, straight_through"),
        ({"kind": "additive", "noise_std": float("nan")}, "noise_std"),
        ({"kind": "additive", "distribution": "laplace"}, "unknown noise distribution 'laplace'; valid choices: "
                                                          "gaussian, uniform"),
        ({"kind": "additive", "site": "input"}, "valid choices: activation, weight, mac"),
    ],
)
def test_bad_noise_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseConfig(**kwargs)


def test_noise_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown noise setting\(s\) \['sdt'\]"):
        NoiseConfig.from_dict({"kind": "additive", "sdt": 1.0})


# ---- noise.distribution: uniform, with the Gaussian's variance ----------------------------------------------------

SQRT3 = math.sqrt(3.0)


def _assert_uniform(values: torch.Tensor, center: float, s: float) -> None:
    """``values`` are draws of U(center - sqrt(3) s, center + sqrt(3) s): mean, variance, support and the law.

    Tolerances from standard errors: the mean's is s / sqrt(N), the variance's sqrt((mu_4 - s^4) / N) with the
    uniform's mu_4 = 9/5 s^4; the Kolmogorov-Smirnov distance of N draws from their own law exceeds
    sqrt(ln(2 / alpha) / (2 N)) with probability alpha (1e-6 here)."""
    v = values.double()
    n = v.numel()
    assert float(v.mean()) == pytest.approx(center, abs=5 * s / math.sqrt(n))
    assert float(v.var()) == pytest.approx(s**2, abs=5 * s**2 * math.sqrt(0.8 / n))
    half = SQRT3 * s
    assert float(v.min()) >= center - half * (1 + 1e-6) and float(v.max()) <= center + half * (1 + 1e-6)
    assert float((v.max() - v.min()) / (2 * half)) > 0.999  # the draws fill the support
    cdf = ((v.sort().values - (center - half)) / (2 * half)).clamp(0, 1)
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = max(float((ranks - cdf).max()), float((cdf - (ranks - 1 / n)).max()))
    assert ks <= math.sqrt(math.log(2 / 1e-6) / (2 * n)), ks


@pytest.mark.parametrize("s", [0.1, 1.0, 10.0])
def test_uniform_additive_noise_is_uniform_with_zero_mean_and_std_s(s):
    torch.manual_seed(4)
    x = torch.full((N,), 3.0)
    _assert_uniform(_point(additive=s, distribution="uniform")(x) - 3.0, 0.0, s)


@pytest.mark.parametrize("s", [0.1, 0.5])
def test_uniform_multiplicative_factor_is_uniform_with_mean_one_and_std_s(s):
    torch.manual_seed(5)
    _assert_uniform(_point(multiplicative=s, distribution="uniform")(torch.ones(N)), 1.0, s)


def test_uniform_draws_are_the_gaussian_draws_mapped_through_the_normal_cdf():
    """The same stream coordinates in both laws: u = sqrt(3) (2 Phi(z) - 1), so runs differing only in the law see
    the same underlying numbers (and the uniform adds no draw of its own)."""
    noisy = {}
    for distribution in ("gaussian", "uniform"):
        point = _point(additive=1.0, distribution=distribution)
        point.stream = NoiseStream([99])
        point.stream.at(2, EVAL, 7)
        noisy[distribution] = point(torch.zeros(10_000)).double()
    phi = 0.5 * torch.erfc(-noisy["gaussian"] / math.sqrt(2.0))
    assert torch.allclose(noisy["uniform"], SQRT3 * (2 * phi - 1), atol=1e-6)


def test_the_mac_site_refuses_uniform_noise():
    with pytest.raises(ValueError, match="uniform is not available at the mac site, which draws gaussian only"):
        NoiseConfig(kind="additive", noise_std=0.1, site="mac", distribution="uniform")
    with pytest.raises(ValueError, match="not available at the mac site"):
        NoiseInjection().set(0.1, site="mac", distribution="uniform")


def test_gaussian_keeps_the_identity_and_draws_of_runs_stored_before_distributions_existed():
    """Literals computed on the code before ``noise.distribution`` existed (commit 59254db): the default adds
    nothing to a run's hash, nor to its noise key (its random draws); another distribution is another run."""
    base = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "seed": 3}
    stored = {"activation": ("a29c06323682341fcf8a3a56741a7c83f783992e", 4037821069091597555),
              "weight": ("07a15bd9de97607bc6498db5709b9b6d4d14bb10", 18411172165947475270)}
    for site, (hash_before, key_before) in stored.items():
        noise = {"kind": "multiplicative", "noise_std": 0.7, "site": site}
        for extra in ({}, {"distribution": "gaussian"}):
            cfg = RunConfig.from_dict({**base, "noise": {**noise, **extra}})
            assert (config_hash(cfg.to_dict()), cfg.noise_key) == (hash_before, key_before)
        uniform = RunConfig.from_dict({**base, "noise": {**noise, "distribution": "uniform"}})
        assert config_hash(uniform.to_dict()) != hash_before and uniform.noise_key != key_before
