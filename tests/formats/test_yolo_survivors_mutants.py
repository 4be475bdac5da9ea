"""workbench/formats/yolo.py, against the mutants left alive after test_yolo_text_mutants
(docs/mutation.md): where names files and labels are found (``labels/``, split folders, a label
beside its image with a dotted name), what a load keeps (``data.yaml``, skipped files, progress),
1-px and 0-px images, 10-decimal coordinates, UTF-8 whatever the locale, and the names written back."""

from __future__ import annotations

import locale
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError
from workbench.formats import yolo

CLASSES = ["without_mask", "with_mask"]


def copy_pairs(shared: Path, root: Path, count: int, *, images: str, labels: str) -> list[str]:
    """Copy the first ``count`` real image + label pairs of the shared YOLO set into ``root``'s
    ``images`` and ``labels`` folders; returns their stems."""
    src = shared / "macwinwin-yolo"
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / labels).mkdir(parents=True, exist_ok=True)
    stems = [p.stem for p in sorted((src / "labels").glob("0*.txt"))[:count]]
    for stem in stems:
        shutil.copy2(src / "images" / f"{stem}.jpg", root / images)
        shutil.copy2(src / "labels" / f"{stem}.txt", root / labels)
    return stems


def test_a_names_file_in_labels_names_the_classes_and_is_no_label(shared, tmp_path):
    stems = copy_pairs(shared, tmp_path, 2, images="images", labels="labels")
    shutil.copy2(shared / "macwinwin-yolo" / "classes.txt", tmp_path / "labels")
    assert yolo.detect(tmp_path)
    ds = yolo.load(tmp_path)
    assert ds.classes == CLASSES and ds.extra == {"yolo": {"names_file": "labels/classes.txt"}}
    assert [r.annotation for r in ds.images] == [f"labels/{s}.txt" for s in stems]


def test_split_labels_folders_hold_labels_but_not_names_files(shared, tmp_path):
    stems = copy_pairs(shared, tmp_path, 1, images="train/images", labels="train/labels")
    (tmp_path / "data.yaml").write_text("names: [without_mask, with_mask]\n")
    (tmp_path / "train" / "labels" / "classes.txt").write_text("without_mask\nwith_mask\n")
    (tmp_path / "train" / "labels" / "orphan.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    ds = yolo.load(tmp_path)
    assert [(r.path, r.annotation, r.split) for r in ds.images] == [
        (f"train/images/{stems[0]}.jpg", f"train/labels/{stems[0]}.txt", "train"),
        ("train/images/orphan.jpg", "train/labels/orphan.txt", "train"),
    ]


def test_a_label_beside_its_image_with_a_dotted_name_is_read_and_saved_in_place(shared, tmp_path):
    (stem,) = copy_pairs(shared, tmp_path / "src", 1, images="images", labels="labels")
    (tmp_path / "images").mkdir()
    shutil.copy2(tmp_path / "src" / "images" / f"{stem}.jpg", tmp_path / "images" / "face.v2.jpg")
    text = (tmp_path / "src" / "labels" / f"{stem}.txt").read_text()
    (tmp_path / "images" / "face.v2.txt").write_text(text)
    shutil.rmtree(tmp_path / "src")
    ds = yolo.load(tmp_path)
    (record,) = ds.images
    assert (record.path, record.annotation) == ("images/face.v2.jpg", "images/face.v2.txt")
    assert len(record) == len(text.splitlines()) > 0
    assert yolo.annotation_files(ds, record) == ["images/face.v2.txt"]
    record.boxes = record.boxes[:1]
    record.class_ids, record.polygons, record.box_extra = record.class_ids[:1], [None], [{}]
    assert yolo.save_record(ds, record) == tmp_path / "images" / "face.v2.txt"
    assert (tmp_path / "images" / "face.v2.txt").read_text() == text.splitlines()[0] + "\n"
    assert not (tmp_path / "labels").exists()
    other = Dataset(tmp_path, "voc", CLASSES, [])
    annotated = ImageRecord("images/val/b.png", 4, 4, annotation="annotations/val/b.xml")
    assert yolo.annotation_files(other, annotated) == ["labels/val/b.txt"]


def test_a_load_without_a_names_file_has_no_classes_and_saves(shared, tmp_path):
    copy_pairs(shared, tmp_path, 1, images="images", labels="labels")
    ds = yolo.load(tmp_path)
    assert ds.classes == [] and ds.extra == {"yolo": {}} and ds.skipped == []
    yolo.save_names(ds, tmp_path / "out")
    assert (tmp_path / "out" / "classes.txt").read_text() == ""
    assert yaml.safe_load((tmp_path / "out" / "data.yaml").read_text()) == {"path": ".", "names": [], "nc": 0}


def test_a_load_keeps_the_data_yaml_and_a_save_updates_its_nc(shared, tmp_path):
    copy_pairs(shared, tmp_path, 1, images="images/train", labels="labels/train")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [without_mask, with_mask]\nnc: 2\n")
    ds = yolo.load(tmp_path)
    kept = {"path": ".", "train": "images/train", "names": CLASSES, "nc": 2}
    assert ds.extra == {"yolo": {"names_file": "data.yaml", "data_yaml": kept}}
    ds.class_id("mask_worn_incorrectly", add=True)
    yolo.save_names(ds, tmp_path)
    written = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert written == {**kept, "names": [*CLASSES, "mask_worn_incorrectly"], "nc": 3}


def test_bad_files_are_skipped_by_a_lenient_load_and_named_under_the_root_by_a_strict_one(shared, tmp_path):
    stems = copy_pairs(shared, tmp_path, 2, images="images", labels="labels")
    (tmp_path / "data.yaml").write_text("names: 5\n")
    (tmp_path / "labels" / f"{stems[1]}.txt").write_text("0 0.5 0.5\n")
    ds = yolo.load(tmp_path, strict=False)
    assert [str(e) for e in ds.skipped] == [
        "data.yaml: 'names' must be a list or a dict",
        f"labels/{stems[1]}.txt: line 1: expected 4 coordinates or a polygon, got 2 numbers",
    ]
    assert [r.path for r in ds.images] == [f"images/{stems[0]}.jpg"] and ds.classes == []
    with pytest.raises(DatasetReadError) as e:
        yolo.load(tmp_path)
    assert e.value.root == str(tmp_path) and str(e.value).startswith(f"{tmp_path}: 2 bad files:\n  data.yaml: ")


def test_a_load_reports_its_progress_over_images_and_lone_labels(shared, tmp_path):
    copy_pairs(shared, tmp_path, 3, images="images", labels="labels")
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    calls: list[tuple[int, int]] = []
    ds = yolo.load(tmp_path, on_progress=lambda done, total: calls.append((done, total)))
    assert len(ds) == 4 and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_four_point_polygon_is_read():
    ids, boxes, polygons = yolo.parse_lines("1 0.1 0.2 0.6 0.2 0.6 0.9 0.1 0.9\n", "a.txt")
    assert ids.tolist() == [1]
    np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.6, 0.9]])
    np.testing.assert_array_equal(polygons[0], [[0.1, 0.2], [0.6, 0.2], [0.6, 0.9], [0.1, 0.9]])


