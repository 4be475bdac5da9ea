"""The table of engines: names, ``check`` (detectron2 missing), and dispatch of prepare, train and load."""

from __future__ import annotations

import dataclasses
import types

import pytest

from workbench.errors import WorkbenchError
from workbench.inference.predict import load_predictor
from workbench.training import jobs, optional
from workbench.training.config import TrainConfig
from workbench.training.engines import DEFAULT_ENGINE, ENGINES, get_engine
from workbench.training.registry import run_dir, write_json


def test_the_table_names_every_engine():
    assert list(ENGINES) == ["torchvision", "detectron2", "two-stage"]
    assert get_engine(None).name == DEFAULT_ENGINE == "torchvision"
    assert all(e.summary for e in ENGINES.values())
    assert [e.name for e in ENGINES.values() if e.distributed] == ["torchvision"]
    with pytest.raises(WorkbenchError, match="unknown engine 'yolo'; choose one of torchvision, detectron2, two-stage"):
        get_engine("yolo")


def test_missing_detectron2_is_refused_before_a_job_starts(tiny_voc, monkeypatch):
    monkeypatch.setattr(optional, "installed", lambda module: module != "detectron2")
    engine = get_engine("detectron2")
    assert not engine.available() and get_engine("torchvision").available()
    with pytest.raises(WorkbenchError, match="the detectron2 engine needs detectron2, which is not installed: build"):
        engine.check()
    with pytest.raises(WorkbenchError, match="needs detectron2"):
        jobs.start_job({"data": str(tiny_voc), "engine": "detectron2"})
    assert not jobs.list_jobs()  # nothing was recorded


def test_prepare_names_the_model(tiny_voc, monkeypatch):
    config = TrainConfig(data=str(tiny_voc), model="fasterrcnn")
    assert get_engine("torchvision").prepare(config) == "fasterrcnn_resnet50_fpn_v2" == config.model
    monkeypatch.setattr(optional, "installed", lambda module: True)
    config = TrainConfig(data=str(tiny_voc), engine="detectron2", model="retinanet_R_50_FPN_3x")
    assert get_engine("detectron2").prepare(config) == "retinanet_R_50_FPN_3x"
    assert config.model == "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
    config = TrainConfig(data=str(tiny_voc), engine="two-stage", detector="mtcnn")
    assert get_engine("two-stage").prepare(config) == "mtcnn-mobilenet_v2" and config.model == "mtcnn+mobilenet_v2"
    with pytest.raises(WorkbenchError, match="one process"):
        get_engine("two-stage").prepare(TrainConfig(data=str(tiny_voc), engine="two-stage", gpus=2))


def test_train_and_load_go_to_the_engine_a_run_names(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(
        main=lambda config, folder, should_stop=None: calls.append(("train", config["engine"])) or {"run": "x"},
        load=lambda folder, config, card, device: calls.append(("load", folder.name, card["run"], device.type)),
    )
    monkeypatch.setitem(ENGINES, "two-stage", dataclasses.replace(ENGINES["two-stage"], module=lambda: fake))
    folder = run_dir("faces")
    folder.mkdir(parents=True)
    write_json(folder / "config.json", {"engine": "two-stage", "model": "m", "classes": ["a"]})
    (folder / "model_best.pth").write_bytes(b"")  # a run with weights: resolve_run accepts it
    assert get_engine("two-stage").train({"engine": "two-stage"}, folder) == {"run": "x"}
    load_predictor("faces", device="cpu")
    assert calls == [("train", "two-stage"), ("load", "faces", "faces", "cpu")]
