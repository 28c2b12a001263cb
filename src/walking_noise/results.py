"""Run documents -> one pandas DataFrame, one row per run, from the local store or from a SEML MongoDB collection.

Every analysis of the paper (Table I, Figures 1-11, Table II) starts from the same flat table:

- every config key, flattened with dots: ``dataset``, ``model``, ``batchnorm``, ``noise.kind``, ``noise.noise_std``,
  ``noise.placement``, ``noise.injection_layer``, ``noise.phase``, ``weight_clamping``, ``seed``,
  ``training.epochs``, ...;
- every scalar of the run's result as a column (``final_accuracy`` as a fraction 0..1, ``diverged``, ``epochs_run``,
  ``wall_time_s``, ...); lists and dicts (``val_accuracy``, ``weight_magnitudes``, ``layer_table``, ...) are kept
  as object columns holding the stored value. A result key that is also a config key (``checkpoint``, ``device``)
  gets the prefix ``result.`` (``result.checkpoint`` is where the model was saved);
- ``config_hash``, ``status``, ``study``, ``error`` (last line of a failure's trace) and, for MongoDB, ``_id`` and
  ``batch_id``.

Both sources give the same frame for the same runs: configs are completed with the run defaults (a SEML config
holds only what its YAML named), SEML's bookkeeping keys ``db_collection``/``overwrite`` are dropped, and the
``config_hash`` is always :func:`walking_noise.store.config_hash` of the completed config (SEML's own hash differs).
When one config has several documents, the first COMPLETED one is kept (:func:`~walking_noise.store.latest_by_hash`).

Loading speed (``benchmarks/store_load.py``): a local store is read segment by segment. The learning curves are cut
out of each line and parsed in bulk by pandas' C reader (only those asked for, see ``fields``), equal layer tables
are parsed once and shared, the cyclic garbage collector is paused while millions of containers are created, and
the frame is built column by column. Loading needs no torch.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from walking_noise.config import NON_RUN_KEYS, flatten
from walking_noise.identity import config_hash
from walking_noise.store import COMPLETED, CURVES, LocalStore, latest_by_hash

#: Prefix of a result column whose name is also a config key.
RESULT_PREFIX = "result."
#: Document-level columns, first in the frame when present.
ID_COLUMNS = ("config_hash", "status", "study", "_id", "batch_id", "error")
#: How long a MongoDB server may take to answer before we give up (ms); short, so a typo fails fast.
MONGO_TIMEOUT_MS = 5000
#: The result keys the report uses (the other learning curves are left out when loading for it).
REPORT_FIELDS = ("final_accuracy", "final_epochs_averaged", "val_accuracy", "val_nonfinite", "weight_magnitudes",
                 "layer_table", "checkpoint", "diverged", "diverged_epoch", "epochs_run", "active_points", "extra")
#: Fields of a SEML/Sacred document that the frame needs (everything else, e.g. captured output, is not fetched).
MONGO_PROJECTION = {"config": 1, "result": 1, "status": 1, "batch_id": 1, "study": 1, "fail_trace": 1}


# pandas >= 3 has a string dtype with NaN for missing values; older pandas keeps strings (and None) as objects.
_STR_DTYPE = "str" if int(pd.__version__.split(".")[0]) >= 3 else None


class ResultsError(ValueError):
    """The runs cannot be loaded (no such store, MongoDB unreachable); the message says what to do."""


# ---- documents -> rows -------------------------------------------------------------------------------------


def config_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that come from a run's config (flattened names), in frame order."""
    from walking_noise.config import RunConfig

    known = set(flatten(RunConfig().to_dict()))
    return [c for c in df.columns if c in known or c.startswith(("noise.", "training."))]


