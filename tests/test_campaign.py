"""The local runner: SEML expansion, validation before training, resume after a kill, failures recorded."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from _studies import tiny_study, tiny_text

from walking_noise.study import CampaignError, load_study, parse_filters

from walking_noise.campaign import run_campaign
from walking_noise.config import Run
from walking_noise.identity import config_hash
from walking_noise.store import COMPLETED, FAILED, LocalStore

ROOT = Path(__file__).resolve().parents[1]

def _study(tmp_path, text=None, name="tiny.yaml", **fmt):
    return tiny_study(tmp_path, text, name, **fmt)


def test_study_expands_with_seml_and_fills_defaults(tmp_path):
    study = load_study(_study(tmp_path))
    assert len(study) == 6
    assert {c["seed"] for c in study.configs} == {0, 1, 2}
    assert {c["noise"]["noise_std"] for c in study.configs} == {0.1, 1.0}
    assert all(c["training"]["lr"] == 1e-3 and c["noise"]["placement"] == "global" for c in study.configs)
    only = load_study(_study(tmp_path), parse_filters(["seed=1", "noise.noise_std=1.0"]))
    assert len(only) == 1 and only.configs[0]["seed"] == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("seml: {executable: exp.py}\nfixed:\n  dataset: [unclosed\n", "not valid YAML"),
        ("seml: {executable: exp.py}\nfixed:\n  modle: mlp\n", r"unknown run setting\(s\) \['modle'\]"),
        ("seml: {executable: exp.py}\nfixed:\n  dataset: imagenet\n", "unknown dataset 'imagenet'"),
        ("seml: {executable: exp.py}\nfixed:\n  noise.noise_std: -1\n  noise.kind: additive\n", "noise_std must"),
        ("fixed:\n  dataset: mnist_5k\n", "seml"),
        ("seml: {executable: exp.py}\nfixed:\n  noise.kind: additive\n  noise.noise_std: 1.0\n"
         "  noise.placement: walking\n  noise.injection_layer: 11\n", r"injection_layer 11 is not an injection point"),
    ],
)
def test_bad_study_is_one_clear_error_before_training(tmp_path, text, match):
    with pytest.raises(CampaignError, match=match):
        load_study(_study(tmp_path, text))


def test_unwritable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CampaignError, match="cannot be written"):
        run_campaign(load_study(_study(tmp_path)), LocalStore(blocker / "store"), progress=False)


def test_failing_config_is_recorded_and_the_campaign_goes_on(tmp_path):
    text = tiny_text(max_train=300, epochs=1).replace(
        "  noise.noise_std:", "  data_dir:\n    type: choice\n    options: [null]\n  noise.noise_std:")
    study = load_study(_study(tmp_path, text))
    study.runs[0] = Run.from_dict({**study.configs[0], "dataset": "mnist", "data_dir": str(tmp_path / "missing")})
    store = LocalStore(tmp_path / "store")
    summary = run_campaign(study, store, progress=False)
    assert (summary.completed, summary.failed) == (5, 1)
    failed = [d for d in store.documents() if d["status"] == FAILED]
    assert len(failed) == 1 and "FileNotFoundError" in "".join(failed[0]["fail_trace"])
    again = run_campaign(study, store, progress=False)
    assert (again.ran, again.skipped_failed) == (0, 1)
    retried = run_campaign(study, store, retry_failed=True, progress=False)
    assert (retried.ran, retried.failed) == (1, 1)


def _store_count(store_dir: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (store_dir / "runs").glob("*.jsonl"))


def test_runner_killed_mid_campaign_and_restarted_has_every_config_exactly_once(tmp_path):
    path = _study(tmp_path, max_train=2000, epochs=2)
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "walking_noise.cli", "run", str(path), "--store", str(store_dir),
           "--workers", "2", "--members", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while _store_count(store_dir) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, at once
    proc.wait(timeout=30)
    stored_before = _store_count(store_dir)
    assert 2 <= stored_before < 6, "the kill should land mid-campaign"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{stored_before} done" in done.stdout
    store = LocalStore(store_dir)
    docs = list(store.documents())
    expected = {config_hash(c) for c in load_study(path).configs}
    assert Counter(d["config_hash"] for d in docs) == Counter({h: 1 for h in expected})
    assert all(d["status"] == COMPLETED and 0 < d["result"]["final_accuracy"] <= 1 for d in docs)
    assert store.skipped_lines == 0


def test_torn_last_line_is_skipped_and_nothing_else_is_lost(tmp_path):
    store = LocalStore(tmp_path)
    with store:
        for i in range(3):
            store.put({"config": {"i": i}, "config_hash": str(i), "status": COMPLETED})
    segment = next((tmp_path / "runs").glob("*.jsonl"))
    with open(segment, "ab") as fh:
        fh.write(b'{"config": {"i": 3}, "config_ha')  # a writer killed mid-line
    docs = list(store.documents())
    assert [d["config"]["i"] for d in docs] == [0, 1, 2] and store.skipped_lines == 1


def test_a_store_read_again_parses_only_what_was_appended_and_reads_what_a_fresh_reader_reads(tmp_path):
    # an adaptive search reads the store every round: each segment is parsed once, then only its new lines
    writer, reader = LocalStore(tmp_path), LocalStore(tmp_path)
    with writer:
        writer.put({"config": {"i": 0}, "config_hash": "0", "status": COMPLETED})
        assert [d["config"]["i"] for d in reader.documents()] == [0]
        writer.put({"config": {"i": 1}, "config_hash": "1", "status": COMPLETED})
    segment = next((tmp_path / "runs").glob("*.jsonl"))
    with open(segment, "ab") as fh:
        fh.write(b'{"config": {"i": 2}, "config_ha')  # a line whose write has not finished yet
    assert [d["config"]["i"] for d in reader.documents()] == [0, 1] and reader.skipped_lines == 1
    with open(segment, "ab") as fh:
        fh.write(b'sh": "2", "status": "COMPLETED"}\nnot json\n')  # it finishes; then a line that is not JSON
    again = list(reader.documents())
    assert [d["config"]["i"] for d in again] == [0, 1, 2] and reader.skipped_lines == 1
    fresh = LocalStore(tmp_path)
    assert list(fresh.documents()) == again and fresh.skipped_lines == reader.skipped_lines
    assert reader.latest() == fresh.latest()
    replaced = segment.with_suffix(".new")  # a segment replaced by another file of the same name is read anew
    replaced.write_bytes(b'{"config": {"i": 7}, "config_hash": "7", "status": "COMPLETED"}\n')
    os.replace(replaced, segment)
    assert [d["config"]["i"] for d in reader.documents()] == [7] and reader.skipped_lines == 0


def test_batched_and_train_once_units_store_one_document_per_config(tmp_path):
    text = tiny_text(max_train=600, epochs=2).replace(
        "  noise.kind: additive", "  noise.kind: additive\n  noise.phase: {phase}")
    for phase in ("train_and_inference", "inference"):
        study = load_study(_study(tmp_path, text.replace("{phase}", phase), name=f"{phase}.yaml"))
        store = LocalStore(tmp_path / phase)
        summary = run_campaign(study, store, members=4, progress=False)
        assert (summary.completed, summary.failed) == (6, 0)
        docs = list(store.documents())
        assert len(docs) == 6 and {d["config_hash"] for d in docs} == {config_hash(c) for c in study.configs}
        engines = {d["result"]["extra"].get("engine") for d in docs}
        if phase == "inference":
            assert engines == {"train_once_evaluate_many"}
            # one clean model per seed: the two noise levels of a seed share its training curve
            by_seed = {}
            for d in docs:
                by_seed.setdefault(d["config"]["seed"], set()).add(tuple(d["result"]["train_loss"]))
            assert all(len(curves) == 1 for curves in by_seed.values())
            # the epochs the final accuracy averages: the second half of a 2-epoch run
            assert all(len(d["result"]["val_accuracy"]) == 1 for d in docs)
        else:
            assert engines == {"batched"}


def test_a_bundle_in_a_study_expands_into_its_members_locally(tmp_path):
    text = tiny_text(max_train=300, epochs=1).replace(
        "  noise.kind: additive\n", "  noise.kind: additive\n  bundle.training.lr: [0.001, 0.01]\n")
    study = load_study(_study(tmp_path, text))
    assert len(study) == 12  # 2 noise levels x 3 seeds, each a bundle of 2 learning rates
    assert sorted({c["training"]["lr"] for c in study.configs}) == [0.001, 0.01]
    assert all("bundle" not in c for c in study.configs)
    with pytest.raises(CampaignError, match="needs a non-empty list"):
        load_study(_study(tmp_path, text.replace("[0.001, 0.01]", "0.01"), name="bad.yaml"))


ADAPTIVE_BASE = """\
seml:
  executable: exp.py
