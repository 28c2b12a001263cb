"""Where run documents live: an embedded local store that needs no server, and its MongoDB twin.

A run document has the shape SEML and Sacred give an experiment in MongoDB: ``config`` (the run's nested config),
``config_hash``, ``status`` (``COMPLETED`` or ``FAILED``), ``result`` (the experiment's return value), ``fail_trace``,
``start_time``/``stop_time``, ``host`` and the campaign's ``study``/``batch_id``.

The local store is a folder of append-only JSON-lines *segments*, one per writer process
(``runs/<host>-<pid>-<random>.jsonl``). Each document is one line written with a single ``write`` and ``fsync``:

- no two processes ever write the same file, so many Slurm tasks on different nodes can share one network
  filesystem without locks (NFS has no reliable cross-node locking or O_APPEND);
- a process killed mid-write leaves at most one line without its newline, which readers skip: a finished run is
  never lost and a half-written one is never read;
- reading is a scan of a few large files, fast enough for 200,000 runs (``benchmarks/store_load.py``).

When one config has several documents (a failure, then a retry), the newest COMPLETED one wins.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from walking_noise.config import LOCATION_KEYS, SEML_KEYS

COMPLETED, FAILED = "COMPLETED", "FAILED"
# Keys that say where or how a run was executed, not what was computed: equal runs on two machines share a hash.
HASH_EXCLUDED_KEYS = frozenset(LOCATION_KEYS + SEML_KEYS)


#: Config keys added after runs were first stored, with their defaults. While a key holds its default it is left out
#: of the hash, so adding an option never changes the identity (nor, through the noise key, the draws) of a run.
LATER_KEYS: dict[tuple[str, ...], Any] = {("noise", "site"): "activation", ("model_kwargs",): None,
                                          ("noise", "distribution"): "gaussian"}


def config_hash(config: dict[str, Any]) -> str:
    """A stable identity of a run's scientific config (sorted JSON, location keys dropped), as hex sha1."""
    kept = {k: v for k, v in config.items() if k not in HASH_EXCLUDED_KEYS}
    for path, default in LATER_KEYS.items():
        kept = _without_default(kept, path, default)
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def _without_default(config: dict[str, Any], path: tuple[str, ...], default: Any) -> dict[str, Any]:
    """``config`` without the key at ``path`` if it holds ``default`` (a copy; the caller's dict is not changed)."""
    head, rest = path[0], path[1:]
    if head not in config:
        return config
    if not rest:
        return {k: v for k, v in config.items() if k != head} if config[head] == default else config
    inner = config[head]
    return {**config, head: _without_default(inner, rest, default)} if isinstance(inner, dict) else config


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers (array tasks on other nodes) see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable; not every filesystem lets a folder be opened
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_plain(value: Any, nan_as_none: bool = False) -> Any:
    """Recursively turn numpy/torch scalars and tuples into plain Python types (what SEML stores unpickled);
    ``nan_as_none``: non-finite floats become None (strict JSON, e.g. a fit's fields)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v, nan_as_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, nan_as_none) for v in value]
    if isinstance(value, (bool, str, type(None))):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if nan_as_none and not math.isfinite(value) else float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy or torch scalar
        return to_plain(value.item(), nan_as_none)
    if hasattr(value, "tolist"):
        return to_plain(value.tolist(), nan_as_none)
    return str(value)


class StoreError(RuntimeError):
    """The store cannot be used (not writable, not a store)."""


class LocalStore:
    """An embedded run store in a folder; safe for concurrent writers on one shared filesystem."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.segments = self.path / "runs"
        self._fd: int | None = None
        self._segment: Path | None = None
        self.skipped_lines = 0

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    def ensure_writable(self) -> None:
        """Create the folder and prove a file can be written there; raise :class:`StoreError` if not."""
        try:
            self.segments.mkdir(parents=True, exist_ok=True)
            probe = self.segments / f".probe-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise StoreError(f"the store {self.path} cannot be written ({err}); choose another --store PATH") from err

    def _open(self) -> int:
        if self._fd is None:
            self.ensure_writable()
            name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._segment = self.segments / name
            self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def put(self, document: dict[str, Any]) -> None:
        """Append one run document durably (one write, then fsync)."""
        line = (json.dumps(to_plain(document), allow_nan=True, separators=(",", ":")) + "\n").encode()
        fd = self._open()
        written = os.write(fd, line)
        if written != len(line):  # pragma: no cover - only on a full disk
            raise StoreError(f"short write to {self._segment}: {written} of {len(line)} bytes")
        os.fsync(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def documents(self) -> Iterator[dict[str, Any]]:
        """Every complete document in every segment, oldest segment first; torn lines are counted and skipped."""
        self.skipped_lines = 0
        if not self.segments.is_dir():
            return
        for segment in sorted(self.segments.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
            data = segment.read_bytes()
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            elif lines:  # last line without newline: a write that did not finish
                lines.pop()
                self.skipped_lines += 1
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    self.skipped_lines += 1

    def latest(self) -> dict[str, dict[str, Any]]:
        """One document per config hash: the newest COMPLETED one, else the newest of any status."""
        return latest_by_hash(self.documents())

    def completed_hashes(self) -> set[str]:
        return {h for h, doc in self.latest().items() if doc.get("status") == COMPLETED}


def latest_by_hash(documents: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Collapse repeated documents of one config: COMPLETED beats FAILED, later beats earlier."""
    best: dict[str, dict[str, Any]] = {}
    for doc in documents:
        key = doc.get("config_hash") or config_hash(doc.get("config", {}))
        old = best.get(key)
        if old is None or doc.get("status") == COMPLETED or old.get("status") != COMPLETED:
            best[key] = doc
    return best

