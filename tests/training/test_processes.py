"""workbench/training/processes.py: liveness by pid plus start time, with real processes.

A pid reused by an unrelated process is simulated by a real ``sleep`` whose pid is recorded with
a start time that is not its own: it must be seen as dead and never signalled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from workbench.demo import server
from workbench.training import jobs, processes


@pytest.fixture
def stranger():
    """An unrelated live process (``sleep``) and a start time that is not its own."""
    process = subprocess.Popen(["sleep", "120"])
    try:
        yield process, repr(processes.start_time(process.pid) - 3600.0)
    finally:
        process.kill()
        process.wait()


def test_start_time_identifies_a_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = processes.token(process.pid)
        assert token is not None and abs(float(token) - time.time()) < 60
        assert processes.token(process.pid) == token  # stable over the process's life
        assert processes.is_alive(process.pid, token)
        assert not processes.is_alive(process.pid, None)  # no start time recorded: cannot tell, so dead
        assert not processes.is_alive(process.pid, "not a number")  # an older workbench's /proc ticks
    finally:
        process.kill()
        process.wait()
    assert processes.token(process.pid) is None and not processes.is_alive(process.pid, token)


def test_a_zombie_counts_as_gone():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    token = processes.token(process.pid)
    deadline = time.monotonic() + 30
    while processes.start_time(process.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not reaped: a zombie
    assert not processes.is_alive(process.pid, token)
    process.wait()


def test_stop_signals_the_recorded_process_only(stranger):
    process, wrong = stranger
    assert processes.stop(process.pid, wrong, timeout=1) is True  # "gone": the recorded process is
    assert processes.send(process.pid, wrong, signal.SIGKILL) is False
    assert process.poll() is None, "an unrelated process was signalled"
    assert processes.stop(process.pid, processes.token(process.pid), timeout=10) is True
    assert process.wait(10) == -signal.SIGTERM


def test_stale_demo_state_with_a_reused_pid(stranger):
    process, wrong = stranger
    state = {"pid": process.pid, "pid_started": wrong, "local_url": "http://127.0.0.1:1/"}
    server.state_path().write_text(json.dumps(state))
    assert server.read_state() is None and not server.state_path().exists()
    server.state_path().write_text(json.dumps(state))
    assert server.stop() is False
    assert server.status() is None
    assert process.poll() is None, "Stop signalled an unrelated process"


def test_stale_job_row_with_a_reused_pid(stranger):
    process, wrong = stranger
    with jobs.connect() as con:
        con.execute(
            "INSERT INTO jobs (run, state, pid, start_token, created, queued, config, folder) "
            "VALUES ('stale', 'running', ?, ?, 0, 0, '{}', '/nonexistent')",
            (process.pid, wrong),
        )
    assert jobs.reap() == ["stale"]
    job = jobs.get_job("stale")
    assert job["state"] == "interrupted" and "vanished" in job["message"]
    with jobs.connect() as con:
        con.execute("UPDATE jobs SET state = 'running' WHERE run = 'stale'")  # as if reap had not run yet
    assert jobs.cancel_job("stale", timeout=1) in ("cancelled", "interrupted")
    assert process.poll() is None, "cancel signalled an unrelated process"


IGNORES_TERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_escalates_to_sigkill_of_the_group_when_sigterm_is_ignored():
    """What ``workbench cancel`` does to a job stuck where SIGTERM is not heard: after the timeout,
    SIGKILL to the worker's process group, its loader processes too."""
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        grandchild = int(process.stdout.readline())  # printed once both ignore SIGTERM
        token, child_token = processes.token(process.pid), processes.token(grandchild)
        start = time.monotonic()
        assert processes.stop(process.pid, token, timeout=1.0, group=True) is True
        assert time.monotonic() - start >= 1.0  # SIGTERM was given its time first
        assert process.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while processes.is_alive(grandchild, child_token) and time.monotonic() < deadline:
            time.sleep(0.05)  # poll: the grandchild is reaped by init once killed
        assert not processes.is_alive(grandchild, child_token)
    finally:
        process.kill()
        process.wait()


def test_stop_sends_no_sigkill_to_a_process_that_heeds_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    process.stdout.readline()
    assert processes.stop(process.pid, processes.token(process.pid), timeout=30, group=True) is True
    assert process.wait(10) == -signal.SIGTERM
