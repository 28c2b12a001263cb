"""What one array task does: run its work units into the store, and what happens when it is killed.

A unit's runs are stored when the unit has trained (one fsynced line each), so a task killed by its time limit, by
preemption or by ``scancel`` loses at most the unit it was running: those configs stay *missing* (not failed) and
the next ``submit`` picks them up. A task that Slurm requeues reads the same list again and skips every config
already COMPLETED in the store.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from walking_noise.slurm.options import SlurmError
from walking_noise.slurm.submission import read_submission_list, task_share
from walking_noise.claims import ClaimBook, FirstResultStore
from walking_noise.config import Run
from walking_noise.store import COMPLETED, LocalStore, StoreError, StoreWatch

logger = logging.getLogger(__name__)


@dataclass
class TaskSummary:
    task_index: int
    num_tasks: int
    share: int
    skipped_done: int = 0
    claimed_elsewhere: int = 0
    completed: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (f"task {self.task_index}/{self.num_tasks}: share of {self.share} config(s), {self.skipped_done} "
                f"already completed, "
                + (f"{self.claimed_elsewhere} held by another runner, " if self.claimed_elsewhere else "")
                + f"ran {self.completed + self.failed} ({self.completed} completed, {self.failed} failed)")


class _Stopped(BaseException):
    """Slurm sent SIGTERM (time limit, preemption, scancel)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def _threads() -> int:
    """Threads for torch: the task's CPUs; Slurm without cgroups does not stop a task from using every core."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        return int(cpus)
    return 1 if os.environ.get("SLURM_JOB_ID") else (os.cpu_count() or 1)


def run_array_task(list_path: str | os.PathLike, task_index: int, num_tasks: int, store: LocalStore, *,
                   threads: int | None = None) -> TaskSummary:
    """Run this task's share of a submission list into ``store``, unit by unit, skipping configs already COMPLETED.

    A unit trains as the local runner trains it (:func:`walking_noise.units.execute_unit`: packed, or train once
    and evaluate many); a SIGTERM from Slurm stops the task between two lines of Python: units already stored stay,
    the unit it was running is not stored at all (so its configs count as missing, not failed) and the next
    ``submit`` picks them up. Lists written without units run config by config.
    """
    import torch

    from walking_noise.units import execute_unit

    records = read_submission_list(list_path)
    share = task_share(records, task_index, num_tasks)
    summary = TaskSummary(task_index, num_tasks, len(share))
    try:
        store.ensure_writable()
    except StoreError as err:
        raise SlurmError(str(err)) from err
    torch.set_num_threads(max(1, threads or _threads()))
    watch = StoreWatch(store)
    units: dict[Any, list[dict[str, Any]]] = {}
    for number, record in enumerate(share):
        units.setdefault(record.get("unit", f"config {number}"), []).append(record)
    logger.info("task %d/%d: %d config(s) in %d unit(s) of %s; store %s", task_index, num_tasks, len(share),
                len(units), list_path, store.path)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    current = None
    claims = ClaimBook(store.path).heartbeat()  # a second submission's tasks skip what this one trains
    guarded = FirstResultStore(store, claims)
    try:
        for number, unit in enumerate(units.values(), 1):
            todo = [r for r in unit if r["config_hash"] not in watch.completed]
            summary.skipped_done += len(unit) - len(todo)
            held = set(claims.claim_all(r["config_hash"] for r in todo))
            summary.claimed_elsewhere += len(todo) - len(held)
            finished = watch.finished()  # stored by another runner since this task looked
            claims.release(h for h in held if h in finished)
            summary.skipped_done += sum(h in finished for h in held)
            todo = [r for r in todo if r["config_hash"] in held and r["config_hash"] not in finished]
            if not todo:
                logger.info("[%d/%d] unit of %d config(s) already completed or held by another runner, skipped",
                            number, len(units), len(unit))
                continue
            current = todo
            started = time.perf_counter()
            outcomes = execute_unit([Run.from_dict(r["config"]) for r in todo], todo[0].get("study", "unknown"),
                                    guarded)
            claims.release(r["config_hash"] for r in todo)
            current = None
            for outcome in outcomes:
                if outcome["status"] == COMPLETED:
                    summary.completed += 1
                else:
                    summary.failed += 1
                    logger.warning("%s FAILED: %s", outcome["config_hash"][:10], outcome["error"])
            logger.info("[%d/%d] unit of %d config(s): %d completed in %.1f s", number, len(units), len(todo),
                        sum(o["status"] == COMPLETED for o in outcomes), time.perf_counter() - started)
    except _Stopped:
        logger.warning("task %d: stopped by SIGTERM (time limit, preemption or scancel)%s; %d run(s) of this task "
                       "are in the store, the rest stay missing for the next `walking-noise submit`", task_index,
                       f" while running a unit of {len(current)} config(s)" if current else "",
                       summary.completed + summary.failed)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        claims.close()
        store.close()
    logger.info("%s", summary)
    return summary
