"""A sensitivity scan of a trained model: the command, its outputs and resume, its one-line errors before any
evaluation, and agreement with what the campaign's inference-only path measures for the same weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from walking_noise.batched import evaluate_snapshots
from walking_noise.cli import main
from walking_noise.config import RunConfig
from walking_noise.fit import fit_midpoint
from walking_noise.results import runs_from_store
from walking_noise.scan import sensitivity, write_scan
from walking_noise.sensitivity import trained_network
from walking_noise.sites import SITES
from walking_noise.training import load_checkpoint, load_run_dataset, train_run

MAX_TEST = 500


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The MLP with BatchNorm trained once on the embedded dataset, saved by the library (its checkpoint)."""
    path = tmp_path_factory.mktemp("trained") / "mlp_bn.pt"
    train_run(RunConfig.from_dict({"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "max_train": 1500,
                                   "max_test": MAX_TEST, "training": {"epochs": 3}, "checkpoint": str(path)}))
    return path


@pytest.mark.slow
def test_the_command_writes_the_table_ranking_figure_and_export_and_resumes(checkpoint, tmp_path, capsys):
    out = tmp_path / "scan"
    argv = ["sensitivity", "--model", "mlp", "--batchnorm", "--weights", str(checkpoint), "--dataset", "mnist_5k",
            "--sites", "activation,weight", "--injection-layers", "1,4", "--draws", "2", "--target", "0.1", "--max-test", "200",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("sensitivity.csv", "sensitivity.md", "sensitivity_ranking.md", "sensitivity_mu_additive.png",
                 "runs.csv", "index.html", "sensitivity.yaml"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "sensitivity.csv")
    assert sorted(zip(table["site"], table["index"])) == [("activation", 1), ("activation", 4), ("weight", 1),
                                                         ("weight", 4)]
    assert "| walking | weight | additive | 4 FC |" in printed and "Per-point sensitivity" in (
        out / "index.html").read_text()
    stored = len(runs_from_store(out / "store"))
    assert main(argv) == 0  # resumed: every run is in the store already
    assert len(runs_from_store(out / "store")) == stored
    assert pd.read_csv(out / "sensitivity.csv").equals(table)


def test_the_scan_runs_as_a_study_through_walking_noise_run(checkpoint, tmp_path):
    study = write_scan("mlp", checkpoint, "mnist_5k", tmp_path, batchnorm=True, injection_layers=[7], draws=2,
                       target_rel_err=0.1, max_test=200)
    assert main(["run", str(study), "--store", str(tmp_path / "store"), "--no-progress"]) == 0
    runs = runs_from_store(tmp_path / "store")
    assert set(runs["noise.injection_layer"]) == {7} and runs["noise.phase"].eq("inference").all()
    assert all(extra["evaluated"] for extra in runs["extra"])
    # five coarse levels and a 4-parameter logistic can claim a small error with one level on the slope: the scan
    # measures at least MIN_LEVELS levels before its error may stop it
    assert runs["noise.noise_std"].nunique() >= 7


def test_a_scan_resumed_in_parts_measures_what_one_run_measures(checkpoint, tmp_path):
    from walking_noise.campaign import run_campaign
    from walking_noise.store import LocalStore
    from walking_noise.study import load_study

    study = write_scan("mlp", checkpoint, "mnist_5k", tmp_path, batchnorm=True, injection_layers=[1, 4], draws=2,
                       target_rel_err=0.1, max_test=200)
    run_campaign(load_study(study), LocalStore(tmp_path / "once"), progress=False)
    parts = LocalStore(tmp_path / "parts")
    run_campaign(load_study(study, {"noise.injection_layer": 4}), parts, progress=False)  # interrupted: one point
    run_campaign(load_study(study), parts, progress=False)
    once, resumed = (runs_from_store(tmp_path / name).set_index("config_hash")["final_accuracy"]
                     for name in ("once", "parts"))
    assert len(once) > 10 and resumed.sort_index().equals(once.sort_index())


@pytest.mark.parametrize("change, says", [
    ({"sites": ("weight",), "injection_layers": [2]}, "injection_layer 2 is not an injection point of mlp"),
    ({"sites": ("activation",), "modes": ("leave-one-out",), "injection_layers": [2]}, "not a point global noise reaches"),
    ({"sites": ("gate",)}, "unknown site(s) gate; valid: activation, weight, mac"),
])
def test_a_point_or_site_that_cannot_be_scanned_is_one_line_before_any_evaluation(change, says, checkpoint,
                                                                                  tmp_path):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        write_scan("mlp", checkpoint, "mnist_5k", tmp_path, batchnorm=True, **change)
    assert not (tmp_path / "store").exists()


def test_bad_weights_are_one_line_errors_of_the_command(checkpoint, tmp_path, capsys):
    assert main(["sensitivity", "--model", "mlp", "--weights", str(checkpoint), "--dataset", "mnist_5k",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing keys" in err and "unexpected keys" in err


@pytest.mark.slow
def test_walking_mu_per_point_agrees_with_the_campaigns_inference_only_evaluation(checkpoint, tmp_path):
    """The same trained weights measured twice with independent draws: by the sensitivity scan (adaptive levels,
    the engine) and by the campaign's inference-only path (evaluate_snapshots: the model's evaluation at the levels
    the scan chose, with the draws of the campaign's own runs). mu per point must agree within the errors."""
    table = sensitivity("mlp", checkpoint, "mnist_5k", tmp_path, batchnorm=True, draws=3, max_test=MAX_TEST,
                        progress=False)
    runs = runs_from_store(tmp_path / "store")
    net, _ = load_checkpoint(checkpoint)
    campaign = RunConfig.from_dict({"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "max_test": MAX_TEST,
                                    "training": {"epochs": 3}})
    data = load_run_dataset(campaign)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert len(table) == 11 and table["converged"].all()
    for _, row in table.iterrows():
        levels = sorted(set(runs.loc[runs["noise.injection_layer"] == row["index"], "noise.noise_std"]))
        x, y, seeds = [], [], []
        for s in levels:
            for seed in range(3):
                cfg = RunConfig.from_dict({**campaign.to_dict(), "seed": seed, "noise": {
                    "kind": "additive", "noise_std": s, "placement": "walking", "injection_layer": int(row["index"]),
                    "phase": "inference"}})
                x.append(s), seeds.append(seed)
                y.append(evaluate_snapshots([state], net, cfg, data, first_epoch=2)["val_accuracy"][0])
        fit = fit_midpoint(np.array(x), np.array(y), seeds=np.array(seeds), axis="log10", chance_level=0.1)
        assert fit.converged, row["point"]
        err = max(e for e in (fit.mu_err, fit.mu_err_jackknife) if e is not None)
        assert abs(fit.mu - row["mu"]) <= 3 * np.hypot(err, row["mu_err"]), (row["point"], fit.mu, err, row["mu"])
    torch.testing.assert_close(net.state_dict(), state)  # the campaign path left the weights as they were


def test_a_scan_with_operation_points_visits_the_residual_addition(tmp_path):
    """``points: operations`` reaches the sensitivity path: the scan of a residual CNN walks its ``add`` point,
    which module points do not have."""
    import yaml

    from walking_noise.models import build_model

    model = "walking_noise.examples.residual_cnn:residual_cnn"
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model(model, (1, 28, 28), 10, points="operations").model.state_dict(), weights)
    study = yaml.safe_load(write_scan(model, weights, "mnist_5k", tmp_path, points="operations", draws=2,
                                      max_test=100, sites=("activation", "weight")).read_text())
    options = study["walking_activation_additive"]["grid"]["noise.injection_layer"]["options"]
    ops = build_model(model, (1, 28, 28), 10, points="operations").injection_points
    names = {p.index: p.label for p in ops}
    assert study["fixed"]["points"] == "operations" and any("add" in names[i] for i in options)
    modules = build_model(model, (1, 28, 28), 10).injection_points
    assert not any("add" in p.label for p in modules)
    # the scan enumerates the operation points themselves, not the module list's indices (which differ)
    assert options == [p.index for p in ops]
    weight = study["walking_weight_additive"]["grid"]["noise.injection_layer"]["options"]
    assert weight == [p.index for p in ops if SITES["weight"].acts_at(p.kind)]
    assert [p.index for p in modules if SITES["weight"].acts_at(p.kind)] != weight
    # and the evaluated network has the operation points (a run's config names them)
    cfg = RunConfig.from_dict({"model": model, "dataset": "mnist_5k", "weights": str(weights), "points": "operations",
                               "noise": {"kind": "none", "phase": "inference"}})
    net = trained_network(cfg, load_run_dataset(cfg, torch.device("cpu")))
    assert [p.label for p in net.injection_points] == [p.label for p in ops]
