"""The torchvision engine: its own entry point (what torchrun runs across machines) and a run
that the time budget ends, in this process."""

from __future__ import annotations

import json
import time

import pytest
import torch

from workbench.paths import models_dir
from workbench.training.engines import torchvision as loop
from workbench.training.registry import resolve_run


@pytest.mark.slow
def test_loop_entry_point_trains_and_registers(tiny_voc, tmp_path):
    config = {
        "data": str(tiny_voc),
        "model": "fasterrcnn_mobilenet_v2",
        "epochs": 1,
        "imgsz": 160,
        "batch": 2,
        "max_iters": 1,
        "workers": 0,
        "max_val_images": 1,
        "device": "cpu",
        "run": "ignored",
    }
    (tmp_path / "train.json").write_text(json.dumps(config))
    folder = models_dir() / "multi-node"
    assert loop.cli(["--config", str(tmp_path / "train.json"), "--run-dir", str(folder)]) == 0
    assert resolve_run("latest") == folder.resolve()
    ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["config"]["max_iters"] == 1 and ckpt["structure"]["frozen"] is not None
    assert json.loads((folder / "config.json").read_text())["run"] == "multi-node"


@pytest.mark.slow
def test_time_budget_ends_a_run_validated_and_saved(tiny_voc, caplog):
    """50 epochs of 4 iterations would take minutes; a 20-second budget ends it, with a checkpoint and a card."""
    config = {
        "data": str(tiny_voc),
        "model": "fasterrcnn_mobilenet_v2",
        "epochs": 50,
        "imgsz": 160,
        "batch": 2,
        "max_iters": 4,
        "workers": 0,
        "max_val_images": 1,
        "device": "cpu",
        "time": 20 / 60,
    }
    folder = models_dir() / "timed"
    t = time.monotonic()
    with caplog.at_level("INFO", logger="workbench.training"):
        card = loop.main(config, folder)
    assert time.monotonic() - t < 40
    assert card["stopped_by_time"] is True and card["time_limit_minutes"] == config["time"]
    assert 1 <= card["epochs_done"] < 50
    assert torch.load(folder / "checkpoint.pth", weights_only=True)["epoch"] == card["epochs_done"] - 1
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == list(range(1, card["epochs_done"] + 1))
    assert "Time limit" in (folder / "MODEL_CARD.md").read_text()
    assert "time budget: validation expected to take" in caplog.text
