"""Studies: how a SEML YAML becomes validated run configs, bundles and adaptive searches.

The YAML is expanded with SEML's own parser (``read_config`` + ``generate_configs``), so a local campaign, a job
array and a ``seml <collection> add`` on a cluster are the same set of configs. Every config is validated before
any training starts; a bad one is one :class:`CampaignError` that names it.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walking_noise.config import Run, flatten, set_dotted


class CampaignError(ValueError):
    """A study cannot be run as given (bad YAML, bad config, unwritable store); nothing was trained."""


@dataclass
class Study:
    """An expanded study file: its SEML and Slurm blocks, one validated :class:`~walking_noise.config.Run` per
    experiment (a bundle gives several) and its adaptive searches (base config, settings)."""

    name: str
    path: Path
    seml: dict[str, Any]
    slurm: list[dict[str, Any]]
    runs: list[Run]
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def configs(self) -> list[dict[str, Any]]:
        """The runs' configs as plain nested dicts (what run documents store)."""
        return [run.values for run in self.runs]


def parse_filters(filters: Iterable[str]) -> dict[str, Any]:
    """``["noise.kind=additive", "seed=[0, 1]"]`` -> ``{"noise.kind": "additive", "seed": [0, 1]}`` (values parsed
    as YAML; a list matches any of its items)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CampaignError(f"a filter must look like key=value (e.g. noise.kind=additive), got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def matches(config: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether ``config`` has every filter's value (a list filter on a non-list value: any of its items)."""
    flat = flatten(config)

    def hit(value: Any, wanted: Any) -> bool:
        if isinstance(wanted, list) and not isinstance(value, list):
            return any(value == w for w in wanted)
        return value == wanted

    return all(key in flat and hit(flat[key], value) for key, value in filters.items())


def study_run(config: dict[str, Any]) -> Run:
    """The validated run of one expanded SEML config (defaults filled in), its injection point checked against the
    model (:func:`walking_noise.models.check_model`) so that a bad one is reported before any training."""
    from walking_noise.models import check_model

    run = Run.from_dict(config)
    check_model(run.config)
    return run


def load_study(path: str | os.PathLike, filters: dict[str, Any] | None = None,
               overrides: dict[str, Any] | None = None) -> Study:
    """Expand a study YAML with SEML's parser and validate every config; raise :class:`CampaignError` if bad.

    ``overrides`` (dotted keys, e.g. ``{"training.epochs": 10}``) replace values in every config, as SEML's own
    ``overwrite_params`` do; configs that become identical are merged.
    """
    import yaml
    from seml.experiment.config import generate_configs, read_config
    from seml.utils.errors import ConfigError, ExecutableError

    path = Path(path)
    if not path.is_file():
        raise CampaignError(f"study file {path} does not exist")
    try:
        seml_block, slurm, experiment = read_config(path)
        expanded = generate_configs(experiment, overwrite_params=dict(overrides) if overrides else None)
    except yaml.YAMLError as err:
        raise CampaignError(f"{path} is not valid YAML: {err}") from err
    except (ConfigError, ExecutableError) as err:
        raise CampaignError(f"{path}: {err}") from err
    runs: list[Run] = []
    problems = []
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number, raw in enumerate(expanded):
        if filters and not matches(raw, filters):
            continue
        try:
            if raw.get("adaptive"):
                searches.append(search_spec(raw))
                continue
            bundle = raw.get("bundle")
            runs += expand_bundle(raw, bundle) if bundle else [study_run(raw)]
        except ValueError as err:
            problems.append(f"  config {number} {flatten(raw)}: {err}")
    if problems:
        shown = "\n".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CampaignError(f"{path}: {len(problems)} of {len(expanded)} configs are invalid:\n{shown}")
    return Study(path.stem, path, dict(seml_block), [dict(s) for s in slurm], runs, searches)


def expand_bundle(base: dict[str, Any], bundle: dict[str, Any]) -> list[Run]:
    """The runs of a bundle, each validated. Two forms:

    - a product: ``bundle`` is a nested dict like the run config whose leaves are lists, and every combination of
      the listed values is a member (e.g. ``{"noise": {"noise_std": [0.1, 1.0]}, "seed": [0, 1, 2]}``; dotted keys
      work too);
    - a list: ``bundle = {"members": [{...}, {...}]}``, each member a (nested or dotted) dict of the values in which
      it differs from ``base`` (what :func:`bundled_study` writes).
    """
    if isinstance(bundle, dict) and "members" in bundle:
        members = bundle["members"]
        if set(bundle) != {"members"} or not isinstance(members, list) or not members or not all(
                isinstance(m, dict) for m in members):
            raise CampaignError("bundle.members must be the only bundle key, a non-empty list of dicts of the values "
                                "each member changes, e.g. [{seed: 0}, {seed: 1, noise.noise_std: 0.5}]")
        return [study_run(_with(base, flatten(member))) for member in members]
    flat = flatten(dict(bundle or {}))
    if not flat:
        raise CampaignError("a bundle needs at least one key with a list of values, e.g. {'seed': [0, 1, 2]}")
    keys = list(flat)
    for key in keys:
        if not isinstance(flat[key], (list, tuple)) or not flat[key]:
            raise CampaignError(f"bundle key {key!r} needs a non-empty list of values, got {flat[key]!r}")
    return [study_run(_with(base, dict(zip(keys, values))))
            for values in itertools.product(*(flat[k] for k in keys))]


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``changes`` set."""
    config = copy.deepcopy(base)
    for key, value in changes.items():
        set_dotted(config, key, value)
    return config


def search_spec(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base run config, adaptive settings) of a config with an ``adaptive`` block, both validated.

    The block holds :class:`walking_noise.adaptive.AdaptiveGrid` fields (``low``, ``high``, ``axis``,
    ``target_rel_err``, ``max_runs``, ``seeds``, ...); the search sets ``noise.noise_std`` and ``seed`` itself.
    """
    from walking_noise.adaptive import AdaptiveGrid

    settings = dict(raw["adaptive"])
    if "seeds" in settings:
        settings["seeds"] = tuple(settings["seeds"])
    try:
        AdaptiveGrid(**settings)
    except TypeError as err:
        raise CampaignError(f"bad adaptive block {settings}: {err}; valid keys: "
                            f"{sorted(AdaptiveGrid.__dataclass_fields__)}") from err
    base = study_run(raw).values
    if base["noise"]["kind"] == "none":
        raise CampaignError("an adaptive search needs noise.kind additive, multiplicative or mixed")
    return base, settings