fixed:
  dataset: mnist_5k
  model: mlp
  max_train: 1000
  max_test: 300
  training.epochs: 2
  noise.kind: additive
"""
ADAPTIVE_SETTINGS = """\
adaptive.low: 0.01
adaptive.high: 100.0
adaptive.target_rel_err: 0.15
adaptive.max_runs: 30
adaptive.seeds: [0, 1, 2]
"""
# 1 adaptive search (its runs are chosen as it goes)
ADAPTIVE_STUDY = ADAPTIVE_BASE + textwrap.indent(ADAPTIVE_SETTINGS, "  ")


def test_a_study_can_ask_for_an_adaptive_noise_grid(tmp_path):
    study = load_study(_study(tmp_path, ADAPTIVE_STUDY, name="adaptive.yaml"))
    assert len(study) == 0 and len(study.searches) == 1
    store = LocalStore(tmp_path / "store")
    summary = run_campaign(study, store, progress=False)
    search = summary.searches[0]
    docs = list(store.documents())
    assert len(docs) == search.runs <= 30  # every run of the search is stored like a grid run, once
    assert summary.ran == search.runs and summary.completed == search.runs
    assert {d["config"]["noise"]["noise_std"] for d in docs} == set(search.levels)
    assert search.fit.converged, search.fit.reason
    assert 0.01 < search.fit.mu < 100
    again = run_campaign(load_study(tmp_path / "adaptive.yaml"), store, progress=False)
    assert len(list(store.documents())) == len(docs)  # a rerun reuses the stored runs
    assert again.searches[0].fit.mu == pytest.approx(search.fit.mu)
    with pytest.raises(CampaignError, match="valid keys"):
        load_study(_study(tmp_path, ADAPTIVE_STUDY.replace("adaptive.max_runs", "adaptive.max_run"), name="b.yaml"))


def test_grid_runs_and_adaptive_searches_share_the_worker_pool(tmp_path):
    text = ADAPTIVE_BASE + "searched:\n  fixed:\n" + textwrap.indent(ADAPTIVE_SETTINGS, "    ") + """\
