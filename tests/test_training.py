"""One training run on the embedded dataset: learning, noise, determinism, divergence, clamping, checkpoints."""

import copy

import pytest
import torch
from torch import nn

from walking_noise.config import RunConfig
from walking_noise.training import (
    evaluate,
    final_accuracy,
    load_checkpoint,
    load_run_dataset,
    train_run,
)


def _cfg(**kw) -> RunConfig:
    base = {"dataset": "mnist_5k", "model": "mlp", "training": {"epochs": 4}, "seed": 0}
    base.update(kw)
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def mnist_5k():
    return load_run_dataset(_cfg())


def test_clean_mlp_beats_chance_by_far_and_global_additive_s10_falls_towards_chance(mnist_5k):
    clean = train_run(_cfg(training={"epochs": 10}), mnist_5k)
    noisy = train_run(_cfg(training={"epochs": 10}, noise={"kind": "additive", "noise_std": 10.0}), mnist_5k)
    assert clean.final_accuracy > 0.85
    assert noisy.final_accuracy < 0.35
    assert noisy.active_points == list(range(8))
    assert len(clean.val_accuracy) == 10 and clean.epochs_run == 10 and not clean.diverged


def test_the_same_config_trains_the_same_run(mnist_5k):
    cfg = _cfg(noise={"kind": "multiplicative", "noise_std": 0.5}, training={"epochs": 2})
    a, b = train_run(cfg, mnist_5k), train_run(cfg, mnist_5k)
    assert a.val_accuracy == b.val_accuracy and a.weight_magnitudes == b.weight_magnitudes


def test_inference_only_noise_trains_the_clean_model_and_evaluates_it_noisy(mnist_5k):
    clean = train_run(_cfg(training={"epochs": 2}), mnist_5k)
    noisy_eval = train_run(_cfg(training={"epochs": 2}, noise={"kind": "additive", "noise_std": 3.0,
                                                              "phase": "inference"}), mnist_5k)
    assert noisy_eval.weight_magnitudes == clean.weight_magnitudes  # same weights: no noise while training
    assert noisy_eval.train_loss == clean.train_loss
    assert noisy_eval.final_accuracy < clean.final_accuracy - 0.2


def test_weight_clamping_keeps_weights_in_unit_interval_after_training(mnist_5k, tmp_path):
    cfg = _cfg(batchnorm=True, weight_clamping=True, training={"epochs": 2, "lr": 0.05},
               checkpoint=str(tmp_path / "run.pt"))
    result = train_run(cfg, mnist_5k)
    model, saved_cfg = load_checkpoint(result.checkpoint, mnist_5k)
    assert saved_cfg == cfg
    for point in model.learnable_layers():
        assert float(point.layer.weight.detach().abs().max()) <= 1.0
    unclamped = train_run(_cfg(batchnorm=True, training={"epochs": 2, "lr": 0.05}), mnist_5k)
    assert max(unclamped.weight_magnitudes.values()) > max(result.weight_magnitudes.values())


def test_checkpoint_restores_the_trained_model(mnist_5k, tmp_path):
    cfg = _cfg(training={"epochs": 1}, checkpoint=str(tmp_path / "sub" / "model.pt"))
    result = train_run(cfg, mnist_5k)
    model, _ = load_checkpoint(result.checkpoint, mnist_5k)
    acc, _, _ = evaluate(model, mnist_5k.test_x, mnist_5k.test_y)
    assert acc == pytest.approx(result.val_accuracy[-1])
    assert not list(tmp_path.glob("sub/*.tmp*"))


def test_a_diverged_run_scores_chance_level_never_below(mnist_5k):
    # lr 1e30 makes every weight non-finite in the first epoch: every logit is NaN, every sample a random guess
    result = train_run(_cfg(training={"epochs": 6, "lr": 1e30, "optimizer": "sgd"}), mnist_5k)
    assert result.diverged and result.diverged_epoch == 0 and result.epochs_run == 1
    assert result.val_nonfinite == [1.0]
    assert result.final_accuracy == pytest.approx(0.1)  # 1 / 10 classes, not 0.0
    assert result.final_accuracy == pytest.approx(result.val_accuracy[-1])


def test_nan_logits_count_as_random_guesses():
    class NaNModel(nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 3)
            out[:, 1] = 1.0
            out[::2, 0] = float("nan")  # every other sample has a NaN logit
            return out

    y = torch.ones(10, dtype=torch.long)
    acc, _, nonfinite = evaluate(NaNModel(), torch.zeros(10, 1), y)
    assert acc == pytest.approx((5 + 5 / 3) / 10)  # 5 right, 5 guesses among 3 classes
    assert nonfinite == pytest.approx(0.5)


