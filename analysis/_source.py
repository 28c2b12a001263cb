"""Shared by the analysis scripts: the ``--store`` / ``--mongo-uri`` (and ``--study``) options and ``--out``, then the
runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without installing


def parse(description: str, out: str = "report") -> tuple[argparse.Namespace, object]:
    """Parse the source options and ``--out``; return (args, runs DataFrame)."""
    from walking_noise.report.cli import add_source_arguments, add_study_arguments, load_selected

    parser = argparse.ArgumentParser(description=description)
    add_source_arguments(parser)
    add_study_arguments(parser)
    parser.add_argument("--out", default=out, help=f"output folder (default {out})")
    args = parser.parse_args()
    return args, load_selected(args)


def show(paths: list) -> None:
    for path in paths:
        print(path)
