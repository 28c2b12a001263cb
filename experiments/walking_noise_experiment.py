"""Sacred/SEML entry point: one experiment per call, configured by the axes of the paper.

The config sections are exactly the keys of :class:`walking_noise.config.RunConfig` (``dataset``, ``model``,
``batchnorm``, ``noise.*``, ``training.*``, ``weight_clamping``, ``seed``, ...), so a SEML YAML, the command line
and the local campaign runner describe a run the same way. An experiment is one run
(:func:`walking_noise.units.run_one`: trained, or a model's trained weights evaluated), a bundle of runs (``bundle``: trained as the local runner batches them,
:func:`walking_noise.units.run_bundle`; ``walking-noise bundle`` writes a study in this form) or an adaptive search
(``adaptive``: :func:`walking_noise.searches.train_search`). This file wires the config to those; the science lives in
the library.

    python experiments/walking_noise_experiment.py with training.epochs=1 noise.kind=additive noise.noise_std=0.5
    python experiments/walking_noise_experiment.py validate with model=lenet5 dataset=cifar10   # no training
    seml <collection> add seml_configs/smoke.yaml && seml <collection> start
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import walking_noise  # noqa: F401  (installed: a wheel, `pip install -e .`, or the conda environment)
except ModuleNotFoundError:  # a plain checkout without `pip install -e .`: use its src/ folder
    _SRC = Path(__file__).resolve().parent.parent / "src"
    if not (_SRC / "walking_noise").is_dir():
        raise ModuleNotFoundError(
            f"the walking_noise package is not installed in {sys.executable}, and {_SRC} is not a checkout's src/. "
            f"Install it into the Python that SEML runs (`pip install walking-noise` or the wheel; see "
            f"slurm/README.md), or keep this file in a checkout's experiments/ folder") from None
    sys.path.insert(0, str(_SRC))

from seml import Experiment

from walking_noise.config import Run, RunConfig
from walking_noise.files import to_plain
from walking_noise.searches import train_search
from walking_noise.store import CURVES
from walking_noise.study import search_spec, study_run
from walking_noise.units import MemoryStore, run_bundle, run_one



class InvalidRunConfig(ValueError):
    """The experiment's config is not a valid run (unknown key or bad value); raised before any training."""


def _experiment() -> Experiment:
    try:
        return Experiment(name="walking_noise")
    except ValueError:
        # Sacred reads the git HEAD of the experiment's repository on construction and raises ValueError in a
        # repository without any commit yet; run without recording git info rather than not at all.
        return Experiment(name="walking_noise", save_git_info=False)


ex = _experiment()
# The defaults are RunConfig's own, so this file can never disagree with the library about them (a Sacred
# @ex.config scope would have to restate every key by hand; a config dict is the same thing without that).
ex.add_config(RunConfig().to_dict())
# A bundle runs many members in one experiment (batched, inference-only members reusing one clean training per
# seed): a nested dict like the config whose leaves are lists, e.g. bundle.seed=[0,1,2] and
# bundle.noise.noise_std=[0.1,1.0]; the result then holds one run document per member under "bundle".
ex.add_config(bundle=None)
# An adaptive noise-grid search (walking_noise.adaptive) in one experiment: e.g. adaptive.low=0.01
# adaptive.high=100 adaptive.target_rel_err=0.05; its runs come back in the same "bundle" shape.
ex.add_config(adaptive=None)


def run_config(config: dict[str, Any]) -> Run:
    """Validate Sacred's resolved config as a :class:`Run`; the error message names the offending key.

    Every key except SEML's own and ``bundle`` (``NON_RUN_KEYS``) is passed on, so an unknown top-level key is rejected here: Sacred's own check for
    added config entries does not protect a seml.Experiment (SEML's config scopes for ``db_collection``/``overwrite``
    re-declare every update, so nothing counts as added), and SEML starts runs with ``--force``, which skips it.
    """
    try:
        return study_run(to_plain(dict(config)))
    except (TypeError, ValueError) as err:
        raise InvalidRunConfig(f"invalid walking_noise experiment config: {err}") from err


def metric_prefix(db_collection: str | None, run_id: Any) -> str:
    """``<collection>.<run id>``: the namespace of this run's metric names.

    Sacred's MongoObserver stores the metrics of *all* collections of a database in one ``metrics`` collection,
    keyed by (run id, metric name), and SEML numbers the runs of each collection from 1. Run 7 of two collections
    would append to the same series if the names were bare, so the collection and the run id go into the name.
    """
    return f"{db_collection or 'local'}.{run_id if run_id is not None else 'unobserved'}"


@ex.config_hook
def reject_invalid_config(config: dict[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
    """Fail while the config is resolved, before a run starts: on the command line, and already at ``seml add``
    (SEML resolves every staged config through the config hooks), not after a Slurm job was scheduled."""
    run_config(config)
    return {}


@ex.command(unobserved=True)
def validate(_config: dict[str, Any]) -> dict[str, Any]:
    """Resolve and validate the config without training; returns the full run config and its hash."""
    run = run_config(_config)
    return {"config": run.values, "config_hash": run.hash}


@ex.automain
def run(_config: dict[str, Any], _run: Any, _log: Any, db_collection: str | None = None,
        bundle: dict[str, Any] | None = None, adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one run (or a bundle of runs, or an adaptive search) and return what it measured, as plain Python
    types (stored by SEML as the run's ``result``)."""
    validated = run_config(_config)
    cfg = validated.config
    prefix = metric_prefix(db_collection, _run._id)
    search = None
    if adaptive:
        store = MemoryStore()
        search = train_search(*search_spec(to_plain(dict(_config))), study=db_collection or "local", store=store)
        docs = list(store.latest().values())
    elif bundle:
        docs = run_bundle(cfg.to_dict(), to_plain(bundle), study=db_collection or "local")
    if adaptive or bundle:
        for i, doc in enumerate(docs):
            for epoch, value in enumerate(doc.get("result", {}).get("val_accuracy", [])):
                _run.log_scalar(f"{prefix}.member{i}.val_accuracy", float(value), epoch)
        members = [{k: doc[k] for k in ("config", "config_hash", "status", "result", "fail_trace") if k in doc}
                   for doc in docs]
        summary = {"bundle": to_plain(members), "bundle_size": len(members),
                   "completed": sum(m["status"] == "COMPLETED" for m in members)}
        if search is not None:
            summary["adaptive"] = to_plain({"fit": search.fit.to_dict(), "runs": search.runs,
                                            "rounds": search.rounds, "stopped_because": search.stopped_because})
        return summary
    result = run_one(cfg, log_epochs=True)  # trained, or for trained weights evaluated
    # train_run reports epochs as text while it trains; the numbers are logged here, one step per epoch.
    for name in CURVES:
        for epoch, value in enumerate(getattr(result, name)):
            _run.log_scalar(f"{prefix}.{name}", float(value), epoch)
    summary = to_plain(result.to_dict())
    summary["config_hash"] = validated.hash
    return summary
