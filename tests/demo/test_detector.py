"""workbench/demo/detector.py: the demo's handlers as plain functions: no server, no Gradio, a fake predictor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED, write_image
from tests.demo.conftest import CLASSES, FakePredictor, make_run
from workbench.annotations import Detections
from workbench.demo.detector import (
    DemoError,
    DemoLimits,
    DetectorDemo,
    ModelSource,
    NoModel,
    card_markdown,
    detection_rows,
    sample_examples,
)
from workbench.drawing import annotate, class_colour
from workbench.training.registry import set_latest


def test_no_model_says_how_to_train(app):
    with pytest.raises(NoModel, match="No trained model yet"):
        app.source.get()
    banner, card_md, card = app.model_card()
    assert card["model"] is None
    for text in (banner, card_md, card["message"]):
        assert "workbench train --data" in text and "no restart" in text
    image = write_image(Path(app.out_dir).parent / "a.png", 200, 150)
    with pytest.raises(DemoError, match="workbench train") as raised:
        app.detect_image(str(image))
    assert raised.value.title == "No trained model"


def test_new_latest_is_picked_up_without_restart(app, loads):
    first = make_run("run-a")
    set_latest(first)
    assert app.source.get().run_dir == first
    assert app.source.get().run_dir == first
    assert loads == [first], "the model is loaded once, not per request"
    second = make_run("run-b")
    set_latest(second)
    assert app.source.get().run_dir == second
    assert "`run-b`" in app.model_card()[0]
    (second / "model_best.pth").write_bytes(b"retrained")  # same run, new weights
    os.utime(second / "model_best.pth", ns=(1, 1))
    app.source.get()
    assert loads == [first, second, second]


def test_detect_image_outputs(app, tmp_path):
    set_latest(make_run("run-a"))
    path = write_image(tmp_path / "photo.png", 200, 150)
    annotated, rows, png, json_path, status = app.detect_image(str(path), 0.3, 0.45)
    assert annotated == png and np.asarray(Image.open(annotated)).shape == (150, 200, 3)
    assert rows == [[1, "with_mask", 0.9, 10.0, 20.0, 60.0, 90.0], [2, "without_mask", 0.4, 100.0, 5.0, 140.0, 45.0]]
    assert Image.open(png).size == (200, 150)
    record = json.loads(Path(json_path).read_text())
    assert record["width"] == 200 and record["height"] == 150 and record["model"] == "run-a"
    assert [d["box"] for d in record["detections"]] == [[10.0, 20.0, 60.0, 90.0], [100.0, 5.0, 140.0, 45.0]]
    assert record["score_threshold"] == 0.3 and record["iou_threshold"] == 0.45
    assert app.source.get().calls == [(0.3, 0.45)]
    assert "**2** detection(s)" in status
    # the slider decides what comes back
    assert len(app.detect_image(str(path), 0.5, 0.5)[1]) == 1


def test_detect_image_reads_the_stored_pixel_grid(app, tmp_path):
    """An EXIF-rotated photo keeps its stored size (boxes are in the grid the annotations use)."""
    set_latest(make_run("run-a"))
    path = write_image(tmp_path / "rotated.jpg", 200, 120, exif_orientation=6)
    annotated, *_, json_path, _ = app.detect_image(str(path))
    assert np.asarray(Image.open(annotated)).shape == (120, 200, 3)
    assert json.loads(Path(json_path).read_text())["width"] == 200


@pytest.mark.parametrize(("width", "height"), [(501, 100), (100, 501), (480, 480)])
def test_too_large_images_are_refused(app, tmp_path, width, height):
    set_latest(make_run("run-a"))
    path = write_image(tmp_path / "big.png", width, height)
    with pytest.raises(DemoError, match="at most 500 px"):
        app.detect_image(str(path))


def test_bad_inputs(app, tmp_path):
    set_latest(make_run("run-a"))
    with pytest.raises(DemoError, match="Upload an image"):
        app.detect_image(None)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(DemoError, match=r"junk\.png"):
        app.detect_image(str(junk))
    assert app.detect_frame(None) is None


def test_detect_frame(app):
    set_latest(make_run("run-a"))
    frame = np.zeros((120, 160, 3), np.uint8)
    out = app.detect_frame(frame, 0.1, 0.5)
    assert out.shape == frame.shape
    assert tuple(out[50, 10]) == tuple(int(class_colour(0)[i : i + 2], 16) for i in (1, 3, 5))


def test_annotate_draws_class_colours_and_leaves_input_alone():
    image = np.full((100, 100, 3), 255, np.uint8)
    det = Detections(boxes=[[10, 30, 50, 80]], scores=[0.87], class_ids=[1])
    out = annotate(image, det, CLASSES)
    assert (image == 255).all()
    colour = tuple(int(class_colour(1)[i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(out[60, 10]) == colour  # left edge
    assert tuple(out[60, 30]) == (255, 255, 255)  # inside the box
    assert annotate(image, Detections(), CLASSES).shape == image.shape  # (0, 4) boxes


def test_rows_and_card():
    assert detection_rows(Detections(), CLASSES) == []
    text = card_markdown(
        {
            "run": "r",
            "model": "m",
            "classes": CLASSES,
            "weights": {"kind": "imagenet", "source": "cache"},
            "best_metrics": {"AP": 0.5, "AP50": 0.75},
            "dataset": "/data",
            "train_images": 8,
        }
    )
    assert "with_mask" in text and "| AP | 0.5000 |" in text and "imagenet" in text and "/data" in text
    assert "No validation metrics" in card_markdown({"run": "r"})


def test_examples_come_from_the_bundled_sample():
    examples = sample_examples()
    assert examples and all(Path(e[0]).is_file() and "facemask-sample" in e[0] for e in examples)


def test_real_shared_image_through_fake_model(app):
    set_latest(make_run("run-a"))
    path = SHARED / "andrewmvd-voc" / "images" / "maksssksksss200.png"
    annotated, *_ = app.detect_image(str(path))
    assert np.asarray(Image.open(annotated)).shape == (400, 301, 3)


def test_a_new_model_that_fails_to_load_keeps_the_old_one(tmp_path):
    calls = []

    def loader(folder: Path, device: str = "auto") -> FakePredictor:
        calls.append(folder.name)
        if folder.name == "broken":
            raise RuntimeError("truncated checkpoint")
        return FakePredictor(folder)

    source = ModelSource("latest", loader=loader)
    set_latest(make_run("good"))
    assert source.get().run_dir.name == "good"
    set_latest(make_run("broken"))
    assert source.get().run_dir.name == "good"
    assert source.get().run_dir.name == "good"
    assert calls == ["good", "broken", "broken"], "the broken one is retried, not remembered"
    alone = ModelSource("broken", loader=loader)
    with pytest.raises(NoModel, match="truncated checkpoint"):
        alone.get()


def test_detect_video_reports_its_progress(app, clip):
    set_latest(make_run("run-a"))
    seen: list[tuple[int, int | None]] = []
    path, status = app.detect_video(str(clip), 0.1, 0.5, 2, on_frame=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4) and [d for d, _ in seen] == [0, 1, 2, 3, 4]
    assert Path(path).is_file() and "**4** frame(s), model run on 2" in status


def test_a_long_video_is_refused(source, tmp_path, clip):
    set_latest(make_run("run-a"))
    short = DetectorDemo(source, out_dir=tmp_path / "out", limits=DemoLimits(max_video_seconds=0.5))
    with pytest.raises(DemoError, match="at most 0 s") as raised:
        short.detect_video(str(clip))
    assert raised.value.title == "Too long"
