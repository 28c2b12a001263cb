"""Submitting a study as one job array: shares of work units, submission files, Slurm queries, the job script.

Why nothing is lost or run twice: ``submit`` leaves out the configs of tasks of earlier arrays that are still
PENDING or RUNNING in ``squeue``, so submitting again while an array runs does not queue a config twice; each
submission also leaves ``<study>-<timestamp>.json`` (study file, all of the study's config hashes, job id, sbatch
command) and ``<study>-<timestamp>.sbatch`` (the job script). SEML's ``experiments_per_job`` sets the default
number of tasks (configs / experiments_per_job) and ``max_simultaneous_jobs`` becomes the array throttle ``%K``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from walking_noise.slurm.options import SlurmError, has_option, resolve_slurm_block
from walking_noise.config import Run
from walking_noise.files import atomic_write, now_iso
from walking_noise.identity import config_hash
from walking_noise.selection import pending_runs
from walking_noise.store import LocalStore, StoreError
from walking_noise.study import Study

logger = logging.getLogger(__name__)

SUBMISSIONS = "submissions"


#: Slurm states in which an array task still holds (or will hold) its share of the configs.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                           "RESV_DEL_HOLD", "SPECIAL_EXIT"})


SQUEUE_TIMEOUT_S = 30


SBATCH_TIMEOUT_S = 120


T = TypeVar("T")


def plan_shares(runs: Sequence[Run], num_tasks: int, members: int | None = None) -> list[dict[str, Any]]:
    """The submission records of ``runs`` for an array of ``num_tasks``: each config with its work unit and the
    task that runs it.

    Configs are planned into units as the local runner plans them (:func:`walking_noise.units.plan_units`: batches
    of compatible configs up to ``members``, inference-only configs of one seed together), so compatible configs
    land in the same task and train as one packed network there. While there are fewer units than tasks, the
    largest training unit is halved. Whole units go to tasks, largest first, each to the task with the least work so
    far (work = configs x epochs), so the array finishes together. Decided once, at submission, and written into
    the list: every task reads its share, whatever GPU or CPU its node has.
    """
    from walking_noise.units import is_inference_only, plan_units

    if num_tasks < 1:
        raise SlurmError(f"the number of array tasks must be at least 1, got {num_tasks}")
    units = plan_units(list(runs), members)
    while len(units) < num_tasks:
        training = [u for u in units if len(u) > 1 and not is_inference_only(u[0].config)]
        if not training:
            break
        largest = max(training, key=_cost)
        units.remove(largest)
        units += [largest[:len(largest) // 2], largest[len(largest) // 2:]]
    load = [0.0] * num_tasks
    records = []
    for number in sorted(range(len(units)), key=lambda u: -_cost(units[u])):
        task = min(range(num_tasks), key=lambda t: (load[t], t))
        load[task] += _cost(units[number])
        records += [{"config_hash": run.hash, "config": run.values, "unit": number, "task": task}
                    for run in units[number]]
    return sorted(records, key=lambda r: (r["task"], r["unit"]))


def _cost(unit: list[Run]) -> float:
    return float(sum(run.config.training.epochs for run in unit))


def task_share(records: Sequence[T], task_index: int, num_tasks: int) -> list[T]:
    """The records task ``task_index`` of ``num_tasks`` runs: those :func:`plan_shares` gave it, or, in a list
    written without tasks (plain items, older submissions), items ``task_index, task_index + num_tasks, ...``."""
    if num_tasks < 1:
        raise SlurmError(f"the number of array tasks must be at least 1, got {num_tasks}")
    if not 0 <= task_index < num_tasks:
        raise SlurmError(f"array task index {task_index} is outside 0..{num_tasks - 1}; the array was submitted "
                         f"with {num_tasks} task(s) - pass the same --num-tasks as the submission")
    if records and isinstance(records[0], dict) and "task" in records[0]:
        return [r for r in records if r["task"] == task_index]  # type: ignore[index]
    return list(records[task_index::num_tasks])


def split_shares(items: Sequence[T], num_tasks: int) -> list[list[T]]:
    """Every task's share; together they hold every item exactly once."""
    return [task_share(items, i, num_tasks) for i in range(num_tasks)]


