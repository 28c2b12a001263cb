"""A sensitivity scan of one trained model: which of its layers can run on noisy hardware, and at which noise level
each one breaks. No training: the model's weights are evaluated under noise at inference (:mod:`walking_noise.sensitivity`).

:func:`sensitivity` (and ``walking-noise sensitivity``) writes the scan as an ordinary study YAML
(``DIR/sensitivity.yaml``): one adaptive noise-grid search per (site, kind, mode, point), each to a target relative
error of mu, its repeats independent noise draws. It then runs that study with the local runner into the store
``DIR/store`` (the searches side by side, their rounds evaluated together by one engine; an interrupted scan resumes
from the store) and writes the per-point table, the ranking, the figure, the per-run export and ``index.html``
(:mod:`walking_noise.report.sensitivity`). The same YAML runs on Slurm (``walking-noise submit``) or SEML.

Before anything is evaluated, the inputs are checked and a bad one is a one-line ``ValueError``: a weights file that
does not match the model (its missing and unexpected keys), a test set whose samples the model cannot take, a site
at a point that cannot take it, a model output that is not finite without noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from walking_noise.adaptive import AdaptiveGrid
from walking_noise.campaign import run_campaign
from walking_noise.config import RunConfig
from walking_noise.noise import noisy_points
from walking_noise.results import runs_from_store
from walking_noise.sensitivity import Evaluator, trained_network
from walking_noise.sites import SITES
from walking_noise.store import LocalStore
from walking_noise.studies import EXPERIMENT, study_root
from walking_noise.study import load_study, study_run
from walking_noise.training import load_run_dataset, resolve_device

logger = logging.getLogger(__name__)

#: ``--modes`` names -> ``noise.placement``.
MODES = {"walking": "walking", "leave-one-out": "leave_one_out", "global": "global"}
#: The noise range each search starts from (noise-std units); a search widens it (up to 3 times by half its
#: decades on each side) when the accuracy never leaves a plateau.
RANGES = {"additive": (0.01, 100.0), "multiplicative": (0.01, 100.0)}
STUDY_FILE = "sensitivity.yaml"


def save_built_model(model: str, model_kwargs: dict[str, Any] | None, dataset: str, out: Path) -> Path:
    """A model whose callable returns it trained: its ``state_dict`` saved as ``out/weights.pt``, so that the scan's
    runs name their weights by content like any other."""
    import torch

    from walking_noise.data import dataset_shape
    from walking_noise.models import build_model

    shape, classes = dataset_shape(dataset)
    net = build_model(model, shape, classes, model_kwargs=model_kwargs)
    path = out / "weights.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.model.state_dict(), path)
    return path


def scan_points(net: Any, site: str, placement: str) -> list[int | None]:
    """The points a scan visits: walking, every point where ``site`` can act; leave-one-out, every point global
    placement reaches (each kept clean once); global, one run of all (None)."""
    if placement == "global":
        return [None]
    points = net.injection_points
    chosen = [p.index for p in points if SITES[site].acts_at(p.kind)] if placement == "walking" else [
        p.index for p in noisy_points(points, SITES[site], "global", None)]
    return chosen


def study_yaml(base: dict[str, Any], blocks: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """A study YAML (as a dict): SEML's blocks, the shared config in ``fixed``, one sub-experiment per block."""
    return {
        "seml": {"executable": str(EXPERIMENT), "project_root_dir": str(study_root()), "name": name,
                 "output_dir": "logs"},
        "slurm": [{"experiments_per_job": 1, "sbatch_options": {"time": "0-02:00", "mem": "8G", "cpus-per-task": 2}}],
        "fixed": base, **blocks,
    }


#: Levels a search measures before its error may stop it (:attr:`AdaptiveGrid.min_levels`). Without it a search
#: stopped after its five coarse levels (one on the slope, the 4-parameter fit through them nearly exact, the draws'
#: jackknife error small): LeNet-5's midpoints then agreed with a 9-level naive grid's within 2 combined errors at
#: 7 of 11 points (up to 6.5 errors apart), with 7 levels at 10 of 11, for 16 % more runs (the residual CNN: 14 -> 15
#: of 22, 40 % more runs; benchmarks/sensitivity_speed.py, 2026-12-06).
MIN_LEVELS = 7


def _adaptive(kind: str, draws: int, target_rel_err: float, max_runs: int,
              levels: tuple[float, float] | None) -> dict[str, Any]:
    low, high = levels or RANGES[kind]
    settings = {"low": low, "high": high, "axis": "log10", "target_rel_err": target_rel_err, "max_runs": max_runs,
                "seeds": list(range(draws)), "coarse_seeds": min(2, draws), "refine_seeds": min(3, draws),
                "min_levels": MIN_LEVELS}
    AdaptiveGrid(**{**settings, "seeds": tuple(settings["seeds"])})  # bad settings fail here, before any evaluation
    return {f"adaptive.{k}": v for k, v in settings.items()}


def check_inputs(cfg: RunConfig) -> Evaluator:
    """The trained model on its test set, checked before any evaluation (weights that match the model, samples the
    model takes, finite logits without noise: each a one-line ``ValueError``); its evaluator, after one clean pass
    over the test set (:attr:`Evaluator.clean_accuracy`)."""
    data = load_run_dataset(cfg, resolve_device(cfg.device))
    evaluator = Evaluator(trained_network(cfg, data), data, cfg.training.batch_size)
    evaluator.evaluate([])
    return evaluator


