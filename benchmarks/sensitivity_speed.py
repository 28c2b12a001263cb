"""How long a per-layer sensitivity scan of a trained model takes: the library's scan against a naive loop.

    .venv/bin/python benchmarks/sensitivity_speed.py [--models lenet5,residual] [--max-test 500] [--repeats 1]
    # + the MRFI row: MRFI beside the project's packages, outside .venv
    pip install --no-deps --target /tmp/mrfi mrfi
    PYTHONPATH=/tmp/mrfi .venv/bin/python benchmarks/sensitivity_speed.py

Each model is trained clean on the embedded MNIST subset (mnist_5k, 2 epochs; not timed) and scanned for walking
additive noise on the activations of every injection point after the input, three ways, one after the other
(``--repeats`` alternates them again), on one thread:

- **engine**: ``walking-noise sensitivity``'s scan (:mod:`walking_noise.scan`): one adaptive search per point to
  mu_err/mu <= 5 % with up to 5 draws, run by the local runner into a store; the rounds of all points evaluated
  together by :class:`walking_noise.sensitivity.Evaluator` (clean prefix cached, runs packed);
- **naive**: a fixed grid (``--levels`` log-spaced levels over 0.01..100 x ``--draws`` draws) per point, each
  (point, level, draw) one full forward pass of the test set (:func:`walking_noise.sensitivity.plain_evaluation`,
  the campaign's evaluation), fitted per point;
- **engine, naive grid**: the engine on exactly the naive loop's runs (its numbers must be bit-identical: checked),
  which separates the engine's own speed from what the adaptive levels save;
- **MRFI** (if ``import mrfi`` works): its layer-by-layer scan on the same model and grid: ``NormalDisturb`` on one
  module's output at a time (``activation_out``), ``Acc_experiment`` per level and draw.

"At equal mu within error": for each point both fits' mu must agree within 2 combined standard errors (counted),
and the median mu_err/mu of each path is printed; the ratio is naive wall time / engine wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from walking_noise.campaign import run_campaign
from walking_noise.config import RunConfig
from walking_noise.fit import fit_midpoint
from walking_noise.report.common import reported_error
from walking_noise.report.sensitivity import sensitivity_table
from walking_noise.results import runs_from_store
from walking_noise.scan import write_scan
from walking_noise.sensitivity import Evaluator, plain_evaluation, trained_network
from walking_noise.store import LocalStore
from walking_noise.study import load_study
from walking_noise.training import load_checkpoint, load_run_dataset, train_run

MODELS = {"lenet5": "lenet5", "residual": "walking_noise.examples.residual_cnn:residual_cnn",
          "mlp": "mlp"}


def train(model: str, folder: Path) -> Path:
    """The model trained clean on mnist_5k (2 epochs), saved as a plain state_dict."""
    checkpoint = folder / "trained.checkpoint.pt"
    train_run(RunConfig.from_dict({"dataset": "mnist_5k", "model": model, "training": {"epochs": 2},
                                   "checkpoint": str(checkpoint)}))
    net, _ = load_checkpoint(checkpoint)
    path = folder / "trained.pt"
    torch.save(net.model.state_dict(), path)
    return path


def engine_scan(model: str, weights: Path, folder: Path, max_test: int, points: list[int]) -> tuple[float, dict, int]:
    """Seconds, {point: (mu, err)} and runs of the adaptive scan (report not timed)."""
    study = write_scan(model, weights, "mnist_5k", folder, max_test=max_test, injection_layers=points)
    started = time.perf_counter()
    run_campaign(load_study(study), LocalStore(folder / "store"), progress=False)
    seconds = time.perf_counter() - started
    runs = runs_from_store(folder / "store")
    table = sensitivity_table(runs)
    return seconds, {int(r["index"]): (r["mu"], r["mu_err"]) for _, r in table.iterrows()}, len(runs)


def grid_configs(model: str, weights: Path, max_test: int, points: list[int], levels: np.ndarray,
                 draws: int) -> list[RunConfig]:
    return [RunConfig.from_dict({"dataset": "mnist_5k", "model": model, "weights": str(weights), "max_test": max_test,
                                 "seed": seed, "noise": {"kind": "additive", "noise_std": float(s), "phase": "inference",
                                                         "placement": "walking", "injection_layer": p}})
            for p in points for s in levels for seed in range(draws)]


def fit_points(configs: list[RunConfig], accuracies: list[float]) -> dict[int, tuple[float | None, float | None]]:
    out = {}
    for p in sorted({c.noise.injection_layer for c in configs}):
        rows = [(c.noise.noise_std, c.seed, a) for c, a in zip(configs, accuracies) if c.noise.injection_layer == p]
        x, seeds, y = map(np.array, zip(*rows))
        fit = fit_midpoint(x, y, seeds=seeds, axis="log10", chance_level=0.1)
        out[p] = (fit.mu, reported_error(fit)) if fit.converged else (None, None)
    return out


def mrfi_scan(net: torch.nn.Module, data, configs: list[RunConfig], batch: int) -> tuple[float, list[float]] | None:
    """MRFI's layer-by-layer scan of the same runs (its own random numbers), or None when MRFI is not installed."""
    try:
        from mrfi import MRFI, EasyConfig
        from mrfi.experiment import Acc_experiment
    except ImportError:
        return None
    points = net.injection_points
    model = net.model
    types = sorted({type(p.layer).__name__ for p in points[1:]})
    fi = MRFI(model, EasyConfig.load_string(
        "faultinject:\n  - type: activation_out\n    enabled: False\n    error_mode:\n      method: NormalDisturb\n"
        f"      std: 1.0\n    module_type: [{', '.join(types)}]\n"))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.test_x, data.test_y), batch_size=batch)
    accuracies = []
    started = time.perf_counter()
    for cfg in configs:
        path = points[cfg.noise.injection_layer].path
        every = fi.get_activation_configs(is_out=True)
        every.enabled = False
        chosen = fi.get_activation_configs(is_out=True, module_fullname=[path])
        chosen.enabled = True
        chosen.error_mode.args.std = cfg.noise.noise_std
        torch.manual_seed(cfg.seed)
        accuracies.append(Acc_experiment(fi, loader))
    return time.perf_counter() - started, accuracies


