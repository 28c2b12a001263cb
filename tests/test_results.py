"""Run documents -> DataFrame: the local store and a SEML MongoDB collection give the same frame for the same runs."""

import json
import math
from datetime import datetime, timezone

import mongomock
import numpy as np
import pandas as pd
import pytest

from walking_noise.units import execute

from walking_noise.config import Run
from walking_noise.study import study_run
from walking_noise.results import (
    REPORT_FIELDS, ResultsError, _parse_numbers, _segment_documents, load_runs, runs_from_mongodb, runs_from_store,
)
from walking_noise.identity import config_hash
from walking_noise.store import COMPLETED, FAILED, LocalStore

BASE = {"dataset": "mnist_5k", "model": "mlp", "max_train": 300, "max_test": 200,
        "training": {"epochs": 1, "batch_size": 64}}
# What a SEML YAML names (the rest are defaults): the MongoDB copy stores only these, as SEML does.
NAMED = ("dataset", "model", "max_train", "max_test", "training", "noise", "seed", "batchnorm", "weight_clamping")


def _configs():
    out = []
    for seed in (0, 1):
        for kind, std in (("additive", 0.5), ("multiplicative", 1.0)):
            out.append(study_run({**BASE, "seed": seed, "noise": {"kind": kind, "noise_std": std}}))
        out.append(study_run({**BASE, "seed": seed, "batchnorm": True, "weight_clamping": True,
                              "noise": {"kind": "additive", "noise_std": 2.0, "placement": "walking",
                                        "injection_layer": 3}}))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Six real runs, plus a failure that was retried and a config that only failed."""
    path = tmp_path_factory.mktemp("results") / "store"
    configs = _configs()
    with LocalStore(path) as st:
        broken = Run.from_dict(dict(configs[0].values, dataset="mnist", max_test=99))  # no MNIST files: FAILED
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WALKING_NOISE_DATA", str(tmp_path_factory.mktemp("no_mnist")))
            execute(broken, "wn", st)
        first = configs[1].values
        st.put({"config": first, "config_hash": config_hash(first), "status": FAILED, "study": "wn",
                "fail_trace": ["Traceback", "RuntimeError: node lost"]})
        for config in configs:
            assert execute(config, "wn", st)["status"] == COMPLETED
    return path


def _seml_document(doc, number):
    """A local document as SEML + Sacred keep it in MongoDB."""
    config = {k: v for k, v in doc["config"].items() if k in NAMED}
    config.update(db_collection="wn", overwrite=number)
    seml = {
        "_id": number, "batch_id": 1 + number % 2, "status": doc["status"], "config": config,
        "config_hash": "seml-" + doc["config_hash"][:8], "config_unresolved": config,
        "seml": {"executable": "walking_noise/experiment.py", "name": "wn", "output_dir": "logs"},
        "slurm": [{"experiments_per_job": 1}], "add_time": datetime(2024, 1, 1, tzinfo=timezone.utc),
        "start_time": datetime(2024, 1, 2), "stop_time": datetime(2024, 1, 2), "heartbeat": datetime(2024, 1, 2),
        "experiment": {"name": "walking_noise", "mainfile": "experiment.py"}, "host": {"hostname": "gpu01"},
        "captured_out": "epoch 1/1 ...\n" * 50, "info": {}, "meta": {"command": "main"}, "resources": [],
        "artifacts": [],
    }
    if "result" in doc:
        seml["result"] = doc["result"]
    if "fail_trace" in doc:
        seml["fail_trace"] = doc["fail_trace"]
    return seml


@pytest.fixture(scope="module")
def collection(store):
    client = mongomock.MongoClient()
    coll = client["walking_noise"]["wn"]
    coll.insert_many([_seml_document(d, i) for i, d in enumerate(LocalStore(store).documents(), 1)])
    return client


def _comparable(df):
    return df.drop(columns=[c for c in ("_id", "batch_id") if c in df.columns]).sort_values(
        "config_hash", ignore_index=True)


def test_local_store_and_seml_collection_give_the_same_frame(store, collection):
    local = runs_from_store(store)
    mongo = runs_from_mongodb(collection, "walking_noise", "wn")
    assert len(local) == 6 and set(local["status"]) == {COMPLETED}
    assert {"_id", "batch_id"} <= set(mongo.columns)
    pd.testing.assert_frame_equal(_comparable(local), _comparable(mongo))


def test_every_status_keeps_failed_configs_with_their_error(store, collection):
    local = runs_from_store(store, status=None)
    mongo = runs_from_mongodb(collection, "walking_noise", "wn", status=None)
    assert len(local) == 7  # the retried failure collapsed into its COMPLETED run; the other failure stays
    failed = local[local["status"] == FAILED]
    assert len(failed) == 1 and "FileNotFoundError" in failed["error"].iloc[0]
    assert math.isnan(failed["final_accuracy"].iloc[0])
    pd.testing.assert_frame_equal(_comparable(local), _comparable(mongo))


def test_columns_are_flat_config_keys_scalar_results_and_object_lists(store):
    df = runs_from_store(store)
    for name in ("dataset", "model", "batchnorm", "noise.kind", "noise.noise_std", "noise.placement",
                 "noise.injection_layer", "noise.phase", "weight_clamping", "seed", "training.epochs",
                 "final_accuracy", "diverged", "epochs_run", "config_hash", "status", "study"):
        assert name in df.columns, name
    assert df["final_accuracy"].dtype == np.float64 and df["diverged"].dtype == bool
    assert df["training.epochs"].dtype == np.int64
    assert str(df["noise.injection_layer"].dtype) == "Int64"  # None for global noise
    assert df["noise.injection_layer"].isna().sum() == 4
    row = df[df["noise.placement"] == "walking"].iloc[0]
    assert isinstance(row["val_accuracy"], list) and len(row["val_accuracy"]) == 1
    assert isinstance(row["weight_magnitudes"], dict) and "1 FC" in row["weight_magnitudes"]
    assert [r["name"] for r in row["layer_table"]][:3] == ["Input", "FC", "BN"]
    assert "result.checkpoint" in df.columns  # a result key that is also a config key gets a prefix
    assert set(df["study"]) == {"wn"}


def test_the_fast_reader_returns_exactly_what_the_store_reads(store, tmp_path):
    st = LocalStore(store)
    assert list(_segment_documents(st)) == list(st.documents())
    # a torn last line is skipped and counted, like the store does
    torn = tmp_path / "torn"
    (torn / "runs").mkdir(parents=True)
    lines = (store / "runs").glob("*.jsonl").__next__().read_bytes().splitlines()
    (torn / "runs" / "a.jsonl").write_bytes(b"\n".join(lines[-2:]) + b"\n" + lines[-1][:200])
    df = runs_from_store(torn, status=None)
    assert len(df) == 2 and df.attrs["skipped_lines"] == 1


def test_curves_parsed_in_bulk_equal_json_to_the_last_bit():
    values = [0.1, 1 / 3, 2.5e-300, -7.0, 1e16, 0.8734000000000001, float("nan"), float("inf"), -float("inf")]
    text = json.dumps(values).encode()[1:-1]
    parsed = _parse_numbers([text, b"", b"1,2"])
    assert parsed[1] == [] and parsed[2] == [1.0, 2.0]
    assert np.array_equal(np.array(parsed[0]), np.array(json.loads(text.join([b"[", b"]"]))), equal_nan=True)
    assert _parse_numbers([b"1,,2"]) is None  # not JSON: left to the json fallback


def test_batch_id_and_filter_select_in_the_database(collection):
    one = runs_from_mongodb(collection, "walking_noise", "wn", batch_id=1)
    assert set(one["batch_id"]) == {1} and 0 < len(one) < 6
    walking = runs_from_mongodb(collection, "walking_noise", "wn", filter={"config.noise.placement": "walking"})
    assert set(walking["noise.placement"]) == {"walking"} and len(walking) == 2


def test_unreachable_mongodb_is_a_clear_error_naming_the_uri_and_the_alternative():
    with pytest.raises(ResultsError) as err:
        runs_from_mongodb("mongodb://someone:secret@127.0.0.1:1", "db", "coll", timeout_ms=200)
    text = str(err.value)
    assert "127.0.0.1:1" in text and "--store" in text and "secret" not in text


def test_a_folder_that_is_not_a_store_and_two_sources_are_errors(tmp_path):
    with pytest.raises(ResultsError, match="no run store"):
        runs_from_store(tmp_path / "nothing")
    with pytest.raises(ResultsError, match="either"):
        load_runs(store=tmp_path, mongo_uri="mongodb://x")


def test_loading_only_the_report_fields_gives_the_same_values_without_the_other_curves(store, collection):
    full = runs_from_store(store)
    local = runs_from_store(store, fields=REPORT_FIELDS)
    mongo = runs_from_mongodb(collection, "walking_noise", "wn", fields=REPORT_FIELDS)
    assert "train_loss" not in local.columns and "val_loss" not in local.columns
    pd.testing.assert_frame_equal(_comparable(local), _comparable(mongo))
    pd.testing.assert_frame_equal(_comparable(local), _comparable(full)[list(local.columns)])
    tables = local["layer_table"].tolist()
    assert tables[0] == tables[1] and tables[0] is tables[1]  # one model's layer table: parsed once, one object


def test_an_analysis_loads_and_fits_runs_without_torch(store):
    """Analysis machines and notebooks load a store, select one study's runs and fit them with no torch installed."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from walking_noise.results import runs_from_store, REPORT_FIELDS\n"
            "import walking_noise.report\n"
            "from walking_noise.report.common import fit_series, series_of\n"
            "df = runs_from_store(sys.argv[1], fields=REPORT_FIELDS)\n"
            "assert len(df) > 0 and [fit_series(s) for s in series_of(df)]\n"
            "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not loaded, loaded[:5]\n")
    done = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
