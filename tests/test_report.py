"""The paper's tables and figures from a campaign of synthetic runs with known curves (plus two real trainings for
Fig. 4's checkpoints), each checked for a property its truth fixes, and the fit/report CLI."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest
from _synthetic import synthetic_doc
from scipy.special import expit

from walking_noise import report
from walking_noise.config import Run
from walking_noise.report.cli import add_subcommands
from walking_noise.report.global_noise import _curve_levels
from walking_noise.report.common import series_of
from walking_noise.results import runs_from_store
from walking_noise.store import LocalStore
from walking_noise.units import execute_unit

PNG = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)
# the truths the synthetic runs are drawn from
GLOBAL_MU = {("additive", False): 0.3, ("additive", True): 1.0, ("multiplicative", False): 0.8,
             ("multiplicative", True): 1.2}
ROLES = {("inference", False): "noise only at inference", ("train_and_inference", False): "noise in training",
         ("train_and_inference", True): "noise in training, clamped weights"}
WALKING_MU = {(point, role): mu * factor for point, mu in ((0, 0.5), (1, 1.0), (2, 2.0))
              for role, factor in zip(ROLES, (1.0, 2.0, 2.5))}
UNCLAMPED_W = {"1 FC": 0.30, "3 FC": 0.25, "5 FC": 0.20, "7 FC": 0.40}
CLAMP_RATIO = 1.5
PARTIAL = {0: (0.5, 0.10), 1: (1.0, 0.50), 2: (2.0, 0.70)}  # point: (mu, a_min) of multiplicative walking, BN
BASE = {"dataset": "mnist_5k", "model": "mlp", "training": {"epochs": 6}}


def _accuracy(x, mu, sigma, a_min=0.10, a_max=0.95):
    return a_min + (a_max - a_min) * expit(-(x - mu) / sigma)


def _rising(final):  # a validation curve that converges to its final accuracy
    return [final * (1 - 0.5 ** (epoch + 2)) for epoch in range(6)]


def synthetic_campaign():
    """Global noise (both kinds, with and without BatchNorm), additive walking noise at points 0-2 in the paper's
    three roles, multiplicative walking noise with partial drops: 3 seeds each, known mu and a_min."""
    rng = np.random.default_rng(3)
    docs = []

    def add(acc, **config):
        acc = float(acc + rng.normal(0, 0.004))
        docs.append(synthetic_doc(acc, curve=_rising(acc), base=BASE, **config))

    for (kind, bn), mu in GLOBAL_MU.items():
        levels = np.logspace(-2, 1, 7) if kind == "additive" else np.linspace(0, 2, 9)
        for s in levels:
            x, m, sig = (np.log10(s), np.log10(mu), 0.15) if kind == "additive" else (s, mu, 0.1)
            for seed in SEEDS:
                add(_accuracy(x, m, sig), batchnorm=bn, seed=seed, noise={"kind": kind, "noise_std": float(s)})
    for (point, (phase, clamp)), mu in WALKING_MU.items():
        for s in np.logspace(-2, 2, 9):
            for seed in SEEDS:
                weights = {k: v / (CLAMP_RATIO if clamp else 1) for k, v in UNCLAMPED_W.items()}
                add(_accuracy(np.log10(s), np.log10(mu), 0.2), seed=seed, weight_clamping=clamp,
                    weight_magnitudes=weights if phase != "inference" else None,
                    noise={"kind": "additive", "noise_std": float(s), "placement": "walking",
                           "injection_layer": point, "phase": phase})
    for point, (mu, a_min) in PARTIAL.items():
        for s in np.logspace(-2, 4, 13):
            for seed in SEEDS:
                add(_accuracy(np.log10(s), np.log10(mu), 0.2, a_min=a_min), batchnorm=True, seed=seed,
                    noise={"kind": "multiplicative", "noise_std": float(s), "placement": "walking",
                           "injection_layer": point})
    return docs


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """(store path, runs DataFrame): the synthetic campaign, and two real trainings that save Fig. 4's checkpoints
    (multiplicative walking noise at point 2 of the MLP with BatchNorm, and its clean twin)."""
    root = tmp_path_factory.mktemp("campaign")
    small = {"dataset": "mnist_5k", "model": "mlp", "batchnorm": True, "max_train": 600, "max_test": 300,
             "training": {"epochs": 2}}
    pair = [Run.from_dict({**small, "checkpoint": str(root / "noisy.pt"), "noise": {
                "kind": "multiplicative", "noise_std": 1e4, "placement": "walking", "injection_layer": 2}}),
            Run.from_dict({**small, "checkpoint": str(root / "clean.pt")})]
    with LocalStore(root / "store") as store:
        for doc in synthetic_campaign():
            store.put(doc)
        for run in pair:
            assert [o["status"] for o in execute_unit([run], "small", store)] == ["COMPLETED"]
    return root / "store", runs_from_store(root / "store")


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 5000


def test_table1_recovers_the_known_midpoints_in_the_papers_layout(campaign, tmp_path):
    md, csv = report.table1(campaign[1], tmp_path)
    assert "| Dataset | Model | Additive w/o BN | Additive w/t BN | Multiplicative w/o BN | Multiplicative w/t BN |" \
        in md.read_text()
    fits = pd.read_csv(csv)
    assert len(fits) == 4 and fits["converged"].all()
    assert set(fits[fits["noise.kind"] == "additive"]["axis"]) == {"log10"}  # 0.01..10: log-spaced grid
    assert set(fits[fits["noise.kind"] == "multiplicative"]["axis"]) == {"linear"}  # 0..2: linear grid
    for row in fits.itertuples():
        truth = GLOBAL_MU[(row[fits.columns.get_loc("noise.kind") + 1], bool(row.batchnorm))]
        assert row.mu == pytest.approx(truth, rel=0.05)
    # one column, one meaning: mu_err is the quoted error (half the 68 % interval), the covariance error is apart
    assert "mu_err_reported" not in fits.columns
    assert fits["mu_err"].to_numpy() == pytest.approx(((fits["mu_hi68"] - fits["mu_lo68"]) / 2).to_numpy())
    assert not np.allclose(fits["mu_err"], fits["mu_err_covariance"])


def test_fig1_puts_every_global_series_on_a_panel_and_pages_beyond_the_limit(campaign, tmp_path):
    assert [p.name for p in report.fig1_fit(campaign[1], tmp_path)] == ["fig1_fit.png"]
    pages = report.fig1_fit(campaign[1], tmp_path / "paged", max_panels=3)
    assert [p.name for p in pages] == ["fig1_fit.png", "fig1_fit_2.png"] and all(_is_png(p) for p in pages)


def test_fig6_draws_the_levels_around_each_transition(campaign, tmp_path):
    df = campaign[1]
    series = next(s for s in series_of(df[(df["noise.placement"] == "global") & (df["noise.kind"] == "multiplicative")
                                          & ~df["batchnorm"].astype(bool)]))
    chosen = _curve_levels(series, 4)
    assert chosen[0] == series.levels.min() and chosen[-1] == series.levels.max()  # both plateaus
    assert 0.75 in chosen or 1.0 in chosen  # the level nearest the true mu 0.8
    assert all(_is_png(p) for p in report.fig6_training_curves(df, tmp_path))


def test_fig2_recovers_each_points_midpoint_in_each_role(campaign, tmp_path):
    paths = report.fig2_walking_mu(campaign[1], tmp_path)
    fits = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    fits = fits[~fits["batchnorm"]]
    assert set(fits["role"]) == set(ROLES.values()) and len(fits) == 9
    for (point, role), mu in WALKING_MU.items():
        row = fits[(fits["noise.injection_layer"] == point) & (fits["role"] == ROLES[role])].iloc[0]
        assert row["mu"] == pytest.approx(mu, rel=0.1)
    assert [p.suffix for p in paths].count(".png") == 1  # one figure: the walking runs are without BatchNorm


def test_fig3_recovers_the_lower_bound_of_each_partial_drop(campaign, tmp_path):
    table = pd.read_csv(next(p for p in report.fig3_amin(campaign[1], tmp_path) if p.suffix == ".csv"))
    table = table[table["n_levels"] == 13]  # the synthetic series (not Fig. 4's trained run)
    for point, (_, a_min) in PARTIAL.items():
        row = table[table["noise.injection_layer"] == point].iloc[0]
        assert row["a_min"] == pytest.approx(a_min, abs=0.02)


def test_preserved_accuracy_compares_every_point_at_one_noise_level(campaign, tmp_path):
    df = campaign[1]
    mult = df[(df["noise.kind"] == "multiplicative") & (df["noise.placement"] == "walking")
              & df["batchnorm"].astype(bool) & (df["noise.noise_std"] < 1e4 + 1)]
    mult = mult[mult["checkpoint"].isna()] if "checkpoint" in mult else mult
    common = float(mult["noise.noise_std"].max())
    extra = mult[(mult["noise.injection_layer"] == 0) & (mult["noise.noise_std"] == common)].copy()
    extra["noise.noise_std"], extra["final_accuracy"] = 1e30, 0.1  # e.g. float32 overflow beyond the grid
    table = pd.read_csv(report.fig5_preserved_accuracy(pd.concat([df, extra], ignore_index=True), tmp_path)[0])
    assert set(table["largest_noise"]) == {common}
    row = table[table["noise.injection_layer"] == 0].iloc[0]
    assert row["largest_tested_noise"] == 1e30
    for point, (_, a_min) in PARTIAL.items():  # at s = 1e4 every curve sits on its floor: a_min / a_max
        row = table[table["noise.injection_layer"] == point].iloc[0]
        assert row["preserved_accuracy"] == pytest.approx(a_min / 0.95, abs=0.02)
        assert row["chance_preserved"] == pytest.approx(0.1 / 0.95, abs=0.01)  # the dashed floor: chance / clean


def test_table2_is_the_mean_weight_magnitude_ratio_unclamped_over_clamped(campaign, tmp_path):
    md, csv = report.table2_weight_ratio(campaign[1], tmp_path)
    table = pd.read_csv(csv)
    assert set(table["layer"]) == {"1 FC"} and set(table["ratio"].round(12)) == {CLAMP_RATIO}
    assert "| Layer ID | 1 |" in md.read_text()


def test_fig4_probe_evaluates_the_checkpoints_and_quantizes_every_point(campaign, tmp_path):
    pair = report.find_checkpoints(campaign[1])
    assert pair["injection_layer"] == 2
    paths = report.fig4_self_binarization(pair["noisy"], pair["clean"], None, None, tmp_path)
    assert sum(_is_png(p) for p in paths) == 2
    probe = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
    assert len(probe) == 11 and probe["injected"].sum() == 1  # MLP with BatchNorm: 11 points
    assert probe.loc[probe["injected"], "point"].item() == "2 BN"


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
    # every output but the comparison with the paper, which has no Table I cell for the embedded dataset, and the
    # sensitivity of a trained model, which a training campaign does not measure (no run evaluates stored weights)
    assert len(lines) == 2, lines
    assert "Table I beside the paper" in lines[0] and "paper's Table I" in lines[0]
    assert "point by point" in lines[1] and "no runs that evaluate trained weights" in lines[1]
    assert (tmp_path / "full" / "index.html").read_text().count("<img") == len(pngs)

    only_global = campaign[1][campaign[1]["noise.placement"] == "global"]
    text = report.write_report(only_global, tmp_path / "global").read_text()
    missing = text.split("## Not made")[1].split("##")[0]
    for title in ("Table II", "Fig. 2", "Fig. 3", "Fig. 5", "Fig. 4"):
        assert title in missing
    assert "walking" in missing and "checkpoint" in missing


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
