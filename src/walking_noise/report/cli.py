"""The ``fit`` and ``report`` sub-commands of ``walking-noise`` (added by :func:`add_subcommands`).

    walking-noise fit FILE.csv [--axis linear|log10] [--model single|double|auto] [--json]
    walking-noise report --store PATH | --mongo-uri URI --db D --collection C [--study FILE] [--out DIR]
    walking-noise export --store PATH | --mongo-uri ... [--study FILE] [--out runs.csv]
    walking-noise import runs.csv --store PATH

Each handler is a few lines over :mod:`walking_noise.fit`, :mod:`walking_noise.results` and
:mod:`walking_noise.report`; a problem with the input raises ``ValueError``/``FileNotFoundError`` with a message the
main command prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FIT_CSV_COLUMNS = ("noise_std", "accuracy")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store PATH`` or ``--mongo-uri URI --db D --collection C`` (+ ``--batch-id``), the runs to analyse."""
    parser.add_argument("--store", default=None, help="local run store folder (from `walking-noise run --store`)")
    parser.add_argument("--mongo-uri", default=None, help="MongoDB URI of a SEML database, e.g. mongodb://host:27017")
    parser.add_argument("--db", default=None, help="MongoDB database name (with --mongo-uri)")
    parser.add_argument("--collection", default=None, help="SEML collection name (with --mongo-uri)")
    parser.add_argument("--batch-id", type=int, default=None, help="only this SEML batch (with --mongo-uri)")


