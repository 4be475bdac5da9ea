"""workbench.annotations: the content hash and Detections."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_splits import make_dataset
from workbench.annotations import Detections, content_hash, detections_to_json


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
