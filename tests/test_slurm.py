"""Slurm job arrays into a shared local store: shares, sbatch options, submission files, status, real Slurm.

The unit tests need no Slurm (fake ``sbatch``/``squeue`` scripts on PATH where a command is needed). The tests
marked ``slurm`` submit to a real cluster - the single-node one of ``slurm/local_cluster.sh`` - and are skipped,
with the reason, where Slurm is not installed or its node does not become idle within a bounded wait.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from _studies import tiny_study

from walking_noise import slurm
from walking_noise.study import load_study
from walking_noise.slurm import (
    SlurmError,
    plan_shares,
    parse_overrides,
    read_submission_list,
    resolve_slurm_block,
    run_array_task,
    sbatch_arguments,
    split_shares,
    store_status,
    submit,
    task_share,
    write_submission_list,
)
from walking_noise.identity import config_hash
from walking_noise.store import COMPLETED, FAILED, LocalStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "seml_configs" / "smoke.yaml"
WAIT_S = 180  # every wait on the real cluster is bounded by this

def _study(tmp_path: Path, name: str = "tiny.yaml", **fmt) -> Path:
    return tiny_study(tmp_path, name=name, **{"max_train": 300, **fmt})


def _doc(config: dict, status: str, study: str = "tiny") -> dict:
    doc = {"config": config, "config_hash": config_hash(config), "status": status, "study": study}
    if status == COMPLETED:
        doc["result"] = {"final_accuracy": 0.5}
    return doc


def _fake_tool(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)
    return path


# ---- shares -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_items", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 8, 20])
def test_shares_cover_every_config_exactly_once_and_are_balanced(n_items, n_tasks):
    items = [f"config-{i}" for i in range(n_items)]
    shares = split_shares(items, n_tasks)
    assert len(shares) == n_tasks
    assert Counter(x for share in shares for x in share) == Counter(items)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_a_task_index_outside_the_array_is_a_clear_error():
    with pytest.raises(SlurmError, match="outside 0..2"):
        task_share([1, 2, 3], 3, 3)
    with pytest.raises(SlurmError, match="at least 1"):
        task_share([1, 2, 3], 0, 0)


# ---- sbatch options -----------------------------------------------------------------------------------------


def test_seml_sbatch_options_map_to_sbatch_arguments():
    notes: list[str] = []
    args = sbatch_arguments({"mem": "4G", "time": "0-00:15", "cpus-per-task": 2, "gres": "gpu:1",
                             "partition": ["gpu_a", "gpu_b"], "c": 3, "--qos": "short", "exclusive": True,
                             "requeue": False, "output": "x.out", "array": "0-3"}, notes)
    assert args == ["--mem=4G", "--time=0-00:15", "--cpus-per-task=2", "--gres=gpu:1", "--partition=gpu_a,gpu_b",
                    "-c", "3", "--qos=short", "--exclusive"]
    assert any("output" in n and "ignored" in n for n in notes)
    assert any("array" in n and "--tasks" in n for n in notes)
    assert any("requeue" in n for n in notes)


def test_slurm_block_is_resolved_like_seml_start_and_overrides_win():
    block = [{"experiments_per_job": 4, "max_simultaneous_jobs": 3,
              "sbatch_options": {"time": "0-00:15", "mem": "4G", "cpus-per-task": 2}}]
    plan = resolve_slurm_block(block, parse_overrides(["--mem-per-cpu=1G", "partition=short", "exclusive"]))
    assert plan.experiments_per_job == 4 and plan.max_simultaneous_jobs == 3
    # SEML's default nodes: 1 is kept, mem is dropped because mem-per-cpu overrides it (as SEML merges them)
    assert plan.options == {"time": "0-00:15", "nodes": 1, "cpus-per-task": 2, "mem-per-cpu": "1G",
                            "partition": "short", "exclusive": True}
    defaults = resolve_slurm_block([])
    assert defaults.experiments_per_job == 1 and defaults.options["mem"] == "8G"  # SEML's SLURM_DEFAULT
    two = resolve_slurm_block([{"sbatch_options": {"partition": "a"}}, {"sbatch_options": {"partition": "b"}}])
    assert two.options["partition"] == "a" and "first one only" in two.notes[0]
    with pytest.raises(SlurmError, match="KEY=VALUE"):
        parse_overrides(["=4G"])
    with pytest.raises(SlurmError, match="template"):
        resolve_slurm_block([{"sbatch_options_template": "NO_SUCH_TEMPLATE"}])


# ---- submission files ---------------------------------------------------------------------------------------


def test_submission_list_round_trips_and_is_written_atomically(tmp_path):
    configs = load_study(_study(tmp_path)).configs
    path = tmp_path / "store" / "submissions" / "tiny-x.jsonl"
    assert write_submission_list(path, "tiny", configs) == 6
    records = read_submission_list(path)
    assert [r["config"] for r in records] == configs
    assert [r["config_hash"] for r in records] == [config_hash(c) for c in configs]
    assert {r["study"] for r in records} == {"tiny"}
    assert [p.name for p in path.parent.iterdir()] == ["tiny-x.jsonl"]  # no temporary file left behind
    with pytest.raises(SlurmError, match="does not exist"):
        read_submission_list(tmp_path / "nope.jsonl")
    path.write_text('{"config": {}}\n{"broken\n')
    with pytest.raises(SlurmError, match="line 2"):
        read_submission_list(path)


def test_dry_run_plans_the_array_and_writes_nothing(tmp_path):
    study = load_study(_study(tmp_path))
    store = LocalStore(tmp_path / "store")
    plan = submit(study, store, dry_run=True, overrides={"partition": "short"})
    assert plan is not None and plan.num_tasks == 2 and plan.configs == 6  # 6 configs / experiments_per_job 3
    assert "--array=0-1" in plan.command and "--partition=short" in plan.command
    assert "--cpus-per-task=1" in plan.command and "--mem=1G" in plan.command
    assert f"{sys.executable} -m walking_noise.slurm array-task" in plan.script
    assert not store.path.exists()


def test_without_sbatch_the_error_says_to_run_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SlurmError, match="sbatch.*not found.*walking-noise run"):
        submit(load_study(_study(tmp_path)), LocalStore(tmp_path / "store"))


def test_submit_with_fake_sbatch_writes_list_script_and_metadata(tmp_path, monkeypatch, caplog):
    bin_dir = tmp_path / "bin"
    record = tmp_path / "sbatch-args"
    _fake_tool(bin_dir, "sbatch", f'printf "%s\\n" "$@" > {record}; echo "4242;cluster"')
    _fake_tool(bin_dir, "squeue", "exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    study = load_study(_study(tmp_path))
    store = LocalStore(tmp_path / "store")
    with store:
        store.put(_doc(study.configs[0], COMPLETED))
        store.put(_doc(study.configs[1], FAILED))
    with caplog.at_level("INFO", logger="walking_noise"):
        sub = submit(study, store, tasks=2, overrides={"time": "0-00:05"})
    lines = caplog.messages
    assert sub is not None and sub.job_id == "4242"
    assert sub.configs == 4 and sub.already_done == 1 and sub.skipped_failed == 1
    args = record.read_text().splitlines()
    assert args[:2] == ["--parsable", "--array=0-1"] and "--time=0-00:05" in args and args[-1] == str(sub.script_path)
    assert any(a.startswith("--output=") and a.endswith("_%A_%a.out") for a in args)
    meta = json.loads(sub.meta_path.read_text())
    assert meta["job_id"] == "4242" and meta["num_tasks"] == 2 and len(meta["study_hashes"]) == 6
    assert sorted(r["config_hash"] for r in read_submission_list(sub.list_path)) == sorted(
        config_hash(c) for c in study.configs[2:])
    assert any("squeue -j 4242" in line for line in lines)
    again = submit(study, store, tasks=1, retry_failed=True)
    assert again is not None and again.configs == 5  # the failed one as well


def test_submit_again_leaves_out_configs_of_tasks_still_queued_or_running(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    counter = tmp_path / "n"
    _fake_tool(bin_dir, "sbatch", f'n=$(( $(cat {counter} 2>/dev/null || echo 100) + 1 )); echo $n > {counter}; '
                                  f'echo $n')
    # the first array (101): task 0 finished, task 1 running, task 2 pending
    _fake_tool(bin_dir, "squeue", 'echo "101|1|RUNNING"; echo "101|2|PENDING"')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    study = load_study(_study(tmp_path))
    store = LocalStore(tmp_path / "store")
    first = submit(study, store, tasks=3)
    assert first is not None and first.job_id == "101"
    records = read_submission_list(first.list_path)
    second = submit(study, store)  # nothing stored yet: only task 0's share is resubmitted
    held = len(task_share(records, 1, 3)) + len(task_share(records, 2, 3))
    assert second is not None and second.in_flight == held and held + len(task_share(records, 0, 3)) == 6
    assert [r["config_hash"] for r in read_submission_list(second.list_path)] == [
        r["config_hash"] for r in task_share(records, 0, 3)]
    rows = store_status(store)
    assert (rows[0].total, rows[0].done, rows[0].missing, rows[0].in_flight) == (6, 0, 6, held)
    assert rows[0].arrays == {"101": Counter({"RUNNING": 1, "PENDING": 1})}


def test_refused_submission_is_a_clear_error_and_leaves_no_files(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "sbatch", 'echo "sbatch: error: Memory specification can not be satisfied" >&2; exit 1')
    _fake_tool(bin_dir, "squeue", "exit 0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(SlurmError, match="(?s)Memory specification.*--sbatch mem="):
        submit(load_study(_study(tmp_path)), store)
    assert [p.name for p in (store.path / "submissions").iterdir()] == ["logs"]


# ---- the array task -----------------------------------------------------------------------------------------


def test_array_task_runs_its_share_and_skips_completed_configs(tmp_path):
    study = load_study(_study(tmp_path))
    list_path = tmp_path / "store" / "submissions" / "tiny-t.jsonl"
    write_submission_list(list_path, "tiny", study.configs)
    share = task_share(study.configs, 0, 2)
    store = LocalStore(tmp_path / "store")
    with store:
        store.put(_doc(share[1], COMPLETED))  # finished by an earlier attempt of this task (a requeue)
    summary = run_array_task(list_path, 0, 2, LocalStore(store.path), threads=1)
    assert (summary.share, summary.skipped_done, summary.completed, summary.failed) == (3, 1, 2, 0)
    counts = Counter(d["config_hash"] for d in store.documents())
    assert counts == Counter({config_hash(c): 1 for c in share})
    rerun = run_array_task(list_path, 0, 2, LocalStore(store.path))
    assert (rerun.skipped_done, rerun.completed) == (3, 0)
    assert sum(counts.values()) == len(list(store.documents()))


def test_compatible_configs_share_a_task_and_train_as_one_batch(tmp_path):
    from walking_noise.batched import batch_key
    from walking_noise.config import Run, RunConfig

    runs = load_study(_study(tmp_path)).runs
    other = [Run.from_dict({**r.values, "batchnorm": True}) for r in runs]  # a second group: cannot pack with the first
    records = plan_shares(other + runs, 2)
    for task in (0, 1):
        share = task_share(records, task, 2)
        assert len({batch_key(RunConfig.from_dict(r["config"])) for r in share}) == 1, "one group per task"
    assert sorted(len(task_share(records, t, 2)) for t in (0, 1)) == [6, 6]
    list_path = tmp_path / "store" / "submissions" / "tiny-u.jsonl"
    write_submission_list(list_path, "tiny", records)
    store = LocalStore(tmp_path / "store")
    summary = run_array_task(list_path, 1, 2, store, threads=1)
    assert (summary.share, summary.completed, summary.failed) == (6, 6, 0)
    docs = list(store.documents())
    assert {d["result"]["extra"]["engine"] for d in docs} == {"batched"}
    assert {d["result"]["extra"]["batch_members"] for d in docs} == {6}


def test_job_script_runs_a_task_from_the_slurm_environment(tmp_path):
    """The generated script with the variables Slurm sets: the -m entry point, PYTHONPATH, the task index."""
    study = load_study(_study(tmp_path))
    store = LocalStore(tmp_path / "store")
    list_path = store.path / "submissions" / "tiny-s.jsonl"
    write_submission_list(list_path, "tiny", study.configs[:2])
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.job_script(list_path, store, 2, "tiny"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_TASK_MIN="0", SLURM_JOB_ID="7")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task 1/2: share of 1 config(s), 0 already completed, ran 1 (1 completed" in done.stdout
    assert [d["config_hash"] for d in store.documents()] == [config_hash(study.configs[1])]


def test_array_task_outside_slurm_needs_index_and_count(tmp_path, monkeypatch, capsys):
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert slurm.main_for_tests(["array-task", str(tmp_path / "x.jsonl"), "--store", str(tmp_path)]) == 2
    assert "--task-index and --num-tasks" in capsys.readouterr().err


# ---- status -------------------------------------------------------------------------------------------------


def test_status_counts_done_failed_missing_per_study(tmp_path, capsys):
    study = load_study(_study(tmp_path))
    store = LocalStore(tmp_path / "store")
    with store:
        for config in study.configs[:3]:
            store.put(_doc(config, COMPLETED))
        store.put(_doc(study.configs[3], FAILED))
        store.put(_doc(study.configs[4], FAILED))
        store.put(_doc(study.configs[4], COMPLETED))  # retried: completed wins
        store.put(_doc({"seed": 99}, COMPLETED, study="local_only"))
    folder = store.path / "submissions"
    folder.mkdir()
    (folder / "tiny-a.json").write_text(json.dumps({
        "study": "tiny", "study_path": str(study.path), "created": "2024-01-01T00:00:00+00:00", "list": "tiny-a.jsonl",
        "num_tasks": 1, "job_id": None, "study_hashes": sorted(config_hash(c) for c in study.configs)}))
    rows = {r.study: r for r in store_status(store, query_slurm=False)}
    assert (rows["tiny"].total, rows["tiny"].done, rows["tiny"].failed, rows["tiny"].missing) == (6, 4, 1, 1)
    assert (rows["local_only"].total, rows["local_only"].done) == (None, 1)
    from_yaml = store_status(store, [study], query_slurm=False)
    assert [(r.study, r.done, r.failed, r.missing) for r in from_yaml][-1] == ("tiny", 4, 1, 1)
    assert slurm.main_for_tests(["status", "--store", str(store.path), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 6 configs: 4 done, 1 failed, 1 missing" in out and "--retry-failed" in out


# ---- real Slurm ---------------------------------------------------------------------------------------------


def _node_state() -> str | None:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split()[0].rstrip("*~#!%$@^-") if out.returncode == 0 and out.stdout.split() else None


def _local_cluster_down(local_conf: Path) -> bool:
    """Our local cluster was set up here but its controller is not running (no 9 s wait for sinfo to give up)."""
    if os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf") != str(local_conf) and not (
            Path("/etc/slurm/slurm.conf").resolve() == local_conf.resolve()):
        return False
    pid_file = local_conf.parent / "run" / "slurmctld.pid"
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return True
    return False


@pytest.fixture(scope="module")
def slurm_cluster():
    """A Slurm cluster whose node is idle; tries ``slurm/local_cluster.sh start`` (as root) if it is down."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (no sinfo/sbatch); as root run slurm/local_cluster.sh start")
    saved = os.environ.get("SLURM_CONF")
    local_conf = Path(os.environ.get("WN_SLURM_DIR", "/tmp/wn-slurm")) / "slurm.conf"
    if saved is None and not Path("/etc/slurm/slurm.conf").exists() and local_conf.exists():
        os.environ["SLURM_CONF"] = str(local_conf)
    started = ""
    if _local_cluster_down(local_conf) or _node_state() is None:
        if os.geteuid() != 0:
            pytest.skip("Slurm does not answer (sinfo failed) and only root can start slurm/local_cluster.sh")
        try:
            out = subprocess.run(["bash", str(ROOT / "slurm" / "local_cluster.sh"), "start"], capture_output=True,
                                 text=True, timeout=WAIT_S)
            started = (out.stdout + out.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            pytest.skip(f"slurm/local_cluster.sh start did not finish within {WAIT_S} s")
    deadline, state = time.time() + 60, None
    while time.time() < deadline:
        state = _node_state()
        if state in ("idle", "mix"):
            break
        time.sleep(0.5)
    else:
        pytest.skip(f"the Slurm node is not idle within 60 s (state {state!r}); {started}")
    yield
    if started:  # leave the machine as it was found
        subprocess.run(["bash", str(ROOT / "slurm" / "local_cluster.sh"), "stop"], capture_output=True, timeout=60)
    if saved is None:
        os.environ.pop("SLURM_CONF", None)


def _active_tasks(job_id: str) -> dict[int, str]:
    states = slurm.array_states([job_id])[job_id]
    return {i: s for i, s in states.items() if s in slurm.ACTIVE_STATES}


def _wait_for_array(job_id: str, store: LocalStore, timeout: float = WAIT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _active_tasks(job_id):
            return
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], timeout=30)
    logs = "\n".join(p.read_text()[-1500:] for p in (store.path / "submissions" / "logs").glob(f"*_{job_id}_*"))
    pytest.fail(f"array job {job_id} did not finish within {timeout} s (cancelled); task logs:\n{logs}")


