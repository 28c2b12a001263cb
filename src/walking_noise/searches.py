"""Adaptive searches in the runner: one search trained here, many side by side in lockstep rounds.

A search (:mod:`walking_noise.adaptive`, driven by :func:`walking_noise.selection.run_search`) asks for runs round
by round; its runs are stored like grid runs, and runs already in the store are reused. Many searches advance in
lockstep: each round, the runs every search asks for are planned together (so they batch across searches) and share
the worker pool with the study's grid runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from walking_noise.adaptive import AdaptiveResult
from walking_noise.config import Run
from walking_noise.selection import Search, distinct_searches, missing_runs, run_search
from walking_noise.store import LocalStore
from walking_noise.units import execute_unit, plan_units

logger = logging.getLogger(__name__)


def train_search(base: dict[str, Any], settings: dict[str, Any], study: str, store: Any) -> AdaptiveResult:
    """Run one adaptive noise-grid search, training here what each round needs; every run it trains is stored like
    a grid run, and runs already in ``store`` (an earlier, interrupted search) are reused rather than trained again."""

    def run_here(runs: list[Run]) -> dict[str, dict[str, Any]]:
        for unit in plan_units(missing_runs(runs, store.latest())):
            execute_unit(unit, study, store)
        return store.latest()

    return run_search(base, settings, run_here)


class _Rounds:
    """Meeting point of the search threads: each posts its next round and waits; once every live search has
    posted, the main thread takes all their configs at once, so runs of different searches share batches."""

    def __init__(self, searches: int):
        self._cv = threading.Condition()
        self._live = searches
        self._posted: list[tuple[list[Run], dict[str, Any]]] = []

    def post(self, runs: list[Run]) -> dict[str, dict[str, Any]]:
        slot: dict[str, Any] = {}
        with self._cv:
            self._posted.append((runs, slot))
            self._cv.notify_all()
            self._cv.wait_for(lambda: "latest" in slot)
        if "error" in slot:
            raise slot["error"]
        return slot["latest"]

    def leave(self) -> None:
        with self._cv:
            self._live -= 1
            self._cv.notify_all()

    def take(self) -> list[tuple[list[Run], dict[str, Any]]] | None:
        """Block until every live search has posted (None: all searches have ended)."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._posted) >= self._live)
            if not self._posted:
                return None
            taken, self._posted = self._posted, []
            return taken

    def answer(self, taken: list[tuple[list[Run], dict[str, Any]]], latest: dict[str, Any] | None,
               error: BaseException | None = None) -> None:
        with self._cv:
            for _, slot in taken:
                if error is not None:
                    slot["error"] = error
                slot["latest"] = latest
            self._cv.notify_all()


def run_searches(searches: list[Search], study: str, store: LocalStore, *,
                 run_units: Callable[[list[list[Run]]], None] | None = None, workers: int = 1,
                 members: int | None = None) -> list[Any]:
    """Run adaptive searches side by side, in lockstep: each round, the runs every search asks for are planned
    together (batched across searches, in units of at most ``members`` runs as a grid's are: ``--members 1`` stores
    every run as it ends) and handed to ``run_units`` (default: train here, one unit at a time).

    Returns one :class:`walking_noise.adaptive.AdaptiveResult` per distinct search (the same base config and
    settings twice is one search), or the exception that ended that search; one failing search ends no other.
    """
    todo = distinct_searches(searches)
    run_units = run_units or (lambda units: [execute_unit(u, study, store) for u in units])
    rounds = _Rounds(len(todo))
    outcomes: list[Any] = [None] * len(todo)

    def search(i: int, base: dict[str, Any], settings: dict[str, Any]) -> None:
        try:
            outcomes[i] = run_search(base, settings, rounds.post)
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
        wanted = [run for runs, _ in taken for run in runs]
        pending = missing_runs(wanted, store.latest())
        if pending:
            logger.info("adaptive round %d: %d search(es) waiting, %d run(s) to train", number, len(taken),
                        len(pending))
        try:
            run_units(plan_units(pending, members, workers))
            rounds.answer(taken, store.latest())
        except BaseException as err:  # e.g. KeyboardInterrupt: release the threads, then stop
            rounds.answer(taken, None, err)
            raise
    for thread in threads:
        thread.join()
    return outcomes
