"""A result is regenerable exactly: the report of one study uses exactly that study's runs (grid configs, and the
runs its adaptive searches choose now), and the per-run export refits without the store and resumes a campaign."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from walking_noise.study import load_study

from walking_noise.campaign import run_campaign
from walking_noise.export import read_export, write_export
from walking_noise.report.cli import add_subcommands
from walking_noise.results import REPORT_FIELDS, runs_from_store, study_runs
from walking_noise.store import LocalStore

STUDY = """\
seml:
  executable: exp.py
  name: {name}
  output_dir: logs
fixed:
  dataset: digits
  model: mlp
  max_train: 400
  max_test: 200
  training.epochs: 1
  noise.kind: additive
grid:
  seed: {{type: choice, options: [0, 1]}}
  noise.noise_std: {{type: choice, options: {levels}}}
"""

SEARCH = """\
seml:
  executable: exp.py
  name: searched
  output_dir: logs
fixed:
  dataset: digits
  model: mlp
  max_train: 400
  max_test: 200
  training.epochs: 2
  noise.kind: additive
  adaptive.low: 0.01
  adaptive.high: 100.0
  adaptive.seeds: [0, 1]
  adaptive.max_runs: 14
"""


def _study(tmp_path, text, name):
    (tmp_path / "exp.py").write_text("# stand-in executable for read_config\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return load_study(path)


def _run(study, store):
    return run_campaign(study, store, progress=False)


def test_a_studys_report_uses_exactly_its_own_runs(tmp_path):
    store = LocalStore(tmp_path / "store")
    mine = _study(tmp_path, STUDY.format(name="mine", levels="[0.1, 1.0]"), "mine")
    other = _study(tmp_path, STUDY.format(name="other", levels="[0.1, 3.0, 10.0]"), "other")
    _run(mine, store)
    _run(other, store)  # shares the runs at s = 0.1 with "mine", adds 4 of its own
    df = runs_from_store(store.path, fields=REPORT_FIELDS)
    assert len(df) == 8
    selected = study_runs(df, mine)
    assert sorted(selected["noise.noise_std"].unique()) == [0.1, 1.0] and len(selected) == 4
    assert selected.attrs["left_out"] == 4 and selected.attrs["study"] == "mine"


def test_a_searchs_runs_are_the_ones_it_chooses_now_not_what_else_the_store_holds(tmp_path):
    store = LocalStore(tmp_path / "store")
    search = _study(tmp_path, SEARCH, "searched")
    summary = _run(search, store)
    chosen = summary.searches[0].runs
    # runs another design or study left at levels this search never asks for
    leftover = _study(tmp_path, STUDY.format(name="leftover", levels="[0.0123, 45.6]").replace(
        "training.epochs: 1", "training.epochs: 2"), "leftover")
    _run(leftover, store)
    df = runs_from_store(store.path, fields=REPORT_FIELDS)
    selected = study_runs(df, search)
    assert len(selected) == chosen and selected.attrs["left_out"] == 4
    assert not set(selected["noise.noise_std"]) & {0.0123, 45.6}
    assert selected.attrs["selection_notes"] == []


def test_an_unfinished_search_is_cut_and_named(tmp_path):
    store = LocalStore(tmp_path / "store")
    search = _study(tmp_path, SEARCH, "searched")
    _run(search, store)
    df = runs_from_store(store.path, fields=REPORT_FIELDS)
    partial = df.drop(df.index[-2:])  # the last round's runs are missing
    selected = study_runs(partial, search)
    assert len(selected) == len(partial)
    assert len(selected.attrs["selection_notes"]) == 1 and "replayed only in part" in \
        selected.attrs["selection_notes"][0]


def test_the_export_refits_without_the_store_and_resumes_a_campaign(tmp_path, capsys):
    import argparse

    store = LocalStore(tmp_path / "store")
    study = _study(tmp_path, STUDY.format(name="mine", levels="[0.1, 1.0, 10.0]"), "mine")
    _run(study, store)
    df = runs_from_store(store.path, fields=REPORT_FIELDS + ("extra",))
    path = write_export(df, tmp_path / "runs.csv")
    table = read_export(path)
    assert len(table) == 6 and table["final_accuracy"].tolist() == pytest.approx(
        df.set_index("config_hash").loc[table["config_hash"], "final_accuracy"].tolist())
    assert all(isinstance(v, list) and len(v) == 1 for v in table["val_accuracy"])
    assert "data_dir" not in table.columns and "noise.noise_std" in table.columns
    # on a new machine: import the export, and the campaign has nothing left to run
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers())
    fresh = tmp_path / "fresh"
    args = parser.parse_args(["import", str(path), "--store", str(fresh)])
    assert args.func(args) == 0 and "6 runs imported" in capsys.readouterr().out
    summary = _run(study, LocalStore(fresh))
    assert summary.ran == 0 and summary.already_done == 6
    again = runs_from_store(fresh, fields=REPORT_FIELDS)
    merged = pd.merge(df, again, on="config_hash", suffixes=("", "_imported"))
    assert merged["final_accuracy"].tolist() == merged["final_accuracy_imported"].tolist()
    assert merged["layer_table"].tolist() == merged["layer_table_imported"].tolist()


def test_an_export_mixing_runs_from_before_and_after_a_new_config_field_imports(tmp_path):
    """Runs written before ``noise.site`` existed leave its cell empty in an export that also holds runs with it;
    the empty cell is the field's default (what the run's hash was computed without), not an invalid None."""
    from walking_noise.export import export_documents

    store = LocalStore(tmp_path / "store")
    study = _study(tmp_path, STUDY.format(name="mine", levels="[0.1, 1.0]"), "mine")
    _run(study, store)
    table = read_export(write_export(runs_from_store(store.path, fields=REPORT_FIELDS + ("extra",)),
                                     tmp_path / "runs.csv"))
    table["noise.site"] = [None] * (len(table) - 1) + ["activation"]  # old rows: no value
    docs = list(export_documents(table))
    assert [d["config_hash"] for d in docs] == table["config_hash"].tolist()
    assert {d["config"]["noise"]["site"] for d in docs} == {"activation"}


@pytest.mark.slow
def test_the_pinned_stopping_rule_replays_the_gap_studys_searches_to_the_runs_they_chose():
    """mnist_gap's searches were run with the stopping rule before issue 27 and pin it (``adaptive.error:
    covariance``). Replayed against the committed export, every search that replays to its end chooses every stored
    run of its base config: the report still finds the runs each search chose (with the calibrated rule the study's
    selection lost 287 of its 1,012 runs, 2026-12). Searches whose base config is also a grid series of the study
    (the authors' grids) are left out: their stored runs are the grid's as well."""
    from pathlib import Path

    from walking_noise.export import export_documents
    from walking_noise.identity import config_hash
    from walking_noise.selection import search_runs

    root = Path(__file__).resolve().parents[1]
    table = read_export(root / "results" / "mnist" / "gap" / "runs.csv")
    study = load_study(root / "seml_configs" / "mnist_gap.yaml")

    def base_key(config):  # the run's config but for what a search sets (and where it ran)
        return config_hash({**config, "seed": 0, "noise": {**config["noise"], "noise_std": 0.0}})

    stored: dict[str, set[str]] = {}
    for doc in export_documents(table[table["status"] == "COMPLETED"]):
        stored.setdefault(base_key(doc["config"]), set()).add(doc["config_hash"])
    latest = {h: {"status": st, "result": {"final_accuracy": acc}}
              for h, st, acc in zip(table["config_hash"], table["status"], table["final_accuracy"])}
    grid_bases = {base_key(run.values) for run in study.runs}
    replayed = 0
    for base, settings, chosen, note in search_runs(study, latest):
        assert settings["error"] == "covariance"
        if note is None and base_key(base) not in grid_bases:  # a search the store holds to its end
            assert stored[base_key(base)] <= chosen
            replayed += 1
    assert replayed >= 12
