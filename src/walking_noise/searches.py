"""Adaptive searches of a study: one search, many side by side in lockstep rounds, and replaying them.

A search (:mod:`walking_noise.adaptive`) asks for runs round by round; its runs are stored like grid runs, and runs
already in the store are reused. Many searches advance in lockstep: each round, the runs every search asks for are
planned together (so they batch across searches) and share the worker pool with the study's grid runs. Replaying a
search against stored runs, without training, finds exactly the runs it chooses under the current design (the
report of one study uses those).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from walking_noise.config import flatten
from walking_noise.store import COMPLETED, LocalStore, config_hash
from walking_noise.study import Study, run_config_dict
from walking_noise.units import execute_unit, plan_units

logger = logging.getLogger(__name__)

Execute = Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]]


def run_search(base: dict[str, Any], settings: dict[str, Any], study: str, store: Any,
               execute_round: Execute | None = None) -> Any:
    """Run one adaptive noise-grid search; every run it trains is stored like a grid run, and runs already in
    ``store`` (an earlier, interrupted search) are reused rather than trained again.

    ``execute_round(configs)`` makes sure every config of a round is in the store and returns the store's latest
    documents by config hash; the default trains the missing ones here, :func:`run_searches` pools the rounds of
    many searches.
    """
    import copy

    from walking_noise.adaptive import AdaptiveGrid, find_transition

    def config_for(noise_std: float, seed: int) -> dict[str, Any]:
        config = copy.deepcopy(base)
        config["noise"]["noise_std"] = float(noise_std)
        config["seed"] = int(seed)
        return run_config_dict(config)

    def run_here(configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for unit in plan_units(missing_configs(configs, store.latest())):
            execute_unit(unit, study, store)
        return store.latest()

    execute_round = execute_round or run_here

    def measure(levels: Any, seeds: Any) -> list[tuple[float, int, float]]:
        wanted = {(float(s), int(seed)): config_for(s, seed) for s in levels for seed in seeds}
        done = execute_round(list(wanted.values()))
        rows = []
        for (s, seed), config in wanted.items():
            result = done.get(config_hash(config), {}).get("result") or {}
            rows.append((s, seed, float(result.get("final_accuracy", float("nan")))))
        return rows

    return find_transition(measure, AdaptiveGrid(**settings))


class _SearchIncomplete(Exception):
    """A replayed search asked for a run the store does not hold."""


def search_runs(study: Study, latest: dict[str, dict[str, Any]]
                ) -> list[tuple[dict[str, Any], dict[str, Any], set[str], str | None]]:
    """Per distinct adaptive search of ``study``: (base config, settings, the config hashes it chooses under the
    current design, a note if its replay was cut), found by replaying it against ``latest`` without training.

    A search whose replay asks for a run that is not stored (unfinished, or chosen differently by another version)
    is cut there; its hashes are those it asked for up to then.
    """
    distinct = {config_hash({"base": b, "adaptive": s}): (b, s) for b, s in study.searches}
    out = []
    for number, (base, settings) in enumerate(distinct.values(), 1):
        chosen: set[str] = set()

        def lookup(configs: list[dict[str, Any]], chosen: set[str] = chosen) -> dict[str, dict[str, Any]]:
            keys = [config_hash(c) for c in configs]
            chosen.update(keys)
            missing = sum(latest.get(k, {}).get("status") != COMPLETED for k in keys)
            if missing:
                raise _SearchIncomplete(f"{missing} of its {len(keys)} runs of a round are not in the store")
            return latest

        note = None
        try:
            run_search(base, settings, study.name, None, execute_round=lookup)
        except _SearchIncomplete as why:
            note = (f"adaptive search {number} ({flatten(base).get('noise.kind')}, "
                    f"{'with' if base.get('batchnorm') else 'without'} BatchNorm, "
                    f"{base['training']['epochs']} epochs) replayed only in part: {why}")
        out.append((base, settings, chosen, note))
    return out


def study_selection(study: Study, latest: dict[str, dict[str, Any]]) -> tuple[set[str], list[str]]:
    """(config hashes of exactly ``study``'s runs, notes): its grid configs, and the runs its adaptive searches
    choose under the current design (:func:`search_runs`).

    A store may hold runs that earlier designs, engines or studies left there; a report of one study should use
    only its own.
    """
    hashes = {config_hash(c) for c in study.configs}
    notes = []
    for _base, _settings, chosen, note in search_runs(study, latest):
        hashes |= chosen
        if note:
            notes.append(note)
    return hashes, notes


def missing_configs(configs: Iterable[dict[str, Any]], latest: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The configs (each once) that have no COMPLETED document in ``latest``."""
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        key = config_hash(config)
        if latest.get(key, {}).get("status") != COMPLETED:
            out.setdefault(key, config)
    return list(out.values())


class _Rounds:
    """Meeting point of the search threads: each posts its next round and waits; once every live search has
    posted, the main thread takes all their configs at once, so runs of different searches share batches."""

    def __init__(self, searches: int):
        self._cv = threading.Condition()
        self._live = searches
        self._posted: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def post(self, configs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        slot: dict[str, Any] = {}
        with self._cv:
            self._posted.append((configs, slot))
            self._cv.notify_all()
            self._cv.wait_for(lambda: "latest" in slot)
        if "error" in slot:
            raise slot["error"]
        return slot["latest"]

    def leave(self) -> None:
        with self._cv:
            self._live -= 1
            self._cv.notify_all()

    def take(self) -> list[tuple[list[dict[str, Any]], dict[str, Any]]] | None:
        """Block until every live search has posted (None: all searches have ended)."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._posted) >= self._live)
            if not self._posted:
                return None
            taken, self._posted = self._posted, []
            return taken

    def answer(self, taken: list[tuple[list[dict[str, Any]], dict[str, Any]]], latest: dict[str, Any] | None,
               error: BaseException | None = None) -> None:
        with self._cv:
            for _, slot in taken:
                if error is not None:
                    slot["error"] = error
                slot["latest"] = latest
            self._cv.notify_all()


def run_searches(searches: list[tuple[dict[str, Any], dict[str, Any]]], study: str, store: LocalStore, *,
                 run_units: Callable[[list[list[dict[str, Any]]]], None] | None = None,
                 workers: int = 1) -> list[Any]:
    """Run adaptive searches side by side, in lockstep: each round, the runs every search asks for are planned
    together (batched across searches) and handed to ``run_units`` (default: train here, one unit at a time).

    Returns one :class:`walking_noise.adaptive.AdaptiveResult` per distinct search (the same base config and
    settings twice is one search), or the exception that ended that search; one failing search ends no other.
    """
    distinct: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for base, settings in searches:
        distinct.setdefault(config_hash({"base": base, "adaptive": settings}), (base, settings))
    todo = list(distinct.values())
    run_units = run_units or (lambda units: [execute_unit(u, study, store) for u in units])
    rounds = _Rounds(len(todo))
    outcomes: list[Any] = [None] * len(todo)

    def search(i: int, base: dict[str, Any], settings: dict[str, Any]) -> None:
        try:
            outcomes[i] = run_search(base, settings, study, store, execute_round=rounds.post)
        except Exception as err:  # noqa: BLE001 - reported with the results, the other searches go on
            outcomes[i] = err
        finally:
            rounds.leave()

    threads = [threading.Thread(target=search, args=(i, b, s), daemon=True) for i, (b, s) in enumerate(todo)]
    for thread in threads:
        thread.start()
    number = 0
    while (taken := rounds.take()) is not None:
        number += 1
        wanted = [c for configs, _ in taken for c in configs]
        pending = missing_configs(wanted, store.latest())
        if pending:
            logger.info("adaptive round %d: %d search(es) waiting, %d run(s) to train", number, len(taken),
                        len(pending))
        try:
            run_units(plan_units(pending, workers=workers))
            rounds.answer(taken, store.latest())
        except BaseException as err:  # e.g. KeyboardInterrupt: release the threads, then stop
            rounds.answer(taken, None, err)
            raise
    for thread in threads:
        thread.join()
    return outcomes
