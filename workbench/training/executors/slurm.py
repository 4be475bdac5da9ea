"""The Slurm executor: a job is one ``sbatch`` through ``submitit``, one task on each of its nodes.

``submit`` pickles ``run_node`` into ``models/<run>/slurm/`` (submitit's folder: the batch
script, the pickles, each task's ``<jobid>_<task>_log.out``/``.err``) and returns the Slurm job
id. On node 0 the task starts the worker, ``python -m workbench.training.worker RUN``, with the
workspace and models folder as the cluster names them; the worker claims at once (Slurm gave
the turn) and writes ``train.log``. A run of ``gpus`` x ``nodes`` > 1 is one DDP group: the
worker's ``run_ranks`` starts torchrun's node 0, and the task on each other node starts that
node's torchrun (``--nnodes K --node_rank SLURM_NODEID --master_addr <first host>
--master_port <from the job id>``); submitit's ``srun`` launched those tasks, with
``--kill-on-bad-exit`` so that a failed node ends the others.

``status`` asks ``squeue`` (the controller keeps an ended job ``MinJobAge`` seconds), then
submitit's job state (``sacct``) for one the controller has forgotten; ``cancel`` is
``scancel``: SIGTERM to every process of the job (the worker records ``cancelled``), SIGKILL
after the cluster's ``KillWait``.

``WORKBENCH_SLURM_CLUSTER=local`` (a testing and debugging knob) runs the same job through
submitit's local executor on this machine instead: one node, the job id a pid. docs/scale.md.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from workbench.errors import WorkbenchError
from workbench.paths import PROJECT_ROOT
from workbench.training.engines import get_engine
from workbench.training.executors import ACTIVE, EXECUTOR_ENV, GONE, Executor
from workbench.training.executors.local import rank_command, torchrun, worker_env

CLUSTER_ENV = "WORKBENCH_SLURM_CLUSTER"  # "slurm" (default) or "local": submitit's local executor
DEFAULT_TIME = 24 * 60  # minutes
# Slurm's job states (squeue's %T, sacct's State): still queued or running, or ended
ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
ENDED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
}


def cluster() -> str:
    """Where jobs are submitted: ``slurm``, or ``local`` (``WORKBENCH_SLURM_CLUSTER``); checked
    when a job is submitted (a listing never fails on it: anything but ``local`` is Slurm)."""
    name = os.environ.get(CLUSTER_ENV) or "slurm"
    if name not in ("slurm", "local"):
        raise WorkbenchError(f"{CLUSTER_ENV}={name!r}: use slurm (the default) or local")
    return name


def slurm_folder(folder: Path | str) -> Path:
    """submitit's folder of a run: its batch scripts, pickles and task logs."""
    return Path(folder) / "slurm"


def run_node(run: str, env: dict[str, str], ranks: tuple[int, int] | None) -> int:
    """The task submitit runs on each node of the job: the worker on node 0, that node's torchrun
    on the others (``ranks``: nodes and processes on each, ``None`` when the run is one process).
    A worker or torchrun that fails (or is cancelled) ends the task with its exit code."""
    node = submitit.JobEnvironment().node
    full = worker_env({**env, EXECUTOR_ENV: "slurm"})
    if node == 0:
        command = [sys.executable, "-m", "workbench.training.worker", run]
    elif ranks is None:
        return 0  # one process on node 0: nothing runs here
    else:
        command = node_command(run, nodes=ranks[0], per_node=ranks[1])
    code = run_warned(command, env=full)
    if code != 0:  # the task fails (Slurm's state, srun's --kill-on-bad-exit), without a traceback of its own
        print(f"{command[2]} on node {node} exited with code {code}; the run's train.log says why", file=sys.stderr)
        raise SystemExit(code)
    return code


def run_warned(command: list[str], *, env: dict[str, str]) -> int:
    """Run ``command`` to its end; the warning Slurm sends before the time limit (submitit's
    ``--signal=USR2@60``, also sent on preemption) becomes SIGTERM to it, so the worker stops as on
    a cancel (its checkpoint kept, ``--resume`` continues) instead of being killed by the signal or
    requeued from the start by submitit. The child and its own children ignore the warning."""
    warning = submitit.JobEnvironment._usr_sig()
    previous = signal.signal(warning, signal.SIG_IGN)  # "ignored" is inherited through exec
    try:
        proc = subprocess.Popen(command, env=env, cwd=str(PROJECT_ROOT))
        signal.signal(warning, lambda signum, frame: proc.send_signal(signal.SIGTERM))
        return proc.wait()
    finally:
        signal.signal(warning, previous)


def node_command(run: str, *, nodes: int, per_node: int) -> list[str]:
    """This node's torchrun of ``run``'s ranks, placed by the job's environment: the node's rank
    in the job, the first host the rendezvous (a port derived from the job id, so that every node
    derives the same one)."""
    job = submitit.JobEnvironment()
    return rank_command(
        run,
        f"--nnodes={nodes}",
        f"--node_rank={job.node}",
        f"--nproc_per_node={per_node}",
        f"--master_addr={job.hostnames[0]}",
        f"--master_port={master_port(job.job_id)}",
    )


def master_port(job_id: str) -> int:
    """A port from 20000 to 39999 for the job's rendezvous, the same on every node."""
    return 20000 + int(str(job_id).split("_")[0]) % 20000


def _state(text: str) -> str:
    return (text.split() or ["UNKNOWN"])[0].rstrip("+").upper()  # "CANCELLED by 0" -> CANCELLED


