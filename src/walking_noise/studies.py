"""The studies that come with the package: list them, and copy them out for ``walking-noise run`` or SEML.

A study YAML names its Sacred experiment relative to its own folder (``executable:
experiments/walking_noise_experiment.py`` with ``project_root_dir: ..``), and SEML refuses a YAML whose experiment
file it cannot find, so a study is always copied together with the experiment file, in the checkout's layout:

    DIR/seml_configs/<study>.yaml
    DIR/experiments/walking_noise_experiment.py

An installed wheel carries both under ``walking_noise/study_files/`` (``setup.py`` copies them at build time); a
checkout or an editable install reads the repository's own ``seml_configs/`` and ``experiments/``. Either way there
is one copy of each file in the repository.

    walking-noise studies                              # name, experiments and purpose of every study
    walking-noise studies smoke --copy-to ~/walking    # ~/walking/seml_configs/smoke.yaml + the experiment file
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

PACKAGED = Path(__file__).resolve().parent / "study_files"
CHECKOUT = Path(__file__).resolve().parents[2]
EXPERIMENT = Path("experiments") / "walking_noise_experiment.py"


def study_root() -> Path:
    """The folder holding ``seml_configs/`` and ``experiments/``: the wheel's copy, else the checkout's."""
    for root in (PACKAGED, CHECKOUT):
        if (root / EXPERIMENT).is_file() and (root / "seml_configs").is_dir():
            return root
    raise FileNotFoundError(f"no study files found: neither {PACKAGED} (an installed wheel) nor {CHECKOUT} (a "
                            f"checkout) holds seml_configs/ and {EXPERIMENT}; reinstall walking-noise from a wheel or "
                            f"an sdist")


def available() -> dict[str, Path]:
    """``{study name: YAML path}`` of the shipped studies (scratch files named ``_*.yaml`` are not studies)."""
    return {p.stem: p for p in sorted((study_root() / "seml_configs").glob("*.yaml")) if not p.name.startswith("_")}


def describe(path: Path) -> str:
    """The first line of the study's header comment, without its leading ``<name>.yaml:``."""
    first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "")
    return first.lstrip("#").strip().removeprefix(f"{path.name}:").strip()


def copy_studies(names: list[str], target: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the studies ``names`` (all if empty) and the experiment file into ``target``; return what was written.

    Refuses to replace a file that differs from the shipped one unless ``overwrite`` (a user's edited study is
    never lost silently).
    """
    studies = available()
    unknown = [n for n in names if n not in studies]
    if unknown:
        raise ValueError(f"unknown stud{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; the shipped ones "
                         f"are {', '.join(studies)} (`walking-noise studies` lists them)")
    target = Path(target)
    pairs = [(studies[n], target / "seml_configs" / studies[n].name) for n in (names or list(studies))]
    pairs.append((study_root() / EXPERIMENT, target / EXPERIMENT))
    clashes = [dst for src, dst in pairs if dst.exists() and dst.read_bytes() != src.read_bytes()]
    if clashes and not overwrite:
        raise ValueError(f"{', '.join(map(str, clashes))} already exist{'s' if len(clashes) == 1 else ''} and "
                         f"differ{'s' if len(clashes) == 1 else ''} from the shipped file; move them away or pass "
                         f"--overwrite")
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return [dst for _, dst in pairs]


def cmd_studies(args: argparse.Namespace) -> int:
    """List the shipped studies, or copy them (with the experiment file) into ``--copy-to``."""
    if args.copy_to is None:
        studies = available()
        unknown = [n for n in args.names if n not in studies]
        if unknown:
            raise ValueError(f"unknown study {', '.join(unknown)}; the shipped ones are {', '.join(studies)}")
        for name in args.names or studies:
            print(f"{name:<28} {describe(studies[name])}", flush=True)
        print(f"\n(from {study_root()}; `walking-noise studies NAME --copy-to DIR` copies a study and the SEML "
              f"experiment file)", flush=True)
        return 0
    written = copy_studies(args.names, args.copy_to, overwrite=args.overwrite)
    for path in written:
        print(f"wrote {path}", flush=True)
    first = next(p for p in written if p.suffix == ".yaml")
    print(f"next: walking-noise run {first} --store runs/{first.stem}   (or seml COLLECTION add {first})", flush=True)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``studies`` to the ``walking-noise`` sub-command parsers."""
    p = subparsers.add_parser("studies", help="list the shipped study YAMLs, or copy them with the SEML experiment "
                                              "file into a folder")
    p.add_argument("names", nargs="*", help="studies to list or copy (default: all)")
    p.add_argument("--copy-to", default=None, metavar="DIR",
                   help="write DIR/seml_configs/<study>.yaml and DIR/experiments/walking_noise_experiment.py")
    p.add_argument("--overwrite", action="store_true", help="replace files in DIR that differ from the shipped ones")
    p.set_defaults(func=cmd_studies)
