from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.app.conftest import copy_voc
from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import health, index
from workbench.datasets.health import check
from workbench.formats import load_dataset

WORKBENCH = str(Path(sys.executable).parent / "workbench")


def _kinds(report) -> dict[str, list[str]]:
    return {kind: sorted(f.detail for f in findings) for kind, findings in report.by_kind().items()}


def test_box_findings(tmp_path):
    write_image(tmp_path / "a.jpg", 40, 30)
    record = ImageRecord(
        path="a.jpg",
        width=40,
        height=30,
        boxes=[[0, 0, 40, 30], [-1, 0, 10, 31], [5, 5, 5, 9], [1, 1, 6, 6], [2, 2, 8, 9]],
        class_ids=[0, 0, 0, 0, 3],
    )
    report = check(Dataset(root=tmp_path, format="coco", classes=["a"], images=[record]))
    assert _kinds(report) == {
        "out_of_bounds": ["box 2 (a): x1 -1 < 0, y2 31 > height 30"],
        "degenerate": ["box 3 (a): 0 x 4 px"],
        "tiny": ["box 4 (a): 5 x 5 px = 25 px²"],
        "unnamed_class": ["box 5 (3): class id 3 has no name"],
    }
    assert [f.box for f in report.findings if f.kind == "tiny"] == [3]


