"""Campaigns: expand a SEML study YAML and run its configs locally, resumably, into a :class:`LocalStore`.

The YAML is expanded with SEML's own parser (``read_config`` + ``generate_configs``), so a local campaign and a
``seml <collection> add`` on a cluster are the same set of configs. Every config is validated before any training
starts. Each worker process writes its finished runs straight into the store: killing the runner at any moment
loses no finished run, and a restart runs only what is missing (and, with ``retry_failed``, what failed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from walking_noise.config import RunConfig
from walking_noise.store import (
    COMPLETED,
    FAILED,
    LocalStore,
    config_hash,
    latest_by_hash,
    now_iso,
)

logger = logging.getLogger(__name__)

# Keys of an experiment's config that are not part of a run's definition: SEML's own, a bundle (which expands into
# several runs) and an adaptive noise-grid search (which chooses its runs' noise levels and seeds as it goes).
NON_RUN_KEYS = ("db_collection", "overwrite", "bundle", "adaptive")


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
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

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
    """``["noise.kind=additive", "seed=[0, 1]"]`` -> ``{"noise.kind": "additive", "seed": [0, 1]}`` (values parsed
    as YAML; a list matches any of its items)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CampaignError(f"a filter must look like key=value (e.g. noise.kind=additive), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def matches(config: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether ``config`` has every filter's value (a list filter on a non-list value: any of its items)."""
    flat = _flatten(config)

    def hit(value: Any, wanted: Any) -> bool:
        if isinstance(wanted, list) and not isinstance(value, list):
            return any(value == w for w in wanted)
        return value == wanted

    return all(key in flat and hit(flat[key], value) for key, value in filters.items())


def run_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The full, validated run config (defaults filled in) for one expanded SEML config."""
    return RunConfig.from_dict({k: v for k, v in config.items() if k not in NON_RUN_KEYS}).to_dict()


def load_study(path: str | os.PathLike, filters: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None) -> Study:
    """Expand a study YAML with SEML's parser and validate every config; raise :class:`CampaignError` if bad.

    ``overrides`` (dotted keys, e.g. ``{"training.epochs": 10}``) replace values in every config, as SEML's own
    ``overwrite_params`` do; configs that become identical are merged.
    """
    import yaml
    from seml.experiment.config import generate_configs, read_config
    from seml.utils.errors import ConfigError, ExecutableError

    path = Path(path)
    if not path.is_file():
        raise CampaignError(f"study file {path} does not exist")
    try:
        seml_block, slurm, experiment = read_config(path)
        expanded = generate_configs(experiment, overwrite_params=dict(overrides) if overrides else None)
    except yaml.YAMLError as err:
        raise CampaignError(f"{path} is not valid YAML: {err}") from err
    except (ConfigError, ExecutableError) as err:
        raise CampaignError(f"{path}: {err}") from err
    configs, problems = [], []
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number, raw in enumerate(expanded):
        if filters and not matches(raw, filters):
            continue
        try:
            if raw.get("adaptive"):
                searches.append(search_spec(raw))
                continue
            bundle = raw.get("bundle")
            configs += expand_bundle(raw, bundle) if bundle else [run_config_dict(raw)]
        except ValueError as err:
            problems.append(f"  config {number} {_flatten(raw)}: {err}")
    if problems:
        shown = "\n".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CampaignError(f"{path}: {len(problems)} of {len(expanded)} configs are invalid:\n{shown}")
    return Study(path.stem, path, dict(seml_block), [dict(s) for s in slurm], configs, searches)


def run_document(config: dict[str, Any], study: str, status: str, result: dict | None, started: str,
                 fail_trace: list[str] | None = None, batch_fallback: str | None = None) -> dict[str, Any]:
    """A run document in the shape SEML/Sacred store in MongoDB (see :mod:`walking_noise.store`).

    ``batch_fallback``: why this config ran on its own although it was planned in a batch (the batch's error).
    """
    import socket

    doc: dict[str, Any] = {
        "config": config, "config_hash": config_hash(config), "status": status, "study": study,
        "start_time": started, "stop_time": now_iso(), "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
    }
    if result is not None:
        doc["result"] = result
    if fail_trace is not None:
        doc["fail_trace"] = fail_trace
    if batch_fallback is not None:
        doc["batch_fallback"] = batch_fallback
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


def execute(config: dict[str, Any], study: str, store: LocalStore, batch_fallback: str | None = None) -> dict[str, Any]:
    """Run one config and store its document, COMPLETED or FAILED; never raises for a failing run."""
    from walking_noise.training import train_run

    started = now_iso()
    try:
        cfg = RunConfig.from_dict(config)
        result = train_run(cfg, _dataset_for(cfg)).to_dict()
        doc = run_document(config, study, COMPLETED, result, started, batch_fallback=batch_fallback)
    except Exception as err:  # noqa: BLE001 - a failed run is data, the campaign goes on
        doc = run_document(config, study, FAILED, None, started, batch_fallback=batch_fallback,
                           fail_trace=traceback.format_exception(type(err), err, err.__traceback__))
    store.put(doc)
    return {"config_hash": doc["config_hash"], "status": doc["status"],
            "final_accuracy": doc.get("result", {}).get("final_accuracy"),
            "error": doc.get("fail_trace", [""])[-1].strip() if doc["status"] == FAILED else None}


def _execute_in_worker(unit: list[dict[str, Any]], study: str) -> list[dict[str, Any]]:
    return execute_unit(unit, study, _WORKER["store"])


def is_inference_only(cfg: RunConfig) -> bool:
    """Noise only at evaluation: the trained model is the clean one, so it can be trained once and reused."""
    return cfg.noise.kind != "none" and cfg.noise.phase == "inference"


def auto_members(cfg: RunConfig) -> int:
    """Members per batch: packing pays for the FC models on CPU and for everything on a GPU
    (``benchmarks/batched_throughput.py``); grouped convolutions on CPU are slower than separate ones."""
    from walking_noise.training import resolve_device

    if resolve_device(cfg.device).type == "cuda":
        return 64
    return 16 if cfg.model == "mlp" else 1


def plan_units(configs: list[dict[str, Any]], members: int | None = None,
               workers: int = 1) -> list[list[dict[str, Any]]]:
    """Group configs into work units: batches that train together, and inference-only groups that share one
    clean training per seed. ``members`` caps a training batch (None: :func:`auto_members`); a group too small to
    fill every worker with full batches is split evenly over ``workers`` (16 configs on 2 workers: two batches of 8,
    not one of 16 and an idle worker; a batch of 8 MLPs trains nearly as many samples/s per member as one of 32)."""
    from walking_noise.batched import batch_key, clean_config

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for config in configs:
        cfg = RunConfig.from_dict(config)
        # inference-only configs: one unit per clean model (seed), so the seeds' trainings and their evaluations
        # spread over the workers and each seed's results are stored as soon as that seed is done
        key = ("evaluate", cfg.seed) + batch_key(clean_config(cfg)) if is_inference_only(cfg) else batch_key(cfg)
        groups.setdefault(key, []).append(config)
    units: list[list[dict[str, Any]]] = []
    for key, group in groups.items():
        if key[0] == "evaluate":
            size = len(group)
        else:
            size = min(members or auto_members(RunConfig.from_dict(group[0])), -(-len(group) // max(1, workers)))
        units += [group[i:i + max(1, size)] for i in range(0, len(group), max(1, size))]
    return units


def unit_documents(unit: list[dict[str, Any]], study: str) -> list[dict[str, Any]]:
    """Train a work unit (a batch, or clean trainings plus evaluations) and return one COMPLETED document per config.

    Raises if the unit fails as a whole; :func:`execute_unit` then isolates the failing config.
    """
    from walking_noise.batched import train_members

    cfgs = [RunConfig.from_dict(c) for c in unit]
    started = now_iso()
    if is_inference_only(cfgs[0]):
        return _train_once_evaluate_many(unit, cfgs, study, started)
    results, _, _ = train_members(cfgs, _dataset_for(cfgs[0]))
    return [run_document(c, study, COMPLETED, r.to_dict(), started) for c, r in zip(unit, results)]


def execute_unit(unit: list[dict[str, Any]], study: str, store: LocalStore) -> list[dict[str, Any]]:
    """Run a work unit and store one document per config; a failing batch falls back to one run per config."""
    if len(unit) == 1 and not is_inference_only(RunConfig.from_dict(unit[0])):
        return [execute(unit[0], study, store)]
    try:
        docs = unit_documents(unit, study)
    except Exception as err:  # noqa: BLE001 - isolate the failing config by running each on its own
        return run_each(unit, study, store, err)
    outcomes = []
    for doc in docs:
        store.put(doc)
        outcomes.append({"config_hash": doc["config_hash"], "status": doc["status"],
                         "final_accuracy": doc["result"]["final_accuracy"], "error": None})
    return outcomes


def expand_bundle(base: dict[str, Any], bundle: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The configs of a bundle: ``base`` with every combination of the listed values in ``bundle``, a nested dict
    like the run config whose leaves are lists (e.g. ``{"noise": {"noise_std": [0.1, 1.0]}, "seed": [0, 1, 2]}``;
    dotted keys work too), each validated."""
    import copy
    import itertools

    bundle = _flatten(dict(bundle or {}))
    if not bundle:
        raise CampaignError("a bundle needs at least one key with a list of values, e.g. {'seed': [0, 1, 2]}")
    keys = list(bundle)
    for key in keys:
        if not isinstance(bundle[key], (list, tuple)) or not bundle[key]:
            raise CampaignError(f"bundle key {key!r} needs a non-empty list of values, got {bundle[key]!r}")
    configs = []
    for values in itertools.product(*(bundle[k] for k in keys)):
        config = copy.deepcopy(base)
        for key, value in zip(keys, values):
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        configs.append(run_config_dict(config))
    return configs


def run_bundle(base: dict[str, Any], bundle: dict[str, list[Any]], study: str) -> list[dict[str, Any]]:
    """Run a bundle as the local runner would (batched, inference-only configs reusing one clean training) and
    return its run documents; a member that fails is returned as a FAILED document."""
    docs: list[dict[str, Any]] = []
    for unit in plan_units(expand_bundle(base, bundle)):
        try:
            docs += unit_documents(unit, study)
        except Exception as err:  # noqa: BLE001 - one failing member must not lose the others
            store = _MemoryStore()
            run_each(unit, study, store, err)  # type: ignore[arg-type]
            docs += store.documents
    return docs


def run_each(unit: list[dict[str, Any]], study: str, store: Any, error: BaseException) -> list[dict[str, Any]]:
    """A batch that failed as a whole: say why (a warning, and ``batch_fallback`` in every document of the unit),
    then run each config on its own, so one bad config loses no other and a bug in the batched engine shows."""
    cause = f"{type(error).__name__}: {error}"
    logger.warning("a batch of %d configs failed (%s); running each on the one-model path", len(unit), cause)
    return [execute(config, study, store, batch_fallback=cause) for config in unit]


class _MemoryStore:
    """Collects documents in memory (for bundles, whose documents go into one SEML result)."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def put(self, document: dict[str, Any]) -> None:
        self.documents.append(document)

    def latest(self) -> dict[str, dict[str, Any]]:
        return latest_by_hash(self.documents)


def _train_once_evaluate_many(unit: list[dict[str, Any]], cfgs: list[RunConfig], study: str,
                              started: str) -> list[dict[str, Any]]:
    """Train one clean model per seed (batched), keep the epochs the final accuracy averages, and evaluate every
    config's noise on them (with the draws that config's own run makes at those epochs)."""
    from dataclasses import replace

    from walking_noise.batched import clean_config, evaluate_snapshots, train_members
    from walking_noise.training import final_accuracy, final_epochs

    data = _dataset_for(cfgs[0])
    seeds = sorted({c.seed for c in cfgs})
    clean = [replace(clean_config(cfgs[0]), seed=s) for s in seeds]
    epochs = cfgs[0].training.epochs
    results, packed, snapshots = train_members(clean, data, keep_last=final_epochs(epochs))
    by_seed = {s: (r, snap) for s, r, snap in zip(seeds, results, snapshots)}
    docs = []
    for config, cfg in zip(unit, cfgs):
        trained, snaps = by_seed[cfg.seed]
        first = epochs - len(snaps)
        evaluated = evaluate_snapshots(snaps, packed.template, cfg, data, first_epoch=first)
        result = trained.to_dict()
        result.update(evaluated, final_accuracy=final_accuracy(evaluated["val_accuracy"], epochs),
                      extra={"engine": "train_once_evaluate_many", "clean_members": len(seeds),
                             "evaluated_epochs": list(range(first + 1, epochs + 1))})
        docs.append(run_document(config, study, COMPLETED, result, started))
    return docs


def search_spec(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base run config, adaptive settings) of a config with an ``adaptive`` block, both validated.

    The block holds :class:`walking_noise.adaptive.AdaptiveGrid` fields (``low``, ``high``, ``axis``,
    ``target_rel_err``, ``max_runs``, ``seeds``, ...); the search sets ``noise.noise_std`` and ``seed`` itself.
    """
    from walking_noise.adaptive import AdaptiveGrid

    settings = dict(raw["adaptive"])
    if "seeds" in settings:
        settings["seeds"] = tuple(settings["seeds"])
    try:
        AdaptiveGrid(**settings)
    except TypeError as err:
        raise CampaignError(f"bad adaptive block {settings}: {err}; valid keys: "
                            f"{sorted(AdaptiveGrid.__dataclass_fields__)}") from err
    base = run_config_dict(raw)
    if base["noise"]["kind"] == "none":
        raise CampaignError("an adaptive search needs noise.kind additive, multiplicative or mixed")
    return base, settings


Execute = Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]]