grid_part:
  fixed:
    noise.noise_std: 0.5
  grid:
    seed: {type: choice, options: [7, 8]}
"""
    study = load_study(_study(tmp_path, text, name="both.yaml"))
    assert len(study) == 2 and len(study.searches) == 1
    store = LocalStore(tmp_path / "store")
    summary = run_campaign(study, store, workers=2, progress=False)
    search = summary.searches[0]
    assert search.fit.converged, search.fit.reason
    docs = list(store.documents())
    assert len(docs) == 2 + search.runs and all(d["status"] == COMPLETED for d in docs)
    assert summary.ran == len(docs) and summary.failed == 0
    assert {d["config"]["seed"] for d in docs if d["config"]["noise"]["noise_std"] == 0.5} >= {7, 8}
    assert len({d["host"]["pid"] for d in docs}) == 2  # trained by the two worker processes


def test_overrides_replace_a_value_in_every_config(tmp_path):
    study = load_study(_study(tmp_path), overrides=parse_filters(["training.epochs=7", "max_test=50"]))
    assert len(study) == 6
    assert {c["training"]["epochs"] for c in study.configs} == {7} and {c["max_test"] for c in study.configs} == {50}


def _mlp_runs(n: int, **values) -> list:
    from walking_noise.study import study_run

    return [study_run({"model": "mlp", "seed": s, "noise": {"kind": "additive", "noise_std": 0.1}, **values})
            for s in range(n)]


def test_small_groups_are_split_over_the_workers():
    from walking_noise.units import plan_units

    runs = _mlp_runs(16)
    assert [len(u) for u in plan_units(runs)] == [16]  # one worker: one full batch
    assert [len(u) for u in plan_units(runs, workers=2)] == [8, 8]  # two workers: neither idles
    assert [len(u) for u in plan_units(_mlp_runs(40), workers=2)] == [16, 16, 8]  # large groups: full batches
    assert [len(u) for u in plan_units(_mlp_runs(3), workers=4)] == [1, 1, 1]
    units = plan_units(runs, members=4, workers=2)
    assert [len(u) for u in units] == [4] * 4
    assert sorted(run.config.seed for u in units for run in u) == list(range(16))


def test_packs_hold_one_seed_so_their_members_share_the_data_order():
    """A walking grid listed seed-major or point-major: the planner cuts packs of one seed (one data order, so one
    input tensor for the pack, batched._ToConv), with the input-noise runs (point 0) together."""
    from walking_noise.study import study_run
    from walking_noise.units import plan_units

    runs = [study_run({"model": "lenet5", "seed": seed, "noise": {"kind": "additive", "noise_std": s,
                                                                   "placement": "walking", "injection_layer": p}})
            for p in range(4) for s in (0.5, 1.0) for seed in range(3)]
    units = plan_units(runs, members=4)
    assert sorted(len(u) for u in units) == [4, 4, 4, 4, 4, 4]
    for unit in units:
        assert len({r.config.seed for r in unit}) == 1
    first = [u for u in units if any(r.config.noise.injection_layer == 0 for r in u)]
    assert len(first) == 3 and all(sum(r.config.noise.injection_layer == 0 for r in u) == 2 for u in first)


def test_workers_fork_only_where_it_is_safe(monkeypatch):
    from walking_noise.campaign import START_METHOD_ENV, worker_start_method

    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    cpu = [run.values for run in _mlp_runs(2, device="cpu")]
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert worker_start_method(cpu) == expected
    import torch

    if not torch.cuda.is_available():  # asking for a GPU that is not there: never fork on its account
        assert worker_start_method(cpu + [dict(cpu[0], device="cuda")]) == "spawn"
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    assert worker_start_method(cpu) == "spawn"


def test_a_failing_batch_is_visible_in_the_log_and_in_its_documents(tmp_path, monkeypatch, caplog):
    from walking_noise import batched, units
    from walking_noise.config import Run

    def broken(*_args, **_kwargs):
        raise RuntimeError("packed layer exploded")

    monkeypatch.setattr(batched, "train_members", broken)
    base = {"dataset": "digits", "model": "mlp", "max_train": 200, "max_test": 100, "training": {"epochs": 1}}
    unit = [Run.from_dict({**base, "seed": s}) for s in (0, 1)]
    store = LocalStore(tmp_path / "store")
    with caplog.at_level("WARNING", logger="walking_noise.units"):
        outcomes = units.execute_unit(unit, "test", store)
    assert [o["status"] for o in outcomes] == [COMPLETED, COMPLETED]  # each ran on its own
    assert "a batch of 2 configs failed (RuntimeError: packed layer exploded)" in caplog.text
    docs = list(store.latest().values())
    assert len(docs) == 2
    assert {d["batch_fallback"] for d in docs} == {"RuntimeError: packed layer exploded"}
    assert {d["result"]["extra"]["engine"] for d in docs} == {"single"}


def test_a_bundled_study_runs_the_same_configs_batched_as_the_local_runner(tmp_path):
    import yaml

    from walking_noise.units import bundled_study, plan_units

    study = load_study(_study(tmp_path))
    bundled = bundled_study(study)
    assert sum(k.startswith("unit_") for k in bundled) == len(plan_units(study.runs))
    path = tmp_path / "tiny.bundled.yaml"
    path.write_text(yaml.safe_dump(bundled, sort_keys=False))
    again = load_study(path)
    assert sorted(config_hash(c) for c in again.configs) == sorted(config_hash(c) for c in study.configs)