def test_file_findings(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    write_image(tmp_path / "images" / "a.png", 40, 30)
    shutil.copy(tmp_path / "images" / "a.png", tmp_path / "images" / "copy.png")
    write_image(tmp_path / "images" / "rotated.jpg", 40, 30, exif_orientation=6)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    xml = "<annotation><filename>{}</filename><size><width>{}</width><height>30</height></size></annotation>"
    (tmp_path / "annotations" / "a.xml").write_text(xml.format("a.png", 41))
    (tmp_path / "annotations" / "ghost.xml").write_text(xml.format("ghost.png", 40))
    (tmp_path / "annotations" / "rotated.xml").write_text(xml.format("rotated.jpg", 40))
    (tmp_path / "annotations" / "bad.xml").write_text("<annotation>")
    ds = load_dataset(tmp_path, strict=False)
    report = check(ds)
    found = {(f.kind, f.file) for f in report.findings}
    assert found == {
        ("bad_file", "annotations/bad.xml"),
        ("size_mismatch", "annotations/a.xml"),
        ("orphan_annotation", "annotations/ghost.xml"),
        ("no_annotation", "images/copy.png"),
        ("no_annotation", "images/broken.png"),
        ("bad_image", "images/broken.png"),
        ("duplicate_image", "images/copy.png"),
        ("exif_rotated", "images/rotated.jpg"),
    }
    assert "annotation says 41 x 30, image is 40 x 30" in {f.detail for f in report.findings}


def test_coco_lists_missing_and_unlisted_images(tmp_path):
    write_image(tmp_path / "a.jpg", 10, 10)
    write_image(tmp_path / "extra.jpg", 12, 10)
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone.jpg", "width": 5, "height": 5}],
        "annotations": [],
        "categories": [],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    report = check(load_dataset(tmp_path))
    assert {(f.kind, f.file) for f in report.findings} == {
        ("missing_image", "annotations.json"),
        ("no_annotation", "extra.jpg"),
    }


def test_shared_voc_health_json_lists_the_eight_xmax_401_boxes(shared):
    result = subprocess.run(
        [WORKBENCH, "check", str(shared / "andrewmvd-voc"), "--json"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"images", "boxes", "classes", "findings"}
    assert (report["images"], report["boxes"]) == (689, 3179)
    assert report["classes"] == {"without_mask": 592, "with_mask": 2482, "mask_weared_incorrect": 105}
    assert all(set(f) == {"kind", "file", "detail"} for f in report["findings"])
    out = [f for f in report["findings"] if f["kind"] == "out_of_bounds"]
    # ../shared/datasets/README.md: 231, 251, 501, 603 (2 boxes), 616, 706, 787
    assert sorted(f["file"] for f in out) == [
        f"annotations/maksssksksss{n}.xml" for n in ("231", "251", "501", "603", "603", "616", "706", "787")
    ]
    assert all(f["detail"].endswith("x2 401 > width 400") for f in out)
    duplicates = {f["file"] for f in report["findings"] if f["kind"] == "duplicate_image"}
    assert duplicates == {"images/maksssksksss737.png", "images/maksssksksss428.png", "images/maksssksksss775.png"}
    assert not [
        f
        for f in report["findings"]
        if f["kind"] in ("missing_image", "orphan_annotation", "no_annotation", "size_mismatch")
    ]


def test_shared_sets_health(shared):
    yolo = check(load_dataset(shared / "macwinwin-yolo"))
    # README: no box outside 0..1, no EXIF orientation other than 1; every label has its image.
    assert not yolo.findings
    coco = check(load_dataset(shared / "roboflow-coco"))
    (box,) = [f for f in coco.findings if f.kind == "out_of_bounds"]
    assert (
        box.file == "valid/_annotations.coco.json"
        and "maksssksksss805" in box.image
        and "y2 225.47 > height 225" in box.detail
    )


def test_check_text_output(shared):
    result = subprocess.run(
        [WORKBENCH, "check", str(shared / "andrewmvd-voc"), "--limit", "2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0
    assert "box outside its image (out_of_bounds): 8" in result.stdout
    assert "... and 6 more" in result.stdout and "with_mask" in result.stdout


def test_record_findings(tmp_path):
    voc_copy = copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")
    dataset = index.open_dataset(voc_copy).dataset
    record = dataset.images[0].copy()
    assert health.record_findings(dataset, record) == []
    record.boxes[0] = [-5, 0, 3, 3]
    kinds = sorted(f.kind for f in health.record_findings(dataset, record))
    assert kinds == ["out_of_bounds", "tiny"]


def test_the_report_is_computed_once_per_revision(tmp_path):
    opened = index.open_dataset(copy_voc(tmp_path / "voc", 3))
    first = health.report(opened)
    assert health.report(opened) is first
    opened.revision += 1  # what a save does
    assert health.report(opened) is not first


def test_format_reader_notes_are_findings_in_check_and_the_cli(tmp_path):
    """A rotated Label Studio box is read as its enclosing box: the reader's note is a finding."""
    from tests.formats.test_labelstudio import box_item, write_tasks

    write_image(tmp_path / "ls" / "a.jpg", 400, 400)
    tasks = [
        {"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [box_item(25, 25, 25, 12.5, rotation=90)]}]}
    ]
    root = write_tasks(tmp_path / "ls", tasks)
    report = check(load_dataset(root))
    notes = [f for f in report.findings if f.kind == "reader_note"]
    assert len(notes) == 1 and notes[0].file == "tasks.json"
    assert "rotated by 90 degrees, read as its enclosing box" in notes[0].detail
    result = subprocess.run([WORKBENCH, "check", str(root), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listed = [f for f in json.loads(result.stdout)["findings"] if f["kind"] == "reader_note"]
    assert listed == [notes[0].to_json()]
    text = subprocess.run([WORKBENCH, "check", str(root)], capture_output=True, text=True, timeout=300).stdout
    assert health.KINDS["reader_note"] in text and "rotated by 90 degrees" in text


def test_cvat_shapes_kept_but_not_read_are_findings(tmp_path):
    from tests.formats.test_cvat import write

    root = write(tmp_path / "c")
    for name, size in (("a.png", (400, 300)), ("b.png", (64, 48))):
        write_image(root / name, *size)
    details = [f.detail for f in check(load_dataset(root)).findings if f.kind == "reader_note"]
    assert any("rotated by 90 degrees" in d for d in details)
    assert any("kept as they are, not read as boxes" in d for d in details)
    assert check(load_dataset(copy_voc(tmp_path / "voc"))).by_kind().get("reader_note") is None
