"""workbench.evaluation.report: the report's JSON round trip, its summary (which images were
scored, how many), the worst images, two runs side by side, and the files in the run folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.evaluation.conftest import TWO_IMAGES, make_dataset, perfect, report_of
from workbench.annotations import Detections
from workbench.errors import WorkbenchError
from workbench.evaluation.report import (
    COCO_RESULTS_JSON,
    DETECTIONS_JSON,
    METRICS_JSON,
    EvalReport,
    compare_per_class,
    list_reports,
    load_report,
    read_detections,
    same_folder,
    save_report,
)


def test_json_round_trip_and_summary(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    report = report_of(dataset, perfect(dataset), run="r1", split="all images")
    again = EvalReport.from_json(json.loads(json.dumps(report.to_json())))
    assert again.to_json() == report.to_json() and again.out_dir is None
    summary = report.summary()
    assert (summary["run"], summary["split"], summary["images"]) == ("r1", "all images", 2)
    assert summary["scored"] == f"2 images of {tmp_path}: all images" and "saved" not in summary


def test_save_writes_the_json_files_and_load_reads_them(tmp_path):
    dataset = make_dataset(tmp_path, TWO_IMAGES)
    detections = [Detections([[1.25, 2, 30.5, 40]], [0.123456789], [2]), Detections()]
    report = report_of(dataset, detections, run="r1", split="all images")
    out = save_report(report, tmp_path / "eval" / "x", records=dataset.images, detections=detections)
    assert sorted(p.name for p in out.iterdir()) == sorted([METRICS_JSON, DETECTIONS_JSON, COCO_RESULTS_JSON])
    assert report.out_dir == out and load_report(out).out_dir == out
    back = read_detections(out)
    assert list(back) == ["images/0.png", "images/1.png"] and len(back["images/1.png"]) == 0
    np.testing.assert_array_equal(back["images/0.png"].boxes, detections[0].boxes)
    assert back["images/0.png"].scores[0] == 0.123456789  # full precision
    results = json.loads((out / COCO_RESULTS_JSON).read_text())
    assert results == [
        {
            "image_id": 0,
            "category_id": 3,
            "bbox": [1.25, 2.0, 29.25, 38.0],
            "score": 0.123456789,
            "file_name": "images/0.png",
        }
    ]
    assert load_report(out).summary()["saved"] == str(out)


def test_list_reports_newest_first_and_a_missing_report(tmp_path):
    dataset = make_dataset(tmp_path / "data", TWO_IMAGES)
    run = tmp_path / "run"
    assert list_reports(run) == []
    for n, name in enumerate(["old", "new"]):
        out = save_report(
            report_of(dataset, perfect(dataset)),
            run / "eval" / name,
            records=dataset.images,
            detections=perfect(dataset),
        )
        os.utime(out / METRICS_JSON, (1000 + n, 1000 + n))
    (run / "eval" / "half").mkdir()  # no metrics.json: not a report
    assert [p.name for p in list_reports(run)] == ["new", "old"]
    with pytest.raises(WorkbenchError, match=r"no metrics\.json"):
        load_report(run / "eval" / "half")


def test_worst_images():
    report = EvalReport("r", "/d", "all images", ["a"], {}, {}, {}, {})
    report.images = [
        {"path": "b.png", "tp": 1, "fp": 2, "fn": 0, "detections": 3},
        {"path": "a.png", "tp": 1, "fp": 0, "fn": 2, "detections": 1},
        {"path": "c.png", "tp": 1, "fp": 0, "fn": 0, "detections": 1},
        {"path": "d.png", "tp": 0, "fp": 3, "fn": 1, "detections": 3},
    ]
    assert [im["path"] for im in report.worst_images()] == ["d.png", "a.png", "b.png"]
    assert [im["path"] for im in report.worst_images(1)] == ["d.png"]


def test_compare_per_class():
    ours = EvalReport("r1", "/d", "", ["a", "b"], {"AP": 0.5}, {"a": {"AP": 0.6}, "b": {"AP": None}}, {}, {})
    theirs = EvalReport("r2", "/d", "", ["a", "c"], {"AP": 0.25}, {"a": {"AP": 0.4}, "c": {"AP": 0.1}}, {}, {})
    rows = compare_per_class(ours, theirs)
    assert [r["class"] for r in rows] == ["a", "b", "c", "all (AP)"]
    assert rows[0] == {"class": "a", "ours": 0.6, "theirs": 0.4, "difference": pytest.approx(0.2)}
    assert rows[1]["difference"] is None and rows[2] == {"class": "c", "ours": None, "theirs": 0.1, "difference": None}
    assert rows[3]["difference"] == pytest.approx(0.25)


def test_is_of_the_same_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    report = EvalReport("r", str(tmp_path / "data"), "", [], {}, {}, {}, {})
    assert report.is_of(tmp_path / "link") and report.is_of(str(tmp_path / "data") + "/")
    assert not report.is_of(tmp_path) and not same_folder(None, tmp_path)
