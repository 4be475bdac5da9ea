"""The local executor: the worker is a detached process on this machine (its own session, so
closing the browser tab or the terminal does not stop it), found again by its pid plus start
time (``processes``); its output is appended to the run's ``train.log``. Several GPUs are DDP
ranks through ``torchrun --standalone``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.paths import PROJECT_ROOT
from workbench.training import processes
from workbench.training.executors import ACTIVE, EXECUTOR_ENV, GONE, Executor

log = logging.getLogger("workbench.training")


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, with the project importable."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PROJECT_ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def torchrun(command: list[str], should_stop: Callable[[], bool]) -> int:
    """Run ``command`` (a torchrun) to its end; SIGTERM is forwarded once ``should_stop()``."""
    log.info("DDP: %s", " ".join(command))
    proc = subprocess.Popen(command)
    forwarded = False
    while proc.poll() is None:
        if should_stop() and not forwarded:
            proc.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.2)
    return proc.returncode


def rank_command(run: str, *launcher: str) -> list[str]:
    """``python -m torch.distributed.run LAUNCHER... -m workbench.training.worker --rank RUN``."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "workbench.training.worker", "--rank", run]


class LocalExecutor(Executor):
    name = "local"
    schedules_locally = True
    options = ("nodes",)

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        super().check(options)
        nodes = int(options.get("nodes") or 1)
        if nodes != 1:
            raise WorkbenchError(f"--nodes {nodes}: the local executor runs on this one machine (use ray or slurm)")
        return {}

    def submit(self, job: dict[str, Any], folder: Path, *, env: dict[str, str]) -> str:
        run = job["run"]
        with open(folder / "train.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workbench.training.worker", run],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=str(PROJECT_ROOT),
                env=worker_env({**env, EXECUTOR_ENV: self.name}),
                start_new_session=True,  # survives the terminal, the browser tab and the CLI
            )
        # reap it when it ends, so that a long-lived parent (the Streamlit server) keeps no zombie
        threading.Thread(target=proc.wait, name=f"reap-{run}", daemon=True).start()
        return str(proc.pid)

    def status(self, job: dict[str, Any]) -> str | None:
        return ACTIVE if processes.is_alive(job["pid"], job["start_token"]) else GONE

    def cancel(self, job: dict[str, Any], *, timeout: float) -> None:
        # the pid is signalled only while it is still the job's process (same start time); SIGKILL goes
        # to the worker's process group (it leads its own session): its loaders and ranks too
        processes.stop(job["pid"], job["start_token"], timeout=timeout, group=True)

    def run_ranks(
        self, job: dict[str, Any], folder: Path, *, nodes: int, per_node: int, should_stop: Callable[[], bool]
    ) -> int:
        return torchrun(rank_command(job["run"], "--standalone", f"--nproc_per_node={per_node}"), should_stop)


EXECUTOR = LocalExecutor()
