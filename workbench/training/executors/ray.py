"""The Ray executor: the worker is a Ray job, submitted through Ray's Job Submission API (the
dashboard's address, ``http://HEAD:8265``: ``--ray-address``, else ``$WORKBENCH_RAY_ADDRESS``,
else ``$RAY_ADDRESS``); its submission id is the job's engine id (``<run>-<attempt>-<random>``).

The project is not uploaded (no ``working_dir``): the cluster's nodes import it from the
same folder as this machine names it (``paths.to_shared``: a shared mount, or
``WORKBENCH_PATH_MAP``), with the workspace, the models folder and the datasets; the job's
runtime environment carries their paths, ``PYTHONPATH`` and ``WORKBENCH_EXECUTOR=ray``. The
worker's ``python`` is the one on the cluster's ``PATH`` (start ``ray`` from the project's
virtual environment). docs/scale.md.

Resources: a one-node job's worker trains itself, so it asks for them (``entrypoint_num_gpus``
= ``gpus`` on CUDA, ``entrypoint_num_cpus`` = ``gpus`` processes on the CPU) and runs its DDP
ranks through ``torchrun --standalone`` where it landed. A job across ``nodes`` nodes asks for
nothing itself (Ray runs it on the head node): ``run_ranks`` reserves one bundle per node
(``gpus`` GPUs, or ``gpus`` CPUs) in a ``STRICT_SPREAD`` placement group and runs one torchrun
per bundle as a Ray task, all of them one process group (rank 0's node is the master).

Cancel is Ray's ``stop_job``: SIGTERM to the worker, whose training loop stops at its next
iteration and records ``cancelled``; Ray kills it ``STOP_WAIT_S`` later if it has not ended.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ray
from ray.job_submission import JobStatus, JobSubmissionClient

from workbench.errors import WorkbenchError
from workbench.paths import PROJECT_ROOT, to_shared
from workbench.training.executors import ACTIVE, EXECUTOR_ENV, GONE, Executor
from workbench.training.executors import local as local_executor

log = logging.getLogger("workbench.training")

ADDRESS_ENVS = ("WORKBENCH_RAY_ADDRESS", "RAY_ADDRESS")
STOP_WAIT_S = 30  # seconds Ray waits after SIGTERM before it kills the worker (RAY_JOB_STOP_WAIT_TIME_S)
RUNNING = (JobStatus.PENDING, JobStatus.RUNNING)
CONNECT_TIMEOUT_S = 5.0


def uses_gpus(config: dict[str, Any]) -> bool:
    """Whether the job's config trains on CUDA (``device`` cuda): then it asks Ray for GPUs."""
    return str(config.get("device") or "").startswith("cuda")


def _client(address: str) -> JobSubmissionClient:
    """A client of the cluster at ``address``; a ``WorkbenchError`` when it cannot be reached.

    A TCP connection is tried first, with a timeout: Ray's client waits as long as the system
    does for a host that does not answer, and the job list asks at every refresh."""
    url = urlsplit(address if "://" in address else f"http://{address}")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname or "127.0.0.1", port), timeout=CONNECT_TIMEOUT_S).close()
        return JobSubmissionClient(address)
    except (OSError, RuntimeError, ValueError) as e:
        raise WorkbenchError(
            f"cannot reach the Ray cluster at {address}: {e} (the address is the Ray dashboard's, "
            "http://HEAD:8265; is `ray start --head` running there?)"
        ) from e


def _address(job: dict[str, Any]) -> str:
    return str(job["executor_options"].get("address") or "")


