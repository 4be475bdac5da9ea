"""workbench/training/executors and how ``jobs`` and ``scheduler`` use them, without a cluster:
the options each executor takes, the rows a cluster's job leaves in ``jobs.sqlite``, and what a
machine may judge about another machine's job. The Ray and Slurm clusters have their own tests.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from tests.training.conftest import TINY
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.training import jobs, scheduler
from workbench.training.executors import EXECUTORS, get_executor


def dead_pid() -> tuple[int, str]:
    """The pid of a process that has ended, and a start token no process has."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid, "1.0"


def row(run: str, **fields) -> None:
    jobs.enqueue(run, config={"device": "cpu"}, folder="/none", executor=fields.pop("executor", "local"))
    if fields:
        jobs.set_state(run, fields.pop("state", "queued"), **fields)


def test_each_executor_takes_its_own_options_only():
    local = get_executor("local")
    assert local.schedules_locally and local.check({"nodes": 1, "address": None}) == {}
    with pytest.raises(WorkbenchError, match="the local executor takes no partition option"):
        local.check({"partition": "gpu"})
    with pytest.raises(WorkbenchError, match="--nodes 2: the local executor runs on this one machine"):
        local.check({"nodes": 2})
    with pytest.raises(WorkbenchError, match="unknown executor 'k8s'; choose one of local, ray, slurm"):
        get_executor("k8s")
    assert get_executor(None) is local and list(EXECUTORS) == ["local", "ray", "slurm"]


def test_a_bad_option_is_refused_before_any_run_folder_is_made(tiny_voc, capsys):
    code = main(["train", "--data", str(tiny_voc), "--nodes", "2", "--name", "two-nodes", *TINY])
    assert code == 1 and "--nodes 2: the local executor runs on this one machine" in capsys.readouterr().err
    assert not (jobs.registry.run_dir("two-nodes")).exists()
    with pytest.raises(WorkbenchError, match="no job 'two-nodes'"):
        jobs.get_job("two-nodes")


def test_another_machines_local_job_is_not_judged_here():
    """Two machines share the workspace: a pid that is dead here may live on the other one."""
    pid, token = dead_pid()
    row("mine", pid=pid, start_token=token, host=socket.gethostname(), state="running")
    row("theirs", pid=pid, start_token=token, host="another-machine", state="running")
    row("older", pid=pid, start_token=token, state="running")  # no host: a row from before hosts
    assert sorted(jobs.reap()) == ["mine", "older"]
    assert jobs.get_job("theirs")["state"] == "running" and jobs.get_job("mine")["state"] == "interrupted"


def test_a_cluster_job_queued_ahead_does_not_hold_up_the_local_queue():
    row("on-ray", executor="ray", queued=1.0)
    row("here", queued=2.0)
    assert scheduler.queue_position("here") == (0, [])
    assert scheduler.claim("here", pid=os.getpid()) == []
    assert jobs.get_job("here")["state"] == "running" and jobs.get_job("on-ray")["state"] == "queued"
    # the cluster's worker claims at once, whatever runs here
    assert scheduler.claim("on-ray", pid=os.getpid(), limits=False) == []
    assert jobs.get_job("on-ray")["state"] == "running"
    assert scheduler.claim("on-ray", pid=os.getpid(), limits=False) is None  # no longer queued


def test_a_resumed_job_keeps_its_executor_and_options(tiny_voc):
    config = {"device": "cpu", "data": str(tiny_voc)}
    jobs.enqueue("r", config=config, folder="/none", executor="local", executor_options={})
    jobs.set_state("r", "failed")
    job = jobs.get_job("r")
    assert job["executor"] == "local" and job["executor_options"] == {} and job["engine_id"] is None
    with pytest.raises(WorkbenchError, match="the local executor takes no partition option"):
        jobs.resume_job("r", executor_options={"partition": "gpu"})
    assert jobs.get_job("r")["state"] == "failed"  # refused before it was queued again


def test_an_older_database_gains_every_new_column():
    old = jobs.SCHEMA
    for column, kind in jobs.ADDED_COLUMNS.items():
        old = old.replace(f",\n    {column} {kind}", "")
    assert "executor" not in old and "queued" not in old
    with closing(sqlite3.connect(jobs.db_path())) as con, con:
        con.execute(old)
        con.execute("INSERT INTO jobs (run, state, created, config, folder) VALUES ('old', 'finished', 5, '{}', '/x')")
    jobs._ready.clear()
    job = jobs.get_job("old")
    assert job["executor"] == "local" and job["executor_options"] == {} and job["host"] is None
    assert job["queued"] is None and job["engine_id"] is None
