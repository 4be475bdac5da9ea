"""``build_config``: the one merge of a recipe (or the defaults) with the user's overrides, which
``workbench train`` and the Train page both call."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.training import jobs
from workbench.training.config import DEFAULTS, FIELDS, TrainConfig, build_config
from workbench.training.recipes import recipe_config


def test_unknown_key_is_refused_by_name(tiny_voc):
    with pytest.raises(WorkbenchError, match=r"unknown training option 'epoch' \(did you mean 'epochs'\?\)"):
        build_config(None, "cpu", {"data": str(tiny_voc), "epoch": 3})
    with pytest.raises(WorkbenchError, match="unknown training option 'colour'"):
        TrainConfig.from_dict({"data": str(tiny_voc), "colour": 0.1})
    with pytest.raises(WorkbenchError, match="needs 'data'"):
        build_config(None, "cpu", {"epochs": 3})
    with pytest.raises(WorkbenchError, match="unknown recipe 'yolo'"):
        build_config("yolo", "cpu", {"data": str(tiny_voc)})


def test_defaults_without_a_recipe(tiny_voc):
    config = build_config(None, None, {"data": str(tiny_voc)})
    assert set(config) == set(FIELDS)
    assert {k: config[k] for k in DEFAULTS} == DEFAULTS and config["device"] == "auto" and config["recipe"] is None
    assert config["data"] == str(tiny_voc.resolve())


def test_overrides_win_over_the_recipe(tiny_voc):
    config = build_config("retinanet-frozen", "cpu", {"data": str(tiny_voc), "batch": 2, "time": None})
    resolved = recipe_config("retinanet-frozen", device="cpu")["model"]  # MobileNetV2 without ResNet-50 weights
    assert config["recipe"] == "retinanet-frozen" and config["model"] == resolved
    assert config["freeze_backbone"] is True and config["rotation"] == 10.0 and config["epochs"] == 12
    assert config["batch"] == 2 and config["time"] is None  # None is a value: no time limit
    assert config["device"] == "cpu"
    gpu = build_config("faster-rcnn-upload", "cuda", {"data": str(tiny_voc), "epochs": 3})
    assert gpu["model"] == "fasterrcnn_resnet50_fpn_v2" and gpu["batch"] == 8 and gpu["epochs"] == 3


def test_data_is_resolved_like_the_datasets_page_does(tiny_voc, monkeypatch):
    monkeypatch.setenv("HOME", str(tiny_voc.parent))
    assert build_config(None, "cpu", {"data": f"~/{tiny_voc.name}"})["data"] == str(tiny_voc.resolve())


def from_cli(monkeypatch, args: list[str]) -> dict:
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None, **_: started.append(config) or "new-run")
    monkeypatch.setattr(jobs, "get_job", lambda run: {"folder": "/nowhere", "executor": "local"})
    assert main(["train", *args]) == 0
    return started[0]


def from_page(monkeypatch, *, recipe: str | None = None, data: str, **fields) -> dict:
    started = []
    monkeypatch.setattr(jobs, "start_job", lambda config, run=None, **_: started.append(config) or "new-run")
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
    at.selectbox(key="train_recipe").select(recipe or "(none)").run()
    suffix = f"_{recipe}" if recipe else ""
    at.selectbox(key="train_dataset").select("Other folder...")
    at.text_input(key="train_other").input(data)
    at.selectbox(key="train_device").select("cpu")
    for key, value in fields.items():
        if key == "model":
            at.selectbox(key="train_model_torchvision").select(value)
        else:
            at.number_input(key=f"train_{key}{suffix}").set_value(value)
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    return started[0]


def test_the_cli_and_the_page_build_the_same_config(tiny_voc, monkeypatch):
    data = str(tiny_voc)
    cli = from_cli(
        monkeypatch, ["--recipe", "retinanet-frozen", "--data", data, "--device", "cpu", "--batch", "2", "--time", "10"]
    )
    page = from_page(monkeypatch, recipe="retinanet-frozen", data=data, batch=2, time=10)
    assert cli == page and cli["batch"] == 2 and cli["time"] == 10 and cli["recipe"] == "retinanet-frozen"
    cli = from_cli(
        monkeypatch, ["--data", data, "--model", "fasterrcnn_mobilenet_v2", "--epochs", "3", "--device", "cpu"]
    )
    page = from_page(monkeypatch, data=data, model="fasterrcnn_mobilenet_v2", epochs=3)
    assert cli == page and cli["epochs"] == 3 and cli["engine"] == "torchvision"