def complete_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's full config: SEML keys dropped, defaults filled in when it is a valid :class:`RunConfig`.

    A config written by another version (unknown keys) is kept as stored rather than rejected: the analysis should
    still see the run.
    """
    from walking_noise.config import RunConfig

    cleaned = {k: v for k, v in config.items() if k not in NON_RUN_KEYS}
    try:  # without building the model: an analysis needs no torch
        return RunConfig.from_dict(cleaned).to_dict()
    except (ValueError, TypeError):
        return cleaned


def document_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row of a run document (see the module docstring for the column names)."""
    config = doc.get("config") or {}
    row: dict[str, Any] = {"config_hash": doc.get("config_hash") or config_hash(config), "status": doc.get("status")}
    for key in ("study", "_id", "batch_id"):
        if key in doc:
            row[key] = doc[key]
    trace = doc.get("fail_trace")
    if trace:
        row["error"] = str(trace[-1]).strip()
    row.update(flatten(config))
    result = doc.get("result")
    if isinstance(result, dict):
        for key, value in result.items():
            row[RESULT_PREFIX + key if key in config or key in row else key] = value
    elif result is not None:  # an experiment that returned a bare value
        row["result"] = result
    return row


def _column(values: Sequence[Any]) -> Any:
    """The tightest dtype that holds ``values`` exactly: bool/boolean, int64/Int64, float64, str, else object."""
    types = set(map(type, values))
    has_none = type(None) in types
    types.discard(type(None))
    if types == {bool}:
        return pd.array(values, dtype="boolean") if has_none else np.array(values, dtype=bool)
    if types == {int}:
        try:
            return pd.array(values, dtype="Int64") if has_none else np.array(values, dtype=np.int64)
        except OverflowError:  # beyond 64 bits: keep the Python ints
            pass
    elif types and types <= {int, float}:
        return np.array([np.nan if v is None else v for v in values] if has_none else values, dtype=np.float64)
    elif types == {str} and _STR_DTYPE is not None:
        return pd.array(values, dtype=_STR_DTYPE)
    # item by item (np.fromiter): equal-length lists must stay lists, not become a 2-D array
    return np.fromiter(values, dtype=object, count=len(values))


