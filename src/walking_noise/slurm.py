"""Slurm job arrays without MongoDB: the same study YAML, run by array tasks that write into a shared local store.

SEML needs a MongoDB server to hand out experiments to Slurm jobs; many clusters have Slurm but no MongoDB. Here the
hand-out is a file instead: ``submit`` expands the YAML with SEML's parser (:func:`walking_noise.study.load_study`),
writes the configs still to run to ``<store>/submissions/<study>-<timestamp>.jsonl`` (one
``{"study", "config_hash", "config"}`` object a line) and submits one ``sbatch --array=0-(N-1)``. Task ``i`` runs
configs ``i, i+N, i+2N, ...`` of that list (:func:`task_share`) with :func:`walking_noise.units.execute`, which
appends each finished run to the task's own segment of the :class:`~walking_noise.store.LocalStore` - safe on a
shared filesystem without locks.

Why nothing is lost or run twice:

- a run is in the store as soon as it finished (one fsynced line), so a task killed by its time limit, by
  preemption or by ``scancel`` loses only the config it was running; that config stays *missing* and the next
  ``submit`` picks it up;
- a task that Slurm requeues reads the same list again and skips every config already COMPLETED in the store;
- ``submit`` leaves out the configs of tasks of earlier arrays that are still PENDING or RUNNING in ``squeue``,
  so submitting again while an array runs does not queue a config twice.

Each submission also leaves ``<study>-<timestamp>.json`` (study file, all of the study's config hashes, job id,
sbatch command) and ``<study>-<timestamp>.sbatch`` (the job script); ``status`` reads them to count done / failed /
missing configs per study and asks ``squeue`` for the arrays still queued or running.

The sbatch options come from the YAML's ``slurm:`` block, resolved exactly as ``seml start`` does (SEML's defaults,
then ``sbatch_options_template``, then the block's ``sbatch_options``), then ``--sbatch KEY=VALUE`` overrides.
SEML's ``experiments_per_job`` sets the default number of tasks (configs / experiments_per_job) and
``max_simultaneous_jobs`` becomes the array throttle ``%K``.

Sub-commands (wired into ``walking-noise`` by :func:`add_subcommands`; also ``python -m walking_noise.slurm``):
``submit``, ``status`` and ``array-task`` (what each array task runs).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from walking_noise.study import CampaignError, Study, load_study, parse_filters

from walking_noise.units import execute

from walking_noise.campaign import pending_configs
from walking_noise.store import COMPLETED, FAILED, LocalStore, StoreError, config_hash, now_iso

SUBMISSIONS = "submissions"
#: Slurm states in which an array task still holds (or will hold) its share of the configs.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                           "RESV_DEL_HOLD", "SPECIAL_EXIT"})
#: sbatch options the array itself decides; a value given for them in the YAML or ``--sbatch`` is dropped.
RESERVED_OPTIONS = {
    "array": "the array range comes from --tasks (and max_simultaneous_jobs)",
    "a": "the array range comes from --tasks (and max_simultaneous_jobs)",
    "output": "each task logs to <store>/submissions/logs/<study>-<time>_<job>_<task>.out",
    "o": "each task logs to <store>/submissions/logs/<study>-<time>_<job>_<task>.out",
    "error": "stderr goes to the task's log file",
    "e": "stderr goes to the task's log file",
    "wrap": "the job script is written by walking-noise",
    "parsable": "walking-noise always submits with --parsable",
}
SQUEUE_TIMEOUT_S = 30
SBATCH_TIMEOUT_S = 120

T = TypeVar("T")


class SlurmError(ValueError):
    """A submission or Slurm query cannot be done; the message says what was wrong and what to do.

    A ``ValueError`` so that ``walking-noise`` prints it as one line instead of a traceback.
    """


# ---- sbatch options -----------------------------------------------------------------------------------------


@dataclass
class SbatchPlan:
    """The sbatch options of an array and what was done to the YAML's ``slurm:`` block to get them."""

    options: dict[str, Any]
    experiments_per_job: int = 1
    max_simultaneous_jobs: int | None = None
    notes: list[str] = field(default_factory=list)

    def arguments(self) -> list[str]:
        """The options as sbatch command-line arguments (see :func:`sbatch_arguments`)."""
        return sbatch_arguments(self.options, self.notes)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["mem=2G", "--partition=gpu", "exclusive"]`` -> ``{"mem": "2G", "partition": "gpu", "exclusive": True}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise SlurmError(f"an sbatch override must look like KEY=VALUE (e.g. mem=4G or time=0-02:00), got {item!r}")
        out[key] = value.strip() if sep else True
    return out


