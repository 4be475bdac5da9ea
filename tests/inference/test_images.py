"""workbench.inference.images: image files from the inputs, prediction over images and folders
(annotated images and COCO files written), batched prediction over records, and ``workbench
predict`` on the session's tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TinyModel, write_image
from workbench.annotations import Detections, ImageRecord
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.inference import predict as predict_module
from workbench.inference.images import image_files, predict_inputs, predict_records


class FakePredictor:
    """One box in class 1 at the image's top-left quarter; records what it was asked."""

    def __init__(self, run_dir) -> None:
        self.classes = ["cat", "dog"]
        self.run_dir = run_dir
        self.calls: list[tuple] = []

    def predict(self, image: np.ndarray, *, score_threshold: float, iou_threshold: float) -> Detections:
        self.calls.append((image.shape, score_threshold, iou_threshold))
        h, w = image.shape[:2]
        return Detections([[0, 0, w / 2, h / 2]], [0.75], [1])

    def predict_batch(self, images, *, score_threshold, iou_threshold, max_detections):
        self.calls.append((len(images), score_threshold, max_detections))
        return [Detections([[0, 0, 1, 1]], [0.5], [0]) for _ in images]


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakePredictor:
    predictor = FakePredictor(tmp_path / "models" / "fake-run")
    monkeypatch.setattr(predict_module, "load_predictor", lambda model, device: predictor)
    return predictor


def test_image_files_from_files_and_folders(tmp_path):
    one = write_image(tmp_path / "one.png", 8, 8)
    write_image(tmp_path / "folder" / "b.jpg", 8, 8)
    write_image(tmp_path / "folder" / "sub" / "a.png", 8, 8)
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    assert image_files([one, tmp_path / "folder"]) == [
        (one, "one.png"),
        (tmp_path / "folder" / "b.jpg", "b.jpg"),
        (tmp_path / "folder" / "sub" / "a.png", "sub/a.png"),
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="no image in this folder"):
        image_files([tmp_path / "empty"])
    with pytest.raises(WorkbenchError, match="not an image file"):
        image_files([tmp_path / "folder" / "notes.txt"])
    with pytest.raises(WorkbenchError, match="no such file or folder"):
        image_files([tmp_path / "missing.png"])


def test_predict_inputs_writes_annotated_images_and_coco_files(tmp_path, fake):
    write_image(tmp_path / "in" / "photo.png", 40, 20)
    write_image(tmp_path / "in" / "sub" / "photo.png", 30, 30)  # the same file name in a sub-folder
    write_image(tmp_path / "photo.png", 10, 10)  # and given on its own: a third photo
    progress = []
    result = predict_inputs(
        [tmp_path / "in", tmp_path / "photo.png"],
        score_threshold=0.3,
        iou_threshold=0.6,
        out_dir=tmp_path / "out",
        on_progress=lambda *args: progress.append(args),
    )
    assert fake.calls == [((20, 40, 3), 0.3, 0.6), ((30, 30, 3), 0.3, 0.6), ((10, 10, 3), 0.3, 0.6)]
    assert progress == [("predict", 1, 3), ("predict", 2, 3), ("predict", 3, 3)]
    assert result.model == "fake-run" and result.videos == []
    assert [(im["path"], im["width"], im["height"]) for im in result.images] == [
        (str(tmp_path / "in" / "photo.png"), 40, 20),
        (str(tmp_path / "in" / "sub" / "photo.png"), 30, 30),
        (str(tmp_path / "photo.png"), 10, 10),
    ]
    assert result.images[0]["detections"] == [
        {"box": [0.0, 0.0, 20.0, 10.0], "score": 0.75, "class_id": 1, "class": "dog"}
    ]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["coco_images.json", "coco_results.json", "photo-2.jpg", "photo.jpg", "sub__photo.jpg"]
    with Image.open(tmp_path / "out" / "photo.jpg") as drawn:
        assert drawn.size == (40, 20)
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert results[0] == {"image_id": 0, "category_id": 2, "bbox": [0.0, 0.0, 20.0, 10.0], "score": 0.75}
    images = json.loads((tmp_path / "out" / "coco_images.json").read_text())
    assert [im["id"] for im in images["images"]] == [0, 1, 2]
    assert images["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert result.to_json() == {"model": "fake-run", "classes": ["cat", "dog"], "images": result.images}


def test_predict_inputs_checks_the_inputs_before_loading_a_model(tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(predict_module, "load_predictor", no_model)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded before the model loads")
    with pytest.raises(WorkbenchError, match="a video needs --out DIR"):
        predict_inputs([clip])
    with pytest.raises(WorkbenchError, match="--video-step 0"):
        predict_inputs([clip], out_dir=tmp_path / "out", video_step=0)
    with pytest.raises(WorkbenchError, match="no such file"):
        predict_inputs([tmp_path / "nothing.png"])
    assert not (tmp_path / "out").exists()


def test_predict_records_in_batches(tmp_path, fake):
    for i in range(5):
        write_image(tmp_path / f"{i}.png", 8, 8)
    records = [ImageRecord(f"{i}.png", 8, 8) for i in range(5)]
    progress = []
    out = predict_records(fake, tmp_path, records, batch=2, on_progress=lambda *a: progress.append(a))
    assert len(out) == 5 and all(len(d) == 1 for d in out)
    assert fake.calls == [(2, 0.001, 100), (2, 0.001, 100), (1, 0.001, 100)]
    assert progress == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.slow
def test_predict_cli(tiny_model: TinyModel, tmp_path, capsys):
    run, voc8 = str(tiny_model.run), tiny_model.data
    image = voc8 / "images" / "maksssksksss0.png"
    assert main(["predict", "--model", run, str(image), "--json", "--score", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "tiny" and out["images"][0]["width"] == 512
    for d in out["images"][0]["detections"]:
        assert set(d) == {"box", "score", "class_id", "class"} and d["score"] >= 0.01
    out_dir = tmp_path / "pred"
    two = [str(image), str(voc8 / "images" / "maksssksksss1.png")]
    assert main(["predict", "--model", run, *two, "--out", str(out_dir), "--score", "0.01"]) == 0
    assert sorted(p.name for p in out_dir.glob("*.jpg")) == ["maksssksksss0.jpg", "maksssksksss1.jpg"]
    results = json.loads((out_dir / "coco_results.json").read_text())
    images = json.loads((out_dir / "coco_images.json").read_text())
    assert len(images["images"]) == 2 and {r["image_id"] for r in results} <= {im["id"] for im in images["images"]}
    text = capsys.readouterr().out
    assert (
        f"{image}: " in text
        and f"wrote 2 annotated image(s), coco_results.json and coco_images.json to {out_dir}" in text
    )
