"""workbench.evaluation.evaluate: the metrics on hand-made cases (perfect, shifted and missing
predictions, confusions, ignore regions), which images are scored, and ``workbench eval`` on the
session's tiny model: on its own dataset and on a folder it never trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_STEMS, copy_voc_subset
from tests.evaluation.conftest import CLASSES, TWO_IMAGES, make_dataset, perfect, report_of
from workbench import boxes
from workbench.annotations import IGNORE_LABEL, Detections
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.evaluation.evaluate import (
    confusion_matrix,
    eval_name,
    load_evaluation,
    match_image,
    save_evaluation,
    select_records,
)
from workbench.evaluation.report import EVAL_DIR, load_report
from workbench.formats import load_dataset
from workbench.metrics import coco_ground_truth, coco_results, coco_stats
from workbench.splits import ClassMap


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
    assert boxes.iou(det.boxes, dataset.images[0].boxes)[0, 0] == pytest.approx(iou)
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


def test_a_confusion_does_not_take_the_box_of_a_right_detection():
    # the higher-scoring detection has the wrong class: the right one, scoring lower, is still the true positive
    pairs = match_image([[0, 0, 100, 100]], [1], [[0, 0, 100, 100], [2, 0, 100, 100]], [0, 1], [0.9, 0.5])
    assert sorted(pairs) == [(-1, 0), (1, 1)]


def test_save_and_load_report(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    detections = perfect(dataset)
    report = report_of(dataset, detections, run="r1", split="all images")
    out = save_evaluation(report, tmp_path / "eval" / "x", records=dataset.images, detections=detections)
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


@pytest.mark.parametrize("same_folder", [True, False])
def test_default_images_are_the_runs_validation_images_only_on_its_own_dataset(tmp_path, same_folder):
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
        assert select_records(dataset, split="val", run_dir=run) == (records, how)
    else:  # a dataset the run never saw: every image by default; --split val asks for a validation split
        assert len(records) == 10 and how == "all images (not the dataset the run trained on)"
        records, how = select_records(dataset, split="val", run_dir=run)
        assert len(records) == 2 and how.startswith("validation split (stratified")
    assert len(select_records(dataset, split="all", run_dir=run)[0]) == 10
    assert len(select_records(dataset)[0]) == 2  # no run to ask: the workbench's validation split


def test_a_named_split_is_the_datasets_own(tmp_path):
    dataset = make_dataset(tmp_path, [([[0, 0, 10, 10]], [0])] * 4)
    for record, split in zip(dataset.images, ["train", "val", "test", "test"], strict=True):
        record.split = split
    records, how = select_records(dataset, split="test")
    assert [r.path for r in records] == ["images/2.png", "images/3.png"] and how == "split test"
    assert [r.path for r in select_records(dataset, split="VAL")[0]] == ["images/1.png"]
    with pytest.raises(WorkbenchError, match="no image in split 'dev'"):
        select_records(dataset, split="dev")


@pytest.mark.parametrize(
    ("description", "name"),
    [
        ("the run's validation images", "data-val"),
        ("validation split (stratified by class)", "data-val"),
        ("all images", "data-all"),
        ("all images (not the dataset the run trained on)", "data-all"),
        ("split my test", "data-my_test"),
    ],
)
def test_eval_name(tmp_path, description, name):
    assert eval_name(make_dataset(tmp_path / "data", []), description) == name


@pytest.mark.slow
def test_eval_cli_json(tiny_run, voc8, capsys):
    assert main(["eval", "--model", str(tiny_run), "--data", str(voc8), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= out[key] <= 1.0
    assert out["per_class"], "no class with ground truth in the run's validation images"
    for values in out["per_class"].values():
        assert set(values) == {"AP", "AP50"} and all(0.0 <= v <= 1.0 for v in values.values())
    assert out["confusion"]["classes"][-1] == "background"
    assert out["split"].startswith("the run's validation images")
    val = json.loads((tiny_run / "split.json").read_text())["val"]
    assert out["images"] == len(val) and out["scored"].startswith(f"{len(val)} images of {voc8}")
    assert (Path(out["saved"]) / "metrics.json").is_file()


@pytest.mark.slow
def test_eval_cli_scores_every_image_of_a_folder_the_run_never_trained_on(tiny_run, shared, tmp_path, capsys):
    """The bug: a separate test folder was scored on a 20% "validation split", and nothing said so."""
    never_trained = sorted(
        p.stem for p in (shared / "andrewmvd-voc" / "images").glob("*.png") if p.stem not in TINY_STEMS
    )
    stems = never_trained[:10]
    folder = copy_voc_subset(shared, tmp_path / "test-folder", stems)
    assert main(["eval", "--model", str(tiny_run), "--data", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 10 and out["split"] == "all images (not the dataset the run trained on)"
    assert out["scored"] == f"10 images of {folder}: all images (not the dataset the run trained on)"
    assert Path(out["saved"]).name == "test-folder-all"
    assert len(load_report(Path(out["saved"])).images) == 10

    assert main(["eval", "--model", str(tiny_run), "--data", str(folder)]) == 0
    text = capsys.readouterr().out
    assert f"scored 10 images of {folder}: all images (not the dataset the run trained on)" in text

    # an explicit split still works: a validation split of the folder, said so
    assert main(["eval", "--model", str(tiny_run), "--data", str(folder), "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 < out["images"] < 10 and out["split"].startswith("validation split (")
    assert out["scored"].startswith(f"{out['images']} images of {folder}: validation split")


@pytest.mark.slow
def test_report_saved_in_the_run(evaluated, tiny_run, voc8):
    report = evaluated.report
    assert report.out_dir.parent == tiny_run / EVAL_DIR
    for name in (
        "metrics.json",
        "detections.json",
        "coco_results.json",
        "ap_per_class.png",
        "confusion.png",
        "pr_curves.png",
    ):
        assert (report.out_dir / name).stat().st_size > 0
    assert len(report.images) == 8
    # every ground-truth box is in exactly one cell of its class's row
    dataset = load_dataset(voc8)
    matrix = np.array(report.confusion["matrix"])
    for i, name in enumerate(report.classes):
        assert matrix[i].sum() == dataset.class_counts().get(name, 0) == report.per_class[name]["gt"]
    assert load_report(report.out_dir).metrics == report.metrics


@pytest.mark.slow
def test_a_saved_evaluation_loads_without_the_model(evaluated, voc8, tmp_path):
    root = Path(shutil.copytree(voc8, tmp_path / "data"))
    dataset = load_dataset(root)
    gone = dataset.images[0].path
    (root / gone).unlink()
    (root / "annotations" / (Path(gone).stem + ".xml")).unlink()
    loaded = load_evaluation(evaluated.report.out_dir, load_dataset(root))
    assert [r.path for r in loaded.records] == [r.path for r in evaluated.records if r.path != gone]
    by_path = dict(zip([r.path for r in evaluated.records], evaluated.detections, strict=True))
    for record, det in zip(loaded.records, loaded.detections, strict=True):
        np.testing.assert_allclose(det.boxes, by_path[record.path].boxes)
    assert loaded.run == "tiny" and loaded.classes == evaluated.classes