def run_search(base: dict[str, Any], settings: dict[str, Any], study: str, store: Any,
               execute_round: Execute | None = None) -> Any:
    """Run one adaptive noise-grid search; every run it trains is stored like a grid run, and runs already in
    ``store`` (an earlier, interrupted search) are reused rather than trained again.

    ``execute_round(configs)`` makes sure every config of a round is in the store and returns the store's latest
    documents by config hash; the default trains the missing ones here, :func:`run_searches` pools the rounds of
    many searches.
    """
    import copy

    from walking_noise.adaptive import AdaptiveGrid, find_transition

    def config_for(noise_std: float, seed: int) -> dict[str, Any]:
        config = copy.deepcopy(base)
        config["noise"]["noise_std"] = float(noise_std)
        config["seed"] = int(seed)
        return run_config_dict(config)

    def run_here(configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for unit in plan_units(missing_configs(configs, store.latest())):
            execute_unit(unit, study, store)
        return store.latest()

    execute_round = execute_round or run_here

    def measure(levels: Any, seeds: Any) -> list[tuple[float, int, float]]:
        wanted = {(float(s), int(seed)): config_for(s, seed) for s in levels for seed in seeds}
        done = execute_round(list(wanted.values()))
        rows = []
        for (s, seed), config in wanted.items():
            result = done.get(config_hash(config), {}).get("result") or {}
            rows.append((s, seed, float(result.get("final_accuracy", float("nan")))))
        return rows

    return find_transition(measure, AdaptiveGrid(**settings))


class _SearchIncomplete(Exception):
    """A replayed search asked for a run the store does not hold."""


def study_selection(study: Study, latest: dict[str, dict[str, Any]]) -> tuple[set[str], list[str]]:
    """(config hashes of exactly ``study``'s runs, notes): its grid configs, and the runs its adaptive searches
    choose under the current design, found by replaying each search against ``latest`` without training.

    A store may hold runs that earlier designs, engines or studies left there; a report of one study should use
    only its own. A search whose replay asks for a run that is not stored (unfinished, or chosen differently by
    another version) is cut there, and a note says so.
    """
    hashes = {config_hash(c) for c in study.configs}
    notes = []
    distinct = {config_hash({"base": b, "adaptive": s}): (b, s) for b, s in study.searches}
    for number, (base, settings) in enumerate(distinct.values(), 1):
        chosen: set[str] = set()

        def lookup(configs: list[dict[str, Any]], chosen: set[str] = chosen) -> dict[str, dict[str, Any]]:
            keys = [config_hash(c) for c in configs]
            chosen.update(keys)
            missing = sum(latest.get(k, {}).get("status") != COMPLETED for k in keys)
            if missing:
                raise _SearchIncomplete(f"{missing} of its {len(keys)} runs of a round are not in the store")
            return latest

        try:
            run_search(base, settings, study.name, None, execute_round=lookup)
        except _SearchIncomplete as why:
            notes.append(f"adaptive search {number} ({_flatten(base).get('noise.kind')}, "
                         f"{'with' if base.get('batchnorm') else 'without'} BatchNorm) replayed only in part: {why}")
        hashes |= chosen
    return hashes, notes


def missing_configs(configs: Iterable[dict[str, Any]], latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs (each once) that have no COMPLETED document in ``latest``."""
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        key = config_hash(config)
        if latest.get(key, {}).get("status") != COMPLETED:
            out.setdefault(key, config)
    return list(out.values())


class _Rounds:
    """Meeting point of the search threads: each posts its next round and waits; once every live search has
    posted, the main thread takes all their configs at once, so runs of different searches share batches."""

    def __init__(self, searches: int):
        self._cv = threading.Condition()
        self._live = searches
        self._posted: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def post(self, configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        slot: dict[str, Any] = {}
        with self._cv:
            self._posted.append((configs, slot))
            self._cv.notify_all()
            self._cv.wait_for(lambda: "latest" in slot)
        if "error" in slot:
            raise slot["error"]
        return slot["latest"]

    def leave(self) -> None:
        with self._cv:
            self._live -= 1
            self._cv.notify_all()

    def take(self) -> list[tuple[list[dict[str, Any]], dict[str, Any]]] | None:
        """Block until every live search has posted (None: all searches have ended)."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._posted) >= self._live)
            if not self._posted:
                return None
            taken, self._posted = self._posted, []
            return taken

    def answer(self, taken: list[tuple[list[dict[str, Any]], dict[str, Any]]], latest: dict[str, Any] | None,
               error: BaseException | None = None) -> None:
        with self._cv:
            for _, slot in taken:
                if error is not None:
                    slot["error"] = error
                slot["latest"] = latest
            self._cv.notify_all()


def run_searches(searches: list[tuple[dict[str, Any], dict[str, Any]]], study: str, store: LocalStore, *,
                 run_units: Callable[[list[list[dict[str, Any]]]], None] | None = None, workers: int = 1,
                 log: Callable[[str], None] = print) -> list[Any]:
    """Run adaptive searches side by side, in lockstep: each round, the runs every search asks for are planned
    together (batched across searches) and handed to ``run_units`` (default: train here, one unit at a time).

    Returns one :class:`walking_noise.adaptive.AdaptiveResult` per distinct search (the same base config and
    settings twice is one search), or the exception that ended that search; one failing search ends no other.
    """
    distinct: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for base, settings in searches:
        distinct.setdefault(config_hash({"base": base, "adaptive": settings}), (base, settings))
    todo = list(distinct.values())
    run_units = run_units or (lambda units: [execute_unit(u, study, store) for u in units])
    rounds = _Rounds(len(todo))
    outcomes: list[Any] = [None] * len(todo)

    def search(i: int, base: dict[str, Any], settings: dict[str, Any]) -> None:
        try:
            outcomes[i] = run_search(base, settings, study, store, execute_round=rounds.post)
        except Exception as err:  # noqa: BLE001 - reported with the results, the other searches go on
            outcomes[i] = err
        finally:
            rounds.leave()

    threads = [threading.Thread(target=search, args=(i, b, s), daemon=True) for i, (b, s) in enumerate(todo)]
    for thread in threads:
        thread.start()
    number = 0
    while (taken := rounds.take()) is not None:
        number += 1
        wanted = [c for configs, _ in taken for c in configs]
        pending = missing_configs(wanted, store.latest())
        if pending:
            log(f"adaptive round {number}: {len(taken)} search(es) waiting, {len(pending)} run(s) to train")
        try:
            run_units(plan_units(pending, workers=workers))
            rounds.answer(taken, store.latest())
        except BaseException as err:  # e.g. KeyboardInterrupt: release the threads, then stop
            rounds.answer(taken, None, err)
            raise
    for thread in threads:
        thread.join()
    return outcomes


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
    searches: list[Any] = field(default_factory=list)

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
                 members: int | None = None, threads_per_worker: int | None = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> CampaignSummary:
    """Run every pending config of ``study`` into ``store`` with ``workers`` processes (1: in this process).

    Compatible configs train together as one batch of up to ``members`` (None: chosen per model and device), and
    inference-only configs reuse one clean training per seed.
    """
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
    units = plan_units(pending, members, workers)
    lock = threading.Lock()
    grid_error: list[BaseException] = []

    def record(outcomes: list[dict[str, Any]]) -> None:
        with lock:
            _record(outcomes)

    def _record(outcomes: list[dict[str, Any]]) -> None:
        for outcome in outcomes:
            summary.ran += 1
            if outcome["status"] == COMPLETED:
                summary.completed += 1
            else:
                summary.failed += 1
                summary.failures.append(outcome["error"])
                bar.write(f"run {outcome['config_hash'][:10]} failed: {outcome['error']}")
            bar.update(1)

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, workers))
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            _init_worker(str(store.path), threads)
            pool = None
        else:
            ctx = get_context(worker_start_method(pending + [base for base, _ in study.searches]))
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                           initargs=(str(store.path), threads)))
            pool.submit(int).result()  # start every worker now, before this process starts any thread
        bar = _progress_bar(len(pending), study.name, progress, unknown_total=bool(study.searches))

        def run_units(todo: list[list[dict[str, Any]]]) -> None:
            if pool is None:
                for unit in todo:
                    record(execute_unit(unit, study.name, store))
                return
            queue = iter(todo)
            running = {pool.submit(_execute_in_worker, c, study.name) for c in _take(queue, 2 * workers)}
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
                running |= {pool.submit(_execute_in_worker, c, study.name) for c in _take(queue, len(finished))}

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
                                         log=bar.write)
        finally:
            grid.join()
            bar.close()
        if grid_error:
            raise grid_error[0]
        for number, found in enumerate(found_all, 1):
            summary.searches.append(found)
            if isinstance(found, Exception):
                summary.failures.append(f"adaptive search {number}: {found}")
                log(f"adaptive search {number}/{len(found_all)} failed: {found}")
                continue
            fit = found.fit
            where = f"mu = {fit.mu:.4g} +- {fit.mu_err:.2g}" if fit.converged else f"not converged ({fit.reason})"
            log(f"adaptive search {number}/{len(found_all)}: {found.runs} runs, {where}; {found.stopped_because}")
    summary.wall_time_s = time.perf_counter() - started
    log(str(summary))
    return summary


START_METHOD_ENV = "WALKING_NOISE_START_METHOD"  # fork, spawn or forkserver: overrides the choice below


def worker_start_method(configs: Iterable[dict[str, Any]]) -> str:
    """How the runner starts its worker processes: ``fork`` where it is safe, else ``spawn``.

    Why: a spawned worker imports torch and the library again (about 1.5 s each on the reference machine, before
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


def _take(iterator: Any, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def _progress_bar(total: int, name: str, enabled: bool, unknown_total: bool = False) -> Any:
    from tqdm import tqdm

    return tqdm(total=None if unknown_total else total, desc=name, unit="run",
                disable=not enabled or (total == 0 and not unknown_total), file=sys.stderr,
                dynamic_ncols=True)
