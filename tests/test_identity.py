"""Run identity never changes for a config that already exists: the hash and noise key of stored runs are frozen."""

from __future__ import annotations

import dataclasses

import pytest

from walking_noise.config import NoiseConfig, Run, RunConfig, TrainingConfig
from walking_noise.identity import (
    LATER_KEYS,
    LOCATION_KEYS,
    ORIGINAL_FIELDS,
    IdentityError,
    config_hash,
    noise_key,
)

#: computed by the code that wrote the first stored runs (before identity.py existed), for the config below
KNOWN = {"noise": {"kind": "additive", "noise_std": 0.3}, "seed": 1}
KNOWN_HASH = "10494c3b68a66169439e8f3b78964f4b3389d2ce"
KNOWN_NOISE_KEY = 15366318195557959408


def _config_fields() -> dict[str, object]:
    """Every field of a run config, dotted, with its default."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(RunConfig):
        section = {"noise": NoiseConfig, "training": TrainingConfig}.get(f.name)
        if section is None:
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
            continue
        for sub in dataclasses.fields(section):
            out[f"{f.name}.{sub.name}"] = sub.default
    return out


def test_every_config_field_has_a_declared_place_in_run_identity():
    for path, default in _config_fields().items():
        if path in LOCATION_KEYS or path in ORIGINAL_FIELDS:
            continue
        assert path in LATER_KEYS, f"{path} is new: add it to identity.LATER_KEYS with its default"
        assert LATER_KEYS[path] == default, f"LATER_KEYS[{path!r}] must be the field's default {default!r}"


def test_a_known_config_keeps_the_hash_and_noise_key_its_stored_runs_have():
    run = Run.from_dict(KNOWN)
    assert run.hash == config_hash(run.values) == KNOWN_HASH
    assert run.config.noise_key == noise_key(run.values) == KNOWN_NOISE_KEY


def test_where_a_run_executes_is_not_part_of_its_identity():
    run = Run.from_dict(KNOWN)
    elsewhere = Run.from_dict({**KNOWN, "data_dir": "/scratch/data", "device": "cuda", "checkpoint": "x.pt"})
    assert elsewhere.hash == run.hash


@pytest.mark.parametrize("path", sorted(LATER_KEYS))
def test_a_later_field_changes_the_hash_only_when_it_leaves_its_default(path):
    values = Run.from_dict(KNOWN).values
    section, _, leaf = path.rpartition(".")
    target = values[section] if section else values
    assert config_hash(values) == KNOWN_HASH
    target[leaf] = {"changed": 1} if LATER_KEYS[path] is None else "changed"
    assert config_hash(values) != KNOWN_HASH


def test_an_undeclared_config_field_cannot_be_hashed():
    values = Run.from_dict(KNOWN).values
    values["noise"]["brand_new_option"] = 1
    with pytest.raises(IdentityError, match="noise.brand_new_option.*LATER_KEYS"):
        config_hash(values)


def test_a_stored_run_is_found_whatever_numpy_rounded_its_grid_level(tmp_path):
    """np.logspace's last bit differs between numpy builds (10**-1.25: ...034905 stored, ...03491 now): the study
    still finds its stored run, keeps that run's hash (so its noise), and does not train it again; a level that
    really differs (1e-9 relative) is a new run."""
    import math

    from _studies import tiny_study

    from walking_noise.config import Run
    from walking_noise.identity import level_hash
    from walking_noise.selection import pending_runs, study_selection
    from walking_noise.store import COMPLETED, LocalStore
    from walking_noise.study import load_study

    level = 0.05623413251903491
    study = load_study(tiny_study(tmp_path, levels=f"[{level!r}, 1.0]", seeds=1))
    run = next(r for r in study.runs if r.values["noise"]["noise_std"] == level)
    twin_values = {**run.values, "noise": {**run.values["noise"], "noise_std": math.nextafter(level, 0.0)}}
    twin = Run.from_dict(twin_values)
    far = Run.from_dict({**run.values, "noise": {**run.values["noise"], "noise_std": level * (1 + 1e-9)}})
    assert twin.hash != run.hash and level_hash(twin.values) == level_hash(run.values)
    assert level_hash(far.values) != level_hash(run.values)

    store = LocalStore(tmp_path / "store")
    with store:
        for stored in (twin, far):
            store.put({"config_hash": stored.hash, "config": stored.values, "status": COMPLETED,
                       "result": {"final_accuracy": 0.5}})
    latest = store.latest()
    pending, done, _ = pending_runs(study, latest)
    assert done == 1 and [p.values["noise"]["noise_std"] for p in pending] == [1.0]
    hashes, _ = study_selection(study, latest)
    assert twin.hash in hashes and run.hash not in hashes and far.hash not in hashes
