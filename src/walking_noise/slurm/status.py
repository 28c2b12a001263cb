"""Done / failed / missing configs per study of a shared store, and the Slurm state of its arrays."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from walking_noise.claims import claim_states
from walking_noise.slurm.options import SlurmError
from walking_noise.slurm.submission import (
    array_states,
    in_flight_hashes,
    read_submissions,
)
from walking_noise.store import COMPLETED, FAILED, LocalStore
from walking_noise.study import Study

logger = logging.getLogger(__name__)


@dataclass
class StudyStatus:
    """Done / failed / missing configs of one study in a store, and its arrays Slurm still lists."""

    study: str
    total: int | None  # None: the study is known from the store only (run locally, never submitted)
    done: int
    failed: int
    missing: int
    in_flight: int = 0
    submissions: int = 0
    study_path: str | None = None
    arrays: dict[str, Counter] = field(default_factory=dict)
    claimed: int = 0  # missing runs a live runner holds (training now)
    stale: int = 0  # missing runs held by a runner that stopped (the next runner takes them over)

    def __str__(self) -> str:
        if self.total is None:
            line = f"{self.study}: {self.done} done, {self.failed} failed (never submitted; total unknown)"
        else:
            line = f"{self.study}: {self.total} configs: {self.done} done, {self.failed} failed, {self.missing} missing"
            if self.in_flight:
                line += f" ({self.in_flight} of them queued or running)"
            if self.claimed or self.stale:
                line += f"; claimed: {self.claimed} by live runners, {self.stale} stale"
        for job, states in self.arrays.items():
            line += f"\n  array job {job}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        return line


def store_status(store: LocalStore, studies: Sequence[Study] = (), *, query_slurm: bool = True) -> list[StudyStatus]:
    """Count done / failed / missing configs per study, and the missing ones that runners hold (live or stale
    claims, :mod:`walking_noise.claims`).

    The configs a study should have come from the given study files, else from every submission of it (the union
    of their ``study_hashes``); studies that are only in the store (run with ``walking-noise run``) are listed with
    their done/failed counts. With ``query_slurm``, arrays still listed by ``squeue`` are shown and their configs
    counted as queued or running; if Slurm cannot be asked, that is logged and the counts still shown.
    """
    latest = store.latest()
    claims = claim_states(store.path)
    metas = read_submissions(store)
    expected: dict[str, set[str]] = {}
    paths: dict[str, str] = {}
    given = {s.name for s in studies}
    for study in studies:
        expected[study.name] = {run.hash for run in study.runs}
        paths[study.name] = str(study.path)
    for meta in metas:
        if meta["study"] not in given:
            expected.setdefault(meta["study"], set()).update(meta.get("study_hashes", []))
            paths[meta["study"]] = meta.get("study_path", "")
    states: dict[str, dict[int, str]] = {}
    if query_slurm and any(m.get("job_id") for m in metas):
        try:
            states = array_states(m["job_id"] for m in metas if m.get("job_id"))
        except SlurmError as err:
            logger.warning("Slurm state unknown: %s", err)
    held = in_flight_hashes(store, metas, states)
    by_study: dict[str, list[tuple[str, str]]] = {}
    for key, doc in latest.items():
        by_study.setdefault(str(doc.get("study", "unknown")), []).append((key, str(doc.get("status"))))
    result = []
    for name in sorted(set(expected) | set(by_study)):
        if name in expected:
            hashes = expected[name]
            done = {h for h in hashes if latest.get(h, {}).get("status") == COMPLETED}
            failed = {h for h in hashes if latest.get(h, {}).get("status") == FAILED}
            missing = hashes - done - failed
            row = StudyStatus(name, len(hashes), len(done), len(failed), len(missing), len(missing & held),
                              sum(m["study"] == name for m in metas), paths.get(name),
                              claimed=sum(h in claims and not claims[h][1] for h in missing),
                              stale=sum(h in claims and claims[h][1] for h in missing))
        else:
            counts = Counter(status for _, status in by_study[name])
            row = StudyStatus(name, None, counts[COMPLETED], counts[FAILED], 0)
        for meta in metas:
            job = str(meta.get("job_id"))
            if meta["study"] == name and states.get(job):
                row.arrays[job] = Counter(states[job].values())
        result.append(row)
    return result
