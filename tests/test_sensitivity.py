"""The sensitivity engine computes exactly what the one-model evaluation of each run computes (cached prefix, runs
packed in the batch dimension, each run's own draws), however the runs are grouped; trained weights are read in
every form a user has them, and bad input is one line before any evaluation."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from walking_noise.config import NoiseConfig, Run, RunConfig
from walking_noise.models import build_model
from walking_noise.noise import configure_noise
from walking_noise.sensitivity import Evaluator, evaluate_runs, load_weights, plain_evaluation
from walking_noise.training import load_run_dataset, save_checkpoint
from walking_noise.units import plan_units

RESIDUAL = "walking_noise.examples.residual_cnn:residual_cnn"


def _data(max_test: int = 100):
    return load_run_dataset(RunConfig(dataset="mnist_5k", max_test=max_test))


def _noise(kind: str, site: str, placement: str, point: int | None, s: float) -> dict:
    return {"kind": kind, "noise_std": s, "site": site, "placement": placement, "injection_layer": point,
            "phase": "inference"}


def _cfg(model: str, noise: dict, seed: int = 0, batch: int = 32, **kw) -> RunConfig:
    return RunConfig.from_dict({"dataset": "mnist_5k", "model": model, "max_test": 100, "seed": seed,
                                "training": {"batch_size": batch}, "noise": noise, **kw})


def _net(model: str, data, batchnorm: bool = False):
    torch.manual_seed(0)
    net = build_model(model, data.input_shape, data.num_classes, batchnorm)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, as after training
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _grid(net, model: str, kinds=("additive", "multiplicative"), sites=("activation", "weight", "mac")):
    """Configs of every site, kind and mode: walking at the first, a middle and the last point the site can take,
    leave-one-out and global."""
    learnable = [p.index for p in net.injection_points if p.is_learnable]
    every = [p.index for p in net.injection_points]
    configs = []
    for site in sites:
        points = learnable if site != "activation" else every
        walk = sorted({points[0], points[1], points[len(points) // 2], points[-1]})
        for kind in kinds:
            for placement, points in (("walking", walk), ("leave_one_out", [learnable[1]]), ("global", [None])):
                configs += [_cfg(model, _noise(kind, site, placement, p, 0.7), seed=p or 0) for p in points]
    return configs


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize("model", ["mlp", pytest.param("lenet5", marks=pytest.mark.slow),
                                   pytest.param(RESIDUAL, marks=pytest.mark.slow)])
def test_the_engine_computes_exactly_what_the_plain_forward_pass_computes(model):
    # 40 test samples in batches of 16: the last batch of 8 has its own shape. The MLP with BatchNorm, LeNet-5
    # (convolutions, an nn.Sequential) and the residual CNN (functional residual additions, an in-place ReLU)
    data = _data(40)
    net = _net(model, data, batchnorm=model == "mlp")
    configs = [replace(c, max_test=40, training=replace(c.training, batch_size=16)) for c in _grid(net, model)]
    measured = Evaluator(copy.deepcopy(net), data, 16).evaluate(configs)
    clean = plain_evaluation(net, replace(configs[0], noise=NoiseConfig()), data)
    for cfg, (acc, loss, nonfinite, active) in zip(configs, measured):
        reference = plain_evaluation(net, cfg, data)
        assert (acc, loss, nonfinite) == reference, cfg.noise
        assert loss != clean[1], f"no noise was applied: {cfg.noise}"
        assert active == configure_noise(copy.deepcopy(net), cfg.noise)


def test_runs_are_packed_and_the_prefix_before_the_noisy_point_is_not_computed_again(data):
    net = _net("lenet5", data)
    evaluator = Evaluator(net, data, 32)
    calls = []
    conv = net.model[0]
    handle = conv.register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    late = [_cfg("lenet5", _noise("additive", "activation", "walking", 9, s), seed=k) for s in (0.1, 1.0)
            for k in range(3)]
    evaluator.evaluate(late)
    handle.remove()
    # 6 runs at one point: packs of 4 and 2 (powers of two), each pack size checked once per batch size on a clean
    # pack. Whether a pack computes what a batch alone does is the matrix library's choice on this CPU (one
    # machine's sgemm rounds LeNet-5's first FC layer differently at 4 and 12 rows), so the check must see what is so
    with torch.no_grad():
        def exact(rows: int, R: int) -> bool:
            x = data.test_x[:rows]
            return all(bool(torch.equal(net.model[:k](x.repeat(R, 1, 1, 1)), net.model[:k](x).repeat(
                R, *[1] * (net.model[:k](x).dim() - 1)))) for k in range(1, len(net.model) + 1))
    for (rows, R), found in evaluator._packs.items():
        assert found == exact(rows, R), (rows, R)
    assert {(32, 4), (32, 2)} <= set(evaluator._packs)
    # per test batch: the clean pass, and the checks of pack sizes not seen before; never for the noisy runs
    assert calls[:4] == [32, 128, 64, 32] and calls[4:] == [32] + [4] + [4 * R for R in (4, 2) if (4, R) in
                                                                         evaluator._packs]


def test_a_runs_result_does_not_depend_on_its_companions_packing_or_splitting(data):
    net = _net("mlp", data, batchnorm=True)
    configs = _grid(net, "mlp", kinds=("additive",), sites=("activation", "weight"))
    together = Evaluator(copy.deepcopy(net), data, 32).evaluate(configs)
    small_packs = Evaluator(copy.deepcopy(net), data, 32, pack_bytes=1).evaluate(configs[::-1])[::-1]
    alone = [Evaluator(copy.deepcopy(net), data, 32).evaluate([cfg])[0] for cfg in configs[:4]]
    assert small_packs == together
    assert alone == together[:4]


def test_a_model_whose_layers_depend_on_the_batch_is_evaluated_run_by_run(data):
    model = "_sensitivity_data:batch_dependent_mlp"
    net = build_model(model, data.input_shape, data.num_classes)
    configs = [_cfg(model, _noise("additive", "activation", "walking", p, 0.5)) for p in (1, 2, 4)]
    evaluator = Evaluator(net, data, 32)
    measured = evaluator.evaluate(configs)
    assert not any(evaluator._packs.values())
    assert [m[:3] for m in measured] == [plain_evaluation(net, cfg, data) for cfg in configs]


def test_the_cache_holds_one_test_batch_of_every_module_calls_output(data):
    net = _net("mlp", data)
    evaluator = Evaluator(net, data, 32)
    per_sample = []
    handles = [m.register_forward_hook(lambda _m, _i, out: per_sample.append(out[0].numel() * 4))
               for m in net.model.modules()]
    with torch.no_grad():
        net.model(data.test_x[:2])
    for h in handles:
        h.remove()
    evaluator.evaluate([_cfg("mlp", _noise("additive", "activation", "walking", 2, 0.5))])  # at a ReLU
    assert evaluator.cache_bytes_per_sample == sum(per_sample)
    assert evaluator._batch is None  # nothing of the test set is kept after an evaluation


def test_leave_one_out_noises_every_point_of_global_placement_but_one():
    net = build_model("mlp", (1, 28, 28), 10, batchnorm=True)
    everywhere = configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1))
    kept = configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, placement="leave_one_out",
                                            injection_layer=4))
    assert kept == [p for p in everywhere if p != 4] and 2 not in everywhere
    with pytest.raises(ValueError, match="injection_layer 2 is not a point global noise reaches"):
        configure_noise(net, NoiseConfig(kind="additive", noise_std=0.1, placement="leave_one_out",
                                         injection_layer=2))


# ---- trained weights ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """An MLP's weights in the three forms a user has them: a plain state_dict, this library's checkpoint, and
    one saved from nn.DataParallel."""
    folder = tmp_path_factory.mktemp("weights")
    net = _net("mlp", data, batchnorm=True)
    paths = {"plain": folder / "plain.pt", "checkpoint": folder / "checkpoint.pt", "parallel": folder / "parallel.pt"}
    torch.save(net.model.state_dict(), paths["plain"])
    save_checkpoint(net, RunConfig(model="mlp", batchnorm=True), paths["checkpoint"])
    torch.save({f"module.{k}": v for k, v in net.model.state_dict().items()}, paths["parallel"])
    return net, paths


@pytest.mark.parametrize("form", ["plain", "checkpoint", "parallel"])
def test_weights_are_read_from_a_state_dict_a_checkpoint_or_data_parallel(form, trained, data):
    net, paths = trained
    cfg = _cfg("mlp", _noise("additive", "activation", "walking", 4, 0.5), batchnorm=True,
               weights=str(paths[form]))
    result = evaluate_runs([cfg], data)[0]
    assert result.final_accuracy == plain_evaluation(net, cfg, data)[0]
    assert result.extra["evaluated"] and result.final_epochs_averaged == 1
    assert result.extra["weights_sha256"] == cfg.weights_sha256


def test_weights_that_do_not_match_the_model_name_the_missing_and_unexpected_keys(trained, tmp_path):
    _, paths = trained
    state = torch.load(paths["plain"])
    state["extra.weight"] = state.pop("1.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"does not match the model: missing keys 1\.weight; unexpected keys "
                                         r"extra\.weight"):
        load_weights(build_model("mlp", (1, 28, 28), 10, batchnorm=True).model, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"1\.weight has shape \(64, 784\) in the file and \(64, 64\) in the model"):
        load_weights(build_model("mlp", (1, 8, 8), 10, batchnorm=True).model, paths["plain"])


def test_the_weights_are_identified_by_their_content_not_their_path(trained, tmp_path):
    _, paths = trained
    copied = tmp_path / "elsewhere.pt"
    copied.write_bytes(paths["plain"].read_bytes())
    noise = _noise("additive", "activation", "walking", 4, 0.5)
    here, there = (Run.from_config(_cfg("mlp", noise, batchnorm=True, weights=str(p))) for p in (paths["plain"],
                                                                                                copied))
    other = Run.from_config(_cfg("mlp", noise, batchnorm=True, weights=str(paths["checkpoint"])))
    assert here.hash == there.hash != other.hash
    assert here.config.noise_key == there.config.noise_key
    trained_here = Run.from_config(_cfg("mlp", noise, batchnorm=True))
    assert trained_here.hash != here.hash  # never mistaken for the campaign's run that trains its own model


def test_runs_of_trained_weights_are_evaluated_never_trained(trained):
    _, paths = trained
    with pytest.raises(ValueError, match="evaluated, never trained"):
        RunConfig.from_dict({"model": "mlp", "weights": str(paths["plain"]),
                             "noise": {"kind": "additive", "noise_std": 0.5}})
    runs = [Run.from_config(_cfg("mlp", _noise("additive", "activation", "walking", p, 0.5), batchnorm=True,
                                 weights=str(paths["plain"]))) for p in (1, 2, 3, 4)]
    assert [len(u) for u in plan_units(runs)] == [4]
    assert [len(u) for u in plan_units(runs, workers=2)] == [2, 2]


# ---- test sets given as callables, and bad input -------------------------------------------------------------


@pytest.mark.parametrize("source", ["_sensitivity_data:mnist_tensors", "_sensitivity_data:mnist_dataset"])
def test_a_test_set_given_as_a_callable_gives_the_registered_datasets_numbers(source, trained):
    net, paths = trained
    noise = _noise("multiplicative", "activation", "walking", 3, 0.8)
    registered = _cfg("mlp", noise, batchnorm=True, weights=str(paths["plain"]), max_test=200)
    given = _cfg("mlp", noise, batchnorm=True, weights=str(paths["plain"]), dataset=source, max_test=None)
    result = evaluate_runs([given])[0]
    assert result.extra["clean_accuracy"] == evaluate_runs([registered])[0].extra["clean_accuracy"]
    assert result.final_accuracy == plain_evaluation(net, given, load_run_dataset(given))[0]  # its own draws


def test_a_test_set_the_model_cannot_take_is_one_line_before_any_evaluation(tmp_path):
    from walking_noise.study import study_run

    model = "_sensitivity_data:batch_dependent_mlp"  # takes 784 inputs
    torch.save(build_model(model, (1, 28, 28), 10).model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(3, 32, 32\)"):
        study_run({"model": model, "dataset": "_sensitivity_data:colour_images", "weights": str(tmp_path / "w.pt"),
                   "noise": {"kind": "additive", "noise_std": 0.5, "phase": "inference"}})


def test_a_callable_test_set_cannot_train_a_model():
    with pytest.raises(ValueError, match="can evaluate trained weights"):
        RunConfig(dataset="_sensitivity_data:mnist_tensors")


def test_a_model_whose_clean_output_is_not_finite_is_refused(data, tmp_path):
    net = _net("mlp", data)
    with torch.no_grad():
        net.model[1].weight[0, 0] = float("nan")
    torch.save(net.model.state_dict(), tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=r"output without noise \(s = 0\) is not finite"):
        evaluate_runs([_cfg("mlp", _noise("additive", "activation", "walking", 1, 0.1), weights=str(tmp_path /
                                                                                                    "nan.pt"))])
