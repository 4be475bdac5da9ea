"""A real two-node Ray cluster on this machine for the Ray executor's tests.

``ray start --head`` on 127.0.0.1 with 2 CPUs, then a second node (1 CPU) joined to it. Every
port Ray would otherwise take by default (10001, 8265, 52365, ...) is a free one picked here, and
each node has its own short temp folder, so that the cluster never meets another Ray cluster on
the same machine. ``ray stop`` would stop every Ray process of the machine (other people's
clusters too), so the cluster is stopped by signalling only the processes whose command line
names one of its temp folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent  # the virtual environment's ray and python


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class RayCluster:
    """The dashboard's address (the Job Submission API), the GCS address, the temp folders."""

    address: str = ""
    gcs: str = ""
    temp_dirs: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def processes(self) -> list[psutil.Process]:
        """This cluster's processes: those whose command line or environment names its folders."""
        found = []
        marks = [str(d) for d in self.temp_dirs]
        for proc in psutil.process_iter(["cmdline"]):
            try:
                text = " ".join(proc.info["cmdline"] or [])
                if any(m in text for m in marks) or proc.environ().get("WB_TEST_RAY_CLUSTER") == marks[0]:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        for proc in list(found):  # their children too (the dashboard's modules, the agents, workers)
            try:
                found += proc.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        return list({p.pid: p for p in found if p.pid != os.getpid()}.values())

    def stop(self) -> None:
        procs = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in procs:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, procs = psutil.wait_procs(procs, timeout=10)
            if not procs:
                break
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _node_args(ports: list[int], workers: tuple[int, int]) -> list[str]:
    node_manager, object_manager, agent, agent_grpc, runtime_env, metrics = ports
    return [
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--min-worker-port={workers[0]}",
        f"--max-worker-port={workers[1]}",
        "--disable-usage-stats",
    ]


def _worker_ports(count: int = 40) -> tuple[int, int]:
    """A range of ``count`` consecutive ports, all free now, for a node's worker processes."""
    for _ in range(50):
        start = free_ports(1)[0]
        if start + count > 65000:
            continue
        try:
            held = []
            for port in range(start, start + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return start, start + count - 1
    raise RuntimeError("no free range of ports for Ray's workers")


def start_cluster(head_cpus: int = 2, worker_cpus: int = 1, timeout: float = 120.0) -> RayCluster:
    """Start the head and one worker node; return when both are up (``RayCluster.stop`` ends it)."""
    cluster = RayCluster()
    # short paths: Ray's socket paths under the temp folder must fit in 107 bytes
    cluster.temp_dirs = [Path(tempfile.mkdtemp(prefix="wbray", dir="/tmp")) for _ in range(2)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this environment's
    env["WB_TEST_RAY_CLUSTER"] = str(cluster.temp_dirs[0])  # marks every process of the cluster
    env["WORKBENCH_OFFLINE"] = "1"  # the jobs never probe the network for weights
    cluster.env = env
    gcs, dashboard, client, *head_ports = free_ports(9)
    cluster.gcs = f"127.0.0.1:{gcs}"
    cluster.address = f"http://127.0.0.1:{dashboard}"
    ray = str(BIN / "ray")
    try:
        head = [ray, "start", "--head", f"--port={gcs}", f"--num-cpus={head_cpus}", "--num-gpus=0"]
        head += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}"]
        head += [f"--temp-dir={cluster.temp_dirs[0]}", *_node_args(head_ports, _worker_ports())]
        _run(head, env, timeout)
        worker = [ray, "start", f"--address={cluster.gcs}", f"--num-cpus={worker_cpus}", "--num-gpus=0"]
        worker += [f"--temp-dir={cluster.temp_dirs[1]}", *_node_args(free_ports(6), _worker_ports())]
        _run(worker, env, timeout)
        _wait_for_nodes(cluster, 2, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _run(command: list[str], env: dict[str, str], timeout: float) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def _wait_for_nodes(cluster: RayCluster, count: int, timeout: float) -> None:
    """Poll the dashboard until ``count`` nodes are alive."""
    import requests

    deadline = time.monotonic() + timeout
    alive = 0
    while time.monotonic() < deadline:
        try:
            nodes = requests.get(f"{cluster.address}/nodes?view=summary", timeout=5).json()
            summary = nodes.get("data", {}).get("summary", [])
            alive = sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")
            if alive >= count:
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster has {alive} of {count} nodes alive after {timeout:.0f} s")
