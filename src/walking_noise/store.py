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

When one config has several documents (a failure, then a retry), a COMPLETED one wins over a FAILED one, and of
several COMPLETED ones (a run that finished twice, :mod:`walking_noise.claims`) the first stored (earliest
``stop_time``) wins, so a result that was read once is never replaced; of several FAILED ones the newest.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from walking_noise.files import to_plain
from walking_noise.identity import config_hash

COMPLETED, FAILED = "COMPLETED", "FAILED"
#: The per-epoch curves a run's result holds (one value per epoch), in every engine's documents.
CURVES = ("val_accuracy", "val_loss", "val_nonfinite", "train_accuracy", "train_loss")


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
        self._read: dict[str, _SegmentRead] = {}  # segment name -> what was parsed of it

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
        """Every complete document in every segment, oldest segment first; torn lines are counted and skipped.

        Segments only grow, so each is parsed once: a later call parses only the lines appended since (an adaptive
        search reads the store every round; re-parsing it all made a third of a sensitivity scan). A segment that
        shrank or was replaced (another inode) is parsed again. The documents are shared between calls: read them,
        do not change them."""
        self.skipped_lines = 0
        if not self.segments.is_dir():
            return
        for segment in sorted(self.segments.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
            read = self._segment_read(segment)
            self.skipped_lines += read.invalid + read.torn
            yield from read.documents

    def _segment_read(self, segment: Path) -> _SegmentRead:
        stat = segment.stat()
        read = self._read.get(segment.name)
        if read is None or read.inode != stat.st_ino or read.offset > stat.st_size:
            read = self._read[segment.name] = _SegmentRead(stat.st_ino)
        if stat.st_size > read.offset:
            with open(segment, "rb") as handle:
                handle.seek(read.offset)
                data = handle.read(stat.st_size - read.offset)
            complete = data[:data.rfind(b"\n") + 1]  # a last line without its newline is a write not finished
            for line in complete.split(b"\n")[:-1]:
                try:
                    read.documents.append(json.loads(line))
                except ValueError:
                    read.invalid += 1
            read.offset += len(complete)
            read.torn = int(len(data) > len(complete))
        return read

    def latest(self) -> dict[str, dict[str, Any]]:
        """One document per config hash: the first COMPLETED one, else the newest FAILED one (:func:`latest_by_hash`)."""
        return latest_by_hash(self.documents())

    def completed_hashes(self) -> set[str]:
        return {h for h, doc in self.latest().items() if doc.get("status") == COMPLETED}


class _SegmentRead:
    """How far one segment was parsed: its complete documents up to ``offset`` bytes, the lines that were not JSON,
    and whether unfinished bytes follow (a torn last line)."""

    def __init__(self, inode: int):
        self.inode = inode
        self.offset = 0
        self.documents: list[dict[str, Any]] = []
        self.invalid = 0
        self.torn = 0


def latest_by_hash(documents: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Collapse repeated documents of one config: COMPLETED beats FAILED; of two COMPLETED the earlier stored
    (``stop_time``; none, e.g. imported: earliest) stays; of two FAILED the later read."""
    best: dict[str, dict[str, Any]] = {}
    for doc in documents:
        key = doc.get("config_hash") or config_hash(doc.get("config", {}))
        old = best.get(key)
        if old is None or old.get("status") != COMPLETED:
            best[key] = doc
        elif doc.get("status") == COMPLETED and str(doc.get("stop_time") or "") < str(old.get("stop_time") or ""):
            best[key] = doc
    return best



class StoreWatch:
    """What a store gains while a runner works, read incrementally (only the bytes appended since the last look):
    the runs COMPLETED in it (at any time) and those that FAILED since the watch began (a failure from before is for
    ``--retry-failed`` to judge, not a reason to skip). Cheap enough to ask before every unit of work."""

    def __init__(self, store: LocalStore):
        self.store = store
        self._offsets: dict[Path, int] = {}
        self.completed: set[str] = set()
        self.failed_since: set[str] = set()
        self._started = False
        self.finished()
        self._started = True

    def finished(self) -> set[str]:
        """Hashes of the runs stored COMPLETED, or FAILED since the watch began."""
        if self.store.segments.is_dir():
            for segment in self.store.segments.glob("*.jsonl"):
                self._read(segment)
        return self.completed | self.failed_since

    def _read(self, segment: Path) -> None:
        start = self._offsets.get(segment, 0)
        with open(segment, "rb") as fh:
            fh.seek(start)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line without its newline is still being written
        self._offsets[segment] = start + end
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            status, key = doc.get("status"), doc.get("config_hash")
            if status == COMPLETED:
                self.completed.add(key)
            elif status == FAILED and self._started:
                self.failed_since.add(key)