def _assert_every_config_exactly_once(store: LocalStore, study_path: Path) -> None:
    docs = list(store.documents())
    expected = {config_hash(c) for c in load_study(study_path).configs}
    assert Counter(d["config_hash"] for d in docs) == Counter({h: 1 for h in expected})
    assert all(d["status"] == COMPLETED and 0 < d["result"]["final_accuracy"] <= 1 for d in docs)
    assert store.skipped_lines == 0


@pytest.fixture(scope="module")
def smoke_array_store(slurm_cluster, tmp_path_factory):
    """The smoke study, run as a Slurm array into a fresh store (shared by the tests below)."""
    store = LocalStore(tmp_path_factory.mktemp("slurm-smoke") / "store")
    sub = submit(load_study(SMOKE), store, tasks=2,
                 overrides={"cpus-per-task": "1", "mem": "1G", "time": "0-00:10"})
    assert sub is not None and sub.job_id
    _wait_for_array(sub.job_id, store)
    return store, sub


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_study_as_a_slurm_array_lands_every_config_exactly_once(smoke_array_store, capsys):
    store, sub = smoke_array_store
    _assert_every_config_exactly_once(store, SMOKE)
    logs = sorted((store.path / "submissions" / "logs").glob(f"*_{sub.job_id}_*.out"))
    assert len(logs) == 2 and all("0 failed)" in p.read_text() for p in logs)
    assert slurm.main_for_tests(["status", "--store", str(store.path)]) == 0
    assert f"smoke: {sub.configs} configs: {sub.configs} done, 0 failed, 0 missing" in capsys.readouterr().out
    assert submit(load_study(SMOKE), store) is None  # nothing left to submit