def test_final_accuracy_averages_the_last_five_epochs_or_the_second_half_of_a_short_run():
    from walking_noise.training import final_epochs

    assert [final_epochs(e) for e in (1, 2, 3, 4, 9, 10, 30, 100)] == [1, 1, 1, 2, 4, 5, 5, 5]
    assert final_accuracy([0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9]) == pytest.approx(0.88)
    assert final_accuracy([0.46, 0.60, 0.63]) == pytest.approx(0.63)  # not the mean with epoch 1
    assert final_accuracy([0.4, 0.6, 0.6, 0.8]) == pytest.approx(0.7)


def test_a_short_run_stores_how_many_epochs_its_final_accuracy_averages(mnist_5k):
    result = train_run(_cfg(training={"epochs": 3}), mnist_5k)
    assert result.final_epochs_averaged == 1
    assert result.final_accuracy == pytest.approx(result.val_accuracy[-1])


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"dataset": "imagenet"}, "valid choices: mnist_5k"),
        ({"model": "vgg"}, "valid choices: mlp, lenet5, cnn_s"),
        ({"lr": 0.1}, r"unknown run setting\(s\) \['lr'\]"),
        ({"training": {"epoch": 3}}, r"unknown training setting\(s\) \['epoch'\]"),
        ({"training": {"epochs": 0}}, "training.epochs must be a positive integer"),
        ({"noise": {"kind": "additive", "noise_std": -1}}, "noise_std must be"),
        ({"batchnorm": "yes"}, "batchnorm must be true or false"),
        ({"batchnorm": "true"}, "Sacred's command line reads Python literals: write True or False"),
    ],
)
def test_bad_run_config_is_rejected_with_a_message_naming_it(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_out_of_range_injection_layer_is_rejected_when_the_run_is_made():
    from walking_noise.study import study_run

    base = {"dataset": "mnist_5k", "model": "mlp"}
    with pytest.raises(ValueError, match=r"injection_layer 8 is not an injection point of mlp without BatchNorm on "
                                         r"mnist_5k; valid: 0 Input, 1 FC, 2 ReLU"):
        study_run({**base, "noise": {"kind": "additive", "noise_std": 1.0, "placement": "walking",
                                     "injection_layer": 8}})
    assert study_run({**base, "batchnorm": True, "noise": {"kind": "additive", "noise_std": 1.0, "placement": "walking",
                                                           "injection_layer": 10}}).config.noise.injection_layer == 10


def test_fused_adam_equals_torch_adam_with_cosine_schedule():
    # the library's Adam avoids importing torch.optim's machinery; it must train exactly like torch.optim.Adam
    from walking_noise.training import CosineSchedule, FusedAdam, _fused_adam_works

    if not _fused_adam_works(torch.device("cpu")):
        pytest.skip("this torch build has no fused CPU Adam: make_optimizer uses torch.optim")
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    theirs = copy.deepcopy(ours)
    opt_a = FusedAdam(list(ours.parameters()), lr=0.01, weight_decay=1e-3)
    sched_a = CosineSchedule(opt_a, epochs=4)
    opt_b = torch.optim.Adam(theirs.parameters(), lr=0.01, weight_decay=1e-3, fused=True)
    sched_b = torch.optim.lr_scheduler.CosineAnnealingLR(opt_b, T_max=4)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _epoch in range(4):
        for _ in range(3):
            for model, opt in ((ours, opt_a), (theirs, opt_b)):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        sched_a.step()
        sched_b.step()
        assert opt_a.lr == pytest.approx(opt_b.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_run_results_dict_is_a_deep_plain_copy_equal_to_asdict():
    # the store keeps what to_dict returns; a later change to the result must not reach a stored document
    from dataclasses import asdict

    from walking_noise.training import RunResult

    result = RunResult(0.5, 5, [0.1, 0.2], [1.0], [0.0], [0.3], [0.4], {"fc1": 1.0}, False, None, 5, [1, 2],
                       [{"index": 0, "shape": [1, 28, 28]}], None, {"scale": {"low": 0}}, 1.0, "cpu", {"e": [1]})
    plain = result.to_dict()
    assert plain == asdict(result)
    plain["layer_table"][0]["shape"].append(3)
    plain["extra"]["e"].clear()
    assert result.layer_table[0]["shape"] == [1, 28, 28] and result.extra == {"e": [1]}
