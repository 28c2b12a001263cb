"""The paper's tables and figures from a small real campaign (trained once per module), and the fit/report CLI."""

import argparse
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from walking_noise import report
from walking_noise.units import execute_unit, plan_units
from walking_noise.study import run_config_dict
from walking_noise.report.cli import add_subcommands
from walking_noise.results import runs_from_store
from walking_noise.store import LocalStore

PNG = b"\x89PNG\r\n\x1a\n"
BASE = {"dataset": "mnist_5k", "model": "mlp", "max_train": 600, "max_test": 500,
        "training": {"epochs": 2, "lr": 0.01, "batch_size": 32}}
ROLES = [("inference", False), ("train_and_inference", False), ("train_and_inference", True)]


def campaign_configs(checkpoints):
    """~200 one-second runs: global additive (log grid) and multiplicative (linear grid, 8 levels), with and without
    BatchNorm; additive walking noise at points 0-2 in the paper's three roles (and with BatchNorm, clamped and
    unclamped at point 1); multiplicative walking noise with BatchNorm; a noisy and a clean run saving checkpoints."""
    out = []

    def add(**kw):
        out.append(run_config_dict({**BASE, **kw}))

    for bn, seed in itertools.product((False, True), (0, 1)):
        for s in (0.01, 0.03, 0.1, 0.3, 1, 3, 10):
            add(batchnorm=bn, seed=seed, noise={"kind": "additive", "noise_std": s})
        for s in (0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0):
            add(batchnorm=bn, seed=seed, noise={"kind": "multiplicative", "noise_std": s})
    walking_training = {**BASE["training"], "lr": 0.05}  # a larger step, so that clamping has weights to clamp
    for seed, s in itertools.product((0, 1), (0.1, 0.5, 2, 8, 30)):
        for point, (phase, clamp) in itertools.product((0, 1, 2), ROLES):
            add(seed=seed, weight_clamping=clamp, training=walking_training,
                noise={"kind": "additive", "noise_std": s, "placement": "walking", "injection_layer": point,
                       "phase": phase})
        for clamp in (False, True):
            add(batchnorm=True, seed=seed, weight_clamping=clamp, training=walking_training,
                noise={"kind": "additive", "noise_std": s, "placement": "walking", "injection_layer": 1})
    for seed, s, point in itertools.product((0, 1), (0, 0.1, 1, 10, 100, 1e4), (0, 1, 2)):
        ckpt = str(checkpoints / "noisy.pt") if (seed, s, point) == (0, 1e4, 2) else None
        add(batchnorm=True, seed=seed, checkpoint=ckpt,
            noise={"kind": "multiplicative", "noise_std": s, "placement": "walking", "injection_layer": point})
    add(batchnorm=True, checkpoint=str(checkpoints / "clean.pt"), noise={"kind": "none"})
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """(store path, runs DataFrame) of the real campaign, trained once for the whole module as the local runner
    trains it (compatible configs packed, inference-only configs trained once and evaluated many times)."""
    root = tmp_path_factory.mktemp("campaign")
    with LocalStore(root / "store") as store:
        for unit in plan_units(campaign_configs(root / "checkpoints")):
            assert {o["status"] for o in execute_unit(unit, "small", store)} == {"COMPLETED"}
    return root / "store", runs_from_store(root / "store")


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 5000


FIGURES = [report.fig1_fit, report.fig6_training_curves, report.fig7_double_logistic, report.fig2_walking_mu,
           report.fig3_amin, report.fig5_preserved_accuracy]


@pytest.mark.parametrize("make", FIGURES, ids=lambda f: f.__name__)
def test_each_figure_writes_a_png_from_real_runs(campaign, tmp_path, make):
    paths = make(campaign[1], tmp_path)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and all(_is_png(p) for p in pngs)
    assert all(p.parent == tmp_path for p in paths)


def test_table1_has_the_papers_layout_and_a_long_csv_of_fits(campaign, tmp_path):
    md, csv = report.table1(campaign[1], tmp_path)
    text = md.read_text()
    assert "| Dataset | Model | Additive w/o BN | Additive w/t BN | Multiplicative w/o BN | Multiplicative w/t BN |" \
        in text
    row = next(line for line in text.splitlines() if line.startswith("| MNIST-5k | MLP |"))
    assert row.count("±") == 4
    fits = pd.read_csv(csv)
    assert len(fits) == 4 and fits["converged"].all()
    expected = {"mu", "mu_err", "sigma", "delta_a", "a_min", "chi2_red", "fit_model", "axis", "n_seeds"}
    assert expected <= set(fits.columns)
    assert set(fits["model"]) == {"mlp"}  # the network, not the fit model
    additive = fits[fits["noise.kind"] == "additive"]
    assert set(additive["axis"]) == {"log10"}  # 0.01..10: log-spaced grid
    assert set(fits[fits["noise.kind"] == "multiplicative"]["axis"]) == {"linear"}  # 0..2: linear grid
    assert ((fits["mu"] > 0.05) & (fits["mu"] < 5)).all()


