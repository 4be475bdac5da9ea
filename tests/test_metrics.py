"""workbench.metrics: COCO AP through pycocotools on hand-made detections (perfect, missing,
ignored regions), the COCO results of ``Detections``, and the report's metrics (``coco_metrics``)
agreeing with the training engines' (``coco_stats``)."""

from __future__ import annotations

import pytest

from workbench.annotations import IGNORE_LABEL, Dataset, Detections, ImageRecord
from workbench.metrics import STAT_NAMES, coco_ground_truth, coco_metrics, coco_results, coco_stats, cocoeval
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
    assert crowd[0]["bbox"] == [120.0, 10.0, 70.0, 80.0] and crowd[0]["area"] == 70.0 * 80.0


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
    assert cocoeval(gt, []) is None


def test_coco_results_are_xywh_pixels():
    det = Detections([[10.5, 20, 30.5, 60]], [0.5], [2])
    assert coco_results([Detections(), det]) == [
        {"image_id": 1, "category_id": 3, "bbox": [10.5, 20.0, 20.0, 40.0], "score": 0.5}
    ]
    assert coco_results([det], image_ids=[7])[0]["image_id"] == 7


def test_report_metrics_agree_with_the_engines_stats(setup):
    """``coco_metrics`` (the report) and ``coco_stats`` (the training log) read one COCOeval."""
    _, _, gt = setup
    results = [*PERFECT[:2], det(1, 1, [22, 20, 80, 70], 0.6)]  # the dog in b called a cat
    stats = coco_stats(gt, results)
    metrics, per_class, curves = coco_metrics(gt, results, ["cat", "dog"])
    assert list(metrics) == STAT_NAMES
    for name in STAT_NAMES:
        assert metrics[name] == (None if stats[name] < 0 else pytest.approx(stats[name]))
    assert per_class["cat"]["AP"] == pytest.approx(stats["AP/cat"]) and per_class["dog"]["gt"] == 2
    assert len(curves["dog"]["recall"]) == len(curves["dog"]["precision50"]) == 101
    assert max(curves["dog"]["precision50"]) == pytest.approx(1.0)


def test_no_detection_gives_zero_where_there_is_something_to_find(setup):
    _, _, gt = setup
    metrics, per_class, curves = coco_metrics(gt, [], ["cat", "dog"])
    assert metrics["AP"] == 0.0 and per_class["cat"] == {"AP": 0.0, "AP50": 0.0, "gt": 1}
    assert curves["cat"]["precision75"] == [0.0] * 101
