"""The ``walking-noise`` command: each sub-command is a few lines over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from walking_noise.config import PHASES, RunConfig
from walking_noise.logs import configure_logging


def _print(message: str) -> None:
    print(message, flush=True)


def cmd_layers(args: argparse.Namespace) -> int:
    from walking_noise.models import build_model
    from walking_noise.points import format_layer_table, layer_table
    from walking_noise.registry import DATASETS, check_dataset_name, is_foreign

    check_dataset_name(args.dataset)
    entry = DATASETS[args.dataset]
    model = build_model(args.model, entry.input_shape, entry.num_classes, args.batchnorm, _kwargs(args),
                        _points(args))
    rows = layer_table(model)
    if args.json:
        _print(json.dumps(rows))
    else:
        bn = "" if is_foreign(args.model) else f" {'with' if args.batchnorm else 'without'} BatchNorm"
        _print(f"{args.model} on {args.dataset}{bn}: {len(rows)} injection points ({model.points}; global noise "
               f"skips BatchNorm outputs; weight noise exists at conv and linear points, MAC noise also at matmuls)")
        _print(format_layer_table(rows))
    return 0


def _kwargs(args: argparse.Namespace) -> dict[str, object] | None:
    """``--model-kwargs '{"num_classes": 10}'`` as a dict (None when not given)."""
    if not getattr(args, "model_kwargs", None):
        return None
    try:
        value = json.loads(args.model_kwargs)
    except ValueError as err:
        raise ValueError(f"--model-kwargs must be a JSON object, e.g. '{{\"num_classes\": 10}}': {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    return value


def _points(args: argparse.Namespace) -> str:
    """``--points`` as a valid point set (an unknown one is a one-line error naming the choices)."""
    from walking_noise.sites import check_points

    return check_points(args.points)


def _run_config(args: argparse.Namespace, **noise: object) -> RunConfig:
    from walking_noise.study import study_run

    return study_run({
        "dataset": args.dataset, "model": args.model, "model_kwargs": _kwargs(args), "batchnorm": args.batchnorm,
        "points": _points(args), "seed": args.seed,
        "data_dir": args.data_dir, "weight_clamping": args.clamp,
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr},
        "noise": noise,
    }).config


def _noise_from_args(args: argparse.Namespace) -> dict[str, object]:
    if args.noise_kind == "none":
        return {"kind": "none"}
    noise: dict[str, object] = {"kind": args.noise_kind, "noise_std": args.noise_std, "phase": args.phase,
                                "site": args.noise_site, "distribution": args.noise_distribution,
                                "placement": "walking" if args.injection_layer is not None else "global"}
    if args.injection_layer is not None:
        noise["injection_layer"] = args.injection_layer
    return noise


def cmd_train(args: argparse.Namespace) -> int:
    from walking_noise.training import train_run

    cfg = _run_config(args, **_noise_from_args(args))
    result = train_run(cfg, log_epochs=not args.json)
    if args.json:
        _print(json.dumps({"config": cfg.to_dict(), "result": result.to_dict()}))
    else:
        _print(f"final accuracy (mean of last 5 epochs): {result.final_accuracy:.4f}"
               f"{'  (diverged)' if result.diverged else ''}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the same small model clean and with global noise and print both accuracies."""
    from walking_noise.training import load_run_dataset, train_run

    clean = _run_config(args, kind="none")
    noisy = _run_config(args, kind=args.noise_kind if args.noise_kind != "none" else "additive",
                        noise_std=args.noise_std)
    data = load_run_dataset(clean)
    _print(f"dataset {clean.dataset}: {len(data.train_x)} training / {len(data.test_x)} validation samples, "
           f"model {clean.model}{' + BatchNorm' if clean.batchnorm else ''}, {clean.training.epochs} epochs")
    results = {}
    for label, cfg in (("clean", clean), (f"global {noisy.noise.kind} s={noisy.noise.noise_std:g}", noisy)):
        _print(f"-- training {label}")
        results[label] = train_run(cfg, data, log_epochs=True)
    _print("\nfinal validation accuracy (mean of last 5 epochs)")
    for label, result in results.items():
        _print(f"  {label:<32} {result.final_accuracy:.4f}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a study YAML locally into the embedded store, resumably."""
    from walking_noise.study import load_study, parse_filters
    from tqdm.contrib.logging import logging_redirect_tqdm

    from walking_noise.campaign import run_campaign
    from walking_noise.store import LocalStore

    study = load_study(args.study, parse_filters(args.filter), overrides=parse_filters(args.set))
    store = LocalStore(args.store or Path("runs") / study.name)
    with logging_redirect_tqdm(loggers=[logging.getLogger("walking_noise")]):  # log lines above the progress bar
        summary = run_campaign(study, store, workers=args.workers, retry_failed=args.retry_failed,
                               members=args.members, threads_per_worker=args.threads, progress=not args.no_progress)
    return 1 if summary.failed else 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Scan a trained model's sensitivity to noise at inference, point by point (no training)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from walking_noise.scan import run_scan, save_built_model, write_scan

    out = Path(args.out)
    kwargs = _kwargs(args)
    weights = args.weights or save_built_model(args.model, kwargs, args.dataset, out)
    levels = (args.low, args.high) if args.low is not None or args.high is not None else None
    if levels is not None and None in levels:
        raise ValueError("--low and --high go together (the noise range every search starts from)")
    study = write_scan(args.model, weights, args.dataset, out, model_kwargs=kwargs, sites=_items(args.sites),
                       kinds=_items(args.kinds), modes=_items(args.modes), draws=args.draws,
                       target_rel_err=args.target, max_runs=args.max_runs, levels=levels,
                       batch_size=args.batch_size, max_test=args.max_test, data_dir=args.data_dir,
                       batchnorm=args.batchnorm, device=args.device,
                       points=args.points, injection_layers=[int(p) for p in _items(args.injection_layers)]
                       if args.injection_layers else None)
    _print(f"study {study} (runs into {out / 'store'}; an interrupted scan resumes)")
    with logging_redirect_tqdm(loggers=[logging.getLogger("walking_noise")]):
        table = run_scan(study, out, workers=args.workers, progress=not args.no_progress)
    _print((out / "sensitivity.md").read_text())
    _print(f"{len(table)} series; table, ranking, figure and per-run export in {out} (index.html)")
    return 0


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


MODEL_HELP = ("mlp, lenet5, cnn_s, or any nn.Module as package.module:callable (e.g. torchvision.models:resnet18 "
              "with --model-kwargs '{\"num_classes\": 10}')")


def _add_model_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, default=None if required else RunConfig.model, help=MODEL_HELP)
    p.add_argument("--model-kwargs", default=None, help="JSON keyword arguments of a package.module:callable model")
    p.add_argument("--batchnorm", action="store_true", help="BatchNorm after every learnable layer (paper models)")
    p.add_argument("--points", default=RunConfig.points, metavar="POINTS",
                   help="the injection points: modules (the input and every leaf module's output, the paper's), "
                        "operations (also residual additions, attention's matmuls and softmax, functional "
                        "activations), or point kinds to keep, e.g. matmul,softmax")


