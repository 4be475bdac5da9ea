"""Whose turn it is among queued jobs: first in, first out, at most ``max_jobs()`` at once,
and the GPUs each running job holds (the ``devices`` column of ``jobs.sqlite``).

``claim`` is the one place a job goes from ``queued`` to ``running``: one SQLite
``BEGIN IMMEDIATE`` transaction reads the queue's head, the running jobs and the GPUs they hold,
and marks the job running, so two workers polling at the same instant can never both start past
the limit, nor take the same GPU. Only local jobs (``executor`` local) queue here: a cluster's
job is queued by its cluster, and claims at once (``limits`` False). The GPU count is read here only (it imports torch), in the
worker; listings and the Train page never load torch for it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from typing import Any

from workbench.errors import WorkbenchError
from workbench.training import processes
from workbench.training.jobs import MAX_JOBS_ENV, connect, transaction


def gpu_count() -> int:
    """The GPUs this process may use (those in its ``CUDA_VISIBLE_DEVICES``), 0 without CUDA."""
    import torch  # here, not at the top: listings and the Train page stay torch-free

    return torch.cuda.device_count()


def max_jobs(gpus: int | None = None) -> int:
    """How many jobs may run at once: ``$WORKBENCH_MAX_JOBS``, else one per GPU (one without GPUs)."""
    text = os.environ.get(MAX_JOBS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError as e:
            raise WorkbenchError(f"${MAX_JOBS_ENV}={text!r}: not a whole number") from e
        if value < 1:
            raise WorkbenchError(f"${MAX_JOBS_ENV}={text!r}: at least 1 job must be able to run")
        return value
    return max(1, gpu_count() if gpus is None else gpus)


def visible_gpus() -> list[str]:
    """The ids of the GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    count = gpu_count()
    names = [n.strip() for n in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if n.strip()]
    return names[:count] if len(names) >= count else [str(i) for i in range(count)]


def gpus_needed(config: dict[str, Any], *, available: int) -> int:
    """The GPUs a job holds: its DDP processes (``gpus``) on CUDA, none on the CPU."""
    if not available or str(config.get("device") or "auto") == "cpu":
        return 0
    return max(1, int(config.get("gpus") or 1))


LOCAL = "COALESCE(executor, 'local') = 'local'"  # the jobs this machine schedules


def claim(run: str, *, pid: int, limits: bool = True) -> list[str] | None:
    """Mark queued job ``run`` running for process ``pid`` if it is its turn; the GPUs it got.

    Its turn: it is the oldest queued local job (queue time, then row), fewer than ``max_jobs()``
    local jobs run, and enough GPUs are free. ``None`` (nothing changed) when it must wait. One
    ``BEGIN IMMEDIATE`` transaction holds the check and the update together. ``limits`` False (a
    cluster's job): running now, on the GPUs the cluster made visible (``[]``); ``None`` when it is
    no longer queued.
    """
    if not limits:
        with closing(connect()) as con:
            changed = con.execute(
                "UPDATE jobs SET state = 'running', pid = ?, start_token = ?, started = ?, message = NULL "
                "WHERE run = ? AND state = 'queued'",
                (pid, processes.token(pid), time.time(), run),
            ).rowcount
        return [] if changed else None
    names = visible_gpus()
    limit = max_jobs(len(names))
    with closing(connect()) as con, transaction(con):
        head = con.execute(
            f"SELECT run, config FROM jobs WHERE state = 'queued' AND {LOCAL} "
            "ORDER BY COALESCE(queued, created), rowid LIMIT 1"
        ).fetchone()
        if head is None or head["run"] != run:
            return None
        running = con.execute(f"SELECT devices FROM jobs WHERE state = 'running' AND {LOCAL}").fetchall()
        if len(running) >= limit:
            return None
        held = {d for row in running for d in (row["devices"] or "").split(",") if d}
        free = [n for n in names if n not in held]
        need = gpus_needed(json.loads(head["config"]), available=len(names))
        if need > len(free):
            return None
        devices = free[:need]
        con.execute(
            "UPDATE jobs SET state = 'running', pid = ?, start_token = ?, started = ?, devices = ?, message = NULL "
            "WHERE run = ? AND state = 'queued'",
            (pid, processes.token(pid), time.time(), ",".join(devices) or None, run),
        )
    return devices


def queue_position(run: str) -> tuple[int, list[str]]:
    """How many queued local jobs are ahead of ``run``, and the local runs running now (what it waits for)."""
    with closing(connect()) as con:
        rows = con.execute(
            f"SELECT run, state FROM jobs WHERE state IN ('queued', 'running') AND {LOCAL} "
            "ORDER BY COALESCE(queued, created), rowid"
        ).fetchall()
    queued = [r["run"] for r in rows if r["state"] == "queued"]
    ahead = queued.index(run) if run in queued else 0
    return ahead, [r["run"] for r in rows if r["state"] == "running"]
