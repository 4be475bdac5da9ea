"""The process behind one background job: ``python -m workbench.training.worker RUN``.

Started by the job's executor (``jobs.start_job``); its stdout and stderr are the run's
``train.log``. A local job waits for its turn (``scheduler.claim``: first in, first out, at most
``scheduler.max_jobs()`` at once, the GPUs it needs free) and sees only its GPUs
(``CUDA_VISIBLE_DEVICES``); a cluster's job runs when the cluster starts it, on the paths the
cluster names (``paths.to_shared``). It trains (in-process, or as DDP ranks through the
executor's ``run_ranks`` when ``gpus`` x ``nodes`` > 1), and records the outcome: finished (and
``models/latest`` moves here), cancelled (SIGTERM), or failed (the traceback is in the log).

``python -m workbench.training.worker --rank RUN`` is one DDP rank under torchrun.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch.distributed as dist

from workbench.paths import to_shared
from workbench.training import jobs, registry, scheduler
from workbench.training.engines import get_engine
from workbench.training.executors import EXECUTOR_ENV, Executor, get_executor
from workbench.training.run import Cancelled, setup_logging

log = logging.getLogger("workbench.training")

_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def should_stop() -> bool:
    return _stop


def _job(run: str) -> tuple[dict[str, Any], Path, Executor]:
    """The job's row, its run folder and its executor, as this machine names them: a cluster's
    worker maps the submitting machine's paths (the folder, the dataset) to the shared ones."""
    job = jobs.get_job(run)
    executor = get_executor(os.environ.get(EXECUTOR_ENV) or job["executor"])
    if executor.schedules_locally:
        return job, Path(job["folder"]), executor
    job["config"] = {**job["config"], "data": to_shared(job["config"]["data"])}
    return job, Path(to_shared(job["folder"])), executor


def _log_to(folder: Path) -> None:
    """Send this process's stdout and stderr (its children's too) to ``folder/train.log``, as
    the local executor does by starting it so; a cluster's worker calls it first."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(folder / "train.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _wait_for_turn(run: str, *, local: bool = True, poll: float = 0.5) -> list[str] | None:
    """Poll ``scheduler.claim`` until this job runs; the GPUs it holds, ``None`` when stopped first
    or when the job left the queue otherwise (another worker took it). A cluster's job
    (``local`` False) claims at once, the GPUs being the ones the cluster gave it."""
    waiting = ""
    while not _stop:
        if not local:
            return scheduler.claim(run, pid=os.getpid(), limits=False)  # the cluster gave the turn
        jobs.reap()  # a dead job ahead in the queue must not hold it up
        devices = scheduler.claim(run, pid=os.getpid())
        if devices is not None:
            return devices
        if jobs.get_job(run)["state"] != "queued":
            return None
        ahead, running = scheduler.queue_position(run)
        text = f"waiting: {ahead} queued ahead" + (f", running: {', '.join(running)}" if running else "")
        if text != waiting:
            jobs.set_state(run, "queued", message=text)
            waiting = text
        time.sleep(poll)
    return None


def run_job(run: str) -> int:
    """Wait for a turn, train job ``run`` and record how it ended; the process's exit code."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    job, folder, executor = _job(run)
    if not executor.schedules_locally:
        _log_to(folder)
    setup_logging(0)
    devices = _wait_for_turn(run, local=executor.schedules_locally)
    if devices is None:
        if jobs.get_job(run)["state"] == "queued":
            jobs.set_state(run, "cancelled", message="cancelled while queued")
        return 1
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # before CUDA starts: torchrun's ranks inherit it
    where = f"{executor.name} {job['engine_id']}, " if not executor.schedules_locally else ""
    gpus = f", GPUs {','.join(devices)}" if devices else ""
    log.info("job %s running (%spid %d on %s%s)", run, where, os.getpid(), socket.gethostname(), gpus)
    config = job["config"]
    engine = get_engine(config.get("engine"))
    nodes = int(job["executor_options"].get("nodes") or 1)
    per_node = max(1, int(config.get("gpus") or 1))
    try:
        if nodes * per_node > 1 and engine.distributed:
            code = executor.run_ranks(job, folder, nodes=nodes, per_node=per_node, should_stop=should_stop)
            if _stop:
                raise Cancelled("cancelled")
            if code != 0:
                raise RuntimeError(f"torchrun exited with code {code}; the ranks' tracebacks are above")
        else:
            engine.train(config, folder, should_stop=should_stop)
    except Cancelled as e:
        log.info("job %s %s", run, e)
        jobs.set_state(run, "cancelled", message=str(e))
        return 1
    except BaseException as e:
        traceback.print_exc()
        sys.stderr.flush()
        jobs.set_state(run, "failed", message=f"{type(e).__name__}: {e}"[:500])
        return 1
    registry.set_latest(folder)
    jobs.set_state(run, "finished", message="finished")
    log.info("job %s finished; models/latest -> %s", run, folder.name)
    return 0


def run_rank(run: str) -> int:
    """One torchrun rank: train the run's config with the others (rank 0 writes the files)."""
    signal.signal(signal.SIGTERM, _on_signal)
    job, folder, _ = _job(run)
    try:
        get_engine(job["config"].get("engine")).train(job["config"], folder, should_stop=should_stop)
    except Cancelled:
        return 3
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--rank"]:
        sys.exit(run_rank(args[1]))
    if len(args) != 1:
        print("usage: python -m workbench.training.worker [--rank] RUN", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_job(args[0]))