def test_preserved_accuracy_compares_every_point_at_one_noise_level(campaign, tmp_path):
    df = campaign[1]
    mult = df[(df["noise.kind"] == "multiplicative") & (df["noise.placement"] == "walking")
              & (df["noise.phase"] == "train_and_inference") & ~df["weight_clamping"].astype(bool)]
    point, bn = sorted(mult["noise.injection_layer"].unique())[0], bool(mult["batchnorm"].iloc[0])
    mult = mult[mult["batchnorm"].astype(bool) == bn]
    common = float(mult["noise.noise_std"].max())
    extra = mult[(mult["noise.injection_layer"] == point) & (mult["noise.noise_std"] == common)].copy()
    extra["noise.noise_std"], extra["final_accuracy"] = 1e30, 0.1  # e.g. float32 overflow beyond the grid
    table = pd.read_csv(report.fig5_preserved_accuracy(pd.concat([df, extra], ignore_index=True), tmp_path)[0])
    assert set(table[table["batchnorm"].astype(bool) == bn]["largest_noise"]) == {common}
    row = table[(table["noise.injection_layer"] == point) & (table["batchnorm"].astype(bool) == bn)].iloc[0]
    assert row["largest_tested_noise"] == 1e30
    runs = mult[mult["noise.injection_layer"] == point]
    expected = (runs[runs["noise.noise_std"] == common]["final_accuracy"].mean()
                / runs[runs["noise.noise_std"] == runs["noise.noise_std"].min()]["final_accuracy"].mean())
    assert row["preserved_accuracy"] == pytest.approx(expected)


def test_walking_mu_has_one_fit_per_point_and_role(campaign, tmp_path):
    paths = report.fig2_walking_mu(campaign[1], tmp_path)
    fits = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    unclamped = fits[~fits["batchnorm"]]
    assert len(unclamped) == 9 and set(unclamped["role"]) == {
        "noise only at inference", "noise in training", "noise in training, clamped weights"}
    assert set(unclamped["point"]) == {"0 Input", "1 FC", "2 ReLU"}
    assert len([p for p in paths if p.suffix == ".png"]) == 2  # without and with BatchNorm


def test_table2_ratio_is_the_mean_weight_magnitude_ratio_of_the_stored_runs(campaign, tmp_path):
    store_path, df = campaign
    md, csv = report.table2_weight_ratio(df, tmp_path)
    table = pd.read_csv(csv)
    assert set(table["layer"]) == {"1 FC"} and set(table["batchnorm"]) == {False, True}
    docs = [d for d in LocalStore(store_path).documents() if d["config"]["noise"]["placement"] == "walking"
            and d["config"]["noise"]["kind"] == "additive" and d["config"]["noise"]["phase"] == "train_and_inference"]
    for _, row in table.iterrows():
        def mean_w(clamped):
            vals = [d["result"]["weight_magnitudes"][row["layer"]] for d in docs
                    if d["config"]["batchnorm"] == row["batchnorm"] and d["config"]["weight_clamping"] == clamped
                    and d["config"]["noise"]["injection_layer"] == row["injection_layer"]
                    and d["config"]["noise"]["noise_std"] == row["noise_std"]]
            assert len(vals) == 2  # two seeds
            return sum(vals) / len(vals)

        assert row["ratio"] == pytest.approx(mean_w(False) / mean_w(True), rel=1e-12)
        assert row["noise_std"] in (0.1, 0.5, 2, 8, 30)
    assert "| Layer ID | 1 |" in md.read_text() and "with BatchNorm" in md.read_text()


def test_fig4_probe_evaluates_the_checkpoints_and_quantizes_every_point(campaign, tmp_path):
    pair = report.find_checkpoints(campaign[1])
    assert pair["injection_layer"] == 2
    paths = report.fig4_self_binarization(pair["noisy"], pair["clean"], None, None, tmp_path)
    assert sum(_is_png(p) for p in paths) == 2
    probe = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    assert len(probe) == 11 and probe["injected"].sum() == 1  # MLP with BatchNorm: 11 points
    assert probe.loc[probe["injected"], "point"].item() == "2 BN"
    acc = probe.filter(like="accuracy")
    assert ((acc >= 0) & (acc <= 1)).all().all()
    assert (probe["noisy_threshold"] >= 0).all()


