"""What a user installs is what CI tests: the sdist, the wheel built from it, and the cluster environment's pins.

The wheel goes into a fresh virtual environment that reuses this environment's packages (torch is several GB; a
``.pth`` file puts this environment's site-packages after the new one's, so ``walking_noise`` itself comes from the
wheel). Everything then runs in a folder outside the checkout, as a cluster user would: ``layers``, ``studies``, a
one-epoch smoke study, ``report``, the SEML experiment file copied beside the study, and the same smoke study once
more with the C compiler hidden, whose draws come from the torch twin and must give the same accuracies.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from walking_noise.store import LocalStore

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
#: What the sdist is built from (setup.py and MANIFEST.in read nothing else). Built from a copy, so that the build
#: leaves no build/ or egg-info folder in the checkout.
SDIST_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "seml_configs", "experiments")
STUDIES = sorted(p.name for p in (ROOT / "seml_configs").glob("*.yaml") if not p.name.startswith("_"))
EPOCHS = "training.epochs=1"
WORKERS = "2"  # both cores of a CI machine; the same for both smoke runs, so that they batch their runs alike
TIMEOUT = 900  # seconds for one command; a one-epoch smoke study takes about 10 s on an idle 2-core machine


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure, fail the test with its output (the last 3,000 characters of each stream)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode} in {cwd}\nstdout:\n{proc.stdout[-3000:]}\n"
                    f"stderr:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The sdist, built from the checkout's files, and the wheel, built from the sdist (so both are complete)."""
    tmp = tmp_path_factory.mktemp("dist")
    tree = tmp / "tree"
    for name in SDIST_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(src, tree / name)
    out = tmp / "out"
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"], cwd=tree)
    (sdist,) = out.glob("walking_noise-*.tar.gz")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(sdist)], cwd=tmp)
    (wheel,) = out.glob("walking_noise-*.whl")
    return SimpleNamespace(sdist=sdist, wheel=wheel)


@pytest.fixture(scope="module")
def installed(dist: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The wheel in a fresh venv that sees this environment's packages, and a work folder outside the checkout."""
    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
         str(dist.wheel)], cwd=tmp)
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp)
    Path(purelib.stdout.strip(), "_reuse_tested_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", WALKING_NOISE_CACHE=str(tmp / "cache"))
    work = tmp / "work"
    work.mkdir()
    return SimpleNamespace(venv=venv, python=python, env=env, work=work, cache=tmp / "cache")


@pytest.fixture(scope="module")
def smoke(installed: SimpleNamespace) -> SimpleNamespace:
    """The packaged smoke study, copied out with ``walking-noise studies``, run for one epoch and reported."""
    w = installed.work
    run(["walking-noise", "studies", "smoke", "--copy-to", "."], cwd=w, env=installed.env)
    run(["walking-noise", "run", "seml_configs/smoke.yaml", "--store", "runs/smoke", "--set", EPOCHS,
         "--workers", WORKERS, "--no-progress"], cwd=w, env=installed.env)
    run(["walking-noise", "report", "--store", "runs/smoke", "--out", "runs/smoke/report"], cwd=w, env=installed.env)
    return SimpleNamespace(store=w / "runs" / "smoke", report=w / "runs" / "smoke" / "report")


def test_the_sdist_carries_the_study_files_and_the_generator_source(dist: SimpleNamespace) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {"setup.py", "MANIFEST.in", "src/walking_noise/_gaussian.c",
                "experiments/walking_noise_experiment.py"} | {f"seml_configs/{s}" for s in STUDIES}
    assert expected <= names, f"missing from the sdist: {sorted(expected - names)}"
    assert not [n for n in names if n.startswith("seml_configs/_")], "scratch studies (_*.yaml) are not shipped"


def test_the_wheel_carries_every_module_and_the_package_data(dist: SimpleNamespace) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
    modules = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "walking_noise").rglob("*.py")}
    data = {"walking_noise/_gaussian.c", "walking_noise/study_files/experiments/walking_noise_experiment.py"}
    data |= {f"walking_noise/study_files/seml_configs/{s}" for s in STUDIES}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert data <= names, f"package data missing from the wheel: {sorted(data - names)}"
    shipped = {n for n in names if n.startswith("walking_noise/study_files/seml_configs/")}
    assert shipped == {f"walking_noise/study_files/seml_configs/{s}" for s in STUDIES}


def test_the_installed_wheel_is_what_runs_and_its_requirements_are_met(installed: SimpleNamespace) -> None:
    # every requirement of the wheel (extras aside) is met by the environment the tests run in: the declared
    # minimums are versions CI runs
    check = """
import importlib.metadata as md, json, walking_noise
from packaging.requirements import Requirement
unmet = []
for text in md.requires("walking-noise") or []:
    req = Requirement(text)
    if req.marker is not None and "extra" in str(req.marker):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req} (installed: {version})")
print(json.dumps({"file": walking_noise.__file__, "unmet": unmet}))
"""
    out = run([str(installed.python), "-c", check], cwd=installed.work, env=installed.env)
    import json

    report = json.loads(out.stdout)
    assert Path(report["file"]).is_relative_to(installed.venv), f"imported {report['file']}, not the wheel"
    assert report["unmet"] == []


