"""Campaigns: expand a SEML study YAML and run its configs locally, resumably, into a :class:`LocalStore`.

The YAML is expanded with SEML's own parser (``read_config`` + ``generate_configs``), so a local campaign and a
``seml <collection> add`` on a cluster are the same set of configs. Every config is validated before any training
starts. Each worker process writes its finished runs straight into the store: killing the runner at any moment
loses no finished run, and a restart runs only what is missing (and, with ``retry_failed``, what failed).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from walking_noise.config import RunConfig
from walking_noise.store import COMPLETED, FAILED, LocalStore, config_hash, now_iso

# Keys SEML or Sacred put into a config that are not part of a run's definition.
NON_RUN_KEYS = ("db_collection", "overwrite")


class CampaignError(ValueError):
    """A study cannot be run as given (bad YAML, bad config, unwritable store); nothing was trained."""


@dataclass
class Study:
    """An expanded study file: its SEML and Slurm blocks and one validated config per experiment."""

    name: str
    path: Path
    seml: dict[str, Any]
    slurm: list[dict[str, Any]]
    configs: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.configs)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_filters(filters: Iterable[str]) -> dict[str, Any]:
    """``["noise.kind=additive", "seed=0"]`` -> ``{"noise.kind": "additive", "seed": 0}`` (values parsed as YAML)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CampaignError(f"a filter must look like key=value (e.g. noise.kind=additive), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def matches(config: dict[str, Any], filters: dict[str, Any]) -> bool:
    flat = _flatten(config)
    return all(key in flat and flat[key] == value for key, value in filters.items())


def run_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The full, validated run config (defaults filled in) for one expanded SEML config."""
    return RunConfig.from_dict({k: v for k, v in config.items() if k not in NON_RUN_KEYS}).to_dict()


def load_study(path: str | os.PathLike, filters: dict[str, Any] | None = None) -> Study:
    """Expand a study YAML with SEML's parser and validate every config; raise :class:`CampaignError` if bad."""
    import yaml
    from seml.experiment.config import generate_configs, read_config
    from seml.utils.errors import ConfigError, ExecutableError

    path = Path(path)
    if not path.is_file():
        raise CampaignError(f"study file {path} does not exist")
    try:
        seml_block, slurm, experiment = read_config(path)
        expanded = generate_configs(experiment)
    except yaml.YAMLError as err:
        raise CampaignError(f"{path} is not valid YAML: {err}") from err
    except (ConfigError, ExecutableError) as err:
        raise CampaignError(f"{path}: {err}") from err
    configs, problems = [], []
    for number, raw in enumerate(expanded):
        if filters and not matches(raw, filters):
            continue
        try:
            configs.append(run_config_dict(raw))
        except ValueError as err:
            problems.append(f"  config {number} {_flatten(raw)}: {err}")
    if problems:
        shown = "\n".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CampaignError(f"{path}: {len(problems)} of {len(expanded)} configs are invalid:\n{shown}")
    return Study(path.stem, path, dict(seml_block), [dict(s) for s in slurm], configs)


def run_document(config: dict[str, Any], study: str, status: str, result: dict | None, started: str,
                 fail_trace: list[str] | None = None) -> dict[str, Any]:
    """A run document in the shape SEML/Sacred store in MongoDB (see :mod:`walking_noise.store`)."""
    import socket

    doc: dict[str, Any] = {
        "config": config, "config_hash": config_hash(config), "status": status, "study": study,
        "start_time": started, "stop_time": now_iso(), "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
    }
    if result is not None:
        doc["result"] = result
    if fail_trace is not None:
        doc["fail_trace"] = fail_trace
    return doc


# ---- worker side -------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(store_path: str, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER["store"] = LocalStore(store_path)
    _WORKER["data"] = {}


def _dataset_for(cfg: RunConfig) -> Any:
    from walking_noise.training import load_run_dataset, resolve_device

    key = (cfg.dataset, cfg.data_dir, cfg.normalize, cfg.augment, cfg.max_train, cfg.max_test, cfg.device)
    cache = _WORKER.setdefault("data", {})
    if key not in cache:
        cache.clear()  # one dataset at a time per worker keeps memory bounded
        cache[key] = load_run_dataset(cfg, resolve_device(cfg.device))
    return cache[key]


def execute(config: dict[str, Any], study: str, store: LocalStore) -> dict[str, Any]:
    """Run one config and store its document, COMPLETED or FAILED; never raises for a failing run."""
    from walking_noise.training import train_run

    started = now_iso()
    try:
        cfg = RunConfig.from_dict(config)
        result = train_run(cfg, _dataset_for(cfg)).to_dict()
        doc = run_document(config, study, COMPLETED, result, started)
    except Exception as err:  # noqa: BLE001 - a failed run is data, the campaign goes on
        doc = run_document(config, study, FAILED, None, started,
                           fail_trace=traceback.format_exception(type(err), err, err.__traceback__))
    store.put(doc)
    return {"config_hash": doc["config_hash"], "status": doc["status"],
            "final_accuracy": doc.get("result", {}).get("final_accuracy"),
            "error": doc.get("fail_trace", [""])[-1].strip() if doc["status"] == FAILED else None}


def _execute_in_worker(config: dict[str, Any], study: str) -> dict[str, Any]:
    return execute(config, study, _WORKER["store"])


# ---- runner side -------------------------------------------------------------------------------------------


@dataclass
class CampaignSummary:
    study: str
    total: int
    already_done: int
    ran: int = 0
    completed: int = 0
    failed: int = 0
    skipped_failed: int = 0
    wall_time_s: float = 0.0
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.study}: {self.total} configs, {self.already_done} already in the store, ran {self.ran} "
                f"({self.completed} completed, {self.failed} failed) in {self.wall_time_s:.1f} s"
                + (f"; {self.skipped_failed} earlier failures skipped (use --retry-failed)"
                   if self.skipped_failed else ""))