def _merge_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override sbatch options the way SEML merges them (an override of ``mem-per-cpu`` drops an inherited ``mem``)."""
    if not override:
        return dict(base)
    try:
        from seml.experiment.config import _merge_sbatch_options
    except ImportError:  # pragma: no cover - another SEML version: a plain merge
        return {**base, **override}
    return dict(_merge_sbatch_options(dict(base), dict(override)))


def resolve_slurm_block(slurm: Sequence[dict[str, Any]], overrides: dict[str, Any] | None = None) -> SbatchPlan:
    """The sbatch options for a study's ``slurm:`` block (a list, as SEML's ``read_config`` returns it).

    SEML's own :func:`assemble_slurm_config_dict` fills in its defaults and the ``sbatch_options_template``, so an
    array asks for what ``seml start`` would ask for; ``overrides`` (from ``--sbatch``) win over both.
    """
    from seml.experiment.config import assemble_slurm_config_dict
    from seml.utils.errors import ConfigError

    notes: list[str] = []
    entries = [dict(e) for e in slurm] or [{"experiments_per_job": 1, "sbatch_options": {}}]
    if len(entries) > 1:
        notes.append(f"the slurm: block has {len(entries)} entries; SEML submits to each and the first to start "
                     f"wins, a job array uses the first one only")
    entry = copy.deepcopy(entries[0])
    entry.setdefault("sbatch_options", {})
    if entry["sbatch_options"] is None:
        entry["sbatch_options"] = {}
    try:
        resolved = assemble_slurm_config_dict(entry)
    except ConfigError as err:
        raise SlurmError(f"the slurm: block cannot be used: {err}") from err
    if entry.get("sbatch_options_template"):
        notes.append(f"sbatch_options_template {entry['sbatch_options_template']!r} resolved from SEML's settings")
    options = _merge_options(dict(resolved.get("sbatch_options") or {}),
                             {k.lstrip("-"): v for k, v in (overrides or {}).items()})
    per_job = int(resolved.get("experiments_per_job") or 1)
    if per_job < 1:
        raise SlurmError(f"experiments_per_job must be at least 1, got {per_job}")
    throttle = resolved.get("max_simultaneous_jobs")
    return SbatchPlan(options, per_job, int(throttle) if throttle else None, notes)


def sbatch_arguments(options: dict[str, Any], notes: list[str] | None = None) -> list[str]:
    """Map SEML's ``sbatch_options`` (``mem: 4G``, ``cpus-per-task: 2``, ``c: 2``) to sbatch arguments.

    ``--key=value`` for long keys, ``-k value`` for one-letter keys (as SEML writes them), a lone flag for
    ``true``, nothing for ``false``/``null``; a list of partitions is joined with commas. Options the array sets
    itself (:data:`RESERVED_OPTIONS`) are dropped with a note appended to ``notes``.
    """
    args: list[str] = []
    for raw_key, value in options.items():
        key = str(raw_key).lstrip("-")
        if key in RESERVED_OPTIONS:
            if notes is not None:
                notes.append(f"sbatch option {key}={value!r} ignored: {RESERVED_OPTIONS[key]}")
            continue
        if value is None or value is False:
            if notes is not None:
                notes.append(f"sbatch option {key}={value!r} left out")
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value is True:
            args.append(f"-{key}" if len(key) == 1 else f"--{key}")
        elif len(key) == 1:
            args += [f"-{key}", str(value)]
        else:
            args.append(f"--{key}={value}")
    return args


def _has_option(options: dict[str, Any], *names: str) -> bool:
    return any(str(k).lstrip("-") in names for k in options)


# ---- shares -------------------------------------------------------------------------------------------------


def task_share(items: Sequence[T], task_index: int, num_tasks: int) -> list[T]:
    """Task ``task_index`` of ``num_tasks`` runs items ``task_index, task_index + num_tasks, ...``.

    Round robin rather than contiguous blocks: study grids are often ordered by cost (noise level, epochs), and
    interleaving gives every task a similar mix, so the array finishes together.
    """
    if num_tasks < 1:
        raise SlurmError(f"the number of array tasks must be at least 1, got {num_tasks}")
    if not 0 <= task_index < num_tasks:
        raise SlurmError(f"array task index {task_index} is outside 0..{num_tasks - 1}; the array was submitted "
                         f"with {num_tasks} task(s) - pass the same --num-tasks as the submission")
    return list(items[task_index::num_tasks])


def split_shares(items: Sequence[T], num_tasks: int) -> list[list[T]]:
    """Every task's share; together they hold every item exactly once."""
    return [task_share(items, i, num_tasks) for i in range(num_tasks)]


