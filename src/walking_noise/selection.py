"""A study against a store: which of its runs are done, which are still to run, and which stored runs are its own.

Both the runner (what to train next) and the analysis (which runs a report uses) ask these questions, so they live
here, below both: this module reads run documents and replays adaptive searches, and never trains. An adaptive
search (:mod:`walking_noise.adaptive`) asks for runs round by round; :func:`run_search` drives it with any
``execute_round`` (the runner's trains what is missing, the replay's only looks runs up), so replaying a search
against stored runs finds exactly the runs it chooses under the current design.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Iterable
from typing import Any

from walking_noise.adaptive import AdaptiveGrid, AdaptiveResult, find_transition
from walking_noise.config import Run, flatten
from walking_noise.identity import level_hash, stable_hash
from walking_noise.store import COMPLETED, FAILED
from walking_noise.study import Study


class StoredRuns:
    """A store's latest documents, looked up by run: by the run's hash, else by its :func:`level_hash`, so a run whose
    grid level another numpy build expanded a last bit differently finds its stored twin (and keeps that twin's hash,
    hence its noise). The level index is built at the first miss only."""

    def __init__(self, latest: dict[str, dict[str, Any]]):
        self.latest = latest
        self.size = len(latest)
        self._by_level: dict[str, str] | None = None
        self._levels: tuple[list[float], list[str]] | None = None  # for stored_level, built at its first call

    def _level_index(self) -> dict[str, str]:
        if self._by_level is None:
            index: dict[str, str] = {}
            for key, doc in self.latest.items():
                level = level_hash(doc.get("config", {}))
                held = index.get(level)
                if held is None or (doc.get("status") == COMPLETED and self.latest[held].get("status") != COMPLETED):
                    index[level] = key
            self._by_level = index
        return self._by_level

    def hash_of(self, run: Run) -> str:
        """The hash under which ``run`` is stored: its own, or its stored twin's; its own if neither is stored."""
        if run.hash in self.latest:
            return run.hash
        return self._level_index().get(level_hash(run.values), run.hash)

    def doc(self, run: Run) -> dict[str, Any]:
        """The stored document of ``run`` (``{}`` if none)."""
        return self.latest.get(self.hash_of(run), {})

    def stored_level(self, run: Run) -> float:
        """The stored noise level of ``run``'s search (same config up to level and seed) that equals ``run``'s
        within :data:`SNAP_RELATIVE`, else ``run``'s own.

        A search places its later levels where its fit puts mu; a fit that differs in the last digits (another
        scipy, BLAS or fit code) would otherwise ask for a level next to a stored one, train it again and cut the
        replay of the runs the store already holds."""
        if self._levels is None:  # every stored level, sorted, with its document's key
            pairs = sorted((float(level), key) for key, doc in self.latest.items()
                           if isinstance(level := ((doc.get("config") or {}).get("noise") or {}).get("noise_std"),
                                         (int, float)))
            self._levels = ([level for level, _ in pairs], [key for _, key in pairs])
        noise_std = float(run.values["noise"]["noise_std"])
        levels, keys = self._levels
        reach = 2 * SNAP_RELATIVE * abs(noise_std)  # a superset of the levels within SNAP_RELATIVE
        window = range(bisect.bisect_left(levels, noise_std - reach), bisect.bisect_right(levels, noise_std + reach))
        near, own = [], None
        for i in window:
            if abs(levels[i] - noise_std) > SNAP_RELATIVE * max(abs(levels[i]), abs(noise_std)):
                continue
            own = own or _sibling_key(run.values)  # the search's identity: hashed only when a level is this near
            if _sibling_key(self.latest[keys[i]]["config"]) == own:
                near.append(levels[i])
        return min(near, key=lambda level: abs(level - noise_std)) if near else noise_std


#: Relative distance within which a search's next level is taken to be a stored level of the same search: far above
#: the last-digit differences between two fits of the same runs (1e-9 to 1e-7 measured between finite-difference
#: and analytic Jacobians), far below the spacing of levels a search places (an eighth of the fitted width).
SNAP_RELATIVE = 1e-5


def _sibling_key(config: dict[str, Any]) -> str:
    """The identity of a config's search: the config without its noise level and seed."""
    values = {key: value for key, value in config.items() if key != "seed"}
    values["noise"] = {key: value for key, value in (config.get("noise") or {}).items() if key != "noise_std"}
    return level_hash(values)


