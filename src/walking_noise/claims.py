"""Claims on the runs of a shared store: many runners, each run trained once.

Two runners on one study (a second terminal, a resubmitted Slurm array, several array tasks) would otherwise train
every pending run twice. Before a runner trains a unit of work it claims each of the unit's runs in
``<store>/claims/<config hash>``; a run another runner holds is skipped, so two runners share a study's runs and
finish it in about half the time.

How a claim is made, on any filesystem several nodes share:

- a claim file is written in full under a temporary name, then ``os.link``-ed to its final name. ``link`` fails if
  the name exists, atomically, also over NFS (v2 and later: the classic NFS-safe lock file), Lustre, GPFS/Spectrum
  Scale and BeeGFS; ``O_EXCL`` is not reliable over NFSv2 and ``fcntl`` locks need a lock daemon on NFS, so neither
  is used. No reader ever sees a half-written claim;
- a claim says who holds it (host, pid, runner id, start time) and until when (``lease_until``, the holder's wall
  clock). The holder renews it every ``lease_s / 4`` seconds from a background thread (:meth:`ClaimBook.heartbeat`),
  by writing a new version and renaming it over the old one (atomic);
- a claim is *stale* when its process is gone (same host: the pid no longer runs) or its lease has expired (any
  host; clocks of the nodes must agree to well within ``lease_s``, 10 minutes by default, which NTP gives). A stale
  claim is taken over: renamed to a unique tombstone name (a rename of one source succeeds once, so two runners
  never both take it), then claimed anew;
- a claim is removed when its run's document is stored.

A run can still finish twice: a runner that stalls beyond its lease (suspended, or its node lost the shared
filesystem) loses its claims, another runner takes them over, and both store a COMPLETED document. The store keeps
the first one (:func:`walking_noise.store.latest_by_hash`: among COMPLETED documents of a config the earliest
stored wins), so a result someone has already read is never replaced; a runner that finds its claim taken over
and the run already COMPLETED does not store its copy at all (:meth:`ClaimBook.lost`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from walking_noise.store import COMPLETED

logger = logging.getLogger(__name__)

#: Seconds a claim stays valid without renewal (renewed every quarter of it).
LEASE_S = 600.0
CLAIMS = "claims"


@dataclass(frozen=True)
class Claim:
    """Who holds a run, and until when."""

    host: str
    pid: int
    runner: str
    started: float
    lease_until: float

    def stale(self, now: float | None = None) -> bool:
        """Whether the claim may be taken over: its lease expired, or (same host) its process is gone."""
        if (time.time() if now is None else now) > self.lease_until:
            return True
        return self.host == socket.gethostname() and not _running(self.pid)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def read_claim(path: Path) -> Claim | None:
    """The claim in ``path`` (None: no such file). A file that does not parse (written by hand?) counts as stale."""
    try:
        data = json.loads(path.read_text())
        return Claim(str(data["host"]), int(data["pid"]), str(data["runner"]), float(data["started"]),
                     float(data["lease_until"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return Claim("?", -1, "?", 0.0, 0.0)


class ClaimBook:
    """The claims one runner holds in one store, and the means to take, renew and give them back.

    ``runner``: this runner's id (one per process by default); worker processes of a runner pass the runner's id
    so they can tell whether the claim on their run is still the runner's (:meth:`lost`).
    """

    def __init__(self, store_path: str | os.PathLike, *, lease_s: float = LEASE_S, runner: str | None = None):
        self.folder = Path(store_path) / CLAIMS
        self.lease_s = float(lease_s)
        self.runner = runner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._held: dict[str, float] = {}  # hash -> started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"ClaimBook({str(self.folder)!r}, runner={self.runner!r}, held={len(self._held)})"

    def path(self, run_hash: str) -> Path:
        return self.folder / run_hash

    def _content(self, started: float) -> bytes:
        claim = Claim(socket.gethostname(), os.getpid(), self.runner, started, time.time() + self.lease_s)
        return json.dumps(asdict(claim)).encode()

    def _write_temp(self, run_hash: str, started: float) -> Path:
        tmp = self.folder / f".{run_hash}.{self.runner}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(self._content(started))  # closed before it is linked: visible to every NFS client
        return tmp

    def _link(self, run_hash: str) -> bool:
        """Create this runner's claim on ``run_hash`` unless a claim file exists (atomic)."""
        started = time.time()
        tmp = self._write_temp(run_hash, started)
        try:
            os.link(tmp, self.path(run_hash))
        except FileExistsError:
            return False
        except OSError as err:  # a filesystem without hard links cannot hold claims: say so once, run unclaimed
            if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise OSError(f"the store's filesystem at {self.folder} has no hard links, which claims need; run "
                              f"one runner per store there") from err
            raise
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._held[run_hash] = started
        return True

    def _take_over(self, run_hash: str, claim: Claim) -> bool:
        """Take a stale claim: rename it to a tombstone (only one runner can), then claim anew."""
        tombstone = self.folder / f".stale.{run_hash}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path(run_hash), tombstone)
        except FileNotFoundError:  # another runner took it (or its holder released it) first
            return self._link(run_hash)
        moved = read_claim(tombstone)
        if moved is not None and not moved.stale():  # renewed between our read and the rename: give it back
            try:
                os.link(tombstone, self.path(run_hash))
                return False
            except FileExistsError:  # its holder renewed it in the meantime (rename over): it holds it
                return False
            finally:
                tombstone.unlink(missing_ok=True)
        tombstone.unlink(missing_ok=True)
        logger.info("took over the stale claim of %s on run %s", claim.runner, run_hash[:10])
        return self._link(run_hash)

    def claim(self, run_hash: str) -> bool:
        """Claim one run: True if this runner holds it now (fresh, already its own, or taken over when stale)."""
        with self._lock:
            if run_hash in self._held:
                return True
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._link(run_hash):
            return True
        current = read_claim(self.path(run_hash))
        if current is None:  # released between our link and our read
            return self._link(run_hash)
        if current.runner == self.runner:
            return True
        return self._take_over(run_hash, current) if current.stale() else False

    def claim_all(self, run_hashes: Iterable[str]) -> list[str]:
        """The runs of ``run_hashes`` this runner now holds (each claimed in turn; held by others: left out)."""
        return [h for h in run_hashes if self.claim(h)]

    def release(self, run_hashes: Iterable[str]) -> None:
        """Give runs back (their documents are stored, or they will not be trained here after all)."""
        for run_hash in run_hashes:
            with self._lock:
                held = self._held.pop(run_hash, None)
            if held is None:
                continue
            current = read_claim(self.path(run_hash))
            if current is not None and current.runner == self.runner:
                self.path(run_hash).unlink(missing_ok=True)

    def release_all(self) -> None:
        self.release(list(self._held))

    def renew(self) -> list[str]:
        """Extend the lease of every held claim; return the runs whose claim another runner has taken over."""
        lost = []
        for run_hash, started in list(self._held.items()):
            current = read_claim(self.path(run_hash))
            if current is None or current.runner != self.runner:
                lost.append(run_hash)
                continue
            tmp = self._write_temp(run_hash, started)
            os.replace(tmp, self.path(run_hash))
        if lost:
            logger.warning("%d claim(s) of this runner were taken over by others (this runner was too slow to "
                           "renew them); the store keeps the first result of each", len(lost))
            with self._lock:
                for run_hash in lost:
                    self._held.pop(run_hash, None)
        return lost

    def heartbeat(self) -> ClaimBook:
        """Renew the held claims every ``lease_s / 4`` seconds from a daemon thread until :meth:`close`."""
        if self._thread is None:
            def beat() -> None:
                while not self._stop.wait(self.lease_s / 4):
                    try:
                        self.renew()
                    except OSError as err:  # the shared filesystem hiccuped: the next beat tries again
                        logger.warning("could not renew claims: %s", err)

            self._thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop renewing and release every held claim."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.release_all()

    def __enter__(self) -> ClaimBook:
        return self.heartbeat()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lost(self, run_hash: str) -> bool:
        """Whether another runner holds the claim on ``run_hash`` now (this runner's was taken over)."""
        current = read_claim(self.path(run_hash))
        return current is not None and current.runner != self.runner