def default_num_tasks(num_configs: int, experiments_per_job: int) -> int:
    """SEML's rule: one job (here: array task) per ``experiments_per_job`` experiments."""
    return max(1, math.ceil(num_configs / max(1, experiments_per_job)))


# ---- submission files ---------------------------------------------------------------------------------------


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


def submissions_dir(store: LocalStore) -> Path:
    return store.path / SUBMISSIONS


def write_submission_list(path: Path, study_name: str, configs: Sequence[dict[str, Any]]) -> int:
    """Write the configs of one submission, one JSON object a line, atomically; return how many."""
    lines = [json.dumps({"study": study_name, "config_hash": config_hash(c), "config": c}, sort_keys=True)
             for c in configs]
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


# ---- Slurm queries ------------------------------------------------------------------------------------------


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


# ---- submit -------------------------------------------------------------------------------------------------


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
    return Path(__file__).resolve().parent.parent


def job_script(list_path: Path, store: LocalStore, num_tasks: int, study: str, python: str | None = None) -> str:
    """The batch script every array task runs: this Python, this package, its share of the list."""
    python = python or sys.executable
    command = [python, "-m", "walking_noise.slurm", "array-task", str(list_path), "--store", str(store.path),
               "--num-tasks", str(num_tasks)]
    return "\n".join([
        "#!/bin/bash",
        f"# walking-noise job array for study {study}: {num_tasks} task(s); written {now_iso()}.",
        "# Task i runs configs i, i+N, i+2N, ... of the list below into the store; a config already COMPLETED in",
        "# the store is skipped, so a requeued task does not run anything twice.",
        "set -eu",
        f"export PYTHONPATH={shlex.quote(str(_package_root()))}${{PYTHONPATH:+:$PYTHONPATH}}",
        'echo "walking-noise array task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname)"',
        "exec " + " ".join(shlex.quote(c) for c in command),
        "",
    ])


