"""Training jobs on a real two-node Ray cluster on this machine (``tests/training/ray_cluster.py``):
a job submitted through the CLI finishes there, a running one is cancelled there, and a 2-process
gloo DDP job spans both nodes. Each trains 2 iterations of 2 images at 160 px on the CPU.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.training.conftest import TINY
from tests.training.ray_cluster import RayCluster, free_ports, start_cluster
from workbench.cli.main import main
from workbench.paths import models_dir
from workbench.training import jobs, registry
from workbench.training.executors.ray import EXECUTOR


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    started = time.monotonic()
    cluster = start_cluster(head_cpus=2, worker_cpus=1)
    print(f"\nRay cluster up in {time.monotonic() - started:.1f} s at {cluster.address}")
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.processes(), "the test's Ray processes outlived it"


def ray_status(cluster: RayCluster, run: str, *, settled: bool = False) -> JobStatus:
    """Ray's status of the job; ``settled``: once its process has ended (the worker records the
    job's end a moment before it exits)."""
    client = JobSubmissionClient(cluster.address)
    deadline = time.monotonic() + 30
    while True:
        status = client.get_job_status(jobs.get_job(run)["engine_id"])
        if not settled or status.is_terminal() or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def report(capsys, text: str) -> None:
    """A measured time, shown with ``-s`` even where the test captures the output."""
    with capsys.disabled():
        print(text)


def cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_no_address_or_an_unreachable_one_is_refused_clearly(tiny_voc, monkeypatch, capsys):
    monkeypatch.delenv("WORKBENCH_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["train", "--data", str(tiny_voc), "--executor", "ray", "--name", "noaddr", *TINY]) == 1
    assert "needs the cluster's address: --ray-address" in capsys.readouterr().err
    with pytest.raises(Exception, match="no job"):
        jobs.get_job("noaddr")  # refused before anything was recorded
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    monkeypatch.setenv("WORKBENCH_RAY_ADDRESS", closed)  # the variable is read when no flag is given
    assert main(["train", "--data", str(tiny_voc), "--executor", "ray", "--name", "away", *TINY]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the Ray cluster at {closed}" in err and "ray start --head" in err
    job = jobs.get_job("away")
    assert job["state"] == "failed" and "could not submit to ray" in job["message"]
    assert job["executor_options"] == {"address": closed, "nodes": 1}
    # a job whose cluster cannot be reached now is left as it is (None), with no engine log
    running = {**job, "engine_id": "away-1-000000"}
    assert EXECUTOR.status(running) is None and EXECUTOR.logs(running) == ""


@pytest.mark.slow
def test_job_finishes_on_the_cluster(cluster, tiny_voc, capsys):
    started = time.monotonic()
    args = ["train", "--data", str(tiny_voc), "--epochs", "1", "--name", "onray", "--device", "cpu", *TINY]
    assert main([*args, "--executor", "ray", "--ray-address", cluster.address, "--wait"]) == 0, jobs.job_log("onray")[
        -4000:
    ]
    out = capsys.readouterr().out
    report(capsys, f"job on Ray finished in {time.monotonic() - started:.1f} s")
    assert re.search(r"on: +ray job onray-1-[0-9a-f]{6} ", out) and "onray: finished" in out
    assert ray_status(cluster, "onray", settled=True) == JobStatus.SUCCEEDED
    [row] = cli_json(capsys, "jobs")
    assert row["run"] == "onray" and row["state"] == "finished" and row["executor"] == "ray"
    assert row["progress"]["phase"] == "done" and row["progress"]["epochs"] == 1 and "AP" in row["metrics"]
    folder = models_dir() / "onray"
    assert (models_dir() / "latest").resolve() == folder.resolve()
    assert "onray" in [r["run"] for r in registry.list_runs()]
    assert (folder / "checkpoint.pth").is_file() and json.loads((folder / "model_card.json").read_text())[
        "epochs_done"
    ] == 1
    log = jobs.job_log("onray")
    assert "job onray running (ray onray-1-" in log and "job onray finished" in log
    assert "==== ray's log of job onray-1-" in log  # Ray's own log of the job follows train.log
    capsys.readouterr()
    assert main(["jobs"]) == 0 and re.search(r"onray +finished", capsys.readouterr().out)
    # resume: on Ray again (the job's executor and address are kept), as a new submission
    started = time.monotonic()
    assert main(["train", "--resume", "onray", "--epochs", "2", "--wait"]) == 0, jobs.job_log("onray")[-4000:]
    report(capsys, f"resumed job on Ray finished in {time.monotonic() - started:.1f} s")
    job = jobs.get_job("onray")
    assert job["state"] == "finished" and job["attempts"] == 2 and job["executor"] == "ray"
    assert job["engine_id"].startswith("onray-2-") and ray_status(cluster, "onray", settled=True) == JobStatus.SUCCEEDED
    assert "continuing at epoch 2" in (folder / "train.log").read_text()


@pytest.mark.slow
def test_cancel_stops_the_job_on_the_cluster(cluster, tiny_voc, capsys):
    args = ["train", "--data", str(tiny_voc), "--epochs", "200", "--name", "longray", "--device", "cpu", *TINY]
    assert main([*args, "--executor", "ray", "--ray-address", cluster.address]) == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # running on the cluster, and training
        job = next(j for j in jobs.list_jobs() if j["run"] == "longray")
        if job["state"] == "running" and job["progress"].get("iteration") is not None:
            break
        assert job["state"] in jobs.ACTIVE, jobs.job_log("longray")[-3000:]
        time.sleep(0.5)
    else:
        raise AssertionError("the job never started training: " + jobs.job_log("longray")[-3000:])
    assert ray_status(cluster, "longray") == JobStatus.RUNNING
    started = time.monotonic()
    capsys.readouterr()
    assert main(["cancel", "longray", "--timeout", "60"]) == 0
    report(capsys, f"cancel took {time.monotonic() - started:.1f} s")
    assert "longray: cancelled" in capsys.readouterr().out
    assert ray_status(cluster, "longray", settled=True) == JobStatus.STOPPED
    job = jobs.get_job("longray")
    assert job["state"] == "cancelled" and job["cancel_requested"] == 1
    # the worker itself recorded it (SIGTERM reached the training loop, not a kill)
    assert "job longray cancelled" in (models_dir() / "longray" / "train.log").read_text()


@pytest.mark.slow
def test_ddp_group_across_the_two_nodes(cluster, tiny_voc, capsys):
    started = time.monotonic()
    args = ["train", "--data", str(tiny_voc), "--epochs", "1", "--name", "ddpray", "--device", "cpu", *TINY]
    code = main([*args, "--executor", "ray", "--ray-address", cluster.address, "--nodes", "2", "--wait"])
    log = (models_dir() / "ddpray" / "train.log").read_text()
    assert code == 0, log[-5000:]
    report(capsys, f"2-node DDP job on Ray finished in {time.monotonic() - started:.1f} s")
    nodes = dict(re.findall(r"ray: node (\d) of the DDP group on \S+ \(ray node (\w+)\)", log))
    assert set(nodes) == {"0", "1"} and nodes["0"] != nodes["1"], log[-3000:]  # one torchrun on each node
    assert "--nnodes=2" in log and "DDP: 2 processes, backend gloo" in log
    card = json.loads((models_dir() / "ddpray" / "model_card.json").read_text())
    assert card["processes"] == 2
    assert (
        jobs.get_job("ddpray")["state"] == "finished"
        and ray_status(cluster, "ddpray", settled=True) == JobStatus.SUCCEEDED
    )


def test_train_page_passes_the_executor_choice(tiny_voc, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT

    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, **kw: started.append(kw) or "new-run")
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train_executor").options == ["local", "ray", "slurm"]
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input(str(tiny_voc))
    at.selectbox(key="train_executor").select("ray")
    at.text_input(key="train_where").input(" http://10.0.0.5:8265 ")
    at.number_input(key="train_nodes").set_value(2)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    assert started == [{"executor": "ray", "executor_options": {"address": "http://10.0.0.5:8265", "nodes": 2}}]
    started.clear()
    at.selectbox(key="train_executor").select("local")
    at.button[0].click()
    at.run()
    assert started == [{"executor": "local", "executor_options": {}}]
