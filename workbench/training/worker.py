"""The process behind one background job: ``python -m workbench.training.worker RUN``.

Started detached by ``jobs.start_job``; its stdout and stderr are the run's ``train.log``.
It waits for its turn (``scheduler.claim``: first in, first out, at most ``scheduler.max_jobs()`` at
once, the GPUs it needs free), sees only its GPUs (``CUDA_VISIBLE_DEVICES``), trains (in-process, or through
``torchrun`` for ``gpus > 1``), and records the outcome: finished (and ``models/latest``
moves here), cancelled (SIGTERM), or failed (the traceback is in the log).

``python -m workbench.training.worker --rank RUN`` is one DDP rank under torchrun.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch.distributed as dist

from workbench.training import jobs, registry, scheduler
from workbench.training.engines import get_engine
from workbench.training.run import Cancelled, setup_logging

log = logging.getLogger("workbench.training")

_stop = False


def _on_signal(signum: int, frame: object) -> None:
    global _stop
    _stop = True


def should_stop() -> bool:
    return _stop


def _torchrun(run: str, gpus: int) -> int:
    """Run ``gpus`` DDP ranks on this machine; SIGTERM is forwarded to torchrun, which stops them."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    command += ["-m", "workbench.training.worker", "--rank", run]
    log.info("DDP: %s", " ".join(command))
    proc = subprocess.Popen(command)
    forwarded = False
    while proc.poll() is None:
        if _stop and not forwarded:
            proc.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.2)
    return proc.returncode


def _wait_for_turn(run: str, *, poll: float = 0.5) -> list[str] | None:
    """Poll ``scheduler.claim`` until this job runs; the GPUs it holds, ``None`` when stopped first
    or when the job left the queue otherwise (another worker took it)."""
    waiting = ""
    while not _stop:
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
    setup_logging(0)
    job = jobs.get_job(run)
    folder = Path(job["folder"])
    devices = _wait_for_turn(run)
    if devices is None:
        if jobs.get_job(run)["state"] == "queued":
            jobs.set_state(run, "cancelled", message="cancelled while queued")
        return 1
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # before CUDA starts: torchrun's ranks inherit it
    log.info("job %s running (pid %d%s)", run, os.getpid(), f", GPUs {','.join(devices)}" if devices else "")
    config = job["config"]
    engine = get_engine(config.get("engine"))
    try:
        if int(config.get("gpus") or 1) > 1 and engine.distributed:
            code = _torchrun(run, int(config["gpus"]))
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
    job = jobs.get_job(run)
    try:
        get_engine(job["config"].get("engine")).train(job["config"], Path(job["folder"]), should_stop=should_stop)
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
