"""The metric code on hand-made cases: perfect, shifted and missing predictions, confusions, ignore regions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.annotations import IGNORE_LABEL, Dataset, Detections, ImageRecord
from workbench.evaluation.evaluate import (
    box_iou,
    coco_results,
    compute_report,
    confusion_matrix,
    load_report,
    match_image,
    save_report,
)
from workbench.metrics import coco_ground_truth, coco_stats
from workbench.splits import ClassMap

CLASSES = ["a", "b", "c"]


def make_dataset(tmp_path, images: list[tuple[list[list[float]], list[int]]], classes=CLASSES) -> Dataset:
    records = [
        ImageRecord(
            path=f"images/{i}.png", width=400, height=300, boxes=np.array(b, dtype=float).reshape(-1, 4), class_ids=c
        )
        for i, (b, c) in enumerate(images)
    ]
    return Dataset(root=tmp_path, format="voc", classes=list(classes), images=records)


def perfect(dataset: Dataset) -> list[Detections]:
    return [Detections(r.boxes, np.full(len(r), 0.9), r.class_ids) for r in dataset.images]


def report_of(dataset, detections, classes=CLASSES, **kwargs):
    return compute_report(dataset, dataset.images, detections, classes, **kwargs)


TWO_IMAGES = [
    ([[10, 10, 60, 80], [100, 50, 200, 150]], [0, 1]),
    ([[30, 40, 90, 100], [200, 20, 380, 280], [5, 5, 25, 25]], [1, 0, 2]),
]


def test_perfect_predictions_give_ap_1(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    report = report_of(dataset, perfect(dataset))
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert report.metrics[key] == pytest.approx(1.0)
    assert all(v["AP"] == pytest.approx(1.0) and v["AP50"] == pytest.approx(1.0) for v in report.per_class.values())
    matrix = np.array(report.confusion["matrix"])
    assert np.array_equal(matrix, np.diag([2, 2, 1, 0]))
    assert [(im["tp"], im["fp"], im["fn"]) for im in report.images] == [(2, 0, 0), (3, 0, 0)]
    assert report.worst_images() == []


@pytest.mark.parametrize(
    ("shift", "iou", "ap"),
    [
        # one 100 x 100 box; a detection shifted by `shift` px in x overlaps (100 - s) * 100 px².
        # At each of COCO's IoU thresholds 0.50, 0.55, ..., 0.95 it is a hit (AP 1) or a miss (AP 0),
        # so AP is the fraction of thresholds <= IoU.
        (0, 1.0, 1.0),
        (10, 9000 / 11000, 0.7),  # IoU 0.818: 0.50 ... 0.80 pass
        (20, 8000 / 12000, 0.4),  # IoU 0.667: 0.50 ... 0.65 pass
        (30, 7000 / 13000, 0.1),  # IoU 0.538: only 0.50
        (40, 6000 / 14000, 0.0),  # IoU 0.429: none
    ],
)
def test_shifted_box_gives_the_ap_pycocotools_computes(tmp_path, shift, iou, ap):
    dataset = make_dataset(tmp_path, [([[100, 100, 200, 200]], [0])])
    det = Detections([[100 + shift, 100, 200 + shift, 200]], [0.8], [0])
    assert box_iou(det.boxes, dataset.images[0].boxes)[0, 0] == pytest.approx(iou)
    report = report_of(dataset, [det])
    assert report.metrics["AP"] == pytest.approx(ap)
    assert report.per_class["a"]["AP"] == pytest.approx(ap)
    assert report.metrics["AP50"] == pytest.approx(1.0 if iou >= 0.5 else 0.0)
    assert report.metrics["AP75"] == pytest.approx(1.0 if iou >= 0.75 else 0.0)
    # the same numbers as the training loop's evaluation (both go through pycocotools)
    gt = coco_ground_truth(dataset, dataset.images, ClassMap.build(dataset, CLASSES))
    assert coco_stats(gt, coco_results([det]))["AP"] == pytest.approx(report.metrics["AP"])


def test_never_predicted_class_gets_ap_0(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    detections = [d[d.class_ids != 1] for d in perfect(dataset)]  # class b is never predicted
    report = report_of(dataset, detections)
    assert report.per_class["b"]["AP"] == 0.0
    assert report.per_class["b"]["AP50"] == 0.0
    assert report.per_class["a"]["AP"] == pytest.approx(1.0)
    assert report.per_class["c"]["AP"] == pytest.approx(1.0)
    assert report.metrics["AP"] == pytest.approx(2 / 3)
    matrix = np.array(report.confusion["matrix"])
    assert matrix[1, 3] == 2  # both b boxes are missed: background column


def test_class_without_ground_truth_is_undefined_not_zero(tmp_path):
    dataset = make_dataset(tmp_path, [([[10, 10, 60, 80]], [0])])
    report = report_of(dataset, perfect(dataset))
    assert report.per_class["b"]["AP"] is None
    summary = report.summary()
    assert summary["no_ground_truth"] == ["b", "c"]
    assert set(summary["per_class"]) == {"a"}
    assert summary["APs"] is None  # no small box: pycocotools says -1, reported as undefined


def test_no_detection_at_all(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    report = report_of(dataset, [Detections() for _ in dataset.images])
    assert report.metrics["AP"] == 0.0
    assert all(v["AP"] == 0.0 for v in report.per_class.values())
    assert np.array(report.confusion["matrix"])[:3, 3].tolist() == [2, 2, 1]


def test_confusion_matrix_with_background_row_and_column(tmp_path):
    dataset = make_dataset(tmp_path, [([[0, 0, 100, 100], [200, 0, 300, 100], [0, 200, 50, 250]], [0, 1, 2])])
    det = Detections(
        boxes=[[0, 0, 100, 100], [200, 0, 300, 100], [300, 200, 390, 290], [2, 0, 100, 100]],
        scores=[0.9, 0.8, 0.7, 0.3],
        class_ids=[0, 0, 2, 0],  # a right; b called a; a c out of nowhere; a duplicate of the first
    )
    report = report_of(dataset, [det])
    expected = [
        [1, 0, 0, 0],  # a: found
        [1, 0, 0, 0],  # b: confused with a
        [0, 0, 0, 1],  # c: missed
        [1, 0, 1, 0],  # background: the duplicate a and the c out of nowhere
    ]
    assert report.confusion["matrix"] == expected
    assert report.confusion["classes"] == ["a", "b", "c", "background"]
    assert (report.images[0]["tp"], report.images[0]["fp"], report.images[0]["fn"]) == (1, 3, 2)
    # the score threshold leaves out the duplicate at 0.3
    strict = report_of(dataset, [det], score_threshold=0.5)
    assert strict.confusion["matrix"][3] == [0, 0, 1, 0]


def test_detection_prefers_its_own_class_over_a_higher_iou_other_class():
    gt_boxes = np.array([[0, 0, 100, 100], [10, 0, 110, 100]], dtype=float)
    pairs = match_image(gt_boxes, [1, 0], [[0, 0, 100, 100]], [0], [0.9])
    assert sorted(pairs) == [(0, 0), (1, -1)]


def test_detection_in_an_ignore_region_is_not_a_false_positive(tmp_path):
    dataset = make_dataset(
        tmp_path, [([[0, 0, 100, 100], [200, 100, 400, 300]], [0, 3])], classes=[*CLASSES, IGNORE_LABEL]
    )
    det = Detections([[0, 0, 100, 100], [250, 150, 300, 200]], [0.9, 0.8], [0, 1])
    report = report_of(dataset, [det])
    assert report.confusion["matrix"][3] == [0, 0, 0, 0]
    assert report.metrics["AP"] == pytest.approx(1.0)
    assert report.images[0]["fp"] == 0


def test_confusion_matrix_counts():
    assert confusion_matrix([(0, 0), (0, -1), (-1, 1), (1, 1)], 2).tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]


def test_coco_results_are_xywh_pixels():
    det = Detections([[10.5, 20, 30.5, 60]], [0.5], [2])
    assert coco_results([Detections(), det]) == [
        {"image_id": 1, "category_id": 3, "bbox": [10.5, 20.0, 20.0, 40.0], "score": 0.5}
    ]


def test_save_and_load_report(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    detections = perfect(dataset)
    report = report_of(dataset, detections, run="r1", split="all images")
    out = save_report(report, tmp_path / "eval" / "x", records=dataset.images, detections=detections)
    for name in (
        "metrics.json",
        "detections.json",
        "coco_results.json",
        "ap_per_class.png",
        "confusion.png",
        "pr_curves.png",
    ):
        assert (out / name).stat().st_size > 0, name
    again = load_report(out)
    assert again.metrics == report.metrics and again.confusion == report.confusion
    summary = json.loads(json.dumps(again.summary()))
    assert 0.0 <= summary["AP"] <= 1.0 and summary["per_class"]["a"] == {"AP": 1.0, "AP50": 1.0}
    assert json.loads((out / "coco_results.json").read_text())[0]["file_name"] == "images/0.png"


def test_a_confusion_does_not_take_the_box_of_a_right_detection():
    # the higher-scoring detection has the wrong class: the right one, scoring lower, is still the true positive
    pairs = match_image([[0, 0, 100, 100]], [1], [[0, 0, 100, 100], [2, 0, 100, 100]], [0, 1], [0.9, 0.5])
    assert sorted(pairs) == [(-1, 0), (1, 1)]


@pytest.mark.parametrize("same_folder", [True, False])
def test_default_images_are_the_runs_validation_images_only_on_its_own_dataset(tmp_path, same_folder):
    from workbench.evaluation.evaluate import select_records

    dataset = make_dataset(tmp_path / "data", [([[0, 0, 10, 10]], [0])] * 10)
    run = tmp_path / "run"
    run.mkdir()
    trained_on = dataset.root if same_folder else tmp_path / "elsewhere"
    (run / "config.json").write_text(json.dumps({"data": str(trained_on)}))
    (run / "split.json").write_text(json.dumps({"val": ["images/3.png", "images/7.png", "images/gone.png"]}))
    records, how = select_records(dataset, run_dir=run)
    if same_folder:
        assert [r.path for r in records] == ["images/3.png", "images/7.png"]
        assert how == "the run's validation images (1 no longer in the dataset)"
    else:
        assert len(records) == 2 and how.startswith("validation split (stratified")
    assert len(select_records(dataset, split="all", run_dir=run)[0]) == 10