def write_scan(model: str, weights: str | Path, dataset: str, out: str | Path, *,
               model_kwargs: dict[str, Any] | None = None, sites: Sequence[str] = ("activation",),
               kinds: Sequence[str] = ("additive",), modes: Sequence[str] = ("walking",), draws: int = 5,
               target_rel_err: float = 0.05, max_runs: int = 100, levels: tuple[float, float] | None = None,
               batch_size: int | None = None, max_test: int | None = None, data_dir: str | None = None,
               batchnorm: bool = False, device: str = "cpu", points: str = "modules",
               injection_layers: Sequence[int] | None = None) -> Path:
    """Check the inputs and write the scan's study YAML to ``out/sensitivity.yaml``; return its path.

    ``sites`` (activation, weight, mac), ``kinds`` (additive, multiplicative) and ``modes`` (walking,
    leave-one-out, global) span the searches, each over ``draws`` noise draws to mu_err / mu <= ``target_rel_err``
    (at most ``max_runs`` runs); ``levels`` the starting noise range; ``points`` the model's injection points
    (``modules``, ``operations`` or point kinds, :data:`walking_noise.sites.POINT_SETS`); ``injection_layers`` only
    these of them (indices).
    """
    out = Path(out).resolve()
    for name, given, valid in (("site", sites, SITES), ("kind", kinds, RANGES), ("mode", modes, MODES)):
        bad = [g for g in given if g not in valid]
        if bad or not given:
            raise ValueError(f"unknown {name}(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
    base: dict[str, Any] = {"model": model, "dataset": dataset, "weights": str(Path(weights).resolve()),
                            "noise.phase": "inference", "device": device}
    for key, value in (("model_kwargs", model_kwargs), ("data_dir", data_dir), ("max_test", max_test),
                       ("training.batch_size", batch_size)):
        if value is not None:
            base[key] = value
    if batchnorm:
        base["batchnorm"] = True
    if points != "modules":
        base["points"] = points
    first = study_run({**_nested(base), "noise": {"kind": "none", "phase": "inference"}}).config
    net = check_inputs(first).net
    blocks: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        for mode in modes:
            placement = MODES[mode]
            for site in sites:
                chosen = scan_points(net, site, placement)
                if injection_layers is not None and chosen != [None]:
                    for p in injection_layers:  # a point the site cannot take, or leave-one-out cannot leave clean
                        noisy_points(net.injection_points, SITES[site], placement, p, model)
                    chosen = [p for p in chosen if p in injection_layers]
                if not chosen:
                    raise ValueError(f"the {site} site has no point to scan in {model}"
                                     + (f" among points {list(injection_layers)}" if injection_layers is not None
                                        else "")
                                     + f"; it exists at {SITES[site].points}")
                fixed = {"noise.kind": kind, "noise.site": site, "noise.placement": placement,
                         **_adaptive(kind, draws, target_rel_err, max_runs, levels)}
                block: dict[str, Any] = {"fixed": fixed}
                if chosen != [None]:
                    block["grid"] = {"noise.injection_layer": {"type": "choice", "options": chosen}}
                blocks[f"{mode.replace('-', '_')}_{site}_{kind}"] = block
    path = out / STUDY_FILE
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    header = (f"# {STUDY_FILE}: how sensitive is {model} ({Path(weights).name}) on {dataset}, point by point: written "
              f"by `walking-noise sensitivity`.\n#   walking-noise run {path} --store {out / 'store'}    "
              f"(or walking-noise submit / seml add; --set weights=PATH where the file lies elsewhere)\n")
    path.write_text(header + yaml.safe_dump(study_yaml(base, blocks, f"sensitivity_{out.name}"), sort_keys=False,
                                            width=120))
    return path


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    from walking_noise.config import unflatten

    return unflatten(flat)


def run_scan(study_path: str | Path, out: str | Path, *, workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """Run the scan's study into ``out/store`` (resuming what is there) and write its outputs into ``out``; return
    the per-point table."""
    from walking_noise.report.index import write_report
    from walking_noise.report.sensitivity import sensitivity_table
    from walking_noise.results import study_runs

    out = Path(out)
    study = load_study(study_path)
    store = LocalStore(out / "store")
    summary = run_campaign(study, store, workers=workers, progress=progress)
    if summary.failures:
        logger.warning("%d run(s) or search(es) failed; the first: %s", len(summary.failures), summary.failures[0])
    df = study_runs(runs_from_store(store), study)
    write_report(df, out, only=["sensitivity"])
    return sensitivity_table(df)


def sensitivity(model: str, weights: str | Path | None, dataset: str, out: str | Path, *,
                workers: int = 1, progress: bool = True, **options: Any) -> pd.DataFrame:
    """How sensitive is a trained model, point by point: scan it (the module docstring says how) and return the
    per-point table (:func:`walking_noise.report.sensitivity.sensitivity_table`: mode, site, kind, point, mu ±
    error, a_min, accuracy at the largest s, ...). ``weights``: a ``state_dict`` file, a checkpoint of this library,
    or None when ``model``'s callable returns the trained model. ``options``: those of :func:`write_scan`."""
    out = Path(out)
    if weights is None:
        weights = save_built_model(model, options.get("model_kwargs"), dataset, out)
    study = write_scan(model, weights, dataset, out, **options)
    return run_scan(study, out, workers=workers, progress=progress)
