"""COCO AP through pycocotools on hand-made detections (perfect, missing, ignored regions)."""

from __future__ import annotations

import pytest

from workbench.annotations import IGNORE_LABEL, Dataset, ImageRecord
from workbench.metrics import coco_ground_truth, coco_stats
from workbench.splits import ClassMap


@pytest.fixture
def setup():
    ds = Dataset(
        "/x",
        "voc",
        ["cat", "dog", IGNORE_LABEL],
        [
            ImageRecord("a.png", 200, 100, [[10, 10, 60, 60], [100, 20, 150, 90]], [0, 1]),
            ImageRecord("b.png", 200, 100, [[20, 20, 80, 70], [120, 10, 190, 90]], [1, 2]),  # second: ignore
        ],
    )
    cmap = ClassMap.build(ds, ["cat", "dog"])
    return ds, cmap, coco_ground_truth(ds, ds.images, cmap)


def det(image_id, label, box, score):
    x1, y1, x2, y2 = box
    return {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


PERFECT = [det(0, 1, [10, 10, 60, 60], 0.9), det(0, 2, [100, 20, 150, 90], 0.8), det(1, 2, [20, 20, 80, 70], 0.7)]


def test_ground_truth_marks_ignore_regions_crowd(setup):
    _, _, gt = setup
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(crowd) == 2 and {a["category_id"] for a in crowd} == {1, 2}  # one per class
    assert [c["name"] for c in gt["categories"]] == ["cat", "dog"]
    assert gt["annotations"][0]["bbox"] == [10.0, 10.0, 50.0, 50.0]


def test_perfect_detections_score_one(setup):
    _, _, gt = setup
    stats = coco_stats(gt, PERFECT)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AP/cat"] == pytest.approx(1.0) and stats["AP/dog"] == pytest.approx(1.0)


def test_a_detection_in_an_ignore_region_costs_nothing(setup):
    _, _, gt = setup
    assert coco_stats(gt, [*PERFECT, det(1, 1, [120, 10, 190, 90], 0.99)])["AP"] == pytest.approx(1.0)
    # the same false positive elsewhere does cost
    assert coco_stats(gt, [*PERFECT, det(1, 1, [0, 80, 30, 100], 0.99)])["AP"] < 0.9


def test_missed_and_empty(setup):
    _, _, gt = setup
    assert coco_stats(gt, PERFECT[:1])["AP/dog"] == pytest.approx(0.0)
    assert coco_stats(gt, [])["AP"] == 0.0
