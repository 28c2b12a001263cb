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

from walking_noise.config import NON_RUN_KEYS, RunConfig, flatten, set_dotted, unflatten


class CampaignError(ValueError):
    """A study cannot be run as given (bad YAML, bad config, unwritable store); nothing was trained."""


@dataclass
class Study:
    """An expanded study file: its SEML and Slurm blocks and one validated config per experiment."""

    name: str
    path: Path
    seml: dict[str, Any]
    slurm: list[dict[str, Any]]
    configs: list[dict[str, Any]]
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.configs)


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


def run_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """The full, validated run config (defaults filled in) for one expanded SEML config."""
    return RunConfig.from_dict({k: v for k, v in config.items() if k not in NON_RUN_KEYS}).to_dict()


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
    configs, problems = [], []
    searches: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number, raw in enumerate(expanded):
        if filters and not matches(raw, filters):
            continue
        try:
            if raw.get("adaptive"):
                searches.append(search_spec(raw))
                continue
            bundle = raw.get("bundle")
            configs += expand_bundle(raw, bundle) if bundle else [run_config_dict(raw)]
        except ValueError as err:
            problems.append(f"  config {number} {flatten(raw)}: {err}")
    if problems:
        shown = "\n".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CampaignError(f"{path}: {len(problems)} of {len(expanded)} configs are invalid:\n{shown}")
    return Study(path.stem, path, dict(seml_block), [dict(s) for s in slurm], configs, searches)


def expand_bundle(base: dict[str, Any], bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The configs of a bundle, each validated. Two forms:

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
        return [run_config_dict(_with(base, flatten(member))) for member in members]
    flat = flatten(dict(bundle or {}))
    if not flat:
        raise CampaignError("a bundle needs at least one key with a list of values, e.g. {'seed': [0, 1, 2]}")
    keys = list(flat)
    for key in keys:
        if not isinstance(flat[key], (list, tuple)) or not flat[key]:
            raise CampaignError(f"bundle key {key!r} needs a non-empty list of values, got {flat[key]!r}")
    return [run_config_dict(_with(base, dict(zip(keys, values))))
            for values in itertools.product(*(flat[k] for k in keys))]


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``changes`` set."""
    config = copy.deepcopy(base)
    for key, value in changes.items():
        set_dotted(config, key, value)
    return config


def bundled_study(study: Study, members: int | None = None) -> dict[str, Any]:
    """``study`` as a SEML YAML whose experiments are bundles (a dict to dump as YAML): one experiment per work unit
    of the local runner (:func:`walking_noise.units.plan_units`: compatible configs packed together, inference-only
    configs of a seed sharing one clean training), each listing its members as ``bundle.members``; adaptive searches
    stay one experiment each. ``seml COLL add`` of the result runs the same configs as the study, batched as the
    local runner batches them."""
    from walking_noise.units import plan_units

    blocks: dict[str, Any] = {}
    for number, unit in enumerate(plan_units(study.configs, members)):
        base = flatten(unit[0])
        diffs = [{k: v for k, v in flatten(c).items() if base.get(k) != v} for c in unit]
        fixed = {k: v for k, v in base.items() if v is not None}
        if len(unit) > 1:
            fixed["bundle.members"] = [unflatten(d) for d in diffs]
        blocks[f"unit_{number:05d}"] = {"fixed": fixed}
    for number, (base, settings) in enumerate(study.searches):
        fixed = {k: v for k, v in flatten(base).items() if v is not None}
        fixed.update({f"adaptive.{k}": list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
        blocks[f"search_{number:04d}"] = {"fixed": fixed}
    import yaml

    # SEML wants a top-level fixed/grid block: the values every experiment shares go there
    shared = dict(next(iter(blocks.values()))["fixed"]) if blocks else {}
    for block in blocks.values():
        shared = {k: v for k, v in shared.items() if k in block["fixed"] and block["fixed"][k] == v}
    shared.pop("bundle.members", None)
    if not shared:
        raise CampaignError(f"{study.path}: its experiments share no config value, which SEML needs at the top")
    for block in blocks.values():
        block["fixed"] = {k: v for k, v in block["fixed"].items() if k not in shared}
    raw = yaml.safe_load(study.path.read_text()) or {}  # the blocks as written (paths relative to the file)
    seml = {**raw.get("seml", {}), "name": f"{raw.get('seml', {}).get('name', study.name)}_bundled"}
    slurm = [{**entry, "experiments_per_job": 1} for entry in raw.get("slurm") or [{}]]
    return {"seml": seml, "slurm": slurm, "fixed": shared, **blocks}


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
    base = run_config_dict(raw)
    if base["noise"]["kind"] == "none":
        raise CampaignError("an adaptive search needs noise.kind additive, multiplicative or mixed")
    return base, settings
