"""The detectron2 engine. It is optional: these tests skip, saying why, where it is not installed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.conftest import TINY
from workbench.cli.main import main
from workbench.paths import models_dir
from workbench.training.engines import detectron2 as engine_detectron2
from workbench.training.engines import get_engine

needs_d2 = pytest.mark.skipif(
    not get_engine("detectron2").available(),
    reason="detectron2 is not installed (optional engine; build it from source to run these tests)",
)


@pytest.mark.skipif(get_engine("detectron2").available(), reason="detectron2 is installed")
def test_missing_detectron2_is_a_clear_error(tiny_voc, capsys):
    assert main(["train", "--data", str(tiny_voc), "--engine", "detectron2"]) == 1
    assert "needs detectron2, which is not installed" in capsys.readouterr().err


def test_model_zoo_names():
    assert engine_detectron2.zoo_name("default") == "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"
    assert engine_detectron2.zoo_name("retinanet_R_50_FPN_3x") == "COCO-Detection/retinanet_R_50_FPN_3x.yaml"


@needs_d2
def test_dataset_dicts_for_the_catalog(tiny_voc):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    from workbench.formats import load_dataset
    from workbench.splits import ClassMap, freeze_classes

    ds = load_dataset(tiny_voc)
    classes = freeze_classes(ds)
    dicts = engine_detectron2.dataset_dicts(ds, ds.images, ClassMap.build(ds, classes))
    first = dicts[0]
    assert first["file_name"].endswith(ds.images[0].path) and first["width"] == ds.images[0].width
    boxes = np.array([a["bbox"] for a in first["annotations"]])
    assert np.allclose(boxes, ds.images[0].boxes)  # XYXY_ABS, the internal model's own pixels
    assert all(a["bbox_mode"] == BoxMode.XYXY_ABS for a in first["annotations"])
    ids = [a["category_id"] for d in dicts for a in d["annotations"]]
    assert min(ids) == 0 and max(ids) <= 2  # detectron2 ids are 0-based, no background
    name = engine_detectron2.register("wb_test", dicts, classes)
    assert DatasetCatalog.get(name) == dicts and MetadataCatalog.get(name).thing_classes == classes


@pytest.mark.slow
@needs_d2
def test_a_weights_file_is_the_checkpoint_detectron2_loads(tmp_path):
    from workbench.training.config import TrainConfig

    path = tmp_path / "model_final.pth"
    path.write_bytes(b"a detectron2 checkpoint")  # loaded when training starts; make_cfg only names it
    config = TrainConfig.from_dict({"data": str(tmp_path), "engine": "detectron2", "model": "default", "imgsz": 256})
    cfg, info = engine_detectron2.make_cfg(config, num_classes=3, weights=str(path))
    assert cfg.MODEL.WEIGHTS == str(path)
    assert info["kind"] == "file" and info["file"] == str(path) and len(info["sha256"]) == 16


@needs_d2
def test_detectron2_trains_and_predicts(tiny_voc):
    from workbench.fileio import load_image
    from workbench.inference.predict import load_predictor

    code = main(
        [
            "train",
            "--data",
            str(tiny_voc),
            "--engine",
            "detectron2",
            "--model",
            "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
            "--epochs",
            "1",
            "--name",
            "d2",
            "--wait",
            *TINY,
        ]
    )
    folder = models_dir() / "d2"
    assert code == 0, (folder / "train.log").read_text()
    card = json.loads((folder / "model_card.json").read_text())
    assert card["engine"] == "detectron2" and card["model"].endswith("faster_rcnn_R_50_C4_1x.yaml")
    assert len((folder / "losses.jsonl").read_text().splitlines()) == 2
    assert "AP" in json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
    predictor = load_predictor("latest", device="cpu")
    image = load_image(next((tiny_voc / "images").iterdir()))
    det = predictor.predict(image, score_threshold=0.0)
    assert det.boxes.shape[1] == 4 and (det.class_ids >= 0).all() and (det.class_ids < 3).all()
    if len(det):
        assert det.boxes[:, 2].max() <= image.shape[1] + 1e-3


@pytest.mark.slow
@needs_d2
def test_detectron2_time_budget_ends_the_run(tiny_voc):
    """40 epochs of 2 iterations of R50-C4 take minutes on the CPU; a 40-second budget ends the run, validated."""
    config = {
        "data": str(tiny_voc),
        "engine": "detectron2",
        "model": "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
        "epochs": 40,
        "imgsz": 160,
        "batch": 2,
        "max_iters": 2,
        "workers": 0,
        "max_val_images": 2,
        "device": "cpu",
        "time": 40 / 60,
    }
    card = engine_detectron2.main(config, models_dir() / "d2-timed")
    assert card["stopped_by_time"] is True and card["time_limit_minutes"] == config["time"]
    assert 1 <= card["epochs_done"] < 40 and card["seconds"] < 80
    rows = (models_dir() / "d2-timed" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == card["epochs_done"]
