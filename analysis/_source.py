"""What every analysis script shares: the ``--store`` / ``--mongo-uri`` (and ``--study``) options and ``--out``,
the runs, and one output of the report.

Why one script per table or figure stays (``python analysis/fig1_fit.py --store ...``): a reader of the paper finds
the code of its Fig. 1 by its name, and the design card lays the project out that way. Each script is its docstring
and one call; the work is the report's (``walking-noise report --only fig1`` makes the same files).
"""

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


def make(output: str, doc: str) -> None:
    """Parse the command line, make one report output (by its name in the report index) and print its files, or
    why it could not be made."""
    from walking_noise.report import write_outputs

    args, runs = parse(doc.splitlines()[0])
    (made,) = write_outputs(runs, args.out, only=[output])
    for path in made.files:
        print(path)
    if not made.files:
        raise SystemExit(f"{output} not made: {made.missing or made.error}")