def default_num_tasks(num_configs: int, experiments_per_job: int) -> int:
    """SEML's rule: one job (here: array task) per ``experiments_per_job`` experiments."""
    return max(1, math.ceil(num_configs / max(1, experiments_per_job)))


def submissions_dir(store: LocalStore) -> Path:
    return store.path / SUBMISSIONS


def write_submission_list(path: Path, study_name: str, configs: Sequence[dict[str, Any]]) -> int:
    """Write the configs of one submission (plain configs, or :func:`plan_shares` records with their unit and
    task), one JSON object a line, atomically; return how many."""
    records = [c if "config" in c and "config_hash" in c else {"config_hash": config_hash(c), "config": c}
               for c in configs]
    lines = [json.dumps({"study": study_name, **r}, sort_keys=True) for r in records]
    atomic_write(path, ("\n".join(lines) + "\n").encode() if lines else b"")
    return len(lines)


def read_submission_list(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a submission list; a clear error if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise SlurmError(f"submission list {path} does not exist; was the store moved or its submissions/ folder "
                         f"deleted? Submit again with `walking-noise submit STUDY --store PATH`")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record["config"]  # noqa: B018 - every record must have one
        except (ValueError, KeyError, TypeError) as err:
            raise SlurmError(f"{path} line {number} is not a submission record ({err}); submit again") from err
        record.setdefault("config_hash", config_hash(record["config"]))
        records.append(record)
    return records


def _claim_name(folder: Path, study: str) -> str:
    """A fresh ``<study>-<UTC time>`` base name in ``folder``, claimed with an exclusive create of its .json."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        base = f"{study}-{stamp}" if n == 1 else f"{study}-{stamp}-{n}"
        try:
            os.close(os.open(folder / f"{base}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return base
        except FileExistsError:
            continue
    raise SlurmError(f"cannot find a free submission name in {folder}")  # pragma: no cover


def read_submissions(store: LocalStore) -> list[dict[str, Any]]:
    """Every submission's metadata (the ``.json`` beside each list), oldest first; unreadable ones skipped."""
    folder = submissions_dir(store)
    metas = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a name claimed by a submit that is still writing (or failed)
        if isinstance(meta, dict) and "study" in meta:
            meta["_path"] = str(path)
            metas.append(meta)
    return sorted(metas, key=lambda m: (m.get("created", ""), m["_path"]))


def _missing_tool(tool: str) -> SlurmError:
    return SlurmError(f"`{tool}` was not found on PATH, so this machine cannot talk to Slurm. Run this on the "
                      f"cluster's login node; to run a study on this machine without Slurm use `walking-noise run "
                      f"STUDY --store PATH`; for a local single-node Slurm (tests) run `slurm/local_cluster.sh "
                      f"start` as root")


def array_states(job_ids: Iterable[str | int]) -> dict[str, dict[int, str]]:
    """``{array job id: {task index: state}}`` for the tasks of these arrays that ``squeue`` still lists.

    Finished tasks drop out of ``squeue`` (after ``MinJobAge``); an array that is not listed at all maps to ``{}``.
    Raises :class:`SlurmError` when ``squeue`` is missing or the controller does not answer.
    """
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return {}
    squeue = shutil.which("squeue")
    if squeue is None:
        raise _missing_tool("squeue")
    cmd = [squeue, "--noheader", "--array", f"--jobs={','.join(ids)}", "--format=%F|%K|%T"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise SlurmError(f"squeue did not answer within {SQUEUE_TIMEOUT_S} s; is slurmctld running?") from err
    states: dict[str, dict[int, str]] = {j: {} for j in ids}
    if out.returncode != 0:
        if "invalid job id" in out.stderr.lower():  # every array finished long ago
            return states
        raise SlurmError(f"squeue failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job, task, state = parts
        if job in states and task.isdigit():
            states[job][int(task)] = state
    return states


def in_flight_hashes(store: LocalStore, submissions: Sequence[dict[str, Any]],
                     states: dict[str, dict[int, str]]) -> set[str]:
    """Config hashes held by array tasks that are still queued or running (not to be submitted again)."""
    held: set[str] = set()
    for meta in submissions:
        tasks = states.get(str(meta.get("job_id")), {})
        active = [i for i, state in tasks.items() if state in ACTIVE_STATES]
        if not active:
            continue
        try:
            records = read_submission_list(store.path / SUBMISSIONS / meta["list"])
        except SlurmError:
            continue
        for index in active:
            if 0 <= index < meta["num_tasks"]:
                held.update(r["config_hash"] for r in task_share(records, index, meta["num_tasks"]))
    return held


def _active_submissions(store: LocalStore, study: str | None = None) -> tuple[list[dict[str, Any]],
                                                                               dict[str, dict[int, str]]]:
    metas = [m for m in read_submissions(store) if m.get("job_id") and (study is None or m["study"] == study)]
    return metas, array_states(m["job_id"] for m in metas) if metas else {}


@dataclass
class Submission:
    """One submitted (or, with ``dry_run``, planned) job array."""

    study: str
    job_id: str | None
    num_tasks: int
    configs: int
    list_path: Path
    script_path: Path
    meta_path: Path
    log_pattern: str
    command: list[str]
    script: str
    already_done: int = 0
    skipped_failed: int = 0
    in_flight: int = 0
    notes: list[str] = field(default_factory=list)


def _package_root() -> Path:
    """The folder that holds the ``walking_noise`` package (``src/`` in a checkout), for the job's PYTHONPATH."""
    return Path(__file__).resolve().parents[2]


def job_script(list_path: Path, store: LocalStore, num_tasks: int, study: str, python: str | None = None) -> str:
    """The batch script every array task runs: this Python, this package, its share of the list."""
    python = python or sys.executable
    command = [python, "-m", "walking_noise.slurm", "array-task", str(list_path), "--store", str(store.path),
               "--num-tasks", str(num_tasks)]
    return "\n".join([
        "#!/bin/bash",
        f"# walking-noise job array for study {study}: {num_tasks} task(s); written {now_iso()}.",
        "# Task i runs the work units the list below gives it (its records with task = i) into the store; a config",
        "# already COMPLETED in the store is skipped, so a requeued task does not run anything twice.",
        "set -eu",
        f"export PYTHONPATH={shlex.quote(str(_package_root()))}${{PYTHONPATH:+:$PYTHONPATH}}",
        'echo "walking-noise array task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname)"',
        "exec " + " ".join(shlex.quote(c) for c in command),
        "",
    ])


def submit(study: Study, store: LocalStore, *, tasks: int | None = None, overrides: dict[str, Any] | None = None,
           retry_failed: bool = False, dry_run: bool = False, python: str | None = None,
           members: int | None = None) -> Submission | None:
    """Submit the study's missing (and, with ``retry_failed``, failed) configs as one Slurm job array.

    Returns ``None`` when nothing is left to run. Configs held by tasks of earlier arrays that are still queued or
    running are left out. The configs are planned into work units and shared out by :func:`plan_shares` (``members``
    caps a unit, as ``walking-noise run --members``). With ``dry_run`` nothing is written or submitted; the plan is
    returned.
    """
    plan = resolve_slurm_block(study.slurm, overrides)
    sbatch = shutil.which("sbatch")
    if sbatch is None and not dry_run:
        raise _missing_tool("sbatch")
    if not dry_run:
        try:
            store.ensure_writable()
        except StoreError as err:
            raise SlurmError(f"{err}; the store must be on a filesystem every compute node can write "
                             f"(a shared home or project folder)") from err
    pending, done, skipped = pending_runs(study, store.latest(), retry_failed)
    held: set[str] = set()
    if pending and not dry_run:
        metas, states = _active_submissions(store, study.name)
        held = in_flight_hashes(store, metas, states)
        if held:
            pending = [run for run in pending if run.hash not in held]
    total = len({run.hash for run in study.runs})
    logger.info(f"{study.name}: {total} configs, {done} done, {skipped} failed earlier"
        f"{' (to retry)' if retry_failed else ''}, {len(held)} queued or running in earlier arrays, "
        f"{len(pending)} to submit")
    if not pending:
        hint = " (use --retry-failed to run the failed ones again)" if skipped and not retry_failed else ""
        logger.info(f"{study.name}: nothing to submit{hint}")
        return None
    num_tasks = tasks if tasks is not None else default_num_tasks(len(pending), plan.experiments_per_job)
    if num_tasks < 1:
        raise SlurmError(f"--tasks must be at least 1, got {num_tasks}")
    records = plan_shares(pending, num_tasks, members)
    used = len({r["task"] for r in records})
    if used < num_tasks:
        plan.notes.append(f"{num_tasks} tasks asked for {len(pending)} configs in {len({r['unit'] for r in records})} "
                          f"work unit(s): using {used}")
        num_tasks = used

    folder = submissions_dir(store).resolve()
    base = _claim_name(folder, study.name) if not dry_run else f"{study.name}-DRYRUN"
    list_path, script_path, meta_path = (folder / f"{base}{ext}" for ext in (".jsonl", ".sbatch", ".json"))
    log_pattern = str(folder / "logs" / f"{base}_%A_%a.out")
    array = f"0-{num_tasks - 1}" + (f"%{plan.max_simultaneous_jobs}" if plan.max_simultaneous_jobs else "")
    store_abs = LocalStore(store.path.resolve())
    script = job_script(list_path, store_abs, num_tasks, study.name, python)
    command = [sbatch or "sbatch", "--parsable", f"--array={array}", f"--output={log_pattern}", "--open-mode=append"]
    if not has_option(plan.options, "job-name", "J"):
        command.append(f"--job-name=wn-{study.name}")
    if not has_option(plan.options, "chdir", "D"):
        command.append(f"--chdir={Path.cwd()}")
    command += plan.arguments() + [str(script_path)]
    submission = Submission(study.name, None, num_tasks, len(pending), list_path, script_path, meta_path,
                            log_pattern, command, script, done, skipped, len(held), plan.notes)
    for note in plan.notes:
        logger.info(f"note: {note}")
    if dry_run:
        logger.info("dry run: would run " + " ".join(shlex.quote(c) for c in command))
        return submission

    meta = {"study": study.name, "study_path": str(study.path.resolve()), "created": now_iso(),
            "list": list_path.name, "script": script_path.name, "num_tasks": num_tasks, "configs": len(pending),
            "retry_failed": retry_failed, "study_hashes": sorted({run.hash for run in study.runs}),
            "job_id": None, "sbatch": command, "logs": log_pattern}
    try:
        write_submission_list(list_path, study.name, records)
        atomic_write(script_path, script.encode())
        script_path.chmod(0o755)
        (folder / "logs").mkdir(exist_ok=True)
        atomic_write(meta_path, json.dumps(meta, indent=1).encode())
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S)
        except subprocess.TimeoutExpired as err:
            raise SlurmError(f"sbatch did not answer within {SBATCH_TIMEOUT_S} s; is slurmctld running? Check "
                             f"`squeue` before submitting again") from err
        if out.returncode != 0:
            raise SlurmError(
                f"sbatch refused the array: {out.stderr.strip() or out.stdout.strip()}\n  command: "
                + " ".join(shlex.quote(c) for c in command)
                + "\n  Check the YAML's slurm: block or override it, e.g. --sbatch mem=2G --sbatch partition=NAME "
                  "--sbatch time=0-02:00 (a request larger than any node is refused)")
    except BaseException:
        for path in (list_path, script_path, meta_path):
            path.unlink(missing_ok=True)
        raise
    job_id = out.stdout.strip().split(";")[0].strip()
    submission.job_id = job_id
    meta["job_id"] = job_id
    atomic_write(meta_path, json.dumps(meta, indent=1).encode())
    logger.info(f"submitted array job {job_id}: {num_tasks} task(s) for {len(pending)} config(s)")
    logger.info(f"  list: {list_path}")
    logger.info(f"  logs: {log_pattern.replace('%A', job_id)}")
    logger.info(f"watch it: walking-noise status --store {store.path}   (Slurm: squeue -j {job_id})")
    return submission