def agreement(a: dict, b: dict) -> str:
    both = [p for p in a if a[p][0] is not None and b.get(p, (None,))[0] is not None]
    close = sum(abs(a[p][0] - b[p][0]) <= 2 * np.hypot(a[p][1], b[p][1]) for p in both)
    return f"{close}/{len(both)}"


def relative(fits: dict) -> float:
    values = [err / mu for mu, err in fits.values() if mu]
    return float(np.median(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,residual")
    parser.add_argument("--max-test", type=int, default=500)
    parser.add_argument("--levels", type=int, default=9, help="naive grid: levels log-spaced over 0.01..100")
    parser.add_argument("--draws", type=int, default=4, help="naive grid: draws per level")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    levels = np.logspace(-2, 2, args.levels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, folder = MODELS[name], Path(tmp) / name
            folder.mkdir()
            weights = train(model, folder)
            configs0 = grid_configs(model, weights, args.max_test, [0], levels, 1)
            data = load_run_dataset(configs0[0])
            net = trained_network(configs0[0], data)
            points = [p.index for p in net.injection_points[1:]]
            configs = grid_configs(model, weights, args.max_test, points, levels, args.draws)
            for repeat in range(args.repeats):
                t_engine, engine_fits, engine_runs = engine_scan(model, weights, folder / f"engine{repeat}",
                                                                 args.max_test, points)
                started = time.perf_counter()
                naive = [plain_evaluation(net, c, data) for c in configs]
                t_naive = time.perf_counter() - started
                started = time.perf_counter()
                packed = Evaluator(net, data, configs[0].training.batch_size).evaluate(configs)
                t_same = time.perf_counter() - started
                assert [p[:3] for p in packed] == naive, "the engine must compute what the naive loop computes"
                naive_fits = fit_points(configs, [a for a, _, _ in naive])
                mrfi = mrfi_scan(trained_network(configs0[0], data), data, configs, configs[0].training.batch_size)
                mrfi_text = "not installed" if mrfi is None else (
                    f"{mrfi[0]:.1f} s ({mrfi[0] / t_engine:.1f}x the engine's; mu agree "
                    f"{agreement(fit_points(configs, mrfi[1]), engine_fits)})")
                rows.append(f"| {name} | {len(points)} | {engine_runs} runs, {t_engine:.1f} s | {len(configs)} runs, "
                            f"{t_naive:.1f} s | **{t_naive / t_engine:.1f}x** | {t_same:.1f} s "
                            f"({t_naive / t_same:.1f}x) | {mrfi_text} | {relative(engine_fits):.3f} / "
                            f"{relative(naive_fits):.3f} | {agreement(engine_fits, naive_fits)} |")
                print(rows[-1], flush=True)
    print("\n| model | points | engine (adaptive, 5 %) | naive loop (fixed grid) | naive / engine | engine on the "
          "naive grid (naive / it) | MRFI, same grid | median mu_err/mu engine / naive | mu agree (2 sigma) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
