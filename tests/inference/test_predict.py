"""The predictor API on a registered run (a bare model saved by hand: no training needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.annotations import Detections, detections_to_json
from workbench.errors import WorkbenchError
from workbench.inference.predict import load_predictor
from workbench.training.models import build_model
from workbench.training.registry import resolve_run, run_dir, set_latest, write_json


def make_run(name: str, classes=("with_mask", "without_mask")) -> None:
    folder = run_dir(name)
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("fasterrcnn_mobilenet_v2", len(classes) + 1, weights=None, imgsz=160)
    # make every box confident: a large background-vs-class bias
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1:] = 5.0
    write_json(
        folder / "config.json",
        {"engine": "torchvision", "model": "fasterrcnn_mobilenet_v2", "imgsz": 160, "classes": list(classes)},
    )
    torch.save({"model": model.state_dict(), "classes": list(classes), "epoch": 0}, folder / "checkpoint.pth")
    return folder


def test_no_model_yet_is_a_clear_error():
    with pytest.raises(WorkbenchError, match="no trained model yet"):
        load_predictor("latest")
    with pytest.raises(WorkbenchError, match="no trained model 'nope'"):
        resolve_run("nope")


def test_resolve_latest_name_and_path():
    folder = make_run("r1")
    assert resolve_run("r1") == folder and resolve_run(folder) == folder
    set_latest(folder)
    assert resolve_run("latest") == folder.resolve()
    make_run("r2")
    assert resolve_run("latest") == folder.resolve()  # only set_latest moves it


def test_predict_gives_boxes_in_the_original_pixels():
    folder = make_run("r1")
    predictor = load_predictor(folder, device="cpu")
    assert predictor.classes == ["with_mask", "without_mask"]
    assert predictor.card["model"] == "fasterrcnn_mobilenet_v2" and predictor.card["finished"] is False
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)
    det = predictor.predict(image, score_threshold=0.0)
    assert isinstance(det, Detections) and len(det) > 0
    assert det.boxes.dtype == np.float64 and det.boxes.shape == (len(det), 4)
    assert det.class_ids.dtype == np.int64 and set(det.class_ids) <= {0, 1}
    assert (np.diff(det.scores) <= 0).all()  # best first
    # the model works at 160 px; boxes come back in the 500 x 300 image
    assert det.boxes[:, 2].max() > 200 and det.boxes[:, 2].max() <= 500 and det.boxes[:, 3].max() <= 300
    high = predictor.predict(image, score_threshold=0.9)
    assert len(high) < len(det) and (high.scores >= 0.9).all()
    batch = predictor.predict_batch([image, image[:100, :150]], score_threshold=0.0)
    # (batched images are padded together, so scores may differ slightly from one at a time)
    assert len(batch) == 2 and len(batch[0]) > 0 and batch[0].boxes[:, 2].max() > 200
    assert 0 < batch[1].boxes[:, 2].max() <= 150 and batch[1].boxes[:, 3].max() <= 100
    assert detections_to_json(det[:1], predictor.classes)[0]["class"] in predictor.classes


def test_predict_refuses_a_wrong_image():
    predictor = load_predictor(make_run("r1"), device="cpu")
    with pytest.raises(WorkbenchError, match="uint8"):
        predictor.predict(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(WorkbenchError, match="RGB"):
        predictor.predict(np.zeros((10, 10, 5), dtype=np.uint8))


def test_detections_check_shapes():
    assert len(Detections()) == 0 and Detections().boxes.shape == (0, 4)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