def frame_from_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with possibly different keys) -> a DataFrame built column by column, ids first.

    Rows with the same keys in the same order (nearly all of them) are transposed together with ``zip``, so
    building the frame of 200,000 runs costs about as much as touching each value once.
    """
    schemas: dict[tuple[str, ...], tuple[list[int], list[tuple]]] = {}
    for number, row in enumerate(rows):
        positions, values = schemas.setdefault(tuple(row), ([], []))
        positions.append(number)
        values.append(tuple(row.values()))
    names: dict[str, None] = {}
    for keys in schemas:
        names.update(dict.fromkeys(keys))
    order = [c for c in ID_COLUMNS if c in names] + [c for c in names if c not in ID_COLUMNS]
    data: dict[str, list[Any]] = {name: [] for name in order}
    positions_all: list[int] = []
    for keys, (positions, values) in schemas.items():
        columns = dict(zip(keys, zip(*values)))
        missing = (None,) * len(values)
        for name in order:
            data[name].extend(columns.get(name, missing))
        positions_all.extend(positions)
    if len(schemas) > 1:  # back to the order of ``rows``
        back = np.argsort(np.asarray(positions_all), kind="stable")
        data = {name: [values[i] for i in back] for name, values in data.items()}
    frame = pd.DataFrame({name: _column(values) for name, values in data.items()}, columns=order)
    return frame


def _statuses(status: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if status is None:
        return None
    return (status,) if isinstance(status, str) else tuple(status)


def runs_frame(documents: Iterable[Mapping[str, Any]], status: str | Iterable[str] | None = COMPLETED,
               fields: Iterable[str] | None = None) -> pd.DataFrame:
    """Run documents of any source -> the runs DataFrame (one row per config, the first COMPLETED document wins).

    ``status``: keep only runs with this status (or these; None keeps all). ``fields``: keep only these result keys
    (None: all), e.g. to leave out the training curves of 200,000 runs.
    """
    wanted = _statuses(status)
    keep = None if fields is None else set(fields)
    rows = []
    for doc in latest_by_hash(documents).values():
        if wanted is not None and doc.get("status") not in wanted:
            continue
        if keep is not None and isinstance(doc.get("result"), dict):
            doc = {**doc, "result": {k: v for k, v in doc["result"].items() if k in keep}}
        rows.append(document_row(doc))
    return frame_from_rows(rows)


# ---- the local store ---------------------------------------------------------------------------------------


#: Result keys holding one number per epoch; parsed in bulk by pandas' C reader instead of one float at a time.
# A curve written by json.dumps: a flat list of numbers, NaN or +-Infinity (anything else is left to the JSON parser).
# The layer table (a list of flat dicts) is the same for every run of one model: it is parsed once per distinct text
# and that one object is shared by all rows (a large saving of time and memory for 200,000 runs).
_CUT = re.compile(rb'"(?P<curve>' + b"|".join(k.encode() for k in CURVES) + rb')":'
                  rb'\[(?P<numbers>[-+0-9.eEINaftiny, ]*)\]'
                  rb'|"layer_table":(?P<table>\[(?:\{[^{}]*\}(?:,\{[^{}]*\})*)?\])')


def _parse_numbers(texts: list[bytes]) -> list[list[float]] | None:
    """The comma-separated number lists ``texts`` as lists of floats, in one pass of pandas' C parser.

    Python's ``float`` (inside ``json``) costs ~0.3 us per number; the C reader ~0.05 us, and it rounds the same
    (checked on round-trip reprs: every value is bit-identical). None if the text does not parse as expected.
    """
    import io

    texts = [t.replace(b" ", b"") if b" " in t else t for t in texts]
    if any(t.startswith(b",") or t.endswith(b",") or b",," in t for t in texts):
        return None  # not valid JSON; the caller's json fallback rejects it
    lengths = [t.count(b",") + 1 if t else 0 for t in texts]
    total = sum(lengths)
    if total == 0:
        return [[] for _ in texts]
    try:  # the comma as line terminator: one value per "line", no copy of the text to rewrite it
        values = pd.read_csv(io.BytesIO(b",".join(t for t in texts if t)), header=None, dtype=np.float64,
                             engine="c", lineterminator=",", skip_blank_lines=False)[0].to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if len(values) != total:
        return None
    flat = values.tolist()
    out, start = [], 0
    for n in lengths:
        out.append(flat[start:start + n])
        start += n
    return out


def _parse_segment(data: bytes, curves: Iterable[str] | None = None,
                   shared: dict[bytes, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The complete documents of one segment file's bytes, and the number of lines skipped as torn or invalid.

    Same rules as :meth:`LocalStore.documents`. The per-epoch curves are cut out of each line first and parsed in
    bulk (see :func:`_parse_numbers`), and only the ``curves`` asked for are parsed at all (None: all; the others
    are left as None); equal layer tables are parsed once (cache ``shared``) and shared.
    """
    wanted = set(CURVES if curves is None else curves)
    shared = {} if shared is None else shared
    lines = data.split(b"\n")
    skipped = 1 if lines.pop() else 0  # after the final newline comes b""; anything else is an unfinished write
    docs: list[dict[str, Any]] = []
    texts: list[bytes] = []
    slots: list[tuple[int, str]] = []  # (document number, curve key) of each text
    found: list[tuple[str, Any]] = []

    def cut(match: re.Match) -> bytes:
        curve = match.group("curve")
        if curve is not None:
            found.append((curve.decode(), match.group("numbers")))
            return b'"' + curve + b'":null'
        text = match.group("table")
        table = shared.get(text)
        if table is None:
            table = shared[text] = json.loads(text)
        found.append(("layer_table", table))
        return b'"layer_table":null'

    for line in lines:
        if not line:
            continue
        found.clear()
        try:
            doc = json.loads(_CUT.sub(cut, line))
        except ValueError:
            skipped += 1
            continue
        result = doc.get("result") if isinstance(doc, dict) else None
        if found and not (isinstance(result, dict) and len({k for k, _ in found}) == len(found)
                          and all(result.get(k, 0) is None for k, _ in found)):
            doc = json.loads(line)  # a key of that name outside the result: parse the line as it is
            found.clear()
        for key, value in found:
            if key == "layer_table":
                doc["result"][key] = value
            elif key in wanted:
                slots.append((len(docs), key))
                texts.append(value)
        docs.append(doc)
    parsed = _parse_numbers(texts) if texts else []
    if parsed is None:  # unusual numbers: let json do it, and drop a document whose curve is not JSON
        bad = set()
        for (number, key), text in zip(slots, texts):
            try:
                docs[number]["result"][key] = json.loads(b"[" + text + b"]")
            except ValueError:
                bad.add(number)
        if bad:
            docs = [doc for number, doc in enumerate(docs) if number not in bad]
            skipped += len(bad)
    else:
        for (number, key), curve in zip(slots, parsed):
            docs[number]["result"][key] = curve
    return docs, skipped