def cmd_bundle(args: argparse.Namespace) -> int:
    """Write a study as a SEML YAML of bundles (one experiment per work unit of the local runner)."""
    import yaml

    from walking_noise.study import load_study, parse_filters
    from walking_noise.units import bundled_study

    study = load_study(args.study, parse_filters(args.filter), overrides=parse_filters(args.set))
    out = Path(args.out) if args.out else study.path.with_name(f"{study.path.stem}.bundled.yaml")
    bundled = bundled_study(study, args.members)
    experiments = sum(name.startswith(("unit_", "search_")) for name in bundled)
    header = (f"# {out.name}: {study.path.name} as {experiments} SEML experiments of bundles ({len(study.configs)} "
              f"runs, {len(study.searches)} adaptive searches), written by `walking-noise bundle`.\n"
              f"#   seml COLLECTION add {out.name} && seml COLLECTION start\n")
    out.write_text(header + yaml.safe_dump(bundled, sort_keys=False, width=120))
    _print(f"{study.name}: {len(study.configs)} runs in {experiments} experiments -> {out}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, epochs: int) -> None:
    from walking_noise.config import NOISE_KINDS, TrainingConfig
    from walking_noise.sites import DISTRIBUTIONS, SITES

    p.add_argument("--dataset", default=RunConfig.dataset)
    _add_model_options(p)
    p.add_argument("--clamp", action="store_true", help="clamp every weight to [-1, 1] after each step")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=TrainingConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainingConfig.lr)
    p.add_argument("--seed", type=int, default=RunConfig.seed)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--noise-kind", default="additive", choices=[k for k in NOISE_KINDS if k != "mixed"],
                   help="additive x + N(0, s^2), multiplicative x * N(1, s^2), or none (mixed noise: in a YAML)")
    p.add_argument("--noise-std", type=float, default=1.0, help="standard deviation s of the injected noise")
    p.add_argument("--noise-site", default="activation", choices=tuple(SITES),
                   help="where the noise acts: a layer's output, its weights (read-out), or its multiply-accumulate")
    p.add_argument("--noise-distribution", default="gaussian", choices=tuple(DISTRIBUTIONS),
                   help="the law of the noise, std s either way: Gaussian (the paper's) or uniform "
                        "U(-sqrt(3) s, sqrt(3) s) (not at the mac site)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walking-noise", description=__doc__)
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", default=0,
                          help="also debug messages")
    loudness.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity",
                          help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("layers", help="print the numbered injection points of a model")
    _add_model_options(p, required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("train", help="train one model with noise and print its final accuracy")
    _add_run_options(p, epochs=10)
    p.add_argument("--injection-layer", type=int, default=None, help="walking noise at this point only")
    p.add_argument("--phase", default=PHASES[0], choices=PHASES,
                   help="noise in training and at inference, or at inference only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="run a SEML study YAML locally (no cluster, no MongoDB), resumably")
    p.add_argument("study", help="a YAML file of seml_configs/")
    p.add_argument("--store", default=None, help="store folder (default: runs/<study name>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: the CPU count / workers; 1 on a shared machine)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="run only configs with this value, e.g. noise.kind=additive (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every config, e.g. training.epochs=10 or data_dir=../shared/data "
                        "(repeatable; note it in your results)")
    p.add_argument("--retry-failed", action="store_true", help="run again the configs that failed before")
    p.add_argument("--members", type=int, default=None,
                   help="configs trained together as one batch (default: 16 on CPU for the registered models, "
                        "registry packs_on_cpu; 64 on a GPU; 1 for other models). A batch is stored when all its "
                        "members finish: --members 1 stores every run as it ends (long runs on a machine that may "
                        "go away)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sensitivity", help="how sensitive is a trained model: mu per injection point under noise at "
                                           "inference (no training)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--model-kwargs", default=None, help="JSON keyword arguments of a package.module:callable model")
    p.add_argument("--batchnorm", action="store_true", help="BatchNorm after every learnable layer (paper models)")
    p.add_argument("--weights", default=None, help="torch.save(model.state_dict()) file or a walking-noise "
                                                   "checkpoint; omit when the model's callable returns it trained")
    p.add_argument("--dataset", required=True, help="a registered dataset or package.module:callable returning "
                                                    "(x, y) test tensors or a torch Dataset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sites", default="activation", help="comma-separated: activation, weight, mac")
    p.add_argument("--kinds", default="additive", help="comma-separated: additive, multiplicative")
    p.add_argument("--modes", default="walking", help="comma-separated: walking (one point noisy), leave-one-out "
                                                      "(all but one), global (all)")
    p.add_argument("--points", default=RunConfig.points, metavar="POINTS",
                   help="the injection points: modules (the paper's), operations (also residual additions, "
                        "attention's matmuls and softmax, functional activations), or point kinds, e.g. matmul,add")
    p.add_argument("--injection-layers", default=None, help="comma-separated point indices to scan (default: every "
                                                            "one the site can take; `walking-noise layers` lists them)")
    p.add_argument("--draws", type=int, default=5, help="independent noise draws per level at most (the repeats)")
    p.add_argument("--target", type=float, default=0.05, help="target relative error of mu per point")
    p.add_argument("--max-runs", type=int, default=100, help="evaluations per point at most")
    p.add_argument("--low", type=float, default=None, help="noise range every search starts from (default 0.01)")
    p.add_argument("--high", type=float, default=None, help="... to (default 100; searches widen it when needed)")
    p.add_argument("--batch-size", type=int, default=None, help="test samples per forward pass (one weight draw per "
                                                                "batch at the weight site; default 128)")
    p.add_argument("--max-test", type=int, default=None, help="evaluate the first N test samples only")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--out", required=True, help="folder for the study YAML, the store and the outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("bundle", help="write a study as a SEML YAML of bundles: the local runner's batching on SEML")
    p.add_argument("study", help="a YAML file of seml_configs/")
    p.add_argument("--out", default=None, help="YAML to write (default: STUDY.bundled.yaml beside the study, so its "
                                               "relative paths hold)")
    p.add_argument("--members", type=int, default=None, help="configs per bundle at most (default: as walking-noise "
                                                              "run)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="only configs with this value")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value everywhere")
    p.set_defaults(func=cmd_bundle)

    from walking_noise.report.cli import add_subcommands as add_report_subcommands
    from walking_noise.slurm import add_subcommands as add_slurm_subcommands
    from walking_noise.studies import add_subcommands as add_studies_subcommands

    add_report_subcommands(sub)
    add_slurm_subcommands(sub)
    add_studies_subcommands(sub)

    p = sub.add_parser("demo", help="train a small model clean and with global noise, print both accuracies")
    _add_run_options(p, epochs=5)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbosity)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"walking-noise {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