@pytest.mark.slow
def test_write_report_links_every_png_and_lists_what_it_could_not_make(campaign, tmp_path):
    index = report.write_report(campaign[1], tmp_path / "full")
    text = index.read_text()
    pngs = sorted(p.name for p in (tmp_path / "full").glob("*.png"))
    assert len(pngs) >= 9
    for name in pngs:
        assert f"]({name})" in text
    not_made = text.split("## Not made")[1].split("\n## ")[0]
    lines = [line for line in not_made.splitlines() if line.startswith("- ")]
    # every output but the comparison with the paper, which has no Table I cell for the embedded dataset
    assert len(lines) == 1 and "Table I beside the paper" in lines[0] and "paper's Table I" in lines[0]
    assert (tmp_path / "full" / "index.html").read_text().count("<img") == len(pngs)

    only_global = campaign[1][campaign[1]["noise.placement"] == "global"]
    text = report.write_report(only_global, tmp_path / "global").read_text()
    missing = text.split("## Not made")[1].split("##")[0]
    for title in ("Table II", "Fig. 2", "Fig. 3", "Fig. 5", "Fig. 4"):
        assert title in missing
    assert "walking" in missing and "checkpoint" in missing
    for name in (p.name for p in (tmp_path / "global").glob("*.png")):
        assert f"]({name})" in text


def test_flat_and_zero_spread_curves_do_not_crash_the_report(campaign, tmp_path):
    df = campaign[1]
    runs = df[(df["noise.placement"] == "global") & (df["noise.kind"] == "additive") & ~df["batchnorm"]].copy()
    flat = runs.copy()
    flat["final_accuracy"] = 0.8  # never drops: no transition to fit
    zero = runs.copy()  # a clean logistic, every seed exactly equal
    zero["final_accuracy"] = 0.1 + 0.7 * expit(-(np.log10(zero["noise.noise_std"]) + 0.5) / 0.2)
    zero["batchnorm"] = True
    index = report.write_report(pd.concat([flat, zero], ignore_index=True), tmp_path)
    text = index.read_text()
    assert "Table I" in text and "## Fits that did not converge" in text
    fits = pd.read_csv(tmp_path / "table1_global_mu.csv")
    flat_fit = fits[~fits["batchnorm"]].iloc[0]
    assert not flat_fit["converged"] and "flat" in flat_fit["reason"]
    assert fits[fits["batchnorm"]]["converged"].all()
    assert "n.c." in (tmp_path / "table1_global_mu.md").read_text()
    assert "flat" in text.split("## Fits that did not converge")[1]


def _cli(argv):
    parser = argparse.ArgumentParser(prog="walking-noise")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_fit_cli_recovers_a_known_midpoint_from_a_csv(tmp_path, capsys):
    rng = np.random.default_rng(7)
    mu, sigma = 0.8, -0.12
    x = np.repeat([0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0], 3)
    seed = np.tile([0, 1, 2], 11)
    y = 0.8 / (1 + np.exp(-(x - mu) / sigma)) + 0.1 + rng.normal(0, 0.015, x.size)
    path = tmp_path / "curve.csv"
    pd.DataFrame({"noise_std": x, "accuracy": y, "seed": seed}).to_csv(path, index=False)
    assert _cli(["fit", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"mu", "mu_err", "sigma", "delta_a", "a_min", "converged"} <= set(result)
    assert result["converged"] and result["axis"] == "linear"
    assert abs(result["mu"] - mu) < 3 * result["mu_err"]
    assert _cli(["fit", str(path)]) == 0
    assert "midpoint noise level mu" in capsys.readouterr().out


def test_fit_cli_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="noise_std"):
        _cli(["fit", str(tmp_path / "missing.csv")])
    bad = tmp_path / "bad.csv"
    bad.write_text("sigma,acc\n1,0.5\n")
    with pytest.raises(ValueError, match="lacks column"):
        _cli(["fit", str(bad)])


@pytest.mark.slow
def test_report_cli_writes_the_index_from_a_store(campaign, tmp_path, capsys):
    assert _cli(["report", "--store", str(campaign[0]), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.md").is_file() and "report written" in capsys.readouterr().out