def _segment_documents(store: LocalStore, curves: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every complete document of the store, oldest segment first (the order :meth:`LocalStore.documents` uses)."""
    if not store.segments.is_dir():
        return
    shared: dict[bytes, Any] = {}
    for segment in sorted(store.segments.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
        docs, skipped = _parse_segment(segment.read_bytes(), curves, shared)
        store.skipped_lines += skipped
        yield from docs


def runs_from_store(store: str | os.PathLike | LocalStore, status: str | Iterable[str] | None = COMPLETED,
                    fields: Iterable[str] | None = None) -> pd.DataFrame:
    """The runs of a local store (folder with ``runs/*.jsonl``) as a DataFrame, de-duplicated by config hash.

    ``status="COMPLETED"`` (default) keeps finished runs only; ``None`` keeps every status (FAILED runs have an
    ``error`` column). ``fields``: the result keys to keep (None: all); learning curves not named are not even
    parsed, which makes 200,000 runs load faster and take far less memory. Raises :class:`ResultsError` if the
    folder is not a store.
    """
    store = store if isinstance(store, LocalStore) else LocalStore(store)
    if not store.segments.is_dir():
        hint = " (it exists but has no runs/ folder)" if store.path.exists() else ""
        raise ResultsError(f"no run store at {store.path}{hint}; pass the folder given to `walking-noise run --store`")
    store.skipped_lines = 0
    # Millions of small containers are created and none is garbage: the cyclic GC would re-scan them over and
    # over (a large part of the load time, benchmarks/store_load.py), so it is paused while loading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        curves = None if fields is None else [k for k in CURVES if k in set(fields)]
        df = runs_frame(_segment_documents(store, curves), status=status, fields=fields)
    finally:
        if gc_was_enabled:
            gc.enable()
    df.attrs["source"] = str(store.path)
    df.attrs["skipped_lines"] = store.skipped_lines
    return df


# ---- MongoDB (SEML) ----------------------------------------------------------------------------------------


def _redact(uri: str) -> str:
    """A MongoDB URI without its password, for error messages."""
    return re.sub(r"(mongodb(?:\+srv)?://[^:/@]+):[^@]*@", r"\1:***@", uri)


def _seml_documents(doc: Mapping[str, Any], collection: str) -> list[dict[str, Any]]:
    """A SEML/Sacred document in the local store's shape (completed config, our config hash, ``study``); a bundle
    experiment (``result.bundle``) gives one document per member, so the analysis reads it unchanged."""
    members = (doc.get("result") or {}).get("bundle")
    if members is not None:
        parent = {k: v for k, v in doc.items() if k not in ("config", "result", "status")}
        return [d for m in members for d in _seml_documents({**parent, **m}, collection)]
    config = complete_config(doc.get("config") or {})
    out = dict(doc)
    out["config"] = config
    out["config_hash"] = config_hash(config)
    out.setdefault("study", collection)
    return [out]


def runs_from_mongodb(uri_or_client: Any, db: str, collection: str, *, filter: Mapping[str, Any] | None = None,
                      batch_id: int | None = None, status: str | Iterable[str] | None = (COMPLETED,),
                      fields: Iterable[str] | None = None,
                      timeout_ms: int = MONGO_TIMEOUT_MS) -> pd.DataFrame:
    """The runs of a SEML collection as a DataFrame: the columns of :func:`runs_from_store` plus ``_id``, ``batch_id``.

    ``uri_or_client``: a ``mongodb://`` URI or a ``pymongo.MongoClient`` (or mongomock's). ``filter``: an extra
    MongoDB query, e.g. ``{"config.noise.kind": "additive"}``. ``study`` is the document's own ``study`` field or,
    as SEML stores none, the collection name. Raises :class:`ResultsError` when the server cannot be reached within
    ``timeout_ms`` milliseconds.
    """
    import pymongo
    from pymongo.errors import PyMongoError

    where = _redact(uri_or_client) if isinstance(uri_or_client, str) else repr(uri_or_client)
    query: dict[str, Any] = dict(filter or {})
    wanted = _statuses(status)
    if wanted is not None:
        query["status"] = {"$in": list(wanted)}
    if batch_id is not None:
        query["batch_id"] = batch_id
    try:
        if isinstance(uri_or_client, str):
            client = pymongo.MongoClient(uri_or_client, serverSelectionTimeoutMS=timeout_ms,
                                         connectTimeoutMS=timeout_ms)
            client.admin.command("ping")
        else:
            client = uri_or_client
        projection = dict(MONGO_PROJECTION)
        if fields is not None:  # fetch only the result keys asked for
            del projection["result"]
            projection.update({f"result.{name}": 1 for name in fields})
            projection.update({f"result.bundle.{k}": 1 for k in ("config", "config_hash", "status")})
            projection.update({f"result.bundle.result.{name}": 1 for name in fields})
        cursor = client[db][collection].find(query, projection).sort("_id", pymongo.ASCENDING)
        docs = [member for d in cursor for member in _seml_documents(d, collection)]
    except PyMongoError as err:
        raise ResultsError(
            f"cannot read MongoDB collection {db}.{collection} at {where}: {type(err).__name__}: "
            f"{str(err).split(' (configured timeouts')[0].splitlines()[0][:200]}. "
            f"Is the server running and reachable (VPN, tunnel, credentials)? "
            f"To analyse runs of a local campaign instead, use --store PATH."
        ) from err
    df = runs_frame(docs, status=status, fields=fields)
    df.attrs["source"] = f"{where} {db}.{collection}"
    return df


def load_runs(store: str | os.PathLike | None = None, mongo_uri: str | None = None, db: str | None = None,
              collection: str | None = None, status: str | Iterable[str] | None = COMPLETED,
              batch_id: int | None = None, fields: Iterable[str] | None = None) -> pd.DataFrame:
    """The runs of exactly one source: a local ``store`` folder, or ``mongo_uri`` + ``db`` + ``collection``
    (optionally one SEML ``batch_id``)."""
    if (store is None) == (mongo_uri is None):
        raise ResultsError("give either a local store (--store PATH) or a MongoDB source "
                           "(--mongo-uri URI --db NAME --collection NAME), not both or neither")
    if store is not None:
        return runs_from_store(Path(store), status=status, fields=fields)
    if not db or not collection:
        raise ResultsError("a MongoDB source needs --db and --collection as well as --mongo-uri")
    return runs_from_mongodb(mongo_uri, db, collection, status=status, batch_id=batch_id, fields=fields)


def study_runs(df: pd.DataFrame, study: Any) -> pd.DataFrame:
    """The rows of ``df`` that belong to exactly ``study`` (a :class:`walking_noise.study.Study`): its grid
    configs and the runs its adaptive searches choose under the current design
    (:func:`walking_noise.selection.study_selection`). ``attrs`` say which study and what was left out."""
    from walking_noise.selection import study_selection

    latest = {h: {"status": st, "result": {"final_accuracy": acc}}
              for h, st, acc in zip(df["config_hash"], df["status"], df["final_accuracy"])} if len(df) else {}
    hashes, notes = study_selection(study, latest)
    kept = df[df["config_hash"].isin(hashes)].copy()
    kept.attrs = {**df.attrs, "study": study.name, "selection_notes": notes, "left_out": len(df) - len(kept)}
    return kept