class RayExecutor(Executor):
    name = "ray"
    options = ("address", "nodes")

    def check(self, options: dict[str, Any]) -> dict[str, Any]:
        kept = super().check(options)
        address = kept.get("address") or next((os.environ[k] for k in ADDRESS_ENVS if os.environ.get(k)), "")
        if not address:
            raise WorkbenchError(
                "the ray executor needs the cluster's address: --ray-address http://HEAD:8265 "
                f"(or ${ADDRESS_ENVS[0]}, or ${ADDRESS_ENVS[1]})"
            )
        nodes = int(kept.get("nodes") or 1)
        if nodes < 1:
            raise WorkbenchError(f"--nodes {nodes}: at least 1 node")
        return {"address": str(address), "nodes": nodes}

    def submit(self, job: dict[str, Any], folder: Path, *, env: dict[str, str]) -> str:
        run, options, config = job["run"], job["executor_options"], job["config"]
        address = str(options["address"])
        nodes = int(options.get("nodes") or 1)
        per_node = max(1, int(config.get("gpus") or 1))
        resources: dict[str, Any] = {}
        if nodes == 1:  # the worker trains itself; across nodes the ranks' bundles hold the resources
            key = "entrypoint_num_gpus" if uses_gpus(config) else "entrypoint_num_cpus"
            resources[key] = per_node
        env_vars = {
            **env,
            EXECUTOR_ENV: self.name,
            "PYTHONPATH": to_shared(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1",
            "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S),
        }
        submission_id = f"{run}-{int(job['attempts']) + 1}-{secrets.token_hex(3)}"
        client = _client(address)
        try:
            return client.submit_job(
                entrypoint=f"python -m workbench.training.worker {shlex.quote(run)}",
                submission_id=submission_id,
                runtime_env={"env_vars": env_vars},
                metadata={"workbench_run": run},
                **resources,
            )
        except (ConnectionError, RuntimeError) as e:
            raise WorkbenchError(f"the Ray cluster at {address} refused job {run}: {e}") from e

    def _status(self, job: dict[str, Any]) -> JobStatus | None:
        """Ray's status of the job; ``None`` when the cluster cannot be reached, ``STOPPED`` when
        it does not know the job (a cluster started afresh)."""
        try:
            client = _client(_address(job))
        except WorkbenchError:  # unreachable: cannot be told now
            return None
        try:
            return client.get_job_status(job["engine_id"])
        except RuntimeError as e:
            return JobStatus.STOPPED if "404" in str(e) else None
        except Exception:
            return None

    def status(self, job: dict[str, Any]) -> str | None:
        state = self._status(job)
        if state is None:
            return None
        return ACTIVE if state in RUNNING else GONE

    def cancel(self, job: dict[str, Any], *, timeout: float) -> None:
        if not job.get("engine_id"):
            return  # not submitted yet: the worker, once it starts, finds the job cancelled
        client = _client(_address(job))
        try:
            client.stop_job(job["engine_id"])
        except RuntimeError as e:
            if "404" in str(e):
                return
            raise WorkbenchError(f"Ray could not stop job {job['engine_id']}: {e}") from e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._status(job) not in RUNNING:
                return
            time.sleep(0.5)

    def logs(self, job: dict[str, Any]) -> str:
        if not job.get("engine_id"):
            return ""
        try:
            return _client(_address(job)).get_job_logs(job["engine_id"])
        except Exception:  # unreachable or unknown: no log to show
            return ""

    def run_ranks(
        self, job: dict[str, Any], folder: Path, *, nodes: int, per_node: int, should_stop: Callable[[], bool]
    ) -> int:
        if nodes == 1:  # the worker holds the GPUs (entrypoint_num_gpus): its ranks run here
            command = local_executor.rank_command(job["run"], "--standalone", f"--nproc_per_node={per_node}")
            return local_executor.torchrun(command, should_stop)
        return _run_across_nodes(job, folder, nodes, per_node, should_stop)


def _run_across_nodes(
    job: dict[str, Any], folder: Path, nodes: int, per_node: int, should_stop: Callable[[], bool]
) -> int:
    """One torchrun per node, as Ray tasks in a ``STRICT_SPREAD`` placement group; the first
    nonzero exit code (the others are cancelled then), 0 when all finished."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    run = job["run"]
    gpus = uses_gpus(job["config"])
    log_path = str(folder / "train.log")
    handler = signal.getsignal(signal.SIGTERM)
    ray.init(log_to_driver=False)  # the job's cluster (RAY_ADDRESS, set by Ray for the job)
    signal.signal(signal.SIGTERM, handler)  # ray.init replaced the worker's: cancel must stop training
    bundle = {"CPU": 1, "GPU": per_node} if gpus else {"CPU": per_node}
    group = placement_group([dict(bundle) for _ in range(nodes)], strategy="STRICT_SPREAD")
    try:
        log.info("ray: waiting for %d nodes with %s each (placement group STRICT_SPREAD)", nodes, bundle)
        while not ray.wait([group.ready()], timeout=1.0)[0]:
            if should_stop():
                return 1

        def on(i: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)

        master = ray.get(_master_address.options(scheduling_strategy=on(0)).remote())
        log.info("ray: %d nodes x %d processes, master %s:%d", nodes, per_node, *master)
        launcher = [f"--nnodes={nodes}", f"--nproc_per_node={per_node}", f"--master_addr={master[0]}"]
        launcher.append(f"--master_port={master[1]}")
        refs = [
            _node_ranks.options(
                scheduling_strategy=on(i), num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0)
            ).remote(run, [*launcher, f"--node_rank={i}"], log_path, i)
            for i in range(nodes)
        ]
        return _wait_all(refs, should_stop)
    finally:
        remove_placement_group(group)
        ray.shutdown()


def _wait_all(refs: list[Any], should_stop: Callable[[], bool]) -> int:
    """Wait for the node tasks; cancel the rest once one fails or ``should_stop()``."""
    pending, code, cancelled = list(refs), 0, False
    while pending:
        done, pending = ray.wait(pending, timeout=0.5)
        for ref in done:
            try:
                result = int(ray.get(ref))
            except (ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError) as e:
                log.info("ray: a node's ranks ended: %s", type(e).__name__)
                result = 1
            code = code or result
        if (code or should_stop()) and pending and not cancelled:
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in the task: it SIGTERMs its torchrun
            cancelled = True
    return code


@ray.remote(num_cpus=0)
def _master_address() -> tuple[str, int]:
    """This node's address and a port free on it: the DDP group's master (node 0)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


@ray.remote
def _node_ranks(run: str, launcher: list[str], log_path: str, node: int) -> int:
    """One node's torchrun (its ``--nproc_per_node`` ranks), its output appended to the run's
    ``train.log``; SIGTERM to it when the task is cancelled. Its exit code."""
    command = local_executor.rank_command(run, *launcher)  # this node's python
    where = f"{ray.util.get_node_ip_address()} (ray node {ray.get_runtime_context().get_node_id()[:12]})"
    with open(log_path, "ab") as out:
        out.write(f"ray: node {node} of the DDP group on {where}: {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=str(PROJECT_ROOT), env=local_executor.worker_env({})
        )
    try:
        while proc.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:  # ray.cancel
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    return proc.returncode


EXECUTOR = RayExecutor()
