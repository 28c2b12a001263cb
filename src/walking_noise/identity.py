"""Run identity: which config a stored run measured, and which random numbers it drew.

A run is identified by a hash of its scientific config (:func:`config_hash`); the key of its noise stream is derived
from that hash (:func:`noise_key`). Both are part of every stored measurement, so they must never change for a
config that already exists. Two rules keep them stable:

- keys that say where or how a run was executed (:data:`LOCATION_KEYS`, :data:`SEML_KEYS`) are left out, so equal
  runs on two machines share a hash;
- a field added to the config after runs were first stored (:data:`LATER_KEYS`) is left out while it holds its
  default, so adding an option never changes the identity of an existing run.

A grid level is a float computed by SEML (``loguniform`` is ``np.logspace``), and numpy builds differ in its last
bit: 10**-1.25 is 0.056234132519034905 under the numpy that stored the MNIST reproduction and 0.05623413251903491
under numpy 2.4.6 (the exact value lies between them, 3.5e-18 from each). The hash keeps the exact float (changing it
would change every stored run's noise), and :func:`level_hash` names a config up to 12 significant digits, so a
study can find its stored run whatever numpy expanded it (:class:`walking_noise.selection.StoredRuns`).

The config's field list at the time the first runs were stored is frozen in :data:`ORIGINAL_FIELDS`. A field that is
neither there nor in :data:`LATER_KEYS` makes :func:`config_hash` raise: a new config field cannot be added without
saying how old runs keep their identity (``tests/test_identity.py`` checks the config classes against both lists).

This module imports nothing of the package: everything else may import it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Config keys that say where or how a run was executed, not what it computed (left out of its identity). ``weights``
#: is where a trained model's file lies: the weights themselves are identified by their content (``weights_sha256``),
#: so the same weights copied to a cluster under another path are the same runs, and a file overwritten with other
#: weights under the same path gives new runs.
LOCATION_KEYS = ("data_dir", "checkpoint", "device", "weights")
#: Keys SEML adds to every experiment's config.
SEML_KEYS = ("db_collection", "overwrite")
HASH_EXCLUDED_KEYS = frozenset(LOCATION_KEYS + SEML_KEYS)
#: Sections of a run config whose fields are hashed one by one (the other values are leaves, e.g. model_kwargs).
SECTIONS = ("noise", "training")

#: The config fields (dotted) of the first stored runs; frozen: never edit, add new fields to LATER_KEYS instead.
ORIGINAL_FIELDS = frozenset({
    "dataset", "model", "batchnorm", "weight_clamping", "seed", "normalize", "augment", "max_train", "max_test",
    "noise.kind", "noise.noise_std", "noise.placement", "noise.injection_layer", "noise.phase", "noise.backward",
    "noise.additive_std", "noise.multiplicative_std", "noise.amplitude", "noise.ratio", "noise.mixed_order",
    "training.optimizer", "training.lr", "training.schedule", "training.epochs", "training.batch_size",
    "training.weight_decay", "training.momentum",
})

#: Config fields added after runs were first stored, with their defaults. While a field holds its default it is left
#: out of the hash, so adding an option never changes the identity (nor, through the noise key, the draws) of a run.
LATER_KEYS: dict[str, Any] = {
    "noise.site": "activation",
    "model_kwargs": None,
    "noise.distribution": "gaussian",
    "weights_sha256": None,
    "points": "modules",
}


class IdentityError(KeyError):
    """A config field whose place in run identity was never declared."""

    def __str__(self) -> str:
        return str(self.args[0])


def _field_value(path: str, value: Any) -> tuple[bool, Any]:
    """(keep in the hash, value) of one config field."""
    if path in ORIGINAL_FIELDS:
        return True, value
    if path in LATER_KEYS:
        return value != LATER_KEYS[path], value
    raise IdentityError(
        f"config field {path!r} has no place in run identity: add it to walking_noise.identity.LATER_KEYS with its "
        f"default (else every stored run's hash and noise change), or, if it says where a run executes, to "
        f"LOCATION_KEYS")


def hashed_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config (nested dict) that its identity is computed from."""
    kept: dict[str, Any] = {}
    for key, value in config.items():
        if key in HASH_EXCLUDED_KEYS:
            continue
        if key in SECTIONS and isinstance(value, dict):
            inner = {}
            for sub, sub_value in value.items():
                keep, sub_value = _field_value(f"{key}.{sub}", sub_value)
                if keep:
                    inner[sub] = sub_value
            kept[key] = inner
            continue
        keep, value = _field_value(key, value)
        if keep:
            kept[key] = value
    return kept


def stable_hash(value: Any) -> str:
    """Hex sha1 of ``value`` as sorted JSON: the same plain data gives the same hash in every process."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """A stable identity of a run's scientific config (sorted JSON, location keys dropped), as hex sha1."""
    return stable_hash(hashed_fields(config))


#: Significant digits to which :func:`level_hash` rounds floats: far above any noise grid's spacing, far below the
#: 1-ulp (1e-16 relative) differences between numpy builds.
LEVEL_DIGITS = 12


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{LEVEL_DIGITS}g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def level_hash(config: dict[str, Any]) -> str:
    """The identity of a config with its floats rounded to :data:`LEVEL_DIGITS` significant digits: equal for two
    expansions of one grid whose levels differ in the last bits (numpy builds), different for any two real levels."""
    return stable_hash(_rounded(hashed_fields(config)))


def noise_key(config: dict[str, Any]) -> int:
    """The 64-bit key of a run's noise stream: a hash of its scientific config (seed included, where it runs
    excluded), so equal configs draw equal noise everywhere (:class:`walking_noise.noise.NoiseStream`)."""
    digest = hashlib.sha256(b"walking-noise noise stream " + config_hash(config).encode()).digest()
    return int.from_bytes(digest[:8], "little")