def submit(study: Study, store: LocalStore, *, tasks: int | None = None, overrides: dict[str, Any] | None = None,
           retry_failed: bool = False, dry_run: bool = False, python: str | None = None,
           log: Callable[[str], None] = print) -> Submission | None:
    """Submit the study's missing (and, with ``retry_failed``, failed) configs as one Slurm job array.

    Returns ``None`` when nothing is left to run. Configs held by tasks of earlier arrays that are still queued or
    running are left out. With ``dry_run`` nothing is written or submitted; the plan is returned.
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
    pending, done, skipped = pending_configs(study, store, retry_failed)
    held: set[str] = set()
    if pending and not dry_run:
        metas, states = _active_submissions(store, study.name)
        held = in_flight_hashes(store, metas, states)
        if held:
            pending = [c for c in pending if config_hash(c) not in held]
    total = len({config_hash(c) for c in study.configs})
    log(f"{study.name}: {total} configs, {done} done, {skipped} failed earlier"
        f"{' (to retry)' if retry_failed else ''}, {len(held)} queued or running in earlier arrays, "
        f"{len(pending)} to submit")
    if not pending:
        hint = " (use --retry-failed to run the failed ones again)" if skipped and not retry_failed else ""
        log(f"{study.name}: nothing to submit{hint}")
        return None
    num_tasks = tasks if tasks is not None else default_num_tasks(len(pending), plan.experiments_per_job)
    if num_tasks < 1:
        raise SlurmError(f"--tasks must be at least 1, got {num_tasks}")
    if num_tasks > len(pending):
        plan.notes.append(f"{num_tasks} tasks asked for {len(pending)} configs: using {len(pending)}")
        num_tasks = len(pending)

    folder = submissions_dir(store).resolve()
    base = _claim_name(folder, study.name) if not dry_run else f"{study.name}-DRYRUN"
    list_path, script_path, meta_path = (folder / f"{base}{ext}" for ext in (".jsonl", ".sbatch", ".json"))
    log_pattern = str(folder / "logs" / f"{base}_%A_%a.out")
    array = f"0-{num_tasks - 1}" + (f"%{plan.max_simultaneous_jobs}" if plan.max_simultaneous_jobs else "")
    store_abs = LocalStore(store.path.resolve())
    script = job_script(list_path, store_abs, num_tasks, study.name, python)
    command = [sbatch or "sbatch", "--parsable", f"--array={array}", f"--output={log_pattern}", "--open-mode=append"]
    if not _has_option(plan.options, "job-name", "J"):
        command.append(f"--job-name=wn-{study.name}")
    if not _has_option(plan.options, "chdir", "D"):
        command.append(f"--chdir={Path.cwd()}")
    command += plan.arguments() + [str(script_path)]
    submission = Submission(study.name, None, num_tasks, len(pending), list_path, script_path, meta_path,
                            log_pattern, command, script, done, skipped, len(held), plan.notes)
    for note in plan.notes:
        log(f"note: {note}")
    if dry_run:
        log("dry run: would run " + " ".join(shlex.quote(c) for c in command))
        return submission

    meta = {"study": study.name, "study_path": str(study.path.resolve()), "created": now_iso(),
            "list": list_path.name, "script": script_path.name, "num_tasks": num_tasks, "configs": len(pending),
            "retry_failed": retry_failed, "study_hashes": sorted({config_hash(c) for c in study.configs}),
            "job_id": None, "sbatch": command, "logs": log_pattern}
    try:
        write_submission_list(list_path, study.name, pending)
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
    log(f"submitted array job {job_id}: {num_tasks} task(s) for {len(pending)} config(s)")
    log(f"  list: {list_path}")
    log(f"  logs: {log_pattern.replace('%A', job_id)}")
    log(f"watch it: walking-noise status --store {store.path}   (Slurm: squeue -j {job_id})")
    return submission


# ---- the array task -----------------------------------------------------------------------------------------


@dataclass
class TaskSummary:
    task_index: int
    num_tasks: int
    share: int
    skipped_done: int = 0
    completed: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (f"task {self.task_index}/{self.num_tasks}: share of {self.share} config(s), {self.skipped_done} "
                f"already completed, ran {self.completed + self.failed} ({self.completed} completed, "
                f"{self.failed} failed)")


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
                   threads: int | None = None, log: Callable[[str], None] = print) -> TaskSummary:
    """Run this task's share of a submission list into ``store``, skipping configs already COMPLETED there.

    A SIGTERM from Slurm stops the task between two lines of Python: runs already stored stay, the config it was
    running is not stored at all (so it counts as missing, not failed) and the next ``submit`` picks it up.
    """
    import torch

    records = read_submission_list(list_path)
    share = task_share(records, task_index, num_tasks)
    summary = TaskSummary(task_index, num_tasks, len(share))
    try:
        store.ensure_writable()
    except StoreError as err:
        raise SlurmError(str(err)) from err
    torch.set_num_threads(max(1, threads or _threads()))
    done = store.completed_hashes()
    log(f"task {task_index}/{num_tasks}: {len(share)} config(s) of {list_path}; store {store.path}")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    current = None
    try:
        for number, record in enumerate(share, 1):
            key = config_hash(record["config"])
            if key in done:
                summary.skipped_done += 1
                log(f"[{number}/{len(share)}] {key[:10]} already completed, skipped")
                continue
            current = key
            started = time.perf_counter()
            outcome = execute(record["config"], record.get("study", "unknown"), store)
            current = None
            if outcome["status"] == COMPLETED:
                summary.completed += 1
                log(f"[{number}/{len(share)}] {key[:10]} COMPLETED accuracy {outcome['final_accuracy']:.4f} "
                    f"in {time.perf_counter() - started:.1f} s")
            else:
                summary.failed += 1
                log(f"[{number}/{len(share)}] {key[:10]} FAILED: {outcome['error']}")
    except _Stopped:
        log(f"task {task_index}: stopped by SIGTERM (time limit, preemption or scancel)"
            f"{f' while running {current[:10]}' if current else ''}; {summary.completed + summary.failed} run(s) "
            f"of this task are in the store, the rest stay missing for the next `walking-noise submit`")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.close()
    log(str(summary))
    return summary


# ---- status -------------------------------------------------------------------------------------------------


@dataclass
class StudyStatus:
    """Done / failed / missing configs of one study in a store, and its arrays Slurm still lists."""

    study: str
    total: int | None  # None: the study is known from the store only (run locally, never submitted)
    done: int
    failed: int
    missing: int
    in_flight: int = 0
    submissions: int = 0
    study_path: str | None = None
    arrays: dict[str, Counter] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.total is None:
            line = f"{self.study}: {self.done} done, {self.failed} failed (never submitted; total unknown)"
        else:
            line = f"{self.study}: {self.total} configs: {self.done} done, {self.failed} failed, {self.missing} missing"
            if self.in_flight:
                line += f" ({self.in_flight} of them queued or running)"
        for job, states in self.arrays.items():
            line += f"\n  array job {job}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return line


def store_status(store: LocalStore, studies: Sequence[Study] = (), *, query_slurm: bool = True,
                 log: Callable[[str], None] | None = None) -> list[StudyStatus]:
    """Count done / failed / missing configs per study.

    The configs a study should have come from the given study files, else from every submission of it (the union
    of their ``study_hashes``); studies that are only in the store (run with ``walking-noise run``) are listed with
    their done/failed counts. With ``query_slurm``, arrays still listed by ``squeue`` are shown and their configs
    counted as queued or running; if Slurm cannot be asked, that is said through ``log`` and the counts still shown.
    """
    latest = store.latest()
    metas = read_submissions(store)
    expected: dict[str, set[str]] = {}
    paths: dict[str, str] = {}
    given = {s.name for s in studies}
    for study in studies:
        expected[study.name] = {config_hash(c) for c in study.configs}
        paths[study.name] = str(study.path)
    for meta in metas:
        if meta["study"] not in given:
            expected.setdefault(meta["study"], set()).update(meta.get("study_hashes", []))
            paths[meta["study"]] = meta.get("study_path", "")
    states: dict[str, dict[int, str]] = {}
    if query_slurm and any(m.get("job_id") for m in metas):
        try:
            states = array_states(m["job_id"] for m in metas if m.get("job_id"))
        except SlurmError as err:
            if log:
                log(f"(Slurm state unknown: {err})")
    held = in_flight_hashes(store, metas, states)
    by_study: dict[str, list[tuple[str, str]]] = {}
    for key, doc in latest.items():
        by_study.setdefault(str(doc.get("study", "unknown")), []).append((key, str(doc.get("status"))))
    result = []
    for name in sorted(set(expected) | set(by_study)):
        if name in expected:
            hashes = expected[name]
            done = {h for h in hashes if latest.get(h, {}).get("status") == COMPLETED}
            failed = {h for h in hashes if latest.get(h, {}).get("status") == FAILED}
            missing = hashes - done - failed
            row = StudyStatus(name, len(hashes), len(done), len(failed), len(missing), len(missing & held),
                              sum(m["study"] == name for m in metas), paths.get(name))
        else:
            counts = Counter(status for _, status in by_study[name])
            row = StudyStatus(name, None, counts[COMPLETED], counts[FAILED], 0)
        for meta in metas:
            job = str(meta.get("job_id"))
            if meta["study"] == name and states.get(job):
                row.arrays[job] = Counter(states[job].values())
        result.append(row)
    return result


# ---- command line -------------------------------------------------------------------------------------------


def _print(message: str) -> None:
    print(message, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    study = load_study(args.study, parse_filters(args.filter))
    submission = submit(study, LocalStore(args.store), tasks=args.tasks, overrides=parse_overrides(args.sbatch),
                        retry_failed=args.retry_failed, dry_run=args.dry_run, log=_print)
    if submission is not None and args.dry_run:
        _print(f"job script ({submission.script_path.name}):\n{submission.script}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = LocalStore(args.store)
    if not store.path.is_dir():
        raise SlurmError(f"no store at {store.path}; pass the folder given to `walking-noise submit --store`")
    studies = [load_study(path) for path in args.study]
    rows = store_status(store, studies, query_slurm=not args.no_slurm, log=_print)
    _print(f"store {store.path}: {len(rows)} stud{'y' if len(rows) == 1 else 'ies'}")
    for row in rows:
        _print(str(row))
        if row.total is not None and row.missing - row.in_flight > 0 and row.study_path:
            _print(f"  to run the missing ones: walking-noise submit {row.study_path} --store {store.path}")
        if row.failed and row.study_path:
            _print(f"  to run the failed ones again: walking-noise submit {row.study_path} --store {store.path} "
                   f"--retry-failed")
    if args.json:
        _print(json.dumps([{**row.__dict__, "arrays": {k: dict(v) for k, v in row.arrays.items()}}
                           for row in rows]))
    return 0


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def cmd_array_task(args: argparse.Namespace) -> int:
    index = args.task_index if args.task_index is not None else _env_int("SLURM_ARRAY_TASK_ID")
    count = args.num_tasks if args.num_tasks is not None else _env_int("SLURM_ARRAY_TASK_COUNT")
    if index is None or count is None:
        raise SlurmError("array-task needs its index and the number of tasks: run it inside a Slurm array "
                         "(SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or pass --task-index and --num-tasks")
    minimum = _env_int("SLURM_ARRAY_TASK_MIN") if args.task_index is None else 0
    try:
        summary = run_array_task(args.list, index - (minimum or 0), count, LocalStore(args.store),
                                 threads=args.threads, log=_print)
    except _Stopped:
        return 128 + signal.SIGTERM
    return 1 if summary.failed else 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``submit``, ``status`` and ``array-task`` to a ``walking-noise`` sub-command parser."""
    p = subparsers.add_parser("submit", help="submit a study YAML as one Slurm job array writing into a shared "
                                             "store (no MongoDB)")
    p.add_argument("study", help="a YAML file of seml_configs/")
    p.add_argument("--store", required=True,
                   help="store folder on a filesystem every compute node can write (shared home/project)")
    p.add_argument("--tasks", type=int, default=None,
                   help="array tasks (default: configs / the YAML's experiments_per_job)")
    p.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="override an sbatch option of the YAML's slurm: block, e.g. mem=4G, time=0-02:00, "
                        "partition=gpu (repeatable)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="submit only configs with this value, e.g. noise.kind=additive (repeatable)")
    p.add_argument("--retry-failed", action="store_true", help="submit the configs that failed before as well")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch command and job script; submit nothing")
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="done / failed / missing configs per study of a store, and the "
                                             "Slurm state of its arrays")
    p.add_argument("study", nargs="*", help="study YAMLs to count against (default: what was submitted)")
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--no-slurm", action="store_true", help="do not ask squeue")
    p.add_argument("--json", action="store_true", help="also print the counts as JSON")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("array-task", help="(run by each Slurm array task) run this task's share of a "
                                                 "submission list")
    p.add_argument("list", help="the submission list (<store>/submissions/<study>-<time>.jsonl)")
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--task-index", type=int, default=None, help="default: $SLURM_ARRAY_TASK_ID")
    p.add_argument("--num-tasks", type=int, default=None, help="default: $SLURM_ARRAY_TASK_COUNT")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: $SLURM_CPUS_PER_TASK or 1)")
    p.set_defaults(func=cmd_array_task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m walking_noise.slurm", description=__doc__.split("\n\n")[0])
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; errors that say what to do are printed as one line (exit 2)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SlurmError, CampaignError, FileNotFoundError) as err:
        print(f"walking-noise {args.command}: error: {err}", file=sys.stderr)
        return 2


main_for_tests = main

if __name__ == "__main__":
    raise SystemExit(main())
