"""The SEML study files: they expand with SEML's own parser to the count their top comment states, and every
expanded config is a valid run of the experiment, with the paper's grids, seeds, epochs and injection points."""

from __future__ import annotations

import json
import math
import random
import re
import sys
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from walking_noise.config import RunConfig
from walking_noise.models import build_model
from walking_noise.registry import AUTHORS_EPOCHS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "seml_configs"
STUDIES = ("smoke", "embedded_walking", "table1_global_noise", "walking_additive", "walking_multiplicative",
           "mnist_table1", "mnist_reproduction", "mnist_table1_mlp_adaptive", "mnist_gap", "embedded_sites",
           "resnet18_cifar10", "vit_mnist_operations", "vit_mnist_noisy_training", "resnet_mnist_operations")
EMBEDDED = ("smoke", "embedded_walking", "embedded_sites")  # small studies on the embedded dataset
# beyond the paper: no authors' settings to match
EXTENSIONS = ("resnet18_cifar10", "vit_mnist_operations", "vit_mnist_noisy_training", "resnet_mnist_operations")
PARTIAL_WALKS = ("smoke", "vit_mnist_noisy_training")  # studies that walk noise through some points only
# sized for one developer session: fewer epochs (mnist_gap varies the epochs, up to the authors' 100)
SESSION = ("mnist_reproduction", "mnist_table1_mlp_adaptive", "mnist_gap")
BIG = tuple(s for s in STUDIES if s not in EMBEDDED + SESSION + EXTENSIONS)
GPU_STUDIES = {"table1_global_noise", "walking_additive", "walking_multiplicative", "resnet18_cifar10"}

# (input shape, classes) of each dataset, to count a model's injection points without loading data.
SHAPES = {"mnist_5k": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
          "speech_commands": ((1, 49, 10), 12)}
# The authors' epochs per (dataset, model), read off their configs (the registry says which).
EPOCHS = AUTHORS_EPOCHS
PAIRS = set(EPOCHS)  # the (dataset, model) pairs of Table I


@lru_cache(maxsize=None)
def expand(study: str) -> tuple[dict, list[dict], list[dict]]:
    """(seml block, slurm list, expanded configs) of a study, via SEML's read_config + generate_configs."""
    from seml.experiment.config import generate_configs, read_config

    seml_block, slurm, experiment = read_config(CONFIGS / f"{study}.yaml")
    return dict(seml_block), list(slurm), generate_configs(experiment)


def stated_count(study: str) -> int:
    """The experiment count stated in the file's leading comment ("expands to N experiments")."""
    header = []
    for line in (CONFIGS / f"{study}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    match = re.search(r"expands to ([\d,]+) experiments", "\n".join(header))
    assert match, f"{study}.yaml must state 'expands to N experiments' in its top comment"
    return int(match.group(1).replace(",", ""))


def run_config(config: dict[str, Any]) -> RunConfig:
    """The run a config defines (an adaptive search's: its base run, whose noise level the search sets)."""
    from walking_noise.study import study_run

    return study_run(config).config


@lru_cache(maxsize=None)
def runs(study: str) -> tuple[RunConfig, ...]:
    """Every expanded config of a study as a validated RunConfig (raises on the first invalid one)."""
    return tuple(run_config(c) for c in expand(study)[2])


@lru_cache(maxsize=None)
def point_count(model: str, dataset: str, batchnorm: bool, kwargs_json: str = "{}", points: str = "modules") -> int:
    shape, classes = SHAPES[dataset]
    return len(build_model(model, shape, classes, batchnorm, json.loads(kwargs_json) or None, points).injection_points)


def log_grid(lo_exp: float, hi_exp: float, per_decade: int = 4) -> list[float]:
    steps = round((hi_exp - lo_exp) * per_decade)
    return [10 ** (lo_exp + k / per_decade) for k in range(steps + 1)]


def same_values(actual: set[float], expected: list[float]) -> bool:
    return len(actual) == len(expected) and all(
        any(math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-12) for a in actual) for e in expected)


def test_every_study_of_the_paper_has_a_file():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_expands_to_the_count_its_comment_states(study):
    assert len(expand(study)[2]) == stated_count(study)


@pytest.mark.parametrize("study", STUDIES)
def test_every_config_is_a_valid_run(study):
    validated = runs(study)
    assert len(validated) == len(expand(study)[2])
    searched = [bool(c.get("adaptive")) for c in expand(study)[2]]  # a search is no run: its base may equal one
    plain = [repr(r) for r, s in zip(validated, searched) if not s]
    assert len(set(plain)) == len(plain), "two configs of the study are the same run"
    searches = [repr((r, c.get("adaptive"))) for r, c, s in zip(validated, expand(study)[2], searched) if s]
    assert len(set(searches)) == len(searches), "two adaptive searches of the study are the same"