def pending_configs(study: Study, store: LocalStore, retry_failed: bool = False) -> tuple[list[dict], int, int]:
    """Configs still to run: (pending, already completed, failed and skipped)."""
    latest = store.latest()
    pending, done, skipped = [], 0, 0
    seen: set[str] = set()
    for config in study.configs:
        key = config_hash(config)
        if key in seen:  # a grid that names the same run twice runs it once
            continue
        seen.add(key)
        status = latest.get(key, {}).get("status")
        if status == COMPLETED:
            done += 1
        elif status == FAILED and not retry_failed:
            skipped += 1
        else:
            pending.append(config)
    return pending, done, skipped


def run_campaign(study: Study, store: LocalStore, *, workers: int = 1, retry_failed: bool = False,
                 threads_per_worker: int | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> CampaignSummary:
    """Run every pending config of ``study`` into ``store`` with ``workers`` processes (1: in this process)."""
    try:
        store.ensure_writable()
    except Exception as err:
        raise CampaignError(str(err)) from err
    started = time.perf_counter()
    pending, done, skipped = pending_configs(study, store, retry_failed)
    summary = CampaignSummary(study.name, len({config_hash(c) for c in study.configs}), done,
                              skipped_failed=skipped)
    log(f"{study.name}: {summary.total} configs, {done} done, {skipped} failed earlier, {len(pending)} to run "
        f"with {workers} worker(s); store {store.path}")
    bar = _progress_bar(len(pending), study.name, progress)

    def record(outcome: dict[str, Any]) -> None:
        summary.ran += 1
        if outcome["status"] == COMPLETED:
            summary.completed += 1
        else:
            summary.failed += 1
            summary.failures.append(outcome["error"])
            bar.write(f"run {outcome['config_hash'][:10]} failed: {outcome['error']}")
        bar.update(1)

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, workers))
    try:
        if workers <= 1:
            _init_worker(str(store.path), threads)
            for config in pending:
                record(execute(config, study.name, store))
        else:
            ctx = get_context("spawn")  # a fresh interpreter per worker: no forked torch thread pools
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(store.path), threads)) as pool:
                queue = iter(pending)
                running = {pool.submit(_execute_in_worker, c, study.name) for c in _take(queue, 2 * workers)}
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        record(future.result())
                    running |= {pool.submit(_execute_in_worker, c, study.name) for c in _take(queue, len(finished))}
    finally:
        bar.close()
    summary.wall_time_s = time.perf_counter() - started
    log(str(summary))
    return summary


def _take(iterator: Any, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def _progress_bar(total: int, name: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="run", disable=not enabled or total == 0, file=sys.stderr,
                dynamic_ncols=True)
