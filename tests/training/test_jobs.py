"""Background jobs through the CLI on about 8 real images: finish, resume, cancel, kill, crash, DDP.

Each job is a real detached worker process training 2 iterations at 160 px on the CPU.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from tests.training.conftest import TINY, wait_for
from workbench.cli.main import main
from workbench.fileio import tail_lines
from workbench.paths import models_dir
from workbench.training import jobs, processes

pytestmark = pytest.mark.slow


def cli_json(capsys, *args: str):
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def trained(tiny_voc, tmp_path_factory):
    """One finished tiny run, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("trained")
    env = {"WORKBENCH_HOME": str(root / "home"), "WORKBENCH_MODELS": str(root / "models"), "WORKBENCH_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        code = main(["train", "--data", str(tiny_voc), "--epochs", "1", "--name", "tiny", "--wait", *TINY])
        log = (root / "models" / "tiny" / "train.log").read_text()
    assert code == 0, log
    return env, root / "models" / "tiny"


@pytest.fixture
def trained_env(trained, monkeypatch):
    env, folder = trained
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return folder


def test_finished_job_writes_checkpoint_metrics_and_card(trained_env, capsys):
    folder = trained_env
    [job] = cli_json(capsys, "jobs")
    assert job["run"] == "tiny" and job["state"] == "finished" and job["progress"]["phase"] == "done"
    ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "config", "epoch", "classes"}
    assert ckpt["epoch"] == 0 and ckpt["classes"] == ["without_mask", "with_mask", "mask_weared_incorrect"]
    losses = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in losses] == [0, 1] and all(row["loss"] > 0 for row in losses)
    [metrics] = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert metrics["epoch"] == 1 and 0.0 <= metrics["AP"] <= 1.0 and "AP50" in metrics
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    card = json.loads((folder / "model_card.json").read_text())
    assert card["model"] == "fasterrcnn_mobilenet_v2" and card["engine"] == "torchvision"
    assert card["weights"]["kind"] in ("imagenet", "none") and len(card["dataset_hash"]) == 64
    assert card["classes"] == ckpt["classes"] and card["epochs_done"] == 1 and "AP" in card["best_metrics"]
    assert (folder / "MODEL_CARD.md").read_text().startswith("# Model card: tiny")
    assert (models_dir() / "latest").resolve() == folder.resolve()
    assert "weights: " in (folder / "train.log").read_text()


def test_trained_run_predicts(trained_env, tiny_voc):
    from workbench.fileio import load_image
    from workbench.inference.predict import load_predictor

    predictor = load_predictor("latest", device="cpu")
    assert predictor.card["run"] == "tiny" and predictor.classes[0] == "without_mask"
    image = load_image(next((tiny_voc / "images").iterdir()))
    det = predictor.predict(image, score_threshold=0.0)
    assert det.boxes.shape[1] == 4 and (det.class_ids < 3).all()


