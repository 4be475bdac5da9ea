"""The face-then-classify model's parts: the box correction, the gamma correction of crops, and
the background class ("not a face")."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import copy_voc_subset
from workbench.fileio import load_image
from workbench.formats import load_dataset
from workbench.splits import ClassMap
from workbench.training import faces
from workbench.training.facecrops import crop


def test_box_correction_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (20, 2))
    size = rng.uniform(10, 80, (20, 2))
    det = np.hstack([xy, xy + size])
    # truth: the same top and width, 20% taller (the chin under a mask)
    truth = det.copy()
    truth[:, 3] += 0.2 * size[:, 1]
    fit = faces.fit_box_correction(det, truth)
    assert fit["pairs"] == 20
    np.testing.assert_allclose(faces.correct_boxes(det, fit), truth, atol=1e-6)
    assert faces.fit_box_correction(det[:2], truth[:2])["x"] == faces.IDENTITY_FIT["x"]


def test_gamma_brightens_dark_crops_only():
    dark = np.full((8, 8, 3), 40, dtype=np.uint8)
    assert faces.gamma_correct(dark).mean() > 100
    bright = np.full((8, 8, 3), 150, dtype=np.uint8)
    assert (faces.gamma_correct(bright) == bright).all()


def test_the_background_share_lowers_a_false_faces_score():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float64)
    face_scores = np.array([0.9, 0.9])
    # a face the classifier takes for with_mask, and one it takes for "not a face" (the last column)
    probs = np.array([[0.8, 0.1, 0.05, 0.05], [0.15, 0.05, 0.0, 0.8]])
    det = faces.pipeline_detections(boxes, face_scores, probs, classes=3, score_threshold=0.0, max_detections=10)
    # each face once per real class (never the background), scored face score x class probability
    a, b = [0, 0, 10, 10], [20, 20, 30, 30]
    assert det.class_ids.tolist() == [0, 0, 1, 2, 1, 2]  # a tie (0.045) in the faces' order
    np.testing.assert_allclose(det.scores, [0.72, 0.135, 0.09, 0.045, 0.045, 0.0])
    assert det.boxes.tolist() == [a, b, a, a, b, b]
    kept = faces.pipeline_detections(boxes, face_scores, probs, classes=3, score_threshold=0.25, max_detections=10)
    assert len(kept) == 1 and kept.boxes.tolist() == [[0, 0, 10, 10]]
    plain = faces.pipeline_detections(boxes, face_scores, probs[:, :3], classes=3, score_threshold=0, max_detections=1)
    assert len(plain) == 1 and plain.scores[0] == pytest.approx(0.72)
    with pytest.raises(ValueError, match="the classifier gives 4 probabilities for 2 classes"):
        faces.pipeline_detections(boxes, face_scores, probs, classes=2, score_threshold=0, max_detections=1)


def test_training_crops_take_the_detectors_false_faces_as_background(shared, tmp_path):
    """On real images with their labels: what the detector finds where no face is labelled becomes
    the background class, the most confident first, at most one per two labelled faces."""
    root = copy_voc_subset(shared, tmp_path / "voc", ["maksssksksss0", "maksssksksss1"])
    dataset = load_dataset(root, "voc")
    class_map = ClassMap.build(dataset, dataset.classes)
    labelled = sum(len(r.boxes) for r in dataset.images)

    order = iter(dataset.images * 2)  # train_faces reads the images in order, twice here

    def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # every labelled face found exactly, plus three false faces in the corners
        h, w = rgb.shape[:2]
        record = next(order)
        false = np.array([[0, 0, 8, 8], [w - 9, h - 9, w - 1, h - 1], [0, h - 9, 8, h - 1]], dtype=np.float64)
        boxes = np.vstack([record.boxes, false])
        return boxes, np.concatenate([np.full(len(record.boxes), 0.99), [0.5, 0.9, 0.7]])

    samples, fit = faces.train_faces(
        detect, dataset, dataset.images, class_map, fit=True, background=3, progress=lambda n: None, stop=lambda: False
    )
    background = [patch for patch, c in samples if c == 3]
    assert len(samples) - len(background) == labelled and fit["pairs"] == labelled
    assert len(background) == min(6, labelled // 2)  # three false faces per image, capped
    rgb = load_image(root / dataset.images[0].path)[:, :, :3]
    h, w = rgb.shape[:2]
    corner = np.array([w - 9, h - 9, w - 1, h - 1], dtype=np.float64)
    assert np.array_equal(background[0], crop(rgb, corner))  # the most confident false face first
    samples, fit = faces.train_faces(
        detect,
        dataset,
        dataset.images,
        class_map,
        fit=False,
        background=None,
        progress=lambda n: None,
        stop=lambda: False,
    )
    assert fit is None and all(c != 3 for _, c in samples) and len(samples) == labelled


def test_the_classifier_starts_from_a_weights_file(tmp_path):
    import torch
    import torchvision

    from workbench.errors import WorkbenchError

    torch.manual_seed(3)
    start = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet.pth"
    torch.save(start.state_dict(), path)
    net, info = faces.build_classifier(4, weights=str(path))
    assert info["kind"] == "file" and info["file"] == str(path) and len(info["sha256"]) == 16
    assert info["matched"] == info["tensors"]  # the ImageNet head too, replaced afterwards
    assert torch.equal(net.features[0][0].weight, start.features[0][0].weight)
    assert net.classifier[1].out_features == 4
    with pytest.raises(WorkbenchError, match="not found"):
        faces.build_classifier(4, weights=str(tmp_path / "absent.pth"))
    with pytest.raises(WorkbenchError, match="imagenet, auto, none or a weights file"):
        faces.build_classifier(4, weights="coco")
