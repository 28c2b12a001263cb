"""The per-run export: one CSV row per run, committed beside every result so that anyone can refit without the store,
and read back into a store so that a campaign can resume on another machine.

Columns of ``runs.csv`` (:data:`EXPORT_COLUMNS` first, then every config key):

- ``config_hash``: the run's identity (:func:`walking_noise.store.config_hash` of its full config);
- ``status`` (``COMPLETED`` or ``FAILED``), ``study``, ``error`` (last line of a failure);
- ``final_accuracy``: the fraction of test samples right, mean of the last ``final_epochs_averaged`` epochs
  (the paper's five from ten epochs on, the second half of a shorter run);
- ``diverged`` (weights became non-finite in training; its accuracy is then chance level), ``diverged_epoch``,
  ``epochs_run``;
- ``nonfinite_outputs``: some test samples had non-finite logits in the averaged epochs of a run that did not
  diverge (float32 overflow of the activations: the report treats such levels as bounds, not measurements);
- ``val_accuracy``, ``val_nonfinite``: per-epoch validation accuracy and fraction of non-finite samples, as JSON
  lists (train-once-evaluate-many runs hold only the averaged epochs); ``weight_magnitudes`` (mean |w| per
  learnable layer, JSON), ``active_points`` (JSON list);
- ``engine``: how it was trained (``single``, ``batched``, ``train_once_evaluate_many``);
- every key of the run's config, flattened with dots (``dataset``, ``model``, ``batchnorm``, ``noise.kind``,
  ``noise.noise_std``, ``noise.injection_layer``, ``training.epochs``, ``seed``, ...); where it ran
  (``data_dir``, ``checkpoint``, ``device``) is left out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.config import unflatten
from walking_noise.results import config_columns
from walking_noise.files import atomic_write
from walking_noise.identity import HASH_EXCLUDED_KEYS, LATER_KEYS, config_hash
from walking_noise.store import COMPLETED, LocalStore

EXPORT_COLUMNS = ("config_hash", "status", "study", "error", "final_accuracy", "final_epochs_averaged", "diverged",
                  "diverged_epoch", "epochs_run", "nonfinite_outputs", "engine", "val_accuracy", "val_nonfinite",
                  "weight_magnitudes", "active_points")
JSON_COLUMNS = ("val_accuracy", "val_nonfinite", "weight_magnitudes", "active_points")
#: Result fields an export needs from the store.
EXPORT_FIELDS = ("final_accuracy", "final_epochs_averaged", "diverged", "diverged_epoch", "epochs_run",
                 "val_accuracy", "val_nonfinite", "weight_magnitudes", "active_points", "extra")


def nonfinite_outputs(val_nonfinite: Any, averaged: Any, diverged: Any) -> bool:
    """Whether a run that did not diverge had non-finite logits in the epochs its final accuracy averages."""
    if bool(diverged) or not isinstance(val_nonfinite, list) or not val_nonfinite:
        return False
    last = int(averaged) if isinstance(averaged, (int, np.integer)) and averaged > 0 else len(val_nonfinite)
    return any(v > 0 for v in val_nonfinite[-last:])


def export_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The export table of a runs DataFrame (:func:`walking_noise.results.load_runs`), one row per run."""
    out = pd.DataFrame(index=df.index)
    for name in ("config_hash", "status", "study", "error", "final_accuracy", "final_epochs_averaged", "diverged",
                 "diverged_epoch", "epochs_run"):
        out[name] = df[name] if name in df.columns else None
    out["nonfinite_outputs"] = [nonfinite_outputs(v, a, d) for v, a, d in zip(
        _col(df, "val_nonfinite"), _col(df, "final_epochs_averaged"), _col(df, "diverged"))]
    out["engine"] = [e.get("engine") if isinstance(e, dict) else None for e in _col(df, "extra")]
    for name in JSON_COLUMNS:
        out[name] = [json.dumps(v) if isinstance(v, (list, dict)) else None for v in _col(df, name)]
    hidden = set(HASH_EXCLUDED_KEYS)
    for name in config_columns(df):
        if name not in hidden:
            out[name] = df[name]
    return out.reset_index(drop=True)


def _col(df: pd.DataFrame, name: str) -> list[Any]:
    return df[name].tolist() if name in df.columns else [None] * len(df)


def write_export(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df``'s runs as ``runs.csv`` (columns in the module docstring), sorted by config for stable diffs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = export_frame(df)
    keys = [c for c in table.columns if c not in EXPORT_COLUMNS]
    table = table.sort_values(keys + ["config_hash"], kind="stable", na_position="first", key=_sortable)
    atomic_write(path, table.to_csv(index=False).encode())
    return path


def _sortable(column: pd.Series) -> pd.Series:
    return column.map(lambda v: (0, float(v)) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                      else (1, str(v)))


def read_export(path: str | os.PathLike) -> pd.DataFrame:
    """An export back as a table (JSON columns parsed)."""
    table = pd.read_csv(path)
    for name in JSON_COLUMNS:
        if name in table.columns:
            table[name] = [json.loads(v) if isinstance(v, str) else None for v in table[name]]
    return table


def _plain(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def export_documents(table: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Run documents rebuilt from an export: the config completed with defaults (its hash must match), the result
    fields the export holds, and ``imported: true``. The layer table is recomputed from the model (no data needed)."""
    from walking_noise.config import RunConfig
    from walking_noise.models import layer_table_for

    config_keys = [c for c in table.columns if c not in EXPORT_COLUMNS]
    # a field added after some of the runs were written (LATER_KEYS) is an empty cell in their rows: absent, so the
    # run takes the field's default, the value its hash was computed without
    later = {path for path, default in LATER_KEYS.items() if default is not None}
    for row in table.to_dict("records"):
        flat = {k: _plain(row[k]) for k in config_keys}
        flat = {k: v for k, v in flat.items() if not (k in later and v is None)}
        config = RunConfig.from_dict(unflatten(flat)).to_dict()
        if config_hash(config) != row["config_hash"]:
            raise ValueError(f"the export row {row['config_hash']} does not rebuild its own config (hash "
                             f"{config_hash(config)}): written by another version of walking-noise?")
        doc: dict[str, Any] = {"config": config, "config_hash": row["config_hash"], "status": row["status"],
                               "study": _plain(row.get("study")), "imported": True}
        if row["status"] == COMPLETED:
            result = {k: _plain(row[k]) for k in ("final_accuracy", "final_epochs_averaged", "diverged",
                                                  "diverged_epoch", "epochs_run") if k in row}
            result.update({k: row[k] for k in JSON_COLUMNS if k in row})
            result["extra"] = {"engine": _plain(row.get("engine"))}
            result["layer_table"] = layer_table_for(config["model"], config["dataset"], config["batchnorm"],
                                                    config["model_kwargs"], config["points"])
            doc["result"] = result
        else:
            doc["fail_trace"] = [str(_plain(row.get("error")) or "failed (imported)")]
        yield doc


def import_export(path: str | os.PathLike, store: LocalStore) -> int:
    """Put the runs of an export into ``store`` (those it lacks), so a campaign resumes from them; returns how many."""
    have = store.completed_hashes()
    added = 0
    with store:
        for doc in export_documents(read_export(path)):
            if doc["config_hash"] in have:
                continue
            store.put(doc)
            added += 1
    return added
