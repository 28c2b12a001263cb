"""The batched engine means what the one-model path means: same weights without noise, own noise per member."""

import pytest
import torch
from torch import nn

from walking_noise.batched import batch_key, train_members
from walking_noise.config import RunConfig
from walking_noise.data import DatasetSplits
from walking_noise.training import load_run_dataset, train_run


def _cfg(**kw) -> RunConfig:
    base = {"dataset": "mnist_5k", "model": "mlp", "max_train": 800, "max_test": 300, "training": {"epochs": 1}}
    base.update(kw)
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def mnist():
    return load_run_dataset(_cfg())


def _speech_like(n=300) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 49, 10, generator=g)
    y = torch.randint(0, 12, (n,), generator=g)
    return DatasetSplits(name="speech_commands", train_x=x, train_y=y, test_x=x[:100], test_y=y[:100],
                         num_classes=12, input_shape=(1, 49, 10), class_weights=torch.rand(12, generator=g) + 0.5,
                         preprocessing={}, augment=None)


def _one_model(cfg, data, tmp_path, name):
    from walking_noise.training import load_checkpoint

    result = train_run(RunConfig.from_dict({**cfg.to_dict(), "checkpoint": str(tmp_path / name)}), data)
    return load_checkpoint(result.checkpoint, data)[0], result


def _pre_batchnorm_biases(model) -> set[str]:
    """Biases of layers followed by BatchNorm: their gradient is exactly zero in theory, rounding noise in practice,
    and Adam normalises that noise to steps of size lr, so they are excluded from the comparison (BatchNorm
    removes them from the network's function)."""
    names, modules = set(), list(model.model.named_children())
    for (name, module), nxt in zip(modules, modules[1:]):
        if isinstance(module, (nn.Linear, nn.Conv2d)) and isinstance(nxt[1], (nn.BatchNorm1d, nn.BatchNorm2d)):
            names.add(f"model.{name}.bias")
    return names


@pytest.mark.parametrize("model, bn, dataset", [("mlp", False, "mnist"), ("mlp", True, "mnist"),
                                                 pytest.param("lenet5", False, "mnist", marks=pytest.mark.slow),
                                                 pytest.param("lenet5", True, "mnist", marks=pytest.mark.slow),
                                                 ("cnn_s", True, "speech")])
def test_member_k_trains_the_one_model_path_model_without_noise(model, bn, dataset, mnist, tmp_path):
    data = mnist if dataset == "mnist" else _speech_like()
    extra = {"dataset": "speech_commands"} if dataset == "speech" else {}
    seeds = (0, 1, 2) if model == "mlp" else (0, 2)  # packed convolutions are slow on a CPU: two members suffice
    cfgs = [_cfg(model=model, batchnorm=bn, seed=s, **extra) for s in seeds]
    results, packed, _ = train_members(cfgs, data)
    for k, cfg in enumerate(cfgs):
        single, single_result = _one_model(cfg, data, tmp_path, f"{k}.pt")
        member = packed.unpack(k)
        skip = _pre_batchnorm_biases(single)
        for name, value in single.state_dict().items():
            if name in skip or name.endswith("running_mean") or name.endswith("num_batches_tracked"):
                continue
            diff = (member.state_dict()[name] - value).abs()
            if not bn:
                assert float(diff.max()) < 2e-4, name
            else:
                # With BatchNorm, weights whose gradient is nearly zero see Adam normalise float rounding noise
                # (different summation order) into steps of up to lr: allow a few such elements, none far off.
                assert float((diff > 2e-4).float().mean()) < 0.01 and float(diff.max()) < 2 * cfg.training.lr, name
        x = data.test_x[:64]
        with torch.no_grad():  # batch statistics: the function BatchNorm makes independent of pre-BN biases
            assert torch.allclose(member.train()(x), single.train()(x), atol=5e-3, rtol=1e-3)
        assert results[k].val_accuracy[0] == pytest.approx(single_result.val_accuracy[0], abs=0.02)
        assert results[k].layer_table == single_result.layer_table


