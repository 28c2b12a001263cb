"""The ``submit``, ``status`` and ``array-task`` sub-commands (also ``python -m walking_noise.slurm``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from walking_noise.logs import configure_logging
from walking_noise.slurm.options import SlurmError, parse_overrides
from walking_noise.slurm.status import store_status
from walking_noise.slurm.submission import submit
from walking_noise.slurm.task import _Stopped, run_array_task
from walking_noise.store import LocalStore
from walking_noise.study import CampaignError, load_study, parse_filters


def _print(message: str) -> None:
    print(message, flush=True)


def cmd_submit(args: argparse.Namespace) -> int:
    study = load_study(args.study, parse_filters(args.filter))
    submission = submit(study, LocalStore(args.store), tasks=args.tasks, overrides=parse_overrides(args.sbatch),
                        retry_failed=args.retry_failed, dry_run=args.dry_run, members=args.members)
    if submission is not None and args.dry_run:
        _print(f"job script ({submission.script_path.name}):\n{submission.script}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = LocalStore(args.store)
    if not store.path.is_dir():
        raise SlurmError(f"no store at {store.path}; pass the folder given to `walking-noise submit --store`")
    studies = [load_study(path) for path in args.study]
    rows = store_status(store, studies, query_slurm=not args.no_slurm)
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
                                 threads=args.threads)
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
    p.add_argument("--members", type=int, default=None,
                   help="configs trained together as one batch in a task (default: as walking-noise run)")
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
    configure_logging()
    try:
        return int(args.func(args))
    except (SlurmError, CampaignError, FileNotFoundError) as err:
        print(f"walking-noise {args.command}: error: {err}", file=sys.stderr)
        return 2
