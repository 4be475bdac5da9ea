"""workbench/training/scheduler.py (and ``jobs.enqueue``) with real processes: the atomic claim,
first in first out, the limit on jobs running at once, and the GPUs each job holds.

The claim is driven from "spawn" processes that queue at one barrier (the same instant) and race
for their turn; the end-to-end test queues six real detached workers from six processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from tests.training.conftest import TINY
from workbench.errors import WorkbenchError
from workbench.training import jobs, scheduler

SPAWN = multiprocessing.get_context("spawn")


def queue_row(run: str, *, config: dict | None = None, queued: float | None = None) -> None:
    """A queued job as ``start_job`` records it (no worker, no run folder), at ``queued`` if given."""
    jobs.enqueue(run, config=config or {"device": "cpu"}, folder="/none")
    if queued is not None:
        jobs.set_state(run, "queued", queued=queued)


def queue_and_run(run: str, home: str, barrier, gpus: int, config: dict) -> None:
    """In a child: queue ``run`` at the barrier, wait for a claim, hold it a moment, finish."""
    os.environ["WORKBENCH_HOME"] = home
    scheduler.gpu_count = lambda: gpus  # fault injection: this process "has" ``gpus`` GPUs
    barrier.wait(timeout=120)
    queue_row(run, config=config)
    deadline = time.monotonic() + 120
    while scheduler.claim(run, pid=os.getpid()) is None:
        assert time.monotonic() < deadline, f"{run} never got its turn"
        time.sleep(0.01)
    time.sleep(0.2)  # the job's "work": it holds the slot while the others' claims keep trying (no sync)
    jobs.set_state(run, "finished", message="finished")


def race(runs: dict[str, dict], *, gpus: int) -> list[dict]:
    """Queue every run from its own process in the same instant; every job row once all end."""
    barrier = SPAWN.Barrier(len(runs))
    children = [
        SPAWN.Process(target=queue_and_run, args=(run, os.environ["WORKBENCH_HOME"], barrier, gpus, config))
        for run, config in runs.items()
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=180)
        assert child.exitcode == 0, f"a child failed (exit {child.exitcode})"
    with jobs.connect() as con:
        return [dict(r) for r in con.execute("SELECT rowid, * FROM jobs ORDER BY queued, rowid").fetchall()]


def overlapping(rows: list[dict]) -> int:
    """The most jobs that ran at one moment, from their ``started``/``ended`` stamps."""
    events = sorted([(r["started"], 1) for r in rows] + [(r["ended"], -1) for r in rows])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_six_processes_limit_one_run_one_at_a_time_in_queue_order(monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    rows = race({f"job{i}": {"device": "cpu"} for i in range(6)}, gpus=0)
    assert [r["state"] for r in rows] == ["finished"] * 6
    assert overlapping(rows) == 1
    assert [r["run"] for r in sorted(rows, key=lambda r: r["started"])] == [r["run"] for r in rows]
    assert all(r["devices"] is None for r in rows)


@pytest.mark.slow
def test_two_fake_gpus_two_jobs_at_once_each_on_its_own_gpus(monkeypatch):
    monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)  # default: one job per GPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    runs = {f"job{i}": {"device": "cuda", "gpus": 2 if i == 2 else 1} for i in range(5)}
    rows = race(runs, gpus=2)
    assert [r["state"] for r in rows] == ["finished"] * 5
    assert overlapping(rows) <= 2
    by_run = {r["run"]: r for r in rows}
    assert by_run["job2"]["devices"] == "0,1"
    assert all(by_run[f"job{i}"]["devices"] in ("0", "1") for i in (0, 1, 3, 4))
    for a in rows:  # jobs that ran at the same time never shared a GPU
        for b in rows:
            if a["run"] < b["run"] and a["started"] < b["ended"] and b["started"] < a["ended"]:
                assert not set(a["devices"].split(",")) & set(b["devices"].split(",")), (a, b)
    assert [r["run"] for r in sorted(rows, key=lambda r: r["started"])] == [r["run"] for r in rows]


def test_claim_binds_gpus_and_keeps_the_queue_order(monkeypatch):
    """In one process with two faked GPUs named by ``CUDA_VISIBLE_DEVICES``: a job asking for two
    waits for both, and the jobs queued after it wait behind it (first in, first out)."""
    monkeypatch.setattr(scheduler, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)
    assert scheduler.max_jobs() == 2 and scheduler.visible_gpus() == ["4", "6"]
    queue_row("a", config={"device": "cuda"}, queued=1.0)
    queue_row("b", config={"device": "auto", "gpus": 2}, queued=2.0)
    queue_row("c", config={"device": "cuda"}, queued=3.0)
    queue_row("d", config={"device": "cpu"}, queued=3.0)  # same instant as c: the row decides
    assert scheduler.claim("b", pid=os.getpid()) is None  # not its turn
    assert scheduler.claim("a", pid=os.getpid()) == ["4"]
    assert scheduler.claim("b", pid=os.getpid()) is None  # one GPU free, it asks for two
    assert scheduler.claim("c", pid=os.getpid()) is None  # behind b
    assert scheduler.queue_position("c") == (1, ["a"])
    jobs.set_state("a", "finished")
    assert scheduler.claim("b", pid=os.getpid()) == ["4", "6"]
    jobs.set_state("b", "finished")
    assert scheduler.claim("d", pid=os.getpid()) is None  # c first
    assert scheduler.claim("c", pid=os.getpid()) == ["4"]
    assert scheduler.claim("d", pid=os.getpid()) == []  # a CPU job holds no GPU
    assert jobs.get_job("c")["devices"] == "4" and jobs.get_job("d")["devices"] is None


@pytest.mark.parametrize(("text", "gpus", "expected"), [("", 0, 1), ("", 3, 3), ("2", 0, 2), (" 5 ", 8, 5)])
def test_max_jobs(monkeypatch, text, gpus, expected):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, text)
    monkeypatch.setattr(scheduler, "gpu_count", lambda: gpus)
    assert scheduler.max_jobs() == expected


@pytest.mark.parametrize("text", ["0", "-1", "two"])
def test_max_jobs_rejects(monkeypatch, text):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, text)
    with pytest.raises(WorkbenchError, match=jobs.MAX_JOBS_ENV):
        scheduler.max_jobs()


def start_at(barrier, home: str, models: str, data: str, name: str) -> None:
    """In a child: ``workbench train`` (detached worker, limit one) at the barrier."""
    import torch  # noqa: F401 (loaded before the barrier, so that the six commands queue in one instant)

    from workbench.cli.main import main

    os.environ.update(WORKBENCH_HOME=home, WORKBENCH_MODELS=models, WORKBENCH_OFFLINE="1")
    barrier.wait(timeout=120)
    code = main(["train", "--data", data, "--from", "voc", "--name", name, "--max-jobs", "1", *TINY])
    raise SystemExit(code)


@pytest.mark.slow
def test_six_real_jobs_queued_at_once_run_one_at_a_time_in_order(tmp_path):
    """Six ``workbench train`` from six processes in one instant: six real workers, each through
    the claim. The dataset's only file is broken, so each job fails as soon as it runs."""
    data = tmp_path / "broken"
    (data / "annotations").mkdir(parents=True)
    (data / "annotations" / "a.xml").write_text("<annotation><size>broken")
    names = [f"q{i}" for i in range(6)]
    barrier = SPAWN.Barrier(len(names))
    env = os.environ["WORKBENCH_HOME"], os.environ["WORKBENCH_MODELS"]
    children = [SPAWN.Process(target=start_at, args=(barrier, *env, str(data), n)) for n in names]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=180)
        assert child.exitcode == 0
    for name in names:
        log = Path(jobs.get_job(name)["folder"]) / "train.log"
        assert jobs.wait_job(name, poll=0.5, timeout=240) == "failed", log.read_text()[-2000:]
    with jobs.connect() as con:
        rows = [dict(r) for r in con.execute("SELECT * FROM jobs ORDER BY queued, rowid").fetchall()]
    assert all(r["started"] is not None for r in rows), "a job failed without being claimed"
    assert overlapping(rows) == 1
    assert [r["run"] for r in sorted(rows, key=lambda r: r["started"])] == [r["run"] for r in rows]
    for r in rows:
        assert "Traceback" in (Path(r["folder"]) / "train.log").read_text()
