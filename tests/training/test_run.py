"""What every engine shares: the schedule, the run's files, resume, and the one epoch end."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.training import run as run_module
from workbench.training.budget import TimeBudget
from workbench.training.config import TrainConfig
from workbench.training.run import (
    Best,
    Cancelled,
    EpochEnd,
    Progress,
    end_epoch,
    lr_lambda,
    prepare_run,
    resume_checkpoint,
    truncate_logs,
)


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda(10, 110)
    assert f(0) < 0.01 and abs(f(10) - 1.0) < 1e-9
    assert f(60) < f(10) and abs(f(110) - 0.05) < 1e-9 and f(500) == f(110)


def epoch_end(folder, *, stop=lambda: False, plots=None) -> EpochEnd:
    progress = Progress(folder, epochs=3, iters_per_epoch=5, start_epoch=0)
    return EpochEnd(folder, progress, TimeBudget(None), stop, Best(), plots=plots)


def test_end_epoch_writes_metrics_and_keeps_the_best(tmp_path):
    plotted = []
    ending = epoch_end(tmp_path, plots=plotted.append)
    for epoch, ap in enumerate([0.2, 0.1, 0.3]):
        row = end_epoch(
            ending,
            epoch=epoch,
            validate=lambda ap=ap: {"AP": ap + 1e-7, "AP50": 0.5, "val_accuracy": 0.75},
            checkpoint={"epoch": epoch},
            best_weights={"epoch": epoch, "model": {}},
        )
        assert row == {"epoch": epoch + 1, "AP": round(ap, 5), "AP50": 0.5, "val_accuracy": 0.75}
        best = torch.load(tmp_path / "model_best.pth", weights_only=True)
        assert best["epoch"] == [0, 0, 2][epoch]  # only a better AP replaces model_best.pth
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["AP"] for r in rows] == [0.2, 0.1, 0.3]
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["best_ap"] == 0.3 and checkpoint["best_metrics"]["epoch"] == 3
    assert ending.best.ap == 0.3 and plotted == [tmp_path] * 3
    assert ending.budget.eval_seconds is not None  # the validation was timed for the budget
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["phase"] == "checkpoint" and progress["AP"] == 0.3


def test_end_epoch_is_cancelled_during_the_validation(tmp_path):
    with pytest.raises(Cancelled, match="validation of epoch 2"):
        end_epoch(epoch_end(tmp_path, stop=lambda: True), epoch=1, validate=dict, checkpoint={}, best_weights={})
    assert not (tmp_path / "checkpoint.pth").exists()


def test_prepare_run_writes_config_and_split_and_resume_keeps_them(tiny_voc, tmp_path):
    config = TrainConfig(data=str(tiny_voc), max_val_images=1)
    run = prepare_run(config, tmp_path / "run")
    assert config.classes and run["class_map"] and len(run["val"]) == 1 and len(run["hash"]) == 64
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["run"] == "run" and saved["classes"] == config.classes
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train"] == [r.path for r in run["train"]]
    assert resume_checkpoint(tmp_path / "run", config, same=("seed",)) is None
    torch.save(
        {"config": {**config.to_dict(), "seed": 7}, "classes": ["b", "a"], "epoch": 0},
        tmp_path / "run" / run_module.CHECKPOINT,
    )
    again = TrainConfig(data=str(tiny_voc), seed=3)
    assert resume_checkpoint(tmp_path / "run", again, same=("seed",))["epoch"] == 0
    assert again.seed == 7 and again.classes == ["b", "a"]  # the saved run's, not the resume's
    unwritten = prepare_run(TrainConfig(data=str(tiny_voc)), tmp_path / "rank1", write=False)
    assert unwritten["train"] and not (tmp_path / "rank1" / "config.json").exists()


def test_truncate_logs_drops_the_epochs_being_redone(tmp_path):
    (tmp_path / "losses.jsonl").write_text("".join(json.dumps({"epoch": e, "loss": 1.0}) + "\n" for e in (1, 2, 3)))
    truncate_logs(tmp_path, 2)
    assert [json.loads(x)["epoch"] for x in (tmp_path / "losses.jsonl").read_text().splitlines()] == [1, 2]
