"""Work units: how configs are grouped to train together, and how a unit becomes stored run documents.

A *unit* is a batch of compatible configs trained as one packed network (:mod:`walking_noise.batched`), or the
inference-only configs of one seed, which share one clean training (train once, evaluate many), or the runs that
evaluate one model's trained weights on one test set (evaluated together, never trained:
:mod:`walking_noise.sensitivity`), or one config on the one-model path. Every engine gives a run the same random draws (:class:`walking_noise.noise.NoiseStream`), so
how a config is grouped never changes what it measures. A unit that fails as a whole is run config by config, with
a warning and ``batch_fallback`` in its documents; a failing config is a FAILED document, never a crash.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from walking_noise.claims import ClaimBook, FirstResultStore
from walking_noise.config import Run, RunConfig, flatten, unflatten
from walking_noise.files import now_iso
from walking_noise.registry import MODELS, is_foreign
from walking_noise.store import COMPLETED, FAILED, LocalStore, latest_by_hash
from walking_noise.study import CampaignError, Study, expand_bundle

logger = logging.getLogger(__name__)


def run_document(run: Run, study: str, status: str, result: dict | None, started: str,
                 fail_trace: list[str] | None = None, batch_fallback: str | None = None) -> dict[str, Any]:
    """A run document in the shape SEML/Sacred store in MongoDB (see :mod:`walking_noise.store`).

    ``batch_fallback``: why this config ran on its own although it was planned in a batch (the batch's error).
    """
    import socket

    doc: dict[str, Any] = {
        "config": run.values, "config_hash": run.hash, "status": status, "study": study,
        "start_time": started, "stop_time": now_iso(), "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
    }
    if result is not None:
        doc["result"] = result
    if fail_trace is not None:
        doc["fail_trace"] = fail_trace
    if batch_fallback is not None:
        doc["batch_fallback"] = batch_fallback
    return doc


WORKER: dict[str, Any] = {}


def init_worker(store_path: str, threads: int, runner: str | None = None) -> None:
    """Set up a worker of the runner ``runner`` (its claims' owner id, :mod:`walking_noise.claims`): torch threads,
    the store it writes its runs into, its dataset cache."""
    import torch

    torch.set_num_threads(max(1, threads))
    store = LocalStore(store_path)
    WORKER["store"] = FirstResultStore(store, ClaimBook(store_path, runner=runner)) if runner else store
    WORKER["data"] = {}


def dataset_for(cfg: RunConfig) -> Any:
    from walking_noise.training import load_run_dataset, resolve_device

    key = (cfg.dataset, cfg.data_dir, cfg.normalize, cfg.augment, cfg.max_train, cfg.max_test, cfg.device)
    cache = WORKER.setdefault("data", {})
    if key not in cache:
        cache.clear()  # one dataset at a time per worker keeps memory bounded
        cache[key] = load_run_dataset(cfg, resolve_device(cfg.device))
    return cache[key]


def evaluator_for(cfg: RunConfig) -> Any:
    """This worker's :class:`walking_noise.sensitivity.Evaluator` of ``cfg``'s trained weights: kept between units
    (the rounds of adaptive searches reach a worker one after the other), one at a time."""
    from walking_noise.sensitivity import Evaluator, evaluation_key, trained_network

    key = evaluation_key(cfg)
    cached = WORKER.get("evaluator")
    if cached is None or cached[0] != key:
        WORKER["evaluator"] = None  # free the old one first
        data = dataset_for(cfg)
        WORKER["evaluator"] = (key, Evaluator(trained_network(cfg, data), data, cfg.training.batch_size))
    return WORKER["evaluator"][1]


def run_one(cfg: RunConfig, data: Any = None, log_epochs: bool = False) -> Any:
    """What one config measures: trained (:func:`walking_noise.training.train_run`), or, for trained weights,
    evaluated (:func:`walking_noise.sensitivity.evaluate_runs`); a :class:`walking_noise.training.RunResult`."""
    from walking_noise.sensitivity import evaluate_runs
    from walking_noise.training import train_run

    if cfg.evaluated:
        return evaluate_runs([cfg], data, evaluator=None if data is not None else evaluator_for(cfg))[0]
    return train_run(cfg, data if data is not None else dataset_for(cfg), log_epochs=log_epochs)


def execute(run: Run, study: str, store: LocalStore, batch_fallback: str | None = None) -> dict[str, Any]:
    """Run one config and store its document, COMPLETED or FAILED; never raises for a failing run."""
    started = now_iso()
    try:
        result = run_one(run.config).to_dict()
        doc = run_document(run, study, COMPLETED, result, started, batch_fallback=batch_fallback)
    except Exception as err:  # noqa: BLE001 - a failed run is data, the campaign goes on
        doc = run_document(run, study, FAILED, None, started, batch_fallback=batch_fallback,
                           fail_trace=traceback.format_exception(type(err), err, err.__traceback__))
    store.put(doc)
    return {"config_hash": doc["config_hash"], "status": doc["status"],
            "final_accuracy": doc.get("result", {}).get("final_accuracy"),
            "error": doc.get("fail_trace", [""])[-1].strip() if doc["status"] == FAILED else None}


def execute_in_worker(unit: list[Run], study: str) -> list[dict[str, Any]]:
    return execute_unit(unit, study, WORKER["store"])


def is_inference_only(cfg: RunConfig) -> bool:
    """Noise only at evaluation of a model the runner trains: the trained model is the clean one, so it can be trained
    once and reused (runs of trained weights are evaluated only: :attr:`RunConfig.evaluated`)."""
    return cfg.noise.kind != "none" and cfg.noise.phase == "inference" and not cfg.evaluated


_SAID_ONE_MODEL: set[str] = set()


def auto_members(cfg: RunConfig) -> int:
    """Members per batch: packing pays for every registered model on a GPU and, where the registry's ``packs_on_cpu``
    says so (measured by ``benchmarks/batched_throughput.py``), on a CPU. A model outside the registry is not packed:
    it trains on the one-model path (said once), and so do operation points (``points: operations``:
    :func:`walking_noise.batched.packable` is the one rule): the registered models are ``nn.Sequential``s, whose
    operation points are their module points, so they pack either way."""
    from walking_noise.training import resolve_device

    if is_foreign(cfg.model):
        if cfg.model not in _SAID_ONE_MODEL:
            _SAID_ONE_MODEL.add(cfg.model)
            logger.warning("%s is not a registered model: its runs train one at a time on the one-model path (the "
                           "batched engine packs %s)", cfg.model, ", ".join(MODELS))
        return 1
    if resolve_device(cfg.device).type == "cuda":
        return 64
    return 16 if MODELS[cfg.model].packs_on_cpu else 1


def plan_units(runs: list[Run], members: int | None = None, workers: int = 1) -> list[list[Run]]:
    """Group configs into work units: batches that train together, and inference-only groups that share one
    clean training per seed, and the runs of one model's trained weights (evaluated together, split evenly over
    ``workers``, ordered by injection point so that each worker's share packs runs of the same points). ``members``
    caps a training batch (None: :func:`auto_members`); a group too small to fill every worker with full batches is
    split evenly over ``workers`` (16 configs on 2 workers: two batches of 8, not one of 16 and an idle worker; a batch
    of 8 MLPs trains nearly as fast per member as one of 32, ``benchmarks/batched_throughput.py``)."""
    from walking_noise.batched import batch_key, clean_config
    from walking_noise.sensitivity import evaluation_key

    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        cfg = run.config
        # inference-only configs: one unit per clean model (seed), so the seeds' trainings and their evaluations
        # spread over the workers and each seed's results are stored as soon as that seed is done
        if cfg.evaluated:
            key = evaluation_key(cfg)
        elif is_inference_only(cfg):
            key = ("evaluate", cfg.seed) + batch_key(clean_config(cfg))
        else:
            key = batch_key(cfg)
        groups.setdefault(key, []).append(run)
    units: list[list[Run]] = []
    for key, group in groups.items():
        if key[0] == "weights":
            group = sorted(group, key=lambda r: (r.config.noise.injection_layer is None,
                                                 r.config.noise.injection_layer or 0))
            size = -(-len(group) // max(1, workers))
        elif key[0] == "evaluate":
            size = len(group)
        else:
            # runs of one seed side by side: a pack whose members share the data order reads one input tensor, and
            # its first convolution computes every member at once (walking_noise.batched._ToConv); runs with input
            # noise (point 0) together, since they cannot share it
            group = sorted(group, key=lambda r: (r.config.seed, r.config.noise.placement,
                                                 -1 if r.config.noise.injection_layer is None
                                                 else r.config.noise.injection_layer))
            size = min(members or auto_members(group[0].config), -(-len(group) // max(1, workers)))
        units += [group[i:i + max(1, size)] for i in range(0, len(group), max(1, size))]
    return units


def unit_documents(unit: list[Run], study: str) -> list[dict[str, Any]]:
    """Train a work unit (a batch, or clean trainings plus evaluations) and return one COMPLETED document per config.

    Raises if the unit fails as a whole; :func:`execute_unit` then isolates the failing config.
    """
    from walking_noise.batched import train_members

    started = now_iso()
    if unit[0].config.evaluated:
        from walking_noise.sensitivity import evaluate_runs

        results = evaluate_runs([r.config for r in unit], evaluator=evaluator_for(unit[0].config))
        return [run_document(run, study, COMPLETED, r.to_dict(), started) for run, r in zip(unit, results)]
    if is_inference_only(unit[0].config):
        return _train_once_evaluate_many(unit, study, started)
    results, _, _ = train_members([r.config for r in unit], dataset_for(unit[0].config))
    return [run_document(run, study, COMPLETED, r.to_dict(), started) for run, r in zip(unit, results)]


def execute_unit(unit: list[Run], study: str, store: LocalStore) -> list[dict[str, Any]]:
    """Run a work unit and store one document per config; a failing batch falls back to one run per config."""
    if len(unit) == 1 and not is_inference_only(unit[0].config):
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


def run_bundle(base: dict[str, Any], bundle: dict[str, list[Any]], study: str) -> list[dict[str, Any]]:
    """Run a bundle as the local runner would (batched, inference-only configs reusing one clean training) and
    return its run documents; a member that fails is returned as a FAILED document."""
    docs: list[dict[str, Any]] = []
    for unit in plan_units(expand_bundle(base, bundle)):
        try:
            docs += unit_documents(unit, study)
        except Exception as err:  # noqa: BLE001 - one failing member must not lose the others
            store = MemoryStore()
            run_each(unit, study, store, err)  # type: ignore[arg-type]
            docs += store.documents
    return docs


def run_each(unit: list[Run], study: str, store: Any, error: BaseException) -> list[dict[str, Any]]:
    """A batch that failed as a whole: say why (a warning, and ``batch_fallback`` in every document of the unit),
    then run each config on its own, so one bad config loses no other and a bug in the batched engine shows."""
    cause = f"{type(error).__name__}: {error}"
    logger.warning("a batch of %d configs failed (%s); running each on the one-model path", len(unit), cause)
    return [execute(run, study, store, batch_fallback=cause) for run in unit]


class MemoryStore:
    """Collects documents in memory (for bundles, whose documents go into one SEML result)."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def put(self, document: dict[str, Any]) -> None:
        self.documents.append(document)

    def latest(self) -> dict[str, dict[str, Any]]:
        return latest_by_hash(self.documents)


def _train_once_evaluate_many(unit: list[Run], study: str, started: str) -> list[dict[str, Any]]:
    """Train one clean model per seed (batched), keep the epochs the final accuracy averages, and evaluate every
    config's noise on them (with the draws that config's own run makes at those epochs)."""
    from dataclasses import replace

    from walking_noise.batched import clean_config, evaluate_snapshots
    from walking_noise.training import final_accuracy, final_epochs

    cfgs = [run.config for run in unit]
    data = dataset_for(cfgs[0])
    seeds = sorted({c.seed for c in cfgs})
    clean = [replace(clean_config(cfgs[0]), seed=s) for s in seeds]
    epochs = cfgs[0].training.epochs
    groups = [[c] for c in clean] if is_foreign(cfgs[0].model) else [clean]  # a foreign model is not packed
    by_seed = {}
    for group in groups:
        by_seed.update(_clean_training(group, data, final_epochs(epochs)))
    docs = []
    for run in unit:
        cfg = run.config
        trained, snaps, template = by_seed[cfg.seed]
        first = epochs - len(snaps)
        evaluated = evaluate_snapshots(snaps, template, cfg, data, first_epoch=first)
        result = trained.to_dict()
        result.update(evaluated, final_accuracy=final_accuracy(evaluated["val_accuracy"], epochs),
                      extra={"engine": "train_once_evaluate_many", "clean_members": len(seeds),
                             "evaluated_epochs": list(range(first + 1, epochs + 1))})
        docs.append(run_document(run, study, COMPLETED, result, started))
    return docs


#: Clean trainings a worker keeps for the next inference-only unit of the same clean configs (an adaptive search
#: asks for its levels round by round, each round one unit per seed): at most this many groups, oldest dropped.
CLEAN_TRAININGS_KEPT = 8


def _clean_training(group: list[RunConfig], data: Any, keep_last: int) -> dict[int, tuple[Any, list[dict], Any]]:
    """``{seed: (result, state dicts of the last keep_last epochs, architecture)}`` of the clean configs ``group``
    trained together, kept in this worker (``WORKER["clean"]``, by their config hashes) so that the next round of
    an adaptive search evaluates the same models without training them again. Training is deterministic for a
    config, so a kept training is the one a new training would give."""
    from walking_noise.batched import train_members

    key = (tuple(Run.from_config(c).hash for c in group), keep_last)
    kept = WORKER.setdefault("clean", {})
    if key not in kept:
        results, net, snapshots = train_members(group, data, keep_last=keep_last)
        kept[key] = {c.seed: (r, snap, net.template) for c, r, snap in zip(group, results, snapshots)}
        while len(kept) > CLEAN_TRAININGS_KEPT:
            kept.pop(next(iter(kept)))
    return kept[key]


def bundled_study(study: Study, members: int | None = None) -> dict[str, Any]:
    """``study`` as a SEML YAML whose experiments are bundles (a dict to dump as YAML): one experiment per work unit
    of the local runner (:func:`walking_noise.units.plan_units`: compatible configs packed together, inference-only
    configs of a seed sharing one clean training), each listing its members as ``bundle.members``; adaptive searches
    stay one experiment each. ``seml COLL add`` of the result runs the same configs as the study, batched as the
    local runner batches them."""
    blocks: dict[str, Any] = {}
    for number, unit in enumerate(plan_units(study.runs, members)):
        base = flatten(unit[0].values)
        diffs = [{k: v for k, v in flatten(run.values).items() if base.get(k) != v} for run in unit]
        fixed = {k: v for k, v in base.items() if v is not None}
        if len(unit) > 1:
            fixed["bundle.members"] = [unflatten(d) for d in diffs]
        blocks[f"unit_{number:05d}"] = {"fixed": fixed}
    for number, (base, settings) in enumerate(study.searches):
        fixed = {k: v for k, v in flatten(base).items() if v is not None}
        fixed.update({f"adaptive.{k}": list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
        blocks[f"search_{number:04d}"] = {"fixed": fixed}
    import yaml

    # SEML wants a top-level fixed/grid block: the values every experiment shares go there
    shared = dict(next(iter(blocks.values()))["fixed"]) if blocks else {}
    for block in blocks.values():
        shared = {k: v for k, v in shared.items() if k in block["fixed"] and block["fixed"][k] == v}
    shared.pop("bundle.members", None)
    if not shared:
        raise CampaignError(f"{study.path}: its experiments share no config value, which SEML needs at the top")
    for block in blocks.values():
        block["fixed"] = {k: v for k, v in block["fixed"].items() if k not in shared}
    raw = yaml.safe_load(study.path.read_text()) or {}  # the blocks as written (paths relative to the file)
    seml = {**raw.get("seml", {}), "name": f"{raw.get('seml', {}).get('name', study.name)}_bundled"}
    slurm = [{**entry, "experiments_per_job": 1} for entry in raw.get("slurm") or [{}]]
    return {"seml": seml, "slurm": slurm, "fixed": shared, **blocks}