_STORED: list[StoredRuns] = []


def stored_runs(latest: dict[str, dict[str, Any]]) -> StoredRuns:
    """The :class:`StoredRuns` of ``latest``, kept while the same (unchanged) dict is asked again: a search replay
    looks runs up round by round in one dict, and should index its levels once."""
    if _STORED and _STORED[0].latest is latest and len(latest) == _STORED[0].size:
        return _STORED[0]
    view = StoredRuns(latest)
    _STORED[:] = [view]
    return view


#: ``execute_round(runs)``: make sure every run of a round is stored; return the store's latest documents by hash.
ExecuteRound = Callable[[list[Run]], dict[str, dict[str, Any]]]
Search = tuple[dict[str, Any], dict[str, Any]]


def search_key(base: dict[str, Any], settings: dict[str, Any]) -> str:
    """One search's identity: the same base config and settings twice in a study are one search."""
    return stable_hash({"base": base, "adaptive": settings})


def distinct_searches(searches: Iterable[Search]) -> list[Search]:
    """The searches of a study, each once, in order."""
    distinct: dict[str, Search] = {}
    for base, settings in searches:
        distinct.setdefault(search_key(base, settings), (base, settings))
    return list(distinct.values())


def run_search(base: dict[str, Any], settings: dict[str, Any], execute_round: ExecuteRound) -> AdaptiveResult:
    """Drive one adaptive noise-grid search: each round's runs go to ``execute_round``, and their stored final
    accuracies are what the search measures (NaN for a run without a COMPLETED result)."""

    def run_for(noise_std: float, seed: int) -> Run:
        config = copy.deepcopy(base)
        config["noise"]["noise_std"] = float(noise_std)
        config["seed"] = int(seed)
        return Run.from_dict(config)

    known: list[StoredRuns] = []  # the store as the last round left it

    def measure(levels: Any, seeds: Any) -> list[tuple[float, int, float]]:
        if known:
            levels = [known[0].stored_level(run_for(s, seeds[0])) for s in levels]
        wanted = {(float(s), int(seed)): run_for(s, seed) for s in levels for seed in seeds}
        done = stored_runs(execute_round(list(wanted.values())))
        known[:] = [done]
        rows = []
        for (s, seed), run in wanted.items():
            result = done.doc(run).get("result") or {}
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
    out = []
    stored = stored_runs(latest)
    for number, (base, settings) in enumerate(distinct_searches(study.searches), 1):
        chosen: set[str] = set()

        def lookup(runs: list[Run], chosen: set[str] = chosen) -> dict[str, dict[str, Any]]:
            chosen.update(stored.hash_of(run) for run in runs)
            missing = sum(stored.doc(run).get("status") != COMPLETED for run in runs)
            if missing:
                raise _SearchIncomplete(f"{missing} of its {len(runs)} runs of a round are not in the store")
            return latest

        note = None
        try:
            run_search(base, settings, lookup)
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
    stored = stored_runs(latest)
    hashes = {stored.hash_of(run) for run in study.runs}
    notes = []
    for _base, _settings, chosen, note in search_runs(study, latest):
        hashes |= chosen
        if note:
            notes.append(note)
    return hashes, notes


def missing_runs(runs: Iterable[Run], latest: dict[str, dict[str, Any]]) -> list[Run]:
    """The runs (each once) that have no COMPLETED document in ``latest``."""
    out: dict[str, Run] = {}
    stored = stored_runs(latest)
    for run in runs:
        if stored.doc(run).get("status") != COMPLETED:
            out.setdefault(run.hash, run)
    return list(out.values())


def pending_runs(study: Study, latest: dict[str, dict[str, Any]],
                 retry_failed: bool = False) -> tuple[list[Run], int, int]:
    """The grid runs of ``study`` still to run: (pending, already completed, failed and skipped); a grid that names
    the same run twice runs it once."""
    pending, done, skipped = [], 0, 0
    seen: set[str] = set()
    stored = stored_runs(latest)
    for run in study.runs:
        if run.hash in seen:
            continue
        seen.add(run.hash)
        status = stored.doc(run).get("status")
        if status == COMPLETED:
            done += 1
        elif status == FAILED and not retry_failed:
            skipped += 1
        else:
            pending.append(run)
    return pending, done, skipped