def test_layers_runs_outside_the_checkout(installed: SimpleNamespace) -> None:
    out = run(["walking-noise", "layers", "--model", "lenet5", "--dataset", "cifar10"], cwd=installed.work,
              env=installed.env).stdout
    assert "lenet5 on cifar10" in out and "injection points" in out


def test_studies_lists_every_shipped_study_from_the_wheel(installed: SimpleNamespace) -> None:
    out = run(["walking-noise", "studies"], cwd=installed.work, env=installed.env).stdout
    listed = {line.split()[0] for line in out.splitlines() if line and not line.startswith(("(", " "))}
    assert listed == {s.removesuffix(".yaml") for s in STUDIES}
    assert "study_files" in out  # read from the installed package, not from a checkout


def test_a_one_epoch_smoke_study_and_its_report_from_the_wheel(installed: SimpleNamespace,
                                                               smoke: SimpleNamespace) -> None:
    docs = LocalStore(smoke.store).latest()
    assert len(docs) == 12 and all(d["status"] == "COMPLETED" for d in docs.values())
    assert all(d["result"]["epochs_run"] == 1 for d in docs.values())
    for name in ("index.html", "index.md", "runs.csv", "fig1_fit.png"):
        assert (smoke.report / name).is_file(), f"the report lacks {name}"
    # the compiled generator was built from the wheel's own _gaussian.c into the fresh cache
    assert list(installed.cache.glob("gaussian-*.so")), "the C generator was not compiled from the installed wheel"


def test_the_seml_experiment_file_works_beside_only_its_yaml(installed: SimpleNamespace,
                                                             smoke: SimpleNamespace) -> None:
    # `studies --copy-to` laid out seml_configs/smoke.yaml and experiments/walking_noise_experiment.py, nothing else
    assert sorted(p.relative_to(installed.work).as_posix() for p in installed.work.rglob("*")
                  if p.is_file() and "runs" not in p.parts) == ["experiments/walking_noise_experiment.py",
                                                               "seml_configs/smoke.yaml"]
    out = run([str(installed.python), "experiments/walking_noise_experiment.py", "validate", "with",
               "model=lenet5", "dataset=cifar10"], cwd=installed.work, env=installed.env)
    assert "config_hash" in out.stdout + out.stderr
    seml_block = yaml.safe_load((installed.work / "seml_configs" / "smoke.yaml").read_text())["seml"]
    assert (installed.work / "seml_configs" / seml_block["project_root_dir"] / seml_block["executable"]).is_file()


def test_without_a_compiler_the_smoke_study_gives_the_same_accuracies(installed: SimpleNamespace,
                                                                     smoke: SimpleNamespace,
                                                                     tmp_path: Path) -> None:
    # CC=false: every compile fails; a fresh cache: no generator compiled earlier is found
    env = dict(installed.env, CC="false", WALKING_NOISE_CACHE=str(tmp_path / "cache"))
    store = tmp_path / "store"
    proc = run(["walking-noise", "run", "seml_configs/smoke.yaml", "--store", str(store), "--set", EPOCHS,
                "--workers", WORKERS, "--no-progress"], cwd=installed.work, env=env)
    assert "torch twin" in proc.stderr, "the fallback did not announce itself"
    assert not list((tmp_path / "cache").glob("*.so"))
    twin, compiled = LocalStore(store).latest(), LocalStore(smoke.store).latest()
    assert twin.keys() == compiled.keys()
    for key, doc in twin.items():
        assert doc["status"] == "COMPLETED"
        # the draws are bit-identical, so training is too
        assert doc["result"]["val_accuracy"] == compiled[key]["result"]["val_accuracy"], doc["config"]


def test_the_cluster_environment_pins_the_torch_ci_tests() -> None:
    tested = {"torch": Version(torch.__version__).base_version,
              "torchvision": Version(torchvision.__version__).base_version}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_names = {re.split(r"[=<>]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert not conda_names & {"pytorch", "torchvision", "pytorch-cuda"}, "torch comes from pip, at the tested version"
    assert "c-compiler" in conda_names, "the noise generator needs a C compiler on the node"
    setup_venv = (ROOT / "scripts" / "setup_venv.sh").read_text()
    declared = {Requirement(r).name: Requirement(r) for r in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name, version in tested.items():
        assert f"{name}=={version}" in pip_section, f"environment.yml: pip install {name}=={version}"
        assert f"{name}=={version}" in setup_venv, f"scripts/setup_venv.sh: {name}=={version}"
        minimum = [s.version for s in declared[name].specifier if s.operator == ">="]
        assert minimum == [version], f"pyproject.toml: {name}>={version}, the version CI runs"