def test_crash_marks_the_job_failed_with_its_traceback(tmp_path, capsys):
    (tmp_path / "empty" / "annotations").mkdir(parents=True)  # a VOC layout without a single file
    (tmp_path / "empty" / "annotations" / "a.xml").write_text("<annotation><size>broken")
    code = main(["train", "--data", str(tmp_path / "empty"), "--from", "voc", "--name", "crash", "--wait", *TINY])
    assert code == 1
    [job] = cli_json(capsys, "jobs")
    assert job["state"] == "failed" and job["message"]
    log = (models_dir() / "crash" / "train.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert not (models_dir() / "latest").exists()  # a failed run never becomes latest


def start_slow_job(tiny_voc, name: str) -> dict:
    """A job with many epochs, returned once it is running and has done an iteration."""
    assert main(["train", "--data", str(tiny_voc), "--epochs", "50", "--name", name, *TINY]) == 0
    wait_for(lambda: jobs.get_job(name)["state"] == "running", what=f"{name} running")
    progress = models_dir() / name / "progress.json"
    wait_for(
        lambda: progress.exists() and json.loads(progress.read_text()).get("global_iteration", 0) >= 1,
        what=f"{name} iterating",
    )
    return jobs.get_job(name)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def resume_and_check_logs(capsys, name: str) -> None:
    """Resume ``name`` for one epoch past its checkpoint: the epoch the stop cut short is redone,
    its loss and metric lines dropped first, so every epoch and iteration is logged exactly once;
    the finished run becomes ``latest``."""
    folder = models_dir() / name
    done = torch.load(folder / "checkpoint.pth", weights_only=True)["epoch"] + 1  # epochs completed
    assert main(["train", "--resume", name, "--epochs", str(done + 1), "--wait"]) == 0
    assert [m["epoch"] for m in read_jsonl(folder / "metrics.jsonl")] == list(range(1, done + 2))
    losses = read_jsonl(folder / "losses.jsonl")
    assert [r["iteration"] for r in losses] == list(range(2 * (done + 1)))  # 2 iterations an epoch
    assert [r["epoch"] for r in losses] == [e for e in range(1, done + 2) for _ in range(2)]
    assert f"continuing at epoch {done + 1}" in (folder / "train.log").read_text()
    assert jobs.get_job(name)["state"] == "finished"
    assert (models_dir() / "latest").resolve() == folder.resolve()


def test_cancel_stops_the_job_and_the_run_resumes(tiny_voc, capsys):
    job = start_slow_job(tiny_voc, "cancel-me")
    wait_for(lambda: (models_dir() / "cancel-me" / "checkpoint.pth").exists(), what="a checkpoint")
    capsys.readouterr()
    assert main(["cancel", "cancel-me", "--timeout", "60"]) == 0
    assert "cancel-me: cancelled" in capsys.readouterr().out
    assert not processes.is_alive(job["pid"], job["start_token"])
    assert jobs.get_job("cancel-me")["state"] == "cancelled"
    assert not (models_dir() / "latest").exists()
    assert main(["cancel", "cancel-me"]) == 1  # nothing left to cancel
    resume_and_check_logs(capsys, "cancel-me")


def test_killed_job_is_marked_interrupted_moves_no_latest_and_resumes(tiny_voc, capsys):
    job = start_slow_job(tiny_voc, "kill-me")
    losses = models_dir() / "kill-me" / "losses.jsonl"
    checkpoint = models_dir() / "kill-me" / "checkpoint.pth"

    def mid_epoch() -> bool:  # an epoch past the checkpoint has begun: its lines must go on resume
        if not checkpoint.exists() or not losses.exists():
            return False
        done = torch.load(checkpoint, weights_only=True)["epoch"] + 1
        return any(r["epoch"] > done for r in read_jsonl(losses))

    wait_for(mid_epoch, what="an epoch past a checkpoint")
    os.killpg(job["pid"], signal.SIGKILL)  # like a machine restart: no chance to record anything
    wait_for(lambda: not processes.is_alive(job["pid"], job["start_token"]), what="the worker to die")
    rows = {j["run"]: j for j in cli_json(capsys, "jobs")}
    assert rows["kill-me"]["state"] == "interrupted"
    assert "vanished" in rows["kill-me"]["message"]
    assert not (models_dir() / "latest").exists()  # an interrupted run never becomes latest
    resume_and_check_logs(capsys, "kill-me")


def test_pid_reuse_is_not_mistaken_for_the_job():
    me = os.getpid()
    assert processes.is_alive(me, processes.token(me))
    assert not processes.is_alive(me, "12345")  # same pid, another start time: another process
    assert processes.token(2**22 + 7) is None


def test_resume_continues_from_the_saved_epoch(tiny_voc, capsys):
    """On a run of its own (the shared ``trained`` run stays as the tests reading it expect)."""
    assert main(["train", "--data", str(tiny_voc), "--epochs", "1", "--name", "again", "--wait", *TINY]) == 0
    folder = models_dir() / "again"
    assert main(["train", "--resume", "again", "--epochs", "2", "--wait"]) == 0
    ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    losses = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in losses] == [1, 1, 2, 2] and [r["iteration"] for r in losses] == [0, 1, 2, 3]
    log = (folder / "train.log").read_text()
    assert "resumed from" in log and "continuing at epoch 2" in log
    [job] = cli_json(capsys, "jobs")
    assert job["state"] == "finished" and job["attempts"] == 2


def test_ddp_two_cpu_processes(tiny_voc, capsys):
    """torchrun with the gloo backend: two ranks train together, rank 0 writes the run."""
    code = main(
        [
            "train",
            "--data",
            str(tiny_voc),
            "--epochs",
            "1",
            "--gpus",
            "2",
            "--device",
            "cpu",
            "--name",
            "ddp",
            "--time",
            "5",
            "--wait",
            *TINY,
        ]
    )
    folder = models_dir() / "ddp"
    log = (folder / "train.log").read_text()
    assert code == 0, log
    assert "torch.distributed.run" in log and "DDP: 2 processes, backend gloo" in log
    card = json.loads((folder / "model_card.json").read_text())
    assert card["processes"] == 2
    assert card["time_limit_minutes"] == 5 and card["stopped_by_time"] is False  # the ranks agree on the clock
    assert torch.load(folder / "checkpoint.pth", weights_only=True)["epoch"] == 0


def test_eta_text_and_log_tail(tmp_path):
    assert jobs.eta_text(None) == "-" and jobs.eta_text(3725.9) == "1:02:05" and jobs.eta_text(59) == "0:00:59"
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert tail_lines(log, 3) == "line 4997\nline 4998\nline 4999"
    assert tail_lines(tmp_path / "missing.log") == ""