@pytest.fixture
def ascii_locale():
    """The C locale for text read without an explicit encoding (a machine that is not UTF-8)."""
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def test_names_and_labels_are_read_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    (tmp_path / "classes.txt").write_text("café\n猫\n", encoding="utf-8")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0\u00a00.5\u00a00.5 0.2 0.2\n", encoding="utf-8")  # no-break spaces
    assert yolo.read_names(tmp_path / "classes.txt", tmp_path) == (["café", "猫"], {})
    write_image(tmp_path / "images" / "a.jpg", 10, 10)
    record = yolo.read_record(tmp_path, image_rel="images/a.jpg", label_rel="labels/a.txt")
    np.testing.assert_allclose(record.boxes, [[4.0, 4.0, 6.0, 6.0]])


def test_a_one_pixel_image_has_its_boxes_read_and_written(tmp_path):
    write_image(tmp_path / "images" / "a.png", 1, 1)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.500000 0.500000 1.000000 1.000000\n")
    record = yolo.read_record(tmp_path, image_rel="images/a.png", label_rel="labels/a.txt")
    assert (record.width, record.height, record.extra) == (1, 1, {})
    np.testing.assert_array_equal(record.boxes, [[0.0, 0.0, 1.0, 1.0]])
    assert yolo.to_text(record) == "1 0.500000 0.500000 1.000000 1.000000\n"


def test_to_text_refuses_a_record_of_zero_height():
    with pytest.raises(ValueError, match=r"^a\.jpg: image size unknown, cannot normalise YOLO coordinates$"):
        yolo.to_text(ImageRecord(path="a.jpg", width=5, height=0))


def test_to_text_gives_ten_decimals_without_trailing_zeros_when_six_are_not_exact():
    wide = ImageRecord(
        "a.jpg", 10000, 100, boxes=np.array([[0.0, 0.0, 1234.567, 50.0]]), class_ids=np.array([0]), polygons=[None]
    )
    assert yolo.to_text(wide) == "0 0.06172835 0.250000 0.1234567 0.500000\n"
    _, boxes, _ = yolo.parse_lines(yolo.to_text(wide), "a.txt")
    np.testing.assert_allclose(boxes * [10000, 100, 10000, 100], wide.boxes, rtol=0, atol=1e-5)
    # 1e-12 from the 6-decimal grid is already not exact: 10 decimals, which round it to 0
    tiny = np.array([[1e-12 * 1024, 0.0], [512.0, 0.0], [512.0, 512.0]])
    poly = ImageRecord("a.jpg", 1024, 1024, boxes=np.array([[0.0, 0.0, 512.0, 512.0]]), class_ids=[2], polygons=[tiny])
    assert yolo.to_text(poly) == "2 0. 0.000000 0.500000 0.000000 0.500000 0.500000\n"


def names_dataset(classes: list[str], *, fmt: str = "yolo", splits: tuple[str, ...] = ()) -> Dataset:
    images = [ImageRecord(path=f"{s}/images/{s}.jpg", width=4, height=4, split=s) for s in splits]
    return Dataset(root=Path("/none"), format=fmt, classes=classes, images=images)


def test_save_names_of_a_yolo_dataset_built_without_extra(tmp_path):
    yolo.save_names(names_dataset(["a", "b"], splits=("train", "validation")), tmp_path)
    assert (tmp_path / "classes.txt").read_text() == "a\nb\n"
    assert yaml.safe_load((tmp_path / "data.yaml").read_text()) == {
        "path": ".",
        "train": "train/images",
        "val": "validation/images",
        "names": ["a", "b"],
        "nc": 2,
    }


def test_save_names_writes_non_ascii_names_as_they_are(tmp_path):
    yolo.save_names(names_dataset(["café", "猫"], fmt="coco"), tmp_path)
    assert (tmp_path / "classes.txt").read_text(encoding="utf-8") == "café\n猫\n"
    assert (tmp_path / "data.yaml").read_text(encoding="utf-8") == "path: .\nnames:\n- café\n- 猫\nnc: 2\n"