def test_each_member_has_its_own_noise_point_level_and_phase():
    full = {"max_train": None, "max_test": None}
    mnist = load_run_dataset(_cfg(**full))
    cfgs = [
        _cfg(**full, training={"epochs": 4}),
        _cfg(**full, training={"epochs": 4}, noise={"kind": "additive", "noise_std": 10.0}),
        _cfg(**full, training={"epochs": 4}, noise={"kind": "additive", "noise_std": 10.0, "placement": "walking",
                                            "injection_layer": 7}),
        _cfg(**full, training={"epochs": 4}, noise={"kind": "additive", "noise_std": 10.0, "phase": "inference"}),
    ]
    assert len({batch_key(c) for c in cfgs}) == 1
    results, _, _ = train_members(cfgs, mnist)
    clean, global_noise, walking, inference_only = results
    assert global_noise.active_points == list(range(8)) and walking.active_points == [7]
    assert global_noise.final_accuracy < 0.3
    assert inference_only.train_loss == pytest.approx(clean.train_loss, rel=1e-4)  # trained clean
    assert inference_only.final_accuracy < clean.final_accuracy - 0.3
    assert clean.final_accuracy > 0.75  # evaluated noisy


def test_diverged_member_does_not_poison_its_batch_mates(mnist):
    alone, _, _ = train_members([_cfg(training={"epochs": 2})], mnist)
    cfgs = [_cfg(training={"epochs": 2}), _cfg(training={"epochs": 2}, seed=5,
                                               noise={"kind": "multiplicative", "noise_std": 1e16})]
    results, _, _ = train_members(cfgs, mnist)
    assert results[1].diverged or results[1].final_accuracy < 0.2
    assert results[0].val_accuracy == pytest.approx(alone[0].val_accuracy, abs=1e-6)
    assert results[0].weight_magnitudes == pytest.approx(alone[0].weight_magnitudes, rel=1e-5)


def test_incompatible_configs_are_refused(mnist):
    with pytest.raises(ValueError, match="differ only in seed"):
        train_members([_cfg(), _cfg(batchnorm=True)], mnist)


def test_members_of_one_pack_share_the_noise_distribution(mnist):
    noise = {"kind": "additive", "noise_std": 0.5}
    with pytest.raises(ValueError, match="differ only in seed"):
        train_members([_cfg(noise=noise), _cfg(noise={**noise, "distribution": "uniform"})], mnist)


def test_members_with_one_data_order_share_the_first_convolution_and_train_as_alone(tmp_path, monkeypatch):
    """Same seed, no input noise: the members read one batch tensor and the first convolution computes them all at
    once from it; each member still trains what it trains alone, with its own noise at its own point."""
    from walking_noise.batched import PackedConv2d

    data = _speech_like()
    base = {"dataset": "speech_commands", "model": "cnn_s", "batchnorm": True, "seed": 3}
    cfgs = [_cfg(**base, noise={"kind": "additive", "noise_std": s, "placement": "walking", "injection_layer": p})
            for s, p in ((0.5, 2), (1.0, 4), (0.0, 2))]
    first_inputs = []
    real = PackedConv2d.conv

    def recording(self, x, *args, **kw):
        if self.in_channels == 1:
            first_inputs.append(x.shape[1])
        return real(self, x, *args, **kw)

    monkeypatch.setattr(PackedConv2d, "conv", recording)
    results, _, _ = train_members(cfgs, data)
    assert first_inputs and set(first_inputs) == {1}  # training and evaluation: one shared input channel
    monkeypatch.undo()
    for k, cfg in enumerate(cfgs):
        _, alone = _one_model(cfg, data, tmp_path, f"{k}.pt")
        assert results[k].val_accuracy == pytest.approx(alone.val_accuracy, abs=0.02)
        assert results[k].train_loss == pytest.approx(alone.train_loss, rel=1e-3)
        assert results[k].active_points == alone.active_points
