"""The training loop's own entry point (what torchrun runs across machines), in this process."""

from __future__ import annotations

import json

import torch

from workbench.training import loop
from workbench.training.paths import models_dir
from workbench.training.registry import resolve_run


def test_loop_entry_point_trains_and_registers(tiny_voc, tmp_path):
    config = {"data": str(tiny_voc), "model": "fasterrcnn_mobilenet_v2", "epochs": 1, "imgsz": 160, "batch": 2,
              "max_iters": 1, "workers": 0, "max_val_images": 1, "device": "cpu", "run": "ignored"}  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(config))
    folder = models_dir() / "multi-node"
    assert loop.cli(["--config", str(tmp_path / "train.json"), "--run-dir", str(folder)]) == 0
    assert resolve_run("latest") == folder.resolve()
    ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["config"]["max_iters"] == 1 and ckpt["structure"]["frozen"] is not None
    assert json.loads((folder / "config.json").read_text())["run"] == "multi-node"


def test_lr_schedule_warms_up_then_decays():
    f = loop.lr_lambda(10, 110)
    assert f(0) < 0.01 and abs(f(10) - 1.0) < 1e-9
    assert f(60) < f(10) and abs(f(110) - 0.05) < 1e-9 and f(500) == f(110)
