"""Many runners, one store: a run is claimed before it trains, so it is trained once; a dead runner's claims are
taken over; a run that finishes twice anyway is stored once (the first result stays)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from _studies import tiny_study

from walking_noise.claims import ClaimBook, FirstResultStore, claim_states, read_claim
from walking_noise.store import COMPLETED, FAILED, LocalStore, latest_by_hash
from walking_noise.study import load_study

H = "a" * 40  # a run hash


def test_a_run_claimed_by_one_runner_is_refused_to_another_until_released(tmp_path):
    first, second = ClaimBook(tmp_path, runner="first"), ClaimBook(tmp_path, runner="second")
    assert first.claim(H) and first.claim(H)  # claiming what one holds is a no-op
    assert not second.claim(H)
    assert read_claim(first.path(H)).runner == "first"
    first.release([H])
    assert second.claim(H)


def test_a_claim_says_who_holds_it_and_until_when(tmp_path):
    book = ClaimBook(tmp_path, runner="me", lease_s=60)
    before = time.time()
    book.claim(H)
    claim = read_claim(book.path(H))
    assert (claim.host, claim.pid, claim.runner) == (socket.gethostname(), os.getpid(), "me")
    assert before <= claim.started <= time.time() and claim.lease_until == pytest.approx(claim.started + 60, abs=1)
    assert not claim.stale()


def _write_claim(path: Path, **fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "runner": "other",
                                "started": time.time(), "lease_until": time.time() + 600, **fields}))


def test_the_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    book = ClaimBook(tmp_path, runner="me")
    _write_claim(book.path(H), pid=int(dead.stdout))
    assert read_claim(book.path(H)).stale()
    assert book.claim(H) and read_claim(book.path(H)).runner == "me"


def test_an_expired_lease_of_another_host_is_taken_over_and_a_live_one_is_not(tmp_path):
    book = ClaimBook(tmp_path, runner="me")
    _write_claim(book.path(H), host="node-elsewhere", pid=1, lease_until=time.time() + 600)
    assert not book.claim(H)
    _write_claim(book.path(H), host="node-elsewhere", pid=1, lease_until=time.time() - 1)
    assert book.claim(H) and read_claim(book.path(H)).runner == "me"


def test_renewal_extends_the_lease_and_reports_a_claim_taken_over(tmp_path):
    book = ClaimBook(tmp_path, runner="me", lease_s=30)
    book.claim(H)
    book.claim("b" * 40)
    old = read_claim(book.path(H)).lease_until
    time.sleep(0.05)
    assert book.renew() == [] and read_claim(book.path(H)).lease_until > old
    _write_claim(book.path("b" * 40), runner="thief")
    assert book.renew() == ["b" * 40] and book.lost("b" * 40) and not book.lost(H)


def test_closing_a_book_releases_its_claims_and_only_its_own(tmp_path):
    mine, theirs = ClaimBook(tmp_path, runner="me"), ClaimBook(tmp_path, runner="them")
    mine.claim(H)
    theirs.claim("b" * 40)
    mine.close()
    assert set(claim_states(tmp_path)) == {"b" * 40}


def _doc(status: str, stop: str | None, value: float) -> dict:
    return {"config_hash": H, "status": status, "stop_time": stop, "result": {"final_accuracy": value}}


def test_of_two_completed_documents_of_a_run_the_first_stored_stays():
    docs = [_doc(COMPLETED, "2026-12-04T10:00:05+00:00", 0.9), _doc(COMPLETED, "2026-12-04T10:00:01+00:00", 0.8),
            _doc(FAILED, "2026-12-04T10:00:09+00:00", 0.0)]
    assert latest_by_hash(docs)[H]["result"]["final_accuracy"] == 0.8  # earliest stop_time, whatever the order
    assert latest_by_hash(docs[::-1])[H]["result"]["final_accuracy"] == 0.8
    failed = [_doc(FAILED, "2026-12-04T10:00:01+00:00", 0.1), _doc(FAILED, "2026-12-04T10:00:02+00:00", 0.2)]
    assert latest_by_hash(failed)[H]["result"]["final_accuracy"] == 0.2  # a retry's failure replaces the first


def test_a_runner_that_lost_its_claim_does_not_store_a_second_result(tmp_path):
    store = LocalStore(tmp_path)
    slow, fast = ClaimBook(tmp_path, runner="slow"), ClaimBook(tmp_path, runner="fast")
    slow.claim(H)
    _write_claim(slow.path(H), runner="fast")  # the lease ran out and `fast` took the run over
    FirstResultStore(store, fast).put(_doc(COMPLETED, "2026-12-04T10:00:01+00:00", 0.8))
    FirstResultStore(store, slow).put(_doc(COMPLETED, "2026-12-04T10:00:02+00:00", 0.9))
    assert [d["result"]["final_accuracy"] for d in store.documents()] == [0.8]


# ---- trials: real runners in processes ----------------------------------------------------------------------


def _runner(study: Path, store: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "walking_noise.cli", "run", str(study), "--store", str(store),
                             "--no-progress", "--members", "2", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _exactly_once(study: Path, store: Path) -> Counter:
    """Per config: its number of COMPLETED documents in the store (every config must have one)."""
    counts = Counter(d["config_hash"] for d in LocalStore(store).documents() if d["status"] == COMPLETED)
    assert set(counts) == {run.hash for run in load_study(study).runs}
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("runners", [2, 3])
def test_runners_started_together_train_every_run_once(tmp_path, runners):
    study = tiny_study(tmp_path, max_train=1500, epochs=2, levels="[0.01, 0.1, 0.3, 1.0, 3.0, 10.0]", seeds=2)
    procs = [_runner(study, tmp_path / "store") for _ in range(runners)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert set(_exactly_once(study, tmp_path / "store").values()) == {1}
    ran = [int(line.split(" ran ")[1].split()[0]) for out in outputs for line in out.splitlines() if " ran " in line]
    assert sum(ran) == 12, outputs  # no run trained twice
    assert claim_states(tmp_path / "store") == {}  # every claim given back


@pytest.mark.slow
def test_a_runner_killed_mid_unit_leaves_claims_the_next_runner_takes_over(tmp_path):
    study = tiny_study(tmp_path, max_train=3000, epochs=4, levels="[0.01, 0.1, 1.0, 10.0]", seeds=2)
    store = tmp_path / "store"
    doomed = _runner(study, store)
    deadline = time.time() + 120
    while not claim_states(store) and time.time() < deadline:  # it has claimed its first unit
        time.sleep(0.05)
    assert claim_states(store), "the first runner never claimed a run"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert all(stale for _, stale in claim_states(store).values())  # its process is gone
    survivor = _runner(study, store)
    out = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, out
    assert set(_exactly_once(study, store).values()) == {1}
    assert claim_states(store) == {}