@pytest.mark.parametrize("study", STUDIES)
def test_seml_and_slurm_blocks(study):
    seml_block, slurm, _ = expand(study)
    assert (Path(seml_block["working_dir"]) / seml_block["executable"]).resolve() == \
        ROOT / "experiments" / "walking_noise_experiment.py"
    assert seml_block["output_dir"] == "logs" and seml_block["name"].startswith("walking_noise")
    assert seml_block["use_uploaded_sources"]  # project_root_dir is set: runs start from the repository root
    assert len(slurm) == 1
    options = slurm[0]["sbatch_options"]
    assert {"time", "mem", "cpus-per-task"} <= set(options) and slurm[0]["experiments_per_job"] >= 1
    assert (options.get("gres") == "gpu:1") == (study in GPU_STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_walking_points_cover_every_injection_point(study):
    configs = runs(study)
    layers: dict[tuple, set[int]] = defaultdict(set)
    for cfg in configs:
        if cfg.noise.placement == "walking":
            key = (cfg.model, cfg.dataset, cfg.batchnorm, json.dumps(cfg.model_kwargs or {}, sort_keys=True),
                   cfg.points)
            layers[key].add(cfg.noise.injection_layer)
    for (model, dataset, bn, kwargs, points), seen in layers.items():
        n = point_count(model, dataset, bn, kwargs, points)
        assert max(seen) < n, f"{study}: injection point {max(seen)} does not exist in {model} bn={bn}"
        if study not in PARTIAL_WALKS:
            assert seen == set(range(n)), f"{study}: {model}/{dataset} bn={bn} misses points"


@pytest.mark.parametrize("study", BIG)
def test_epochs_are_the_authors(study):
    for cfg in runs(study):
        assert cfg.training.epochs == EPOCHS[(cfg.dataset, cfg.model)]
        assert cfg.device == "auto" and cfg.noise.backward == "autograd"


def test_table1_global_noise_grid():
    configs = runs("table1_global_noise")
    cells: dict[tuple, Counter] = defaultdict(Counter)
    stds: dict[tuple, set[float]] = defaultdict(set)
    for cfg in configs:
        assert cfg.noise.placement == "global" and cfg.noise.phase == "train_and_inference"
        assert not cfg.weight_clamping
        key = (cfg.dataset, cfg.model, cfg.batchnorm, cfg.noise.kind)
        cells[key][cfg.noise.noise_std] += 1
        stds[key].add(cfg.noise.noise_std)
    assert {(d, m) for d, m, _, _ in cells} == PAIRS
    assert len(cells) == len(PAIRS) * 2 * 2  # every pair x BatchNorm x noise kind
    for key, counts in cells.items():
        dataset, kind = key[0], key[3]
        assert set(counts.values()) == {5}  # five seeds per point
        if kind == "additive":
            assert same_values(stds[key], log_grid(-2, 2))
        else:
            top = 30 if dataset == "speech_commands" else 20
            assert stds[key] == {k / 10 for k in range(top + 1)}
    assert {c.seed for c in configs} == set(range(5))


def test_mnist_table1_is_the_mnist_rows_of_table1():
    mnist_rows = [c for c in runs("table1_global_noise") if c.dataset == "mnist"]
    own = runs("mnist_table1")
    assert all(c.data_dir == "data" for c in own)
    # The same runs up to where the data lives.
    strip = lambda c: repr({**c.to_dict(), "data_dir": None})  # noqa: E731
    assert sorted(map(strip, own)) == sorted(map(strip, mnist_rows))


def test_mnist_reproduction_is_the_paper_setting_with_fewer_epochs():
    from walking_noise.study import load_study, parse_filters
    from walking_noise.identity import config_hash

    study = load_study(CONFIGS / "mnist_reproduction.yaml")
    table1 = load_study(CONFIGS / "mnist_table1.yaml", parse_filters(["model=mlp"]), {"training.epochs": 10})
    assert {config_hash(c) for c in table1.configs} <= {config_hash(c) for c in study.configs}
    searches = [(RunConfig.from_dict(base), settings) for base, settings in study.searches]
    lenet = [(cfg, s) for cfg, s in searches if cfg.model == "lenet5"]
    assert {(cfg.noise.kind, cfg.batchnorm) for cfg, _ in lenet} == {(k, b) for k in ("additive", "multiplicative")
                                                                     for b in (False, True)}
    assert all(s["seeds"] == (0, 1, 2, 3, 4) and cfg.noise.placement == "global" for cfg, s in lenet)
    walking = [(cfg, s) for cfg, s in searches if cfg.model == "mlp"]
    assert len(walking) == 11 * 2 * 2  # points x kinds x (unclamped, clamped), all with BatchNorm
    assert {cfg.noise.injection_layer for cfg, _ in walking} == set(range(point_count("mlp", "mnist", True)))
    assert all(cfg.batchnorm and cfg.noise.phase == "train_and_inference" for cfg, _ in walking)
    inference = [c for c in runs("mnist_reproduction") if c.noise.phase == "inference"]
    assert same_values({c.noise.noise_std for c in inference if c.noise.kind == "additive"}, log_grid(-2, 8))
    assert same_values({c.noise.noise_std for c in inference if c.noise.kind == "multiplicative"}, log_grid(-2, 16))
    for cfg in runs("mnist_reproduction"):  # the paper's data, preprocessing, optimizer; fewer epochs
        assert cfg.dataset == "mnist" and not cfg.normalize and cfg.training.optimizer == "adam"
        assert cfg.training.epochs <= EPOCHS[(cfg.dataset, cfg.model)]


def test_walking_additive_series():
    configs = runs("walking_additive")
    series: dict[tuple, set] = defaultdict(set)
    for cfg in configs:
        assert cfg.noise.kind == "additive" and cfg.noise.placement == "walking"
        point = (cfg.dataset, cfg.model, cfg.batchnorm, cfg.noise.injection_layer, cfg.noise.noise_std, cfg.seed)
        series[point].add((cfg.noise.phase, cfg.weight_clamping))
    expected = {("inference", False), ("train_and_inference", False), ("train_and_inference", True)}
    assert all(s == expected for s in series.values())
    assert {(d, m) for d, m, *_ in series} == PAIRS
    assert same_values({p[4] for p in series}, log_grid(-2, 8))
    assert {p[5] for p in series} == {0, 1, 2}


def test_walking_multiplicative_grid():
    configs = runs("walking_multiplicative")
    stds: dict[str, set[float]] = defaultdict(set)
    for cfg in configs:
        assert cfg.noise.kind == "multiplicative" and cfg.noise.placement == "walking"
        assert cfg.noise.phase == "train_and_inference" and not cfg.weight_clamping
        stds[cfg.dataset].add(cfg.noise.noise_std)
    assert same_values(stds["mnist"], log_grid(0, 16))
    assert same_values(stds["cifar10"], log_grid(0, 10)) and same_values(stds["speech_commands"], log_grid(0, 10))
    assert {(c.dataset, c.model) for c in configs} == PAIRS
    assert {c.batchnorm for c in configs} == {False, True}
    assert {c.seed for c in configs} == {0, 1, 2}


def test_smoke_is_small_and_embedded():
    configs = runs("smoke")
    assert 6 <= len(configs) <= 12
    assert {c.dataset for c in configs} == {"mnist_5k"} and max(c.training.epochs for c in configs) <= 3
    assert sum(c.noise.placement == "walking" for c in configs) >= 1
    assert {c.seed for c in configs} == {0, 1}


@pytest.fixture(scope="module")
def experiment():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import walking_noise_experiment
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    return walking_noise_experiment


@pytest.mark.parametrize("study", STUDIES)
def test_configs_resolve_through_sacred(study, experiment, quiet):
    """Every smoke config and a random sample of 200 of each big study go through Sacred's config resolution
    and the experiment's validation (the ``validate`` command trains nothing)."""
    configs = expand(study)[2]
    sample = configs if len(configs) <= 200 else random.Random(0).sample(configs, 200)
    for config in sample:
        run = experiment.ex.run(command_name="validate", config_updates=config)
        assert run.status == "COMPLETED"
        resolved = run.result["config"]
        assert resolved == run_config(config).to_dict()


def test_the_gap_page_shows_what_the_gap_study_expands_to():
    # results/mnist/gap.md embeds the table of what seml_configs/mnist_gap.yaml runs; a changed YAML must change it
    from walking_noise.report.gap import study_table
    from walking_noise.study import load_study

    table = study_table(load_study(CONFIGS / "mnist_gap.yaml"))
    assert table.count("\n") >= 20  # 20 searches and 4 authors' grids, one row per series
    assert table in (ROOT / "results" / "mnist" / "gap.md").read_text()
