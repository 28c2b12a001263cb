"""The local runner: every pending config of a study into a :class:`~walking_noise.store.LocalStore`, resumably.

Configs are planned into work units (:mod:`walking_noise.units`) and run by a pool of worker processes; adaptive
searches (:mod:`walking_noise.searches`) share the pool. Each worker writes its finished runs straight into the
store: killing the runner at any moment loses no finished run, and a restart runs only what is missing (and, with
``retry_failed``, what failed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from walking_noise.claims import LEASE_S, ClaimBook
from walking_noise.config import Run
from walking_noise.searches import run_searches
from walking_noise.selection import pending_runs
from walking_noise.store import COMPLETED, LocalStore, StoreWatch
from walking_noise.study import CampaignError, Study
from walking_noise.units import execute_in_worker, execute_unit, init_worker, plan_units

logger = logging.getLogger(__name__)


@dataclass
class CampaignSummary:
    study: str
    total: int
    already_done: int
    ran: int = 0
    completed: int = 0
    failed: int = 0
    skipped_failed: int = 0
    elsewhere: int = 0  # runs another runner trained (claimed by it) while this one ran
    wall_time_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    searches: list[Any] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.study}: {self.total} configs, {self.already_done} already in the store, ran {self.ran} "
                f"({self.completed} completed, {self.failed} failed) in {self.wall_time_s:.1f} s"
                + (f"; {self.elsewhere} trained by other runners" if self.elsewhere else "")
                + (f"; {self.skipped_failed} earlier failures skipped (use --retry-failed)"
                   if self.skipped_failed else ""))


def run_campaign(study: Study, store: LocalStore, *, workers: int = 1, retry_failed: bool = False,
                 members: int | None = None, threads_per_worker: int | None = None,
                 progress: bool = True, lease_s: float = LEASE_S) -> CampaignSummary:
    """Run every pending config of ``study`` into ``store`` with ``workers`` processes (1: in this process).

    Compatible configs train together as one batch of up to ``members`` (None: chosen per model and device), and
    inference-only configs reuse one clean training per seed. Other runners may work on the same study in the same
    store at the same time: each run is claimed before it trains (:mod:`walking_noise.claims`), runs other runners
    hold are left to them, and this runner returns once every run of the study is stored, taking over the runs of a
    runner that died (``lease_s``: how long a claim lives without renewal).
    """
    try:
        store.ensure_writable()
    except Exception as err:
        raise CampaignError(str(err)) from err
    started = time.perf_counter()
    pending, done, skipped = pending_runs(study, store.latest(), retry_failed)
    summary = CampaignSummary(study.name, len({run.hash for run in study.runs}), done, skipped_failed=skipped)
    logger.info("%s: %d configs, %d done, %d failed earlier, %d to run with %d worker(s); store %s", study.name,
                summary.total, done, skipped, len(pending), workers, store.path)
    units = plan_units(pending, members, workers)
    lock = threading.Lock()
    grid_error: list[BaseException] = []

    def record(outcomes: list[dict[str, Any]]) -> None:
        with lock:
            for outcome in outcomes:
                summary.ran += 1
                if outcome["status"] == COMPLETED:
                    summary.completed += 1
                else:
                    summary.failed += 1
                    summary.failures.append(outcome["error"])
                    logger.warning("run %s failed: %s", outcome["config_hash"][:10], outcome["error"])
                bar.update(1)

    def done_elsewhere(count: int) -> None:
        with lock:
            summary.elsewhere += count
            bar.update(count)

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, workers))
    with contextlib.ExitStack() as stack:
        claims = stack.enter_context(ClaimBook(store.path, lease_s=lease_s))
        if workers <= 1:
            init_worker(str(store.path), threads, claims.runner)
            pool = None
        else:
            ctx = get_context(worker_start_method([run.values for run in pending] + [b for b, _ in study.searches]))
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                                           initargs=(str(store.path), threads, claims.runner)))
            pool.submit(int).result()  # start every worker now, before this process starts any thread
        bar = _progress_bar(len(pending), study.name, progress, unknown_total=bool(study.searches))
        shared = _ClaimedUnits(study.name, store, claims, pool, workers, members, record, done_elsewhere)
        run_units = shared.run

        # With a pool, the grid's units and the searches' rounds share it: a long grid unit (e.g. a whole
        # train-once-evaluate-many group) does not leave the other workers idle while the searches wait.
        grid = threading.Thread(target=_capture, args=(run_units, units, grid_error), daemon=True)
        grid.start()
        if pool is None:  # one worker: this process trains, one thing at a time
            grid.join()
        found_all: list[Any] = []
        try:
            if study.searches and not grid_error:
                found_all = run_searches(study.searches, study.name, store, run_units=run_units, workers=workers,
                                         members=members)
        finally:
            grid.join()
            bar.close()
        if grid_error:
            raise grid_error[0]
        for number, found in enumerate(found_all, 1):
            summary.searches.append(found)
            if isinstance(found, Exception):
                summary.failures.append(f"adaptive search {number}: {found}")
                logger.warning("adaptive search %d/%d failed: %s", number, len(found_all), found)
                continue
            fit = found.fit
            where = (f"mu = {fit.mu:.4g} (68 %: {fit.mu_lo68:.4g} .. {fit.mu_hi68:.4g}"
                     + (f"; {fit.error_flag})" if fit.error_flag else ")")
                     if fit.converged else f"not converged ({fit.reason})")
            logger.info("adaptive search %d/%d: %d runs, %s; %s", number, len(found_all), found.runs, where,
                        found.stopped_because)
    summary.wall_time_s = time.perf_counter() - started
    logger.info("%s", summary)
    return summary


#: Seconds between looks at the store while this runner waits for runs other runners hold.
POLL_S = 5.0


class _ClaimedUnits:
    """Runs units of work for one runner of a study: claims each unit's runs first, trains those it got (in the
    pool, or here), and waits for the rest, which other runners hold, taking over any whose runner died."""

    def __init__(self, study: str, store: LocalStore, claims: ClaimBook, pool: Any, workers: int,
                 members: int | None, record: Callable[[list[dict[str, Any]]], None],
                 done_elsewhere: Callable[[int], None]):
        self.study, self.store, self.claims, self.pool = study, store, claims, pool
        self.workers, self.members = workers, members
        self.record, self.done_elsewhere = record, done_elsewhere
        self.watch = StoreWatch(store)

    def run(self, todo: list[list[Run]]) -> None:
        """Return once every run of ``todo`` is stored (COMPLETED or FAILED), by this runner or another."""
        queue = deque(todo)
        others: dict[str, Run] = {}  # runs other runners hold
        running: dict[Any, list[Run]] = {}
        looked = 0.0
        while queue or running or others:
            while queue and (self.pool is None or len(running) < 2 * self.workers):
                unit = queue.popleft()
                held = set(self.claims.claim_all(run.hash for run in unit))
                others.update({run.hash: run for run in unit if run.hash not in held})
                mine = self._unstored([run for run in unit if run.hash in held])
                if mine and self.pool is None:
                    self._finish(mine, execute_unit(mine, self.study, self.store))
                elif mine:
                    running[self.pool.submit(execute_in_worker, mine, self.study)] = mine
            if running:
                finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finish(running.pop(future), future.result())
            elif others and not queue:
                time.sleep(POLL_S)
            if others and not queue and time.monotonic() - looked >= POLL_S:
                looked = time.monotonic()
                queue.extend(self._look_at_others(others))

    def _unstored(self, runs: list[Run]) -> list[Run]:
        """The runs not stored yet (a runner may have stored one since this runner planned it): the others are given
        back, and counted as trained elsewhere."""
        finished = self.watch.finished()
        stored = [run.hash for run in runs if run.hash in finished]
        if stored:
            self.claims.release(stored)
            self.done_elsewhere(len(stored))
        return [run for run in runs if run.hash not in finished]

    def _finish(self, unit: list[Run], outcomes: list[dict[str, Any]]) -> None:
        self.record(outcomes)
        self.claims.release(run.hash for run in unit)

    def _look_at_others(self, others: dict[str, Run]) -> list[list[Run]]:
        """Drop the runs other runners have stored; claim those whose runner died or released them unstored."""
        finished = self.watch.finished()
        stored = [h for h in others if h in finished]
        for run_hash in stored:
            del others[run_hash]
        if stored:
            self.done_elsewhere(len(stored))
        free = [others.pop(h) for h in self.claims.claim_all(list(others))]
        if free:
            logger.info("%d run(s) of a runner that stopped are taken over", len(free))
        elif others:
            logger.debug("waiting for %d run(s) other runners train", len(others))
        return plan_units(free, self.members, self.workers)


START_METHOD_ENV = "WALKING_NOISE_START_METHOD"  # fork, spawn or forkserver: overrides the choice below


def worker_start_method(configs: Iterable[dict[str, Any]]) -> str:
    """How the runner starts its worker processes: ``fork`` where it is safe, else ``spawn``.

    Why: a spawned worker imports torch and the library again (over a second each, before
    its first run); a forked one starts in milliseconds with everything imported, which is most of the runner's
    overhead on a small campaign (``benchmarks/campaign_walltime.py``). Forking is safe on Linux when CUDA is
    untouched and every config trains on the CPU; the workers fork before this process starts a thread and run
    torch single-threaded. A GPU study, or any other platform, gets fresh interpreters.
    """
    chosen = os.environ.get(START_METHOD_ENV)
    if chosen:
        return chosen
    import torch

    from walking_noise.training import resolve_device

    if not sys.platform.startswith("linux") or torch.cuda.is_initialized():
        return "spawn"
    devices = {str(config.get("device", "auto")) for config in configs}
    try:
        return "fork" if all(resolve_device(d).type == "cpu" for d in devices) else "spawn"
    except RuntimeError:  # e.g. device=cuda without a GPU: each such run records its own failure
        return "spawn"


def _capture(function: Callable[..., Any], argument: Any, errors: list[BaseException]) -> None:
    """Call ``function(argument)`` in a thread, keeping its exception for the caller to raise."""
    try:
        function(argument)
    except BaseException as err:  # noqa: BLE001 - re-raised by the thread that joins
        errors.append(err)


def _progress_bar(total: int, name: str, enabled: bool, unknown_total: bool = False) -> Any:
    from tqdm import tqdm

    return tqdm(total=None if unknown_total else total, desc=name, unit="run",
                disable=not enabled or (total == 0 and not unknown_total), file=sys.stderr,
                dynamic_ncols=True)
