"""Tests written against the mutants mutmut left alive in workbench.training.scheduler
(docs/mutation.md): the claim's limit and GPU accounting, the row it writes, the GPU names,
``max_jobs`` messages and ``queue_position``, in one process on a real jobs.sqlite."""

from __future__ import annotations

import os
import time

import pytest

from workbench.errors import WorkbenchError
from workbench.training import jobs, processes, scheduler


def queue(run: str, config: dict, queued: float) -> None:
    jobs.enqueue(run, config=config, folder="/none")
    jobs.set_state(run, "queued", queued=queued)


@pytest.fixture
def gpus(monkeypatch):
    def fake(count: int, visible: str | None = None, max_jobs: str | None = None) -> None:
        monkeypatch.setattr(scheduler, "gpu_count", lambda: count)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        if max_jobs is None:
            monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)
        else:
            monkeypatch.setenv(jobs.MAX_JOBS_ENV, max_jobs)

    return fake


def test_visible_gpus(gpus):
    gpus(2)
    assert scheduler.visible_gpus() == ["0", "1"]
    gpus(1)
    assert scheduler.visible_gpus() == ["0"]
    gpus(2, " 3 , ,5,7 ")
    assert scheduler.visible_gpus() == ["3", "5"]
    gpus(3, "3,5")  # fewer names than devices: count from 0
    assert scheduler.visible_gpus() == ["0", "1", "2"]
    gpus(0, "3")
    assert scheduler.visible_gpus() == []


def test_gpus_needed():
    assert scheduler.gpus_needed({}, available=2) == 1
    assert scheduler.gpus_needed({"device": None, "gpus": 0}, available=2) == 1
    assert scheduler.gpus_needed({"device": "cuda", "gpus": 3}, available=2) == 3
    assert scheduler.gpus_needed({"device": "cpu", "gpus": 2}, available=2) == 0
    assert scheduler.gpus_needed({"device": "cuda", "gpus": 2}, available=0) == 0


def test_max_jobs_messages_and_gpus(monkeypatch):
    monkeypatch.setattr(scheduler, "gpu_count", lambda: 4)
    monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)
    assert scheduler.max_jobs() == 4 and scheduler.max_jobs(2) == 2 and scheduler.max_jobs(0) == 1
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "   ")
    assert scheduler.max_jobs(3) == 3
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    assert scheduler.max_jobs(3) == 1
    for text, why in [("0", "at least 1 job must be able to run"), ("x", "not a whole number")]:
        monkeypatch.setenv(jobs.MAX_JOBS_ENV, f" {text}")
        with pytest.raises(WorkbenchError) as e:
            scheduler.max_jobs()
        assert str(e.value) == f"${jobs.MAX_JOBS_ENV}={text!r}: {why}"


def test_claim_writes_the_running_row(gpus):
    gpus(0)
    queue("a", {"device": "cpu"}, 1.0)
    jobs.set_state("a", "queued", message="waiting")
    before = time.time()
    assert scheduler.claim("a", pid=os.getpid()) == []
    row = jobs.get_job("a")
    assert row["state"] == "running" and row["pid"] == os.getpid() and row["devices"] is None
    assert row["start_token"] == processes.token(os.getpid()) and row["message"] is None
    assert before <= row["started"] <= time.time()
    assert scheduler.claim("a", pid=os.getpid()) is None  # no longer queued
    assert scheduler.claim("nobody", pid=1) is None


def test_the_limit_counts_running_jobs(gpus):
    gpus(0, max_jobs="2")
    for i, run in enumerate("abc"):
        queue(run, {"device": "cpu"}, float(i))
    assert scheduler.claim("a", pid=os.getpid()) == []
    assert scheduler.claim("b", pid=os.getpid()) == []  # two may run
    assert scheduler.claim("c", pid=os.getpid()) is None  # a third may not
    assert scheduler.queue_position("c") == (0, ["a", "b"])
    jobs.set_state("a", "finished")
    assert scheduler.claim("c", pid=os.getpid()) == []


def test_gpus_are_handed_out_free_ones_first(gpus):
    gpus(3, "2,4,6")
    queue("a", {"device": "cuda"}, 1.0)
    queue("b", {"device": "cuda", "gpus": 2}, 2.0)
    queue("c", {"device": "cuda"}, 3.0)
    assert scheduler.claim("a", pid=os.getpid()) == ["2"]
    assert scheduler.claim("b", pid=os.getpid()) == ["4", "6"]
    assert jobs.get_job("b")["devices"] == "4,6"
    assert scheduler.claim("c", pid=os.getpid()) is None  # three running would be fine, no GPU is free
    jobs.set_state("b", "finished")
    assert scheduler.claim("c", pid=os.getpid()) == ["4"]


def test_queue_position_counts_the_queued_ahead(gpus):
    gpus(0)
    assert scheduler.queue_position("x") == (0, [])
    queue("a", {"device": "cpu"}, 1.0)
    queue("b", {"device": "cpu"}, 2.0)
    queue("c", {"device": "cpu"}, 3.0)
    assert scheduler.queue_position("c") == (2, [])
    assert scheduler.claim("a", pid=os.getpid()) == []
    assert scheduler.queue_position("c") == (1, ["a"])
    assert scheduler.queue_position("a") == (0, ["a"])
    jobs.set_state("b", "finished")
    assert scheduler.queue_position("c") == (0, ["a"])
