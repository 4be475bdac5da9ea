"""A real single-node Slurm cluster on this machine, for the tests: munged with its own key and
socket, a generated ``slurm.conf``, and ``slurmctld`` and ``slurmd`` in the foreground (``-D``)
as child processes, every file in one temporary folder. Debian's ``slurm-wlm`` and ``munge``
(``scripts/setup.sh --test`` installs them); the daemons run as root, as Slurm's daemons do.

``start(folder)`` returns the running cluster or raises ``ClusterUnavailable`` saying why (not
installed, not root, a daemon that died or a node that never came up), for the test to skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "sinfo")


class ClusterUnavailable(Exception):
    """Slurm cannot run here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    conf: Path
    env: dict[str, str]  # what a Slurm client needs: SLURM_CONF
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout, check=False
        )

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Cancel what is left in the queue, stop the daemons, then end any process of a job
        still around (slurmstepd outlives slurmd by design)."""
        if self.procs and all(proc.poll() is None for proc in self.procs):
            self._drain()
        self._stop_daemons()
        sweep(self.folder, self.conf)

    def _drain(self, timeout: float = 45.0) -> None:
        ids = self.run("squeue", "-h", "-o", "%A").stdout.split()
        if ids:
            self.run("scancel", *ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.run("squeue", "-h").stdout.strip():
            time.sleep(0.5)

    def _stop_daemons(self) -> None:
        for proc in reversed(self.procs):  # slurmd, slurmctld, munged
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def sweep(folder: Path, conf: Path) -> list[int]:
    """SIGKILL every process left of the cluster in ``folder``: a slurmstepd (it holds a file of
    the folder open) or a job's process (``SLURM_CONF`` names the folder's ``slurm.conf``)."""
    killed = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "slurmstepd":
                ours = any(f.path.startswith(f"{folder}/") for f in proc.open_files())
            else:
                ours = proc.environ().get("SLURM_CONF") == str(conf)
            if ours and proc.pid != os.getpid():
                proc.kill()
                killed.append(proc.pid)
        except psutil.Error:
            continue
    return killed


def slurm_conf(folder: Path, host: str, munge_socket: Path, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=workbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
KillWait=30
MinJobAge=300
InactiveLimit=0
SlurmdTimeout=60
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _daemon(cluster: Cluster, name: str, *command: str) -> None:
    with open(cluster.folder / f"{name}.out", "ab") as out:  # the daemon keeps its own copy
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env}
        )
    cluster.procs.append(proc)
    time.sleep(0.5)
    if proc.poll() is not None:
        text = (cluster.folder / f"{name}.out").read_text(errors="replace") + cluster.log(name)
        raise ClusterUnavailable(f"{name} exited with code {proc.returncode}: {text.strip()[-600:]}")


def _wait_until(cluster: Cluster, what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.procs:
            if proc.poll() is not None:
                name = DAEMONS[cluster.procs.index(proc)]
                raise ClusterUnavailable(f"{name} died (code {proc.returncode}): {cluster.log(name).strip()[-600:]}")
        if check():
            return
        time.sleep(0.3)
    raise ClusterUnavailable(f"{what} after {timeout:.0f} s; slurmctld.log: {cluster.log('slurmctld').strip()[-600:]}")


def start(folder: Path, *, timeout: float = 60.0) -> Cluster:
    """Start munged, slurmctld and slurmd with everything under ``folder``; the cluster once its
    node is idle in the ``debug`` partition."""
    missing = [name for name in DAEMONS + CLIENTS if not shutil.which(name, path=f"/usr/sbin:{os.environ['PATH']}")]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root to start jobs as their user; these tests are not root")
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chmod(key, 0o400)
    munge_socket = folder / "munge" / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, host, munge_socket, free_port(), free_port()))
    cluster = Cluster(folder=folder, conf=conf, env={"SLURM_CONF": str(conf)})
    sbin = Path("/usr/sbin")
    try:
        munged = shutil.which("munged", path=f"{sbin}:{os.environ['PATH']}")
        _daemon(
            cluster,
            "munged",
            str(munged),
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={munge_socket}",
            f"--pid-file={folder / 'munge' / 'munged.pid'}",
            f"--log-file={folder / 'munged.log'}",
            f"--seed-file={folder / 'munge' / 'munged.seed'}",
        )
        _wait_until(cluster, "munged made no socket", munge_socket.exists, 15)
        _daemon(cluster, "slurmctld", shutil.which("slurmctld", path=f"{sbin}:{os.environ['PATH']}"), "-D", "-i")
        _wait_until(cluster, "slurmctld did not answer", lambda: cluster.run("sinfo", "-h").returncode == 0, timeout)
        _daemon(cluster, "slurmd", shutil.which("slurmd", path=f"{sbin}:{os.environ['PATH']}"), "-D", "-N", host)

        def idle() -> bool:
            state = cluster.run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
            return state.startswith(("idle", "mixed", "allocated"))

        _wait_until(cluster, "the node never became idle", idle, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster
