"""The training loop's own entry point (what torchrun runs across machines), in this process."""

from __future__ import annotations

import json
import time

import pytest
import torch

from workbench.paths import models_dir
from workbench.training.engines import torchvision as loop
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


def test_time_budget_fraction_reserve_and_stop(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    budget = loop.TimeBudget(10)  # 600 s
    assert budget.reserve() == 30.0 and budget.fraction() == 0.0 and not budget.over()
    now[0] += 285.0
    assert abs(budget.fraction() - 0.5) < 1e-9
    budget.validated(20.0)  # measured: 1.2 * 20 + 5 kept back for the last validation
    now[0] = 100.0 + 600 - 29 - 1
    assert not budget.over()
    now[0] += 2
    assert budget.over() and budget.hit and budget.left() == 28.0
    f = loop.lr_lambda(0, 10**9, budget)  # the epochs are far away, the clock is not: fully decayed
    assert abs(f(1000) - 0.05) < 1e-9
    assert loop.TimeBudget(None).fraction() == 0.0 and not loop.TimeBudget(0).over()


def test_time_budget_ends_the_warm_up_of_a_slow_model(monkeypatch):
    """200 warm-up iterations of 17 s would outlast a 30-minute budget: the clock ends the warm-up."""
    now = [0.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    budget = loop.TimeBudget(30)  # 1800 s, 90 s kept back before the first validation
    f = loop.lr_lambda(200, 3300, budget)
    now[0] = 0.025 * 1710
    assert abs(f(3) - (0.001 + 0.999 * 0.5)) < 1e-9  # half-way through the warm-up by time
    now[0] = 0.05 * 1710
    assert f(5) == 1.0  # warmed up, the decay starts
    now[0] = 0.525 * 1710
    assert abs(f(50) - (0.05 + 0.95 * 0.5)) < 1e-9  # half-way through the decay by time
    assert loop.lr_lambda(200, 3300)(3) < 0.02  # no budget: the iterations decide


def test_time_budget_probe_reserves_the_first_validation(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    calls = []
    per_image = [1.5]  # the model validates slower as it trains (the R50-C4 stand-in: 1.5 s, then 4.9 s)

    def validate(records):  # and 10 s more the first time (loading, allocation)
        calls.append(len(records))
        now[0] += per_image[0] * len(records) + (10.0 if len(calls) == 1 else 0.0)

    budget = loop.TimeBudget(30)  # 1800 s
    budget.probe(validate, list(range(138)))
    assert calls == [1, 2] and budget.eval_seconds == 1.5 * 138  # the warm-up call is not counted
    assert budget.reserve() == 1.3 * 207 + 5  # an estimate: more margin than for a measured validation
    budget.probe(validate, list(range(138)))  # probed already: the training loop's over() probes again
    assert calls == [1, 2]
    per_image[0] = 4.9
    now[0] = 0.2 * (1800 - budget.reserve())
    assert not budget.over() and calls == [1, 2]
    now[0] = 0.26 * (1800 - budget.reserve())  # a quarter of the training time: probed again, no warm-up
    assert not budget.over() and calls == [1, 2, 2] and budget.eval_seconds == pytest.approx(4.9 * 138)
    now[0] = 1800 - budget.reserve() + 1  # room for the slower validation is kept (one more probe: 9.8 s)
    assert budget.over() and calls == [1, 2, 2, 2] and budget.left() == pytest.approx(1.3 * 4.9 * 138 + 5 - 1 - 9.8)
    per_image[0] = 10.0  # an estimate over half the budget (say, a busy machine) leaves half to train
    budget._measure(validate, list(range(138)), 2, warm_up=False)
    assert budget.reserve() == 900
    budget.validated(500.0)
    assert budget.reserve() == 1.2 * 500 + 5
    calls.clear()
    now[0] = 0
    budget.hit = False
    assert not budget.over() and calls == []  # measured: no more probes
    unlimited = loop.TimeBudget(None)
    unlimited.probe(validate, list(range(138)))
    assert calls == [] and unlimited.eval_seconds is None


def test_time_budget_ends_a_run_validated_and_saved(tiny_voc, caplog):
    """50 epochs of 4 iterations would take minutes; a 20-second budget ends it, with a checkpoint and a card."""
    config = {"data": str(tiny_voc), "model": "fasterrcnn_mobilenet_v2", "epochs": 50, "imgsz": 160, "batch": 2,
              "max_iters": 4, "workers": 0, "max_val_images": 1, "device": "cpu", "time": 20 / 60}  # fmt: skip
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
