"""Liveness of a recorded process (a job's worker, the demo server) by pid plus start time.

A pid alone is not an identity: once a process exits, the system may give its pid to an
unrelated process, and a stale record (``jobs.sqlite``, ``demo.json``) would then take that
process for the job or the demo, and Stop or Cancel would signal it. A record therefore keeps
the pid and the process's start time (``psutil.Process(pid).create_time()``, seconds since the
epoch); a process counts as the recorded one only when both match. Signals go through
``psutil.Process``, which checks the start time again right before sending.
"""

from __future__ import annotations

import os
import signal
import time

import psutil

# psutil derives the start time from clock ticks (1/100 s on Linux) and the boot time; two
# readings of one process agree to far better than this, two processes sharing a pid cannot
TOLERANCE = 0.05


def start_time(pid: int | None) -> float | None:
    """The start time of process ``pid`` (seconds since the epoch), ``None`` when there is none.

    A zombie (exited, not yet reaped by its parent) counts as gone.
    """
    if not pid or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None


def token(pid: int | None) -> str | None:
    """``start_time(pid)`` as the text that records keep (``None`` when the process is gone)."""
    started = start_time(pid)
    return None if started is None else repr(started)


def is_alive(pid: int | None, recorded: str | float | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``recorded`` (``token``'s text).

    A record without a start time cannot tell the recorded process from a newer one with its
    pid, so it counts as dead: it is never signalled.
    """
    now = start_time(pid)
    if now is None or recorded is None:
        return False
    try:
        return abs(now - float(recorded)) < TOLERANCE
    except (TypeError, ValueError):  # a token of another kind (an older workbench's): not this process
        return False


def _process(pid: int | None, recorded: str | float | None) -> psutil.Process | None:
    if not is_alive(pid, recorded):
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def send(pid: int | None, recorded: str | float | None, sig: int, *, group: bool = False) -> bool:
    """Send ``sig`` to the recorded process (to its process group with ``group``, when it leads
    one); False, sending nothing, when the recorded process is gone."""
    process = _process(pid, recorded)
    if process is None:
        return False
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            process.send_signal(sig)  # psutil checks the start time again: a reused pid is refused
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    return True


def stop(pid: int | None, recorded: str | float | None, *, timeout: float = 10.0, group: bool = False) -> bool:
    """SIGTERM the recorded process, SIGKILL after ``timeout`` s; True when it is gone.

    Nothing is signalled when ``pid`` now belongs to another process (its start time differs).
    """
    if not send(pid, recorded, signal.SIGTERM):
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, recorded):
            return True
        time.sleep(0.2)
    send(pid, recorded, signal.SIGKILL, group=group)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and is_alive(pid, recorded):
        time.sleep(0.1)
    return not is_alive(pid, recorded)
