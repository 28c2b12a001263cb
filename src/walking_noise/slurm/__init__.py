"""Slurm job arrays without MongoDB: the same study YAML, run by array tasks that write into a shared local store.

SEML needs a MongoDB server to hand out experiments to Slurm jobs; many clusters have Slurm but no MongoDB. Here the
hand-out is a file instead: ``submit`` (:mod:`.submission`) expands the YAML, plans the configs still to run into
work units as the local runner does (compatible configs train as one packed network, inference-only configs share
one clean training per seed), gives whole units to array tasks, writes the list to
``<store>/submissions/<study>-<timestamp>.jsonl`` and submits one ``sbatch --array``. Each task (:mod:`.task`) runs
its units into its own segment of the :class:`~walking_noise.store.LocalStore`, safe on a shared filesystem without
locks; ``status`` (:mod:`.status`) counts done / failed / missing configs per study. The sbatch options come from the
YAML's ``slurm:`` block, resolved as ``seml start`` does (:mod:`.options`).

Sub-commands (:mod:`.cli`, wired into ``walking-noise``; also ``python -m walking_noise.slurm``): ``submit``,
``status`` and ``array-task`` (what each array task runs).
"""

from walking_noise.slurm.cli import add_subcommands, main
from walking_noise.slurm.options import (
                                            SlurmError,
                                            parse_overrides,
                                            resolve_slurm_block,
                                            sbatch_arguments,
)
from walking_noise.slurm.status import StudyStatus, store_status
from walking_noise.slurm.submission import (
                                            ACTIVE_STATES,
                                            Submission,
                                            array_states,
                                            job_script,
                                            plan_shares,
                                            read_submission_list,
                                            split_shares,
                                            submit,
                                            task_share,
                                            write_submission_list,
)
from walking_noise.slurm.task import TaskSummary, run_array_task

main_for_tests = main

__all__ = ["ACTIVE_STATES", "SlurmError", "StudyStatus", "Submission", "TaskSummary", "add_subcommands",
           "array_states", "job_script", "main", "parse_overrides", "plan_shares", "read_submission_list",
           "resolve_slurm_block", "run_array_task", "sbatch_arguments", "split_shares", "store_status", "submit",
           "task_share", "write_submission_list"]