@pytest.mark.slurm
def test_report_runs_on_the_array_store(smoke_array_store, tmp_path):
    from walking_noise.report import write_report
    from walking_noise.results import runs_from_store

    store, sub = smoke_array_store
    runs = runs_from_store(store.path)
    assert len(runs) == sub.configs
    index = write_report(runs, tmp_path / "report")
    assert Path(index).is_file()


@pytest.mark.slurm
@pytest.mark.slow
def test_killed_array_task_loses_nothing_and_resubmission_completes_the_study(slurm_cluster, tmp_path):
    # six configs of ~1.5 s each: task 0 is cancelled right after its first run is stored, mid-share
    path = _study(tmp_path, max_train=3000, epochs=12, per_job=3)
    study = load_study(path)
    store = LocalStore(tmp_path / "store")
    first = submit(study, store, tasks=2, members=1, overrides={"time": "0-00:10"})  # a unit per config
    assert first is not None and first.num_tasks == 2
    share0 = [r["config_hash"] for r in task_share(read_submission_list(first.list_path), 0, 2)]
    deadline = time.time() + WAIT_S
    while not set(share0) & {d["config_hash"] for d in store.documents()}:
        assert time.time() < deadline, "task 0 stored no run in time"
        time.sleep(0.05)
    subprocess.run(["scancel", f"{first.job_id}_0"], check=True, timeout=30)
    deadline = time.time() + WAIT_S
    while 0 in _active_tasks(first.job_id):
        assert time.time() < deadline, "task 0 did not stop after scancel"
        time.sleep(0.2)
    stored = {d["config_hash"] for d in store.documents()}
    lost = [h for h in share0 if h not in stored]
    assert 1 <= len(lost) < len(share0), "the cancel should land mid-share"
    log0 = next((store.path / "submissions" / "logs").glob(f"*_{first.job_id}_0.out")).read_text()
    assert "stopped by SIGTERM" in log0

    # submitted again at once: task 1 may still run, its configs are not queued twice
    second = submit(study, store, overrides={"time": "0-00:10"})
    assert second is not None
    assert sorted(r["config_hash"] for r in read_submission_list(second.list_path)) == sorted(lost)
    _wait_for_array(first.job_id, store)
    _wait_for_array(second.job_id, store)
    _assert_every_config_exactly_once(store, path)
    row = store_status(store)[0]
    assert (row.total, row.done, row.failed, row.missing, row.in_flight) == (6, 6, 0, 0, 0)