def claim_states(store_path: str | os.PathLike) -> dict[str, tuple[Claim, bool]]:
    """Every claim in a store: run hash -> (claim, stale)."""
    folder = Path(store_path) / CLAIMS
    out: dict[str, tuple[Claim, bool]] = {}
    if not folder.is_dir():
        return out
    now = time.time()
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        claim = read_claim(path)
        if claim is not None:
            out[path.name] = (claim, claim.stale(now))
    return out


class FirstResultStore:
    """A store (anything with ``put`` and ``latest``) that stores no second COMPLETED document of a run whose claim
    this runner lost while training it: the first result stays the only one (the reader's rule alone would keep it
    too, :func:`walking_noise.store.latest_by_hash`; this keeps the duplicate off the disk where it can)."""

    def __init__(self, store: Any, claims: ClaimBook):
        self._store, self.claims = store, claims

    def put(self, document: dict[str, Any]) -> None:
        run_hash = document.get("config_hash", "")
        if document.get("status") == COMPLETED and self.claims.lost(run_hash) \
                and self._store.latest().get(run_hash, {}).get("status") == COMPLETED:
            logger.warning("run %s finished twice (its claim was taken over while it trained); the first result "
                           "stays, this copy is not stored", run_hash[:10])
            return
        self._store.put(document)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
