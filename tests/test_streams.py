"""Every run owns its random numbers: the noise a member draws is the same alone, packed with any companions, at any
position in the pack, on the packed conv layout, and when an inference-only run is trained once and evaluated many
times. Tested on the draws themselves, then on what they make: the final accuracy."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from walking_noise.batched import PackedNetwork, train_members
from walking_noise.units import unit_documents
from walking_noise.config import NoiseConfig, Run, RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.models import build_model
from walking_noise.noise import EVAL, NoiseStream, configure_noise
from walking_noise.training import load_run_dataset, train_run


def _cfg(**kw) -> RunConfig:
    base = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "max_train": 600, "max_test": 300,
            "training": {"epochs": 2}, "seed": 0}
    base.update(kw)
    return RunConfig.from_dict(base)


def _noise(s: float, **kw) -> dict:
    return {"kind": "additive", "noise_std": s, **kw}


@pytest.fixture(scope="module")
def mnist():
    return load_run_dataset(_cfg())


def _cifar_like(n: int = 256) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return DatasetSplits(name="cifar10", train_x=x, train_y=y, test_x=x[:128], test_y=y[:128], num_classes=10,
                         input_shape=(3, 32, 32), class_weights=None, preprocessing={}, augment=None)


@pytest.fixture
def recorded(monkeypatch):
    """Every draw made through a NoiseStream: {member key: {(counter, point, tag): the member's row}}."""
    draws: dict[int, dict[tuple, torch.Tensor]] = defaultdict(dict)
    original = NoiseStream.normal

    def record(self, point, tag, per_member, device, active=None):
        out = original(self, point, tag, per_member, device, active)
        coordinate = (self.step, self.epoch, self.phase, point, tag)
        for k, key in enumerate(self.keys):
            if active is None or active[k]:
                assert coordinate not in draws[key], "a member drew twice at one coordinate"
                draws[key][coordinate] = out[k].clone()
        return out

    monkeypatch.setattr(NoiseStream, "normal", record)
    return draws


def _same_draws(a: dict[tuple, torch.Tensor], b: dict[tuple, torch.Tensor]) -> None:
    assert a and set(a) == set(b)
    for coordinate in a:
        assert torch.equal(a[coordinate], b[coordinate]), coordinate


def test_a_members_noise_is_the_same_alone_packed_and_at_any_position(mnist, recorded):
    target = _cfg(noise=_noise(0.3))
    train_run(target, mnist)
    alone = dict(recorded.pop(target.noise_key))
    companions = [_cfg(noise=_noise(s)) for s in (0.1, 1.0, 3.0)]
    walking = _cfg(noise=_noise(0.3, placement="walking", injection_layer=4))
    for pack in ([target, companions[0]], [companions[0], companions[1], target, companions[2]], [walking, target]):
        recorded.clear()
        train_members(pack, mnist)
        _same_draws(alone, recorded.pop(target.noise_key))
    recorded.clear()
    # the walking member draws at its one point only, at every training step and evaluation batch
    train_run(walking, mnist)
    assert {c[3] for c in recorded[walking.noise_key]} == {4}


def test_the_packed_conv_layout_gives_each_member_its_one_model_draws(recorded):
    data = _cifar_like()
    common = {"dataset": "cifar10", "model": "lenet5", "max_train": None, "max_test": None,
              "training": {"epochs": 1, "batch_size": 64}}
    target = _cfg(**common, noise=_noise(0.5, kind="multiplicative"))
    train_run(target, data)
    alone = dict(recorded.pop(target.noise_key))
    other = _cfg(**common, seed=3, noise=_noise(0.2, kind="multiplicative"))
    train_members([other, target], data)
    _same_draws(alone, recorded.pop(target.noise_key))


def test_final_accuracy_alone_and_packed_differs_only_by_rounding(mnist):
    # the example: MLP with BatchNorm, additive s = 0.3, seed 0, alone and packed with other levels
    full = {"max_train": None, "max_test": None, "training": {"epochs": 3}}
    data = load_run_dataset(_cfg(**full))
    target = _cfg(**full, noise=_noise(0.3))
    finals = [train_run(target, data).final_accuracy]
    for levels in ([0.5], [0.1, 1.0, 3.0]):
        results, _, _ = train_members([_cfg(**full, noise=_noise(s)) for s in levels] + [target], data)
        finals.append(results[-1].final_accuracy)
    assert max(finals) - min(finals) <= 0.003, finals


def test_train_once_evaluate_many_draws_what_the_inference_only_run_draws(mnist, recorded):
    configs = [_cfg(training={"epochs": 3}, noise=_noise(s, phase="inference")) for s in (0.5, 2.0)]
    docs = unit_documents([Run.from_config(c) for c in configs], "test")
    assert {d["result"]["extra"]["engine"] for d in docs} == {"train_once_evaluate_many"}
    evaluated = {key: dict(rows) for key, rows in recorded.items()}
    recorded.clear()
    for cfg, doc in zip(configs, docs):
        result = train_run(cfg, mnist)
        # the one-model run evaluates noisy after every epoch; train-once-evaluate-many after the averaged ones
        own = {c: z for c, z in recorded.pop(cfg.noise_key).items() if c[1] >= 3 - result.final_epochs_averaged}
        _same_draws(own, evaluated[cfg.noise_key])
        assert doc["result"]["final_accuracy"] == pytest.approx(result.final_accuracy, abs=0.003)


def test_noise_keys_depend_on_the_scientific_config_only():
    a = _cfg(noise=_noise(0.3))
    assert a.noise_key == _cfg(noise=_noise(0.3), data_dir="/elsewhere", device="auto").noise_key
    assert len({a.noise_key, _cfg(noise=_noise(0.3), seed=1).noise_key, _cfg(noise=_noise(0.4)).noise_key}) == 3


@pytest.mark.parametrize("model_name, shape", [("mlp", (1, 28, 28)), ("lenet5", (3, 32, 32))])
def test_a_members_uniform_noise_is_bit_identical_alone_and_packed(model_name, shape):
    """With every weight and bias zero, each point's output is a function of the drawn noise alone (no rounding of
    a matmul in it), so a packed member's point outputs must equal its one-model ones bit for bit, in the FC layout
    (K, B, F) and the grouped-conv layout (B, K*C, H, W) alike."""
    torch.manual_seed(0)
    members = [build_model(model_name, shape, 10) for _ in range(3)]
    for member in members:
        with torch.no_grad():
            for parameter in member.parameters():
                parameter.zero_()
    noises = [NoiseConfig(kind="additive", noise_std=s, distribution="uniform") for s in (0.5, 1.0, 2.0)]
    x = torch.randn(4, *shape)
    packed = PackedNetwork(members)
    packed.configure(noises)
    keys = [11, 22, 33]
    together = _point_outputs(packed, packed.points, NoiseStream(keys), x.unsqueeze(0).expand(3, *x.shape))
    for k, member in enumerate(members):
        configure_noise(member, noises[k])
        alone = _point_outputs(member, member.injections, NoiseStream([keys[k]]), x)
        assert len(alone) == len(together) == len(member.injection_points)
        for point, (mine, packed_out) in enumerate(zip(alone, together)):
            if packed_out.dim() == 4:  # grouped-conv layout: member k owns channels k*C..(k+1)*C-1
                channels = packed_out.shape[1] // 3
                packed_out = packed_out[:, k * channels:(k + 1) * channels]
            else:
                packed_out = packed_out[k]
            assert torch.equal(mine, packed_out), point


def _point_outputs(model, points, stream, x) -> list[torch.Tensor]:
    """The output of every injection point of ``model`` (evaluation pass (1, EVAL, 2)), in point order."""
    seen: list[torch.Tensor] = []
    hooks = [p.register_forward_hook(lambda _m, _i, out: seen.append(out.clone())) for p in points]
    model.use_stream(stream)
    model.eval()
    model.stream.at(1, EVAL, 2)
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen
