"""The Sacred/SEML entry point: config validation, plain results, per-run metric names, the command line, and the
real ``seml add`` + observed-run path against a mongomock database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from walking_noise.study import study_run
from walking_noise.config import RunConfig
from walking_noise.identity import config_hash

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "walking_noise_experiment.py"
SMOKE = ROOT / "seml_configs" / "smoke.yaml"
QUICK = {"training": {"epochs": 2}, "max_train": 400, "max_test": 200}


@pytest.fixture(scope="module")
def exp():
    """The experiment module, imported under the name SEML's import_exe gives it (so both share one object)."""
    sys.path.insert(0, str(EXPERIMENT.parent))
    try:
        import walking_noise_experiment
    finally:
        sys.path.remove(str(EXPERIMENT.parent))
    return walking_noise_experiment


@pytest.fixture(autouse=True)
def _quiet_logs(quiet):
    yield


class Recorder:
    """A Sacred observer that only remembers which events it saw."""

    priority = 0

    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_event"):
            return lambda *args, **kwargs: self.events.append(name)
        raise AttributeError(name)

    def join(self) -> None:
        pass


def is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


# ---- in-process, unobserved ------------------------------------------------------------------------------------

def test_defaults_are_runconfigs(exp):
    run = exp.ex.run(command_name="validate")
    assert run.result["config"] == RunConfig().to_dict()
    assert run.result["config_hash"] == config_hash(RunConfig().to_dict())


@pytest.mark.parametrize("updates, named", [
    ({"datset": "mnist"}, "datset"),                        # unknown top-level key
    ({"training": {"epcohs": 1}}, "epcohs"),                # unknown nested key
    ({"noise": {"kind": "walking"}}, "walking"),            # bad value
    ({"model": "resnet"}, "resnet"),
    ({"noise": {"kind": "additive", "placement": "walking"}}, "injection_layer"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"model": "math:pi"}, "model math:pi is a float, not a callable"),
    ({"model": "math:sqrt"}, "model math:sqrt cannot be built"),
    ({"model": "torchvision.models:resnet18", "dataset": "cifar10", "model_kwargs": {"no_such_kwarg": 1}},
     "unexpected keyword argument 'no_such_kwarg'"),
])
@pytest.mark.parametrize("force", [False, True])
def test_invalid_config_is_rejected_before_the_run_starts(exp, updates, named, force):
    """With and without --force (SEML always passes it): the message names the key or value, and no observer
    ever hears of the run, so nothing is trained and no half-run document is written."""
    recorder = Recorder()
    exp.ex.observers.append(recorder)
    try:
        with pytest.raises(exp.InvalidRunConfig, match=named):
            exp.ex.run(config_updates=updates, options={"--force": force})
    finally:
        exp.ex.observers.remove(recorder)
    assert recorder.events == []


def test_seml_experiment_does_not_reject_added_keys_itself():
    """Why the experiment validates every key: a plain Sacred experiment rejects an unknown config key, but a
    seml.Experiment does not (its db_collection/overwrite config scopes re-declare every update)."""
    import sacred
    import seml

    def main(_config: dict) -> dict:
        return dict(_config)

    plain = sacred.Experiment("plain", save_git_info=False)
    plain.add_config({"a": 1})
    plain.main(main)
    with pytest.raises(sacred.utils.ConfigAddedError, match="datset"):
        plain.run(config_updates={"datset": 1})

    wrapped = seml.Experiment("wrapped", save_git_info=False, logger=None, collect_stats=False)
    wrapped.add_config({"a": 1})
    wrapped.main(main)
    assert wrapped.run(config_updates={"datset": 1}).result["datset"] == 1


def test_run_returns_plain_result_with_hash_and_checkpoint(exp, tmp_path):
    checkpoint = tmp_path / "ckpt" / "model.pt"
    updates = {**QUICK, "noise": {"kind": "additive", "noise_std": 0.5}, "checkpoint": str(checkpoint)}
    run = exp.ex.run(config_updates=updates)
    result = run.result
    assert run.status == "COMPLETED" and is_plain(result)
    cfg = RunConfig.from_dict(updates)
    assert result["config_hash"] == config_hash(cfg.to_dict())
    assert len(result["val_accuracy"]) == 2 and result["final_epochs_averaged"] == 1
    assert result["final_accuracy"] == result["val_accuracy"][-1]
    assert result["active_points"] == list(range(8))
    assert result["checkpoint"] == str(checkpoint) and checkpoint.is_file()


def test_an_adaptive_search_runs_in_one_experiment(exp):
    updates = {**QUICK, "noise": {"kind": "additive"},
               "adaptive": {"low": 0.01, "high": 100.0, "target_rel_err": 0.3, "max_runs": 24, "seeds": [0, 1, 2]}}
    result = exp.ex.run(config_updates=updates).result
    assert is_plain(result)
    search = result["adaptive"]
    assert result["bundle_size"] == search["runs"] <= 24
    assert {m["config"]["noise"]["noise_std"] for m in result["bundle"]} == {
        s for levels in search["rounds"] for s in levels}
    assert search["stopped_because"]


def test_metric_prefix(exp):
    assert exp.metric_prefix("wn_table1", 7) == "wn_table1.7"
    assert exp.metric_prefix(None, None) == "local.unobserved"
    assert exp.metric_prefix("a", 7) != exp.metric_prefix("b", 7)


# ---- command line ------------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(EXPERIMENT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_command_line_runs_one_experiment():
    done = _cli("with", "training.epochs=1", "noise.kind=additive", "noise.noise_std=0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Completed" in done.stdout + done.stderr


def test_command_line_typo_fails_naming_the_key():
    done = _cli("with", "training.epcohs=1")
    assert done.returncode != 0
    assert "epcohs" in done.stderr and "InvalidRunConfig" in done.stderr
    assert "epoch 1/" not in done.stdout + done.stderr  # rejected before any training


# ---- seml add and observed runs against mongomock ----------------------------------------------------------------

DB_NAME = "walking_noise_test"


@pytest.fixture
def mongo(monkeypatch):
    """A mongomock database behind SEML's connection functions and behind the observer SEML attaches to a run.

    Seams (seml 0.5.7): ``seml.database.get_mongodb_config`` (no credentials file) and ``get_mongo_client``
    (used by ``get_database``, hence by ``get_collection``); ``seml.experiment.experiment.create_mongodb_observer``
    (SEML's own factory insists on a real ``pymongo.MongoClient``), replaced by Sacred's ``MongoObserver.create_from``
    on the same runs/metrics collections SEML would use. ``get_git_info`` raises in a repository without commits.
    """
    mongomock = pytest.importorskip("mongomock")
    import gridfs
    import mongomock.gridfs
    import seml.commands.add
    import seml.database
    import seml.experiment.experiment
    from sacred.observers import MongoObserver

    mongomock.gridfs.enable_gridfs_integration()
    client = mongomock.MongoClient()
    db = client[DB_NAME]
    config = {"db_name": DB_NAME, "host": "localhost", "port": 27017, "username": "u", "password": "p"}
    monkeypatch.setattr(seml.database, "get_mongodb_config", lambda *a, **k: dict(config))
    monkeypatch.setattr(seml.database, "get_mongo_client", lambda *a, **k: client)
    seml.database._get_collection.cache_clear()

    def observer(collection: str, mongodb_config: dict | None = None, overwrite: int | None = None):
        return MongoObserver.create_from(db[collection], gridfs.GridFS(db), overwrite=overwrite,
                                         metrics_collection=db["metrics"])

    monkeypatch.setattr(seml.experiment.experiment, "create_mongodb_observer", observer)

    real_git_info = seml.commands.add.get_git_info

    def git_info(*args: Any) -> Any:
        try:
            return real_git_info(*args)
        except ValueError:  # HEAD points at no commit yet
            return None

    monkeypatch.setattr(seml.commands.add, "get_git_info", git_info)
    yield db
    seml.database._get_collection.cache_clear()


def _seml_add(collection: str) -> None:
    from seml.commands.add import add_config_file

    add_config_file(collection, str(SMOKE))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_seml_add_stages_the_expanded_grid(mongo, exp):
    from seml.experiment.config import generate_configs, read_config
    from seml.settings import SETTINGS

    _seml_add("wn_smoke")
    docs = list(mongo["wn_smoke"].find(sort=[("_id", 1)]))
    expected = generate_configs(read_config(SMOKE)[2])
    assert len(docs) == len(expected) >= 6
    # SEML 0.5.7 stages added experiments as STAGED (its QUEUED is the legacy alias of the same state).
    assert {d["status"] for d in docs} == {"STAGED"} and "QUEUED" in SETTINGS.STATES.STAGED
    assert [d["_id"] for d in docs] == list(range(1, len(expected) + 1))
    # Each document's config holds exactly one expanded grid point (plus the experiment's resolved defaults).
    remaining = [_flat(e) for e in expected]
    for doc in docs:
        flat = _flat(doc["config"])
        match = [e for e in remaining if all(flat.get(k) == v for k, v in e.items())]
        assert len(match) == 1, doc["config"]
        remaining.remove(match[0])
        run = {k: v for k, v in doc["config"].items() if k not in ("bundle", "adaptive")}
        assert doc["config"]["bundle"] is None and doc["config"]["adaptive"] is None
        assert RunConfig.from_dict(run).to_dict() == run
    assert not remaining
    # code checkpoint: the experiment and the library's sources went to GridFS
    sources = {path for path, _ in docs[0]["seml"]["source_files"]}
    assert "experiments/walking_noise_experiment.py" in sources and "src/walking_noise/training.py" in sources


def _start(exp, collection: str, doc: dict) -> Any:
    """What ``seml start`` does for one staged document, in process: the stored config plus db_collection and
    overwrite=_id, with --force."""
    try:
        return exp.ex.run(config_updates={**doc["config"], "db_collection": collection, "overwrite": doc["_id"]},
                          options={"--force": True})
    finally:
        exp.ex.observers.clear()  # SEML's config scope appends one observer per run; a process runs one


@pytest.mark.slow
def test_observed_runs_complete_into_the_seml_collection(mongo, exp):
    _seml_add("wn_smoke")
    staged = list(mongo["wn_smoke"].find(sort=[("_id", 1)]))
    for doc in staged[:3]:
        run = _start(exp, "wn_smoke", doc)
        assert run._id == doc["_id"]
    for doc in staged[:3]:
        stored = mongo["wn_smoke"].find_one({"_id": doc["_id"]})
        assert stored["status"] == "COMPLETED"
        assert stored["config_hash"] == doc["config_hash"] and stored["batch_id"] == doc["batch_id"]
        result = stored["result"]
        epochs = doc["config"]["training"]["epochs"]
        assert len(result["val_accuracy"]) == epochs
        averaged = result["final_epochs_averaged"]
        assert averaged == max(1, epochs // 2)
        assert result["final_accuracy"] == pytest.approx(sum(result["val_accuracy"][-averaged:]) / averaged)
        assert result["config_hash"] == study_run(doc["config"]).hash
        assert "stats" in stored  # SEML's post-run hook found the document through get_collection
        for curve in exp.CURVES:
            metric = mongo["metrics"].find_one({"run_id": doc["_id"], "name": f"wn_smoke.{doc['_id']}.{curve}"})
            assert metric["steps"] == list(range(epochs))
            assert metric["values"] == pytest.approx(result[curve])
    assert {d["status"] for d in mongo["wn_smoke"].find({"_id": {"$gt": 3}})} == {"STAGED"}


@pytest.mark.slow
def test_metrics_of_two_collections_never_mix(mongo, exp):
    """Both collections number their runs from 1 and Sacred keeps both runs' metrics in one `metrics` collection:
    the collection in the name keeps two separate series of `epochs` points, not one of 2 x `epochs`."""
    for name in ("wn_a", "wn_b"):
        _seml_add(name)
        _start(exp, name, mongo[name].find_one({"_id": 1}))
    series = list(mongo["metrics"].find({"run_id": 1, "name": {"$regex": r"\.val_accuracy$"}}))
    assert sorted(s["name"] for s in series) == ["wn_a.1.val_accuracy", "wn_b.1.val_accuracy"]
    epochs = mongo["wn_a"].find_one({"_id": 1})["config"]["training"]["epochs"]
    assert all(len(s["values"]) == epochs for s in series)


def test_a_bundle_stores_one_result_per_member_that_the_analysis_reads_unchanged(mongo, exp):
    """One SEML experiment trains a bundle (noise levels x seeds, batched; the inference-only members reuse one
    clean training per seed); runs_from_mongodb turns its document into one row per member."""
    from walking_noise.results import runs_from_mongodb

    _seml_add("wn_bundle")
    doc = mongo["wn_bundle"].find_one({"_id": 1})
    doc["config"] = {**doc["config"], "noise": {**doc["config"]["noise"], "kind": "additive", "placement": "global",
                                                "phase": "inference"},
                     "bundle": {"noise": {"noise_std": [0.1, 1.0, 10.0]}, "seed": [0, 1]}}
    _start(exp, "wn_bundle", doc)
    stored = mongo["wn_bundle"].find_one({"_id": 1})
    assert stored["status"] == "COMPLETED" and stored["result"]["bundle_size"] == 6
    members = stored["result"]["bundle"]
    assert {m["result"]["extra"]["engine"] for m in members} == {"train_once_evaluate_many"}
    runs = runs_from_mongodb(mongo.client, mongo.name, "wn_bundle")
    assert len(runs) == 6
    assert sorted(zip(runs["noise.noise_std"], runs["seed"])) == sorted(
        (s, seed) for s in (0.1, 1.0, 10.0) for seed in (0, 1))
    by_std = runs.groupby("noise.noise_std")["final_accuracy"].mean()
    assert by_std[0.1] > by_std[10.0] + 0.3  # noise hurts: the members really differ
