"""The Slurm executor against a real single-node Slurm started here (``slurm_cluster``), and the
same code path through submitit's local executor (``WORKBENCH_SLURM_CLUSTER=local``), which runs
wherever Slurm cannot start. Each job trains 2 iterations at 160 px on the CPU, submitted
through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.conftest import TINY, wait_for
from tests.training.slurm_cluster import ClusterUnavailable, start
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.paths import models_dir
from workbench.training import jobs, registry
from workbench.training.executors import ACTIVE, GONE, get_executor
from workbench.training.executors.slurm import CLUSTER_ENV, DEFAULT_TIME, master_port, node_command

SLURM = get_executor("slurm")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A real slurmctld + slurmd + munged on this machine for the module; skips saying why not."""
    try:
        cluster = start(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as e:
        pytest.skip(f"Slurm cannot start on this machine: {e}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in cluster.env.items():
            mp.setenv(key, value)
        yield cluster
    cluster.stop()


@pytest.fixture(params=["slurm", "local"])
def where(request, monkeypatch):
    """Each test on the real Slurm, then through submitit's local executor."""
    if request.param == "slurm":
        request.getfixturevalue("slurm_cluster")
        monkeypatch.delenv(CLUSTER_ENV, raising=False)
    else:
        monkeypatch.setenv(CLUSTER_ENV, "local")
    return request.param


def jobs_json(capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["jobs", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def slurm_train(data: Path, name: str, *args: str) -> int:
    return main(["train", "--data", str(data), "--name", name, "--executor", "slurm", "--partition", "debug", *args])


def test_options_are_checked_and_completed(monkeypatch, tmp_path):
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    assert SLURM.check({}) == {"nodes": 1, "time": DEFAULT_TIME}
    assert SLURM.check({"partition": "gpu", "nodes": 2, "time": 30}) == {"partition": "gpu", "nodes": 2, "time": 30}
    with pytest.raises(WorkbenchError, match="the slurm executor takes no address option"):
        SLURM.check({"address": "ray://x"})
    with pytest.raises(WorkbenchError, match="--nodes 0: at least 1"):
        SLURM.check({"nodes": 0})
    with pytest.raises(WorkbenchError, match="--slurm-time -5: at least 1 minute"):
        SLURM.check({"time": -5})
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(WorkbenchError, match="needs Slurm's sbatch on PATH"):
        SLURM.check({})
    monkeypatch.setenv(CLUSTER_ENV, "local")  # the local stand-in needs no Slurm, and has one node
    assert SLURM.check({"time": 5}) == {"nodes": 1, "time": 5}
    with pytest.raises(WorkbenchError, match="--nodes 2: WORKBENCH_SLURM_CLUSTER=local runs on this one machine"):
        SLURM.check({"nodes": 2})
    monkeypatch.setenv(CLUSTER_ENV, "k8s")
    with pytest.raises(WorkbenchError, match="WORKBENCH_SLURM_CLUSTER='k8s'"):
        SLURM.check({})


def test_each_node_places_its_torchrun_from_the_slurm_environment(monkeypatch):
    """What a task on the second of two nodes sees (Slurm's own variables), and what it runs."""
    env = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "40123", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2"}
    for key, value in {**env, "SLURM_JOB_NODELIST": "gpu-[07-08]"}.items():
        monkeypatch.setenv(key, value)
    command = node_command("r1", nodes=2, per_node=4)
    assert command[1:3] == ["-m", "torch.distributed.run"] and command[-3:] == [
        "workbench.training.worker",
        "--rank",
        "r1",
    ]
    assert command[3:8] == [
        "--nnodes=2",
        "--node_rank=1",
        "--nproc_per_node=4",
        "--master_addr=gpu-07",
        f"--master_port={master_port('40123')}",
    ]
    assert master_port("40123") == 20123 and master_port("40123_3") == 20123 and 20000 <= master_port("19999") < 40000


def test_the_time_limit_warning_stops_the_worker_as_a_cancel_does(tmp_path):
    """Slurm's USR2 before the time limit reaches every process of the job: the worker must not die
    of it; the task turns it into the SIGTERM the worker stops on."""
    child = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        f"pathlib.Path({str(tmp_path / 'up')!r}).touch()\n"
        "time.sleep(60)\n"
    )
    parent = (
        "import os, signal, sys, threading, time\n"
        "from workbench.training.executors.slurm import run_warned\n"
        "def warn():\n"
        f"    while not os.path.exists({str(tmp_path / 'up')!r}): time.sleep(0.05)\n"
        "    os.killpg(0, signal.SIGUSR2)  # as Slurm does: every process of the job\n"
        "threading.Thread(target=warn, daemon=True).start()\n"
        f"sys.exit(run_warned([sys.executable, '-c', {child!r}], env=dict(os.environ)))\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", parent], start_new_session=True, timeout=30, check=False)
    assert proc.returncode == 7 and time.monotonic() - start < 20


@pytest.mark.slow
def test_a_job_slurm_refuses_is_failed_with_sbatchs_words(slurm_cluster, tiny_voc, monkeypatch, capsys):
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    code = main(["train", "--data", str(tiny_voc), "--name", "nowhere", "--executor", "slurm", "--partition", "nope"])
    assert code == 1 and "sbatch refused job nowhere" in capsys.readouterr().err
    job = jobs.get_job("nowhere")
    assert job["state"] == "failed" and job["engine_id"] is None
    assert job["message"].startswith("could not submit to slurm") and "invalid partition" in job["message"].lower()


@pytest.mark.slow
def test_a_job_trains_on_slurm_and_lands_in_the_registry(where, tiny_voc, capsys):
    code = slurm_train(tiny_voc, "on-slurm", "--epochs", "1", "--slurm-time", "10", "--wait", *TINY)
    folder = models_dir() / "on-slurm"
    assert code == 0, (folder / "train.log").read_text() + jobs.job_log("on-slurm")
    [job] = jobs_json(capsys)
    assert job["run"] == "on-slurm" and job["state"] == "finished" and job["executor"] == "slurm"
    assert job["executor_options"] == {"partition": "debug", "nodes": 1, "time": 10} and job["engine_id"].isdigit()
    assert job["progress"]["phase"] == "done" and "AP" in job["metrics"]
    assert (models_dir() / "latest").resolve() == folder.resolve()
    [run] = registry.list_runs()
    assert run["run"] == "on-slurm" and run["card"]["epochs_done"] == 1
    log = (folder / "train.log").read_text()
    assert f"job on-slurm running (slurm {job['engine_id']}, pid" in log and "job on-slurm finished" in log
    job = jobs.get_job("on-slurm")
    wait_for(lambda: SLURM.status(job) == GONE, 30, "the job's end")  # the worker recorded it just before
    if where == "slurm":
        assert SLURM.slurm_state(job) == "COMPLETED"
        script = next((folder / "slurm").glob(f"{job['engine_id']}_submission.sh")).read_text()
        assert "#SBATCH --partition=debug" in script and "#SBATCH --time=10" in script
        assert "#SBATCH --ntasks-per-node=1" in script and "--kill-on-bad-exit=1" in script
        assert "--gpus-per-node" not in script  # a CPU job
    capsys.readouterr()
    assert main(["logs", "on-slurm"]) == 0
    out = capsys.readouterr().out
    assert f"==== slurm's log of job {job['engine_id']}" in out and "Job completed successfully" in out


@pytest.mark.slow
def test_cancel_stops_a_running_slurm_job(where, tiny_voc, capsys):
    assert slurm_train(tiny_voc, "stop-me", "--epochs", "50", *TINY) == 0
    progress = models_dir() / "stop-me" / "progress.json"
    wait_for(
        lambda: progress.exists() and json.loads(progress.read_text()).get("global_iteration", 0) >= 1,
        what="stop-me iterating",
    )
    job = jobs.get_job("stop-me")
    assert job["state"] == "running" and SLURM.status(job) == ACTIVE
    if where == "slurm":
        assert SLURM.slurm_state(job) == "RUNNING"
    capsys.readouterr()
    assert main(["cancel", "stop-me", "--timeout", "60"]) == 0
    assert "stop-me: cancelled" in capsys.readouterr().out
    assert SLURM.status(job) == GONE
    if where == "slurm":
        assert SLURM.slurm_state(job) == "CANCELLED"
    [row] = jobs_json(capsys)
    assert row["state"] == "cancelled" and row["message"].startswith("cancelled")  # the worker's
    assert "job stop-me cancelled" in (models_dir() / "stop-me" / "train.log").read_text()
    assert not (models_dir() / "latest").exists()
    if where == "slurm":  # a resume is a new Slurm job with the same options, the row's new config
        assert main(["train", "--resume", "stop-me", "--epochs", "1", "--slurm-time", "20", "--wait"]) == 0
        again = jobs.get_job("stop-me")
        assert again["state"] == "finished" and again["engine_id"] != job["engine_id"] and again["attempts"] == 2
        assert again["executor_options"] == {"partition": "debug", "nodes": 1, "time": 20}
        assert (models_dir() / "latest").resolve() == (models_dir() / "stop-me").resolve()


@pytest.mark.slow
def test_a_failing_job_is_failed_on_slurm_too(where, tmp_path, capsys):
    (tmp_path / "broken" / "annotations").mkdir(parents=True)  # a VOC layout whose one file is broken
    (tmp_path / "broken" / "annotations" / "a.xml").write_text("<annotation><size>broken")
    assert slurm_train(tmp_path / "broken", "crash", "--from", "voc", "--wait", *TINY) == 1
    job = jobs.get_job("crash")
    assert job["state"] == "failed" and job["message"]
    assert "Traceback (most recent call last)" in (models_dir() / "crash" / "train.log").read_text()
    wait_for(lambda: SLURM.status(job) == GONE, 30, "the job's end")
    if where == "slurm":
        assert SLURM.slurm_state(job) == "FAILED"
    assert "workbench.training.worker on node 0 exited with code 1" in jobs.job_log("crash")
    assert not (models_dir() / "latest").exists()


@pytest.mark.slow
def test_a_job_killed_on_the_cluster_is_marked_interrupted(slurm_cluster, tiny_voc, monkeypatch):
    """The worker killed on its node (the OOM killer, kill -9): nothing records the end but Slurm,
    and the next listing marks the row from Slurm's state."""
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    assert slurm_train(tiny_voc, "killed", "--epochs", "50", *TINY) == 0
    job = wait_for(lambda: (j := jobs.get_job("killed"))["state"] == "running" and j, what="killed running")
    os.kill(job["pid"], signal.SIGKILL)  # the worker's pid, on this one node
    wait_for(lambda: SLURM.status(job) == GONE, 60, "the job's end")
    assert SLURM.slurm_state(job) == "FAILED"
    assert jobs.reap() == ["killed"] and jobs.get_job("killed")["state"] == "interrupted"


@pytest.mark.slow
def test_two_ddp_ranks_run_under_slurm(slurm_cluster, tiny_voc, monkeypatch):
    """torchrun placed by the Slurm job's environment (its host, a port from its job id)."""
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    code = slurm_train(tiny_voc, "ddp", "--epochs", "1", "--gpus", "2", "--device", "cpu", "--wait", *TINY)
    log = (models_dir() / "ddp" / "train.log").read_text()
    assert code == 0, log + jobs.job_log("ddp")
    engine_id = jobs.get_job("ddp")["engine_id"]
    assert f"--master_port={master_port(engine_id)}" in log and "--node_rank=0" in log
    assert "DDP: 2 processes, backend gloo" in log
    assert json.loads((models_dir() / "ddp" / "model_card.json").read_text())["processes"] == 2
    wait_for(lambda: SLURM.status(jobs.get_job("ddp")) == GONE, 30, "the job's end")
    assert os.environ.get("SLURM_CONF")  # the test's commands went to the test's cluster
