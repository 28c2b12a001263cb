"""The sbatch options of an array: the YAML's ``slurm:`` block resolved as ``seml start`` does, then overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

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


class SlurmError(ValueError):
    """A submission or Slurm query cannot be done; the message says what was wrong and what to do.

    A ``ValueError`` so that ``walking-noise`` prints it as one line instead of a traceback.
    """


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


def has_option(options: dict[str, Any], *names: str) -> bool:
    return any(str(k).lstrip("-") in names for k in options)
