"""The local runner as the benchmarks time it: ``walking-noise run`` in its own process, from submission to the
last stored run (what a user waits for)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_local_runner(study: Path, store: Path, workers: int) -> float:
    """Seconds for ``walking-noise run STUDY --store STORE --workers N`` into a fresh store."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "walking_noise.cli", "run", str(study), "--store", str(store),
                    "--workers", str(workers), "--no-progress"], check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started
