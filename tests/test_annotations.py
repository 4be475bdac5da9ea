"""workbench.annotations: the content hash and Detections."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

from tests.test_splits import make_dataset
from workbench.annotations import Detections, content_hash, detections_to_json
from workbench.errors import WorkbenchError
from workbench.fileio import load_image
from workbench.formats import voc


def test_dataset_hash_follows_the_labels_not_the_order():
    ds = make_dataset(5)
    shuffled = ds.copy()
    shuffled.images.reverse()
    assert content_hash(ds) == content_hash(shuffled)
    moved = ds.copy()
    moved.images[2].boxes[0, 0] += 1
    assert content_hash(moved) != content_hash(ds)


def test_detections_check_their_shapes_and_subset():
    det = Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.4], [1, 0])
    assert len(det) == 2 and det.boxes.dtype == np.float64 and det.class_ids.dtype == np.int64
    kept = det[det.scores > 0.5]
    assert len(kept) == 1 and kept.class_ids.tolist() == [1]
    assert Detections().boxes.shape == (0, 4) and len(Detections()) == 0
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        Detections([[0, 0, 1, 1], [0, 0, 2, 2]], [0.5], [0, 0])


def test_detections_to_json():
    det = Detections([[0.123, 1, 10.555, 20]], [0.87654], [1])
    assert detections_to_json(det, ["a", "b"]) == [
        {"box": [0.12, 1.0, 10.55, 20.0], "score": 0.8765, "class_id": 1, "class": "b"}
    ]


CLASSES = ["without_mask", "with_mask", "mask_weared_incorrect"]


def test_supervision_round_trip_is_lossless():
    sv = pytest.importorskip("supervision")
    det = Detections([[0.25, 1.5, 10.125, 20.0], [5, 5, 20, 30.75]], [0.875, 0.3], [2, 0])
    out = det.to_supervision(CLASSES)
    assert isinstance(out, sv.Detections)
    assert np.array_equal(out.xyxy, det.boxes) and np.array_equal(out.confidence, det.scores)
    assert out.class_id.tolist() == [2, 0] and out.data["class_name"].tolist() == [CLASSES[2], CLASSES[0]]
    back = Detections.from_supervision(out)
    assert np.array_equal(back.boxes, det.boxes) and np.array_equal(back.scores, det.scores)
    assert np.array_equal(back.class_ids, det.class_ids) and back.class_ids.dtype == np.int64
    out.xyxy[0, 0] = 99.0  # copies both ways: editing one never touches the other
    assert det.boxes[0, 0] == 0.25 and back.boxes[0, 0] == 0.25


def test_supervision_class_names_and_missing_fields():
    sv = pytest.importorskip("supervision")
    labels = sv.Detections(xyxy=np.array([[1.0, 2, 3, 4], [5, 6, 7, 8]]), data={"class_name": np.array(["b", "a"])})
    det = Detections.from_supervision(labels, class_names=["a", "b"])
    assert det.class_ids.tolist() == [1, 0] and det.scores.tolist() == [1.0, 1.0]  # no confidence: labels
    with pytest.raises(WorkbenchError, match=r"not in class_names: \['b'\]"):
        Detections.from_supervision(labels, class_names=["a"])
    with pytest.raises(WorkbenchError, match="no class_id"):
        Detections.from_supervision(sv.Detections(xyxy=np.array([[1.0, 2, 3, 4]])))
    with pytest.raises(WorkbenchError, match="class id 5 beyond the 3 class names"):
        Detections([[0, 0, 1, 1]], [0.5], [5]).to_supervision(CLASSES)
    assert "class_name" not in Detections([[0, 0, 1, 1]], [0.5], [5]).to_supervision().data


def test_supervision_empty():
    pytest.importorskip("supervision")
    out = Detections().to_supervision(CLASSES)
    assert len(out) == 0 and out.xyxy.shape == (0, 4) and out.data["class_name"].shape == (0,)
    back = Detections.from_supervision(out)
    assert len(back) == 0 and back.boxes.shape == (0, 4) and back.class_ids.dtype == np.int64


def test_supervision_annotators_draw_our_detections(shared):
    sv = pytest.importorskip("supervision")
    path = shared / "andrewmvd-voc" / "images" / "maksssksksss0.png"
    image = np.ascontiguousarray(load_image(path, path.name)[:, :, ::-1])  # supervision draws on BGR arrays
    record = voc.load(shared / "andrewmvd-voc").record("images/maksssksksss0.png")
    det = Detections(record.boxes, np.full(len(record), 0.9), record.class_ids)
    before = image.copy()
    drawn = sv.BoxAnnotator(thickness=2).annotate(image.copy(), det.to_supervision(CLASSES))
    drawn = sv.LabelAnnotator().annotate(drawn, det.to_supervision(CLASSES))
    assert drawn.shape == image.shape and not np.array_equal(drawn, before)
    x1, y1, x2, y2 = (int(v) for v in det.boxes[0])
    changed = np.any(drawn != before, axis=2)
    assert changed[y1 : y2 + 1, x1].any() and not changed[y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].all()


def test_supervision_missing_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_supervision(name, *args, **kwargs):
        if name == "supervision" or name.startswith("supervision."):
            raise ImportError("No module named 'supervision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_supervision)
    monkeypatch.delitem(sys.modules, "supervision", raising=False)
    with pytest.raises(WorkbenchError, match="pip install supervision"):
        Detections().to_supervision()
