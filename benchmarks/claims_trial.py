"""Many runners on one store, killed at random: is every run of a study stored exactly once?

Three trials, each repeated ``--trials`` times on a fresh store with a small study (MLP on mnist_5k):

- ``runners``: 2 or 3 ``walking-noise run`` processes started together; the wall time against one runner alone;
- ``kill``: runners started together, one of them killed with SIGKILL at a random moment (and started again), until
  the study is done;
- ``arrays``: two array submissions of the same study that overlap completely (what a resubmission without the
  Slurm queue's help would be), their tasks run as processes side by side (``walking-noise array-task``), some
  killed with SIGKILL at random, then a ``walking-noise run`` finishes what is missing;
- ``slurm`` (when ``sbatch`` is there, e.g. after ``bash slurm/local_cluster.sh start``): a real array, a second
  ``submit`` while it runs, ``scancel`` of tasks at random moments, and ``submit`` again until the study is done.

For each trial it prints configs, COMPLETED documents, duplicates (configs with more than one COMPLETED document
on disk), lost (configs without one) and torn lines skipped, then a summary line per kind.

    python benchmarks/claims_trial.py [--trials 3] [--kinds runners,kill,arrays,slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from _studies import tiny_study  # noqa: E402

from walking_noise.slurm import plan_shares, write_submission_list  # noqa: E402
from walking_noise.store import COMPLETED, LocalStore  # noqa: E402
from walking_noise.study import load_study  # noqa: E402

CLI = [sys.executable, "-m", "walking_noise.cli"]
LEVELS = "[0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]"


def _study(folder: Path) -> Path:
    return tiny_study(folder, max_train=2000, epochs=3, levels=LEVELS, seeds=3)  # 24 runs


def _runner(study: Path, store: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "run", str(study), "--store", str(store), "--no-progress", "--members", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def audit(study: Path, store: Path) -> dict[str, int]:
    """Configs, COMPLETED documents, duplicates, lost, torn lines of one finished trial."""
    expected = {run.hash for run in load_study(study).runs}
    local = LocalStore(store)
    counts = Counter(d["config_hash"] for d in local.documents() if d["status"] == COMPLETED)
    return {"configs": len(expected), "documents": sum(counts.values()),
            "duplicates": sum(n > 1 for n in counts.values()), "lost": len(expected - set(counts)),
            "torn": local.skipped_lines}


def trial_runners(folder: Path, rng: random.Random, runners: int) -> dict[str, float]:
    study = _study(folder)
    started = time.perf_counter()
    subprocess.run([*CLI, "run", str(study), "--store", str(folder / "alone"), "--no-progress", "--members", "2"],
                   check=True, capture_output=True)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    procs = [_runner(study, folder / "store") for _ in range(runners)]
    for proc in procs:
        proc.wait()
    together = time.perf_counter() - started
    return {**audit(study, folder / "store"), "alone_s": alone, "together_s": together}


def trial_kill(folder: Path, rng: random.Random) -> dict[str, float]:
    study = _study(folder)
    store = folder / "store"
    procs = [_runner(study, store) for _ in range(2)]
    kills = 0
    deadline = time.time() + 1800
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(rng.uniform(1.0, 6.0))
        alive = [p for p in procs if p.poll() is None]
        if alive and kills < 3:
            victim = rng.choice(alive)
            _kill(victim)
            kills += 1
            procs[procs.index(victim)] = _runner(study, store)  # a user starts it again
    for proc in procs:
        proc.wait()
    return {**audit(study, store), "kills": kills}


def trial_arrays(folder: Path, rng: random.Random) -> dict[str, float]:
    study = _study(folder)
    store = folder / "store"
    runs = load_study(study).runs
    lists = []
    for n in (1, 2):  # the same study submitted twice, planned the same way
        path = store / "submissions" / f"tiny-{n}.jsonl"
        write_submission_list(path, "tiny", plan_shares(runs, 2, members=2))
        lists.append(path)
    tasks = [subprocess.Popen([*CLI, "array-task", str(path), "--store", str(store), "--task-index", str(i),
                               "--num-tasks", "2", "--threads", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
             for path in lists for i in range(2)]
    time.sleep(rng.uniform(2.0, 8.0))
    victims = rng.sample(tasks, 2)
    for victim in victims:
        _kill(victim)
    for task in tasks:
        task.wait()
    subprocess.run([*CLI, "run", str(study), "--store", str(store), "--no-progress"], check=True,
                   capture_output=True)  # finishes what the killed tasks left
    return {**audit(study, store), "kills": len(victims)}


def trial_slurm(folder: Path, rng: random.Random) -> dict[str, float]:
    from walking_noise.slurm import array_states, submit

    study_path = _study(folder)
    store = LocalStore(folder / "store")
    overrides = {"cpus-per-task": "1", "mem": "1G", "time": "0-00:20"}
    jobs = [submit(load_study(study_path), store, tasks=3, overrides=overrides)]
    jobs.append(submit(load_study(study_path), store, tasks=2, overrides=overrides))  # while the first runs
    cancelled = 0
    active = ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING")
    deadline = time.time() + 3600
    while time.time() < deadline:
        live = [j.job_id for j in jobs if j is not None]
        time.sleep(rng.uniform(2.0, 6.0))
        states = array_states(live) if live else {}
        running = [(job, i) for job, tasks in states.items() for i, s in tasks.items() if s == "RUNNING"]
        if running and cancelled < 3:
            job, index = rng.choice(running)
            subprocess.run(["scancel", f"{job}_{index}"], timeout=30)
            cancelled += 1
        elif not any(s in active for tasks in states.values() for s in tasks.values()):
            again = submit(load_study(study_path), store, overrides=overrides)  # what the cancels left
            if again is None:
                break
            jobs.append(again)
    return {**audit(study_path, folder / "store"), "kills": cancelled, "arrays": len([j for j in jobs if j])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--kinds", default="runners,kill,arrays,slurm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    kinds = args.kinds.split(",")
    if "slurm" in kinds and shutil.which("sbatch") is None:
        print("slurm: skipped (no sbatch; start one with `bash slurm/local_cluster.sh start`)")
        kinds.remove("slurm")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for kind in kinds:
        rows = []
        variants = [("runners", 2), ("runners", 3)] if kind == "runners" else [(kind, None)]
        for name, runners in variants:
            for number in range(args.trials):
                with tempfile.TemporaryDirectory() as tmp:
                    if name == "runners":
                        row = trial_runners(Path(tmp), rng, runners)
                    else:
                        row = {"kill": trial_kill, "arrays": trial_arrays, "slurm": trial_slurm}[name](Path(tmp), rng)
                label = f"{name}{'' if runners is None else f' x{runners}'}"
                print(f"{label} trial {number + 1}: {json.dumps({k: round(v, 1) for k, v in row.items()})}",
                      flush=True)
                rows.append(row)
            total = Counter()
            for row in rows:
                total.update({k: row[k] for k in ("configs", "duplicates", "lost", "torn")})
            line = (f"== {label}: {len(rows)} trials, {total['configs']} configs, {total['duplicates']} duplicated, "
                    f"{total['lost']} lost, {total['torn']} torn lines")
            if name == "runners":
                ratio = sorted(r["alone_s"] / r["together_s"] for r in rows)[len(rows) // 2]
                line += f"; {runners} runners vs one: {ratio:.2f}x faster (median)"
            print(line, flush=True)
            rows = []


if __name__ == "__main__":
    main()