class SlurmExecutor(Executor):
    name = "slurm"
    schedules_locally = False
    options = ("partition", "nodes", "time")

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        kept = super().check(options)
        try:
            nodes = int(kept.get("nodes", 1))
            minutes = int(kept.get("time", DEFAULT_TIME))
        except (TypeError, ValueError) as e:
            raise WorkbenchError(f"slurm options {kept}: nodes and time are whole numbers ({e})") from e
        if nodes < 1:
            raise WorkbenchError(f"--nodes {nodes}: at least 1")
        if minutes < 1:
            raise WorkbenchError(f"--slurm-time {minutes}: at least 1 minute")
        out: dict[str, Any] = {"nodes": nodes, "time": minutes}
        if kept.get("partition"):
            out["partition"] = str(kept["partition"])
        if cluster() == "local":
            if nodes != 1:
                raise WorkbenchError(f"--nodes {nodes}: {CLUSTER_ENV}=local runs on this one machine")
        elif not shutil.which("sbatch"):
            raise WorkbenchError("the slurm executor needs Slurm's sbatch on PATH: submit from a Slurm login node")
        return out

    def _executor(self, folder: Path, options: dict[str, Any], gpus: int) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster())
        executor.update_parameters(
            name=f"workbench-{folder.parent.name}",
            nodes=int(options.get("nodes") or 1),
            tasks_per_node=1,
            gpus_per_node=gpus or None,  # a CPU job asks for no GPU at all (no GRES needed)
            timeout_min=int(options.get("time") or DEFAULT_TIME),
        )
        if cluster() == "slurm":
            executor.update_parameters(
                slurm_partition=options.get("partition"),
                slurm_setup=[f"export PYTHONPATH={shlex.quote(str(PROJECT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"],
                slurm_srun_args=["--kill-on-bad-exit=1"],
                slurm_signal_delay_s=60,
            )
        return executor

    def submit(self, job: dict[str, Any], folder: Path, *, env: dict[str, str]) -> str:
        run, options, config = job["run"], job["executor_options"], job["config"]
        nodes = int(options.get("nodes") or 1)
        gpus = max(1, int(config.get("gpus") or 1))
        cuda = str(config.get("device") or "").startswith("cuda")
        distributed = get_engine(config.get("engine")).distributed and nodes * gpus > 1
        executor = self._executor(slurm_folder(folder), options, gpus if cuda else 0)
        try:
            job = executor.submit(run_node, run, dict(env), (nodes, gpus) if distributed else None)
        except (FailedJobError, FailedSubmissionError) as e:  # sbatch's own words
            raise WorkbenchError(f"sbatch refused job {run}: {e}") from e
        return str(job.job_id)

    def status(self, job: dict[str, Any]) -> str | None:
        engine_id = job.get("engine_id")
        if not engine_id:
            return None
        if os.environ.get(CLUSTER_ENV) == "local":
            return ACTIVE if self._local_processes(job) else GONE
        state = self.slurm_state(job)
        if state in ACTIVE_STATES:
            return ACTIVE
        if state in ENDED_STATES or state == "FORGOTTEN":
            return GONE
        return None

    def slurm_state(self, job: dict[str, Any]) -> str:
        """The Slurm state of the job (``FORGOTTEN``: the controller answered, knows no such job
        and neither does ``sacct``; ``UNREACHABLE``: no answer)."""
        engine_id = str(job["engine_id"])
        try:
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-j", engine_id, "-o", "%T"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return "UNREACHABLE"
        if out.returncode == 0 and out.stdout.strip():
            return _state(out.stdout)
        if out.returncode != 0 and "invalid job id" not in out.stderr.lower():
            return "UNREACHABLE"
        # ended longer ago than the controller's MinJobAge: sacct, where the cluster keeps accounting
        watcher = submitit.SlurmJob.watcher
        state = _state(watcher.get_state(engine_id, mode="force"))
        return state if state in ENDED_STATES | ACTIVE_STATES else "FORGOTTEN"

    def cancel(self, job: dict[str, Any], *, timeout: float) -> None:
        if not job.get("engine_id"):
            return
        if os.environ.get(CLUSTER_ENV) == "local":
            self._cancel_local(job, timeout=timeout)
            return
        out = subprocess.run(["scancel", str(job["engine_id"])], capture_output=True, text=True, check=False)
        if out.returncode != 0 and "invalid job id" not in out.stderr.lower():
            raise WorkbenchError(f"scancel {job['engine_id']}: {out.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.status(job) == ACTIVE:
            time.sleep(0.5)

    def logs(self, job: dict[str, Any]) -> str:
        engine_id = job.get("engine_id")
        if not engine_id:
            return ""
        folder = slurm_folder(job["folder"])
        parts = []
        for path in sorted(folder.glob(f"{engine_id}_*_log.*")):
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                parts.append(f"---- {path.name}\n{text.rstrip()}")
        return "\n".join(parts)

    def run_ranks(
        self, job: dict[str, Any], folder: Path, *, nodes: int, per_node: int, should_stop: Callable[[], bool]
    ) -> int:
        return torchrun(node_command(job["run"], nodes=nodes, per_node=per_node), should_stop)

    def _local_processes(self, job: dict[str, Any]) -> list[psutil.Process]:
        """The local cluster's job: its controller (the job id is its pid) and every process under
        it, while the pid is still a submitit controller of this run's folder."""
        try:
            controller = psutil.Process(int(job["engine_id"]))
            if controller.status() == psutil.STATUS_ZOMBIE:
                return []
            if str(slurm_folder(job["folder"])) not in " ".join(controller.cmdline()):
                return []  # the pid was reused
            return [controller, *controller.children(recursive=True)]
        except (psutil.Error, ValueError):
            return []

    def _cancel_local(self, job: dict[str, Any], *, timeout: float) -> None:
        """SIGTERM to every process of the job, as Slurm's ``scancel`` does; SIGKILL after
        ``timeout``."""
        procs = self._local_processes(job)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass


EXECUTOR = SlurmExecutor()