def read_fit_csv(path: str | Path) -> Any:
    """A CSV with one row per run: ``noise_std``, ``accuracy`` and optionally ``seed``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a CSV with columns noise_std, accuracy[, seed]")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from err
    missing = [c for c in FIT_CSV_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}. "
                         f"Expected one row per run with noise_std, accuracy and optionally seed")
    return table


def fit_text(result: Any) -> str:
    """A fit result as a few lines of text (units: mu in noise std, sigma in fit-axis units)."""
    from walking_noise.report.common import format_fit, format_pm

    lines = []
    if result.converged:
        lines.append(f"midpoint noise level mu = {format_fit(result)} (noise std, 68 % interval)")
        lines.append(f"95 % interval {result.mu_lo95:.4g} .. {result.mu_hi95:.4g}"
                     + (f"; log10 mu = {result.log10_mu:.4f} ± {result.interval_se:.2g} decades x t"
                        if result.axis == "log10" and result.interval_se else "")
                     + f" ({result.interval_method}); covariance error {result.mu_err:.3g}")
    else:
        lines.append(f"not converged: {result.reason}")
    if result.sigma is not None:
        unit = "decades" if result.axis == "log10" else "noise std"
        lines.append(f"sigma   = {format_pm(result.sigma, result.sigma_err)} ({unit})")
    for name in ("delta_a", "a_min"):
        value = getattr(result, name)
        if value is not None:
            lines.append(f"{name:<7} = {format_pm(value, getattr(result, name + '_err'))}")
    chi2 = f"{result.chi2_red:.3g}" if result.chi2_red is not None else "n/a"
    lines.append(f"{result.model} logistic on a {result.axis} axis; {result.n_runs} runs at {result.n_levels} noise "
                 f"levels; chi2_red {chi2}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def cmd_fit(args: argparse.Namespace) -> int:
    """Fit Eq. 1 to a CSV of runs and print the result (text, or one JSON object with ``--json``)."""
    from walking_noise.fit import fit_midpoint
    from walking_noise.report.common import choose_axis

    table = read_fit_csv(args.csv)
    axis = args.axis or choose_axis(table["noise_std"])
    seeds = table["seed"].to_numpy() if "seed" in table.columns else None
    result = fit_midpoint(table["noise_std"].to_numpy(float), table["accuracy"].to_numpy(float), seeds=seeds,
                          axis=axis, model=args.model)
    print(json.dumps(result.to_dict()) if args.json else fit_text(result), flush=True)
    return 0


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--study FILE [--set KEY=VALUE]``: use exactly the runs of one study."""
    parser.add_argument("--study", default=None,
                        help="use exactly this study YAML's runs: its grid configs and the runs its adaptive "
                             "searches choose (default: every run of the source)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the --set values the study was run with (only keys that change a run's identity "
                             "matter; data_dir does not)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="the --filter values the study was run with")


def load_selected(args: argparse.Namespace, fields: Any = None) -> Any:
    """The runs of the source, cut to one study's with ``--study``."""
    from walking_noise.results import REPORT_FIELDS, load_runs, study_runs

    df = load_runs(store=args.store, mongo_uri=args.mongo_uri, db=args.db, collection=args.collection,
                   batch_id=getattr(args, "batch_id", None), fields=fields or REPORT_FIELDS)
    if getattr(args, "study", None):
        from walking_noise.study import load_study, parse_filters

        df = study_runs(df, load_study(args.study, parse_filters(args.filter), overrides=parse_filters(args.set)))
        for note in df.attrs["selection_notes"]:
            print(f"note: {note}", flush=True)
        print(f"study {df.attrs['study']}: {len(df)} runs ({df.attrs['left_out']} other runs of the source left out)",
              flush=True)
    return df


def cmd_report(args: argparse.Namespace) -> int:
    """Load the runs and write every table and figure they support, with an index and the per-run export."""
    from walking_noise.report import output_names, write_report

    only = output_names(args.only.split(",")) if args.only else None  # a bad name fails before the runs load
    df = load_selected(args)
    index = write_report(df, args.out, only=only)
    print(f"{len(df)} runs; report written to {index}", flush=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the per-run export (``runs.csv``) of a source, or of one study's runs in it."""
    from walking_noise.export import EXPORT_FIELDS, write_export

    df = load_selected(args, fields=EXPORT_FIELDS)
    print(f"{len(df)} runs exported to {write_export(df, args.out)}", flush=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Put the runs of an export into a local store, so that a campaign resumes from them."""
    from walking_noise.export import import_export
    from walking_noise.store import LocalStore

    added = import_export(args.csv, LocalStore(args.store))
    print(f"{added} runs imported into {args.store}", flush=True)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``fit`` and ``report`` to the ``walking-noise`` sub-command parsers."""
    from walking_noise.fit import AXES
    from walking_noise.fit import MODELS as FIT_MODELS

    p = subparsers.add_parser("fit", help="fit the logistic of Eq. 1 to accuracy vs noise from a CSV")
    p.add_argument("csv", help="CSV with one row per run: noise_std, accuracy[, seed]")
    p.add_argument("--axis", choices=AXES, default=None,
                   help="fit axis (default: log10 for a log-spaced grid spanning >= 2 decades, else linear)")
    p.add_argument("--model", choices=FIT_MODELS, default="single",
                   help="one logistic, two stacked logistics, or the better by AIC (default single)")
    p.add_argument("--json", action="store_true", help="print one JSON object with every fit field")
    p.set_defaults(func=cmd_fit)

    p = subparsers.add_parser("report", help="write the paper's tables and figures for a set of runs")
    add_source_arguments(p)
    add_study_arguments(p)
    p.add_argument("--out", default="report", help="output folder (default ./report)")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]",
                   help="only these outputs: table1, table1_vs_paper, fig1, fig2, fig2m, fig3, fig4, fig5, fig6, fig7, "
                        "table2 (default: every output the runs support)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("export", help="write one CSV row per run (config, final accuracy, curves)")
    add_source_arguments(p)
    add_study_arguments(p)
    p.add_argument("--out", default="runs.csv", help="CSV file to write (default ./runs.csv)")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("import", help="put the runs of an export (runs.csv) into a local store")
    p.add_argument("csv", help="a runs.csv written by `walking-noise export` or `report`")
    p.add_argument("--store", required=True, help="local store folder to add the runs to")
    p.set_defaults(func=cmd_import)
