"""Tests written against the mutants mutmut left alive in workbench.formats.{voc,coco,yolo}
(docs/mutation.md): YOLO's ``names`` and label-path guesses, every format's ``reread`` against a
full load of real files from ../shared/datasets, and COCO's class-list save."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_voc_subset, write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.formats import coco, voc, yolo

STEMS = ["maksssksksss0", "maksssksksss1", "maksssksksss2"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a", 1], ["a", "1"]),
        ({1: "b", "0": "a"}, ["a", "b"]),
        ({0: "a", 3: "d"}, ["a", "1", "2", "d"]),
        ({}, []),
        ([], []),
    ],
)
def test_names_list(names, expected):
    assert yolo.names_list(names, "data.yaml") == expected


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"x": "a"}, "data.yaml: 'names' keys must be class ids: invalid literal for int() with base 10: 'x'"),
        ({-1: "a", 0: "b"}, "data.yaml: negative class id -1 in 'names'"),
        ("a b", "data.yaml: 'names' must be a list or a dict"),
        (None, "data.yaml: 'names' must be a list or a dict"),
    ],
)
def test_names_list_errors(names, message):
    with pytest.raises(ReadError) as e:
        yolo.names_list(names, "data.yaml")
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("label", "image"),
    [
        ("labels/train/a.txt", "images/train/a.jpg"),
        ("train/labels/labels/a.txt", "train/labels/images/a.jpg"),
        ("labels/a.txt", "images/a.jpg"),
        ("a.txt", "a.jpg"),
        ("x/labels.txt", "x/labels.jpg"),
    ],
)
def test_image_guess(label, image):
    assert yolo._image_guess(label) == image


@pytest.fixture
def yolo_copy(shared, tmp_path) -> Path:
    src = shared / "macwinwin-yolo"
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    shutil.copy2(src / "classes.txt", root)
    for label in sorted((src / "labels").glob("*.txt"))[:3]:
        shutil.copy2(label, root / "labels")
        (image,) = (src / "images").glob(label.stem + ".*")
        shutil.copy2(image, root / "images")
    (root / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return root


def test_yolo_reread_matches_a_load(yolo_copy):
    ds = yolo.load(yolo_copy)
    positions = {i: r.annotation for i, r in enumerate(ds.images) if r.annotation}
    assert len(positions) == 4
    again = yolo.reread(ds, positions)
    assert list(again) == list(positions)
    for i, record in again.items():
        assert record.path == ds.images[i].path and record.same_boxes(ds.images[i])
        assert (record.width, record.height, record.annotation) == (
            ds.images[i].width,
            ds.images[i].height,
            positions[i],
        )
    orphan = next(r for r in again.values() if r.annotation == "labels/orphan.txt")
    assert orphan.path == "images/orphan.jpg" and orphan.extra["yolo"] == {"lines": ["0 0.5 0.5 0.2 0.2"]}
    record = ds.images[0]
    assert yolo.annotation_files(ds, record) == [record.annotation]
    other = Dataset(yolo_copy, "voc", ds.classes, [])
    assert yolo.annotation_files(other, ImageRecord("images/val/b.png", 4, 4)) == ["labels/val/b.txt"]
    (yolo_copy / "labels" / "orphan.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ReadError, match=r"^labels/orphan\.txt: cannot read: "):
        yolo.reread(ds, {0: "labels/orphan.txt"})


@pytest.fixture
def voc_copy(shared, tmp_path) -> Path:
    return copy_voc_subset(shared, tmp_path / "voc", STEMS)


def test_voc_reread_and_read_record_match_a_load(voc_copy):
    ds = voc.load(voc_copy)
    scanned = [p.relative_to(voc_copy).as_posix() for p in voc_copy.rglob("*") if p.is_file()]
    files = {i: r.annotation for i, r in enumerate(ds.images)}
    again = voc.reread(ds, files, scanned=scanned)
    assert list(again) == [0, 1, 2]
    for i, record in again.items():
        loaded = ds.images[i]
        assert record.same_boxes(loaded) and record.class_ids.tolist() == loaded.class_ids.tolist()
        assert (record.path, record.width, record.height, record.annotation) == (
            loaded.path,
            loaded.width,
            loaded.height,
            loaded.annotation,
        )
        assert record.box_extra == loaded.box_extra and "_names" not in record.extra
    one = voc.read_record(voc_copy, voc_copy / files[1])
    assert one.class_ids.tolist() == [0] * len(one) and one.extra["_names"] == [
        ds.classes[c] for c in ds.images[1].class_ids
    ]
    shifted = Dataset(voc_copy, "voc", ["other", *ds.classes], ds.images)
    assert voc.reread(shifted, {0: files[0]}, scanned=scanned)[0].class_ids.tolist() == [
        c + 1 for c in ds.images[0].class_ids
    ]
    missing = Dataset(voc_copy, "voc", ["other"], ds.images)
    with pytest.raises(ReadError, match="is not one of the dataset's classes"):
        voc.reread(missing, {0: files[0]}, scanned=scanned)
    (voc_copy / files[2]).unlink()
    with pytest.raises(ReadError, match=r"cannot read: "):
        voc.reread(ds, {2: files[2]}, scanned=scanned)


def test_voc_size_from_the_header_when_the_xml_has_none(voc_copy):
    xml = voc_copy / "annotations" / f"{STEMS[0]}.xml"
    text = xml.read_text()
    start, end = text.index("<size>"), text.index("</size>") + len("</size>")
    xml.write_text(text[:start] + "<size>none</size>" + text[end:])
    record = voc.read_record(voc_copy, xml)
    from PIL import Image

    with Image.open(voc_copy / "images" / f"{STEMS[0]}.png") as image:
        assert (record.width, record.height) == image.size
    xml.write_text(text[:start] + "<size><width>0</width><height>7</height></size>" + text[end:])
    assert (voc.read_record(voc_copy, xml).width, voc.read_record(voc_copy, xml).height) == image.size


@pytest.fixture
def coco_copy(shared, tmp_path) -> Path:
    root = tmp_path / "coco"
    shutil.copytree(shared / "roboflow-coco" / "test", root / "test")
    return root


def test_coco_class_list_save_rewrites_each_file(coco_copy, tmp_path):
    ds = coco.load(coco_copy)
    ds.classes[0] = "renamed"
    out = tmp_path / "out"
    coco.save_class_list(ds, out)
    written = json.loads((out / "test" / "_annotations.coco.json").read_text())
    assert written["categories"][0]["name"] == "renamed"
    assert len(written["images"]) == sum(1 for r in ds.images if r.annotation)
    record = ds.images[0]
    assert coco.annotation_files(ds, record) == ["test/_annotations.coco.json"]
    assert coco.annotation_files(ds, ImageRecord("x.jpg", 1, 1)) == []
    assert coco.save_record(ds, record, out) == out / "test" / "_annotations.coco.json"
    assert coco.save_record(ds, record) == coco_copy / "test" / "_annotations.coco.json"
    again = coco.load(coco_copy)
    assert again.classes[0] == "renamed" and [r.same_boxes(s) for r, s in zip(again.images, ds.images)] == [True] * len(
        ds.images
    )
    assert np.array_equal(again.images[0].class_ids, ds.images[0].class_ids)


def test_coco_save_reports_progress(coco_copy, tmp_path):
    ds = coco.load(coco_copy)
    seen = []
    assert coco.save(ds, tmp_path / "out", on_progress=lambda i, n: seen.append((i, n))) == [
        tmp_path / "out" / "test" / "_annotations.coco.json"
    ]
    assert seen == [(1, 1)]


def test_yolo_detection_wants_a_label_folder(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    assert not yolo.detect(tmp_path)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "A.TXT").write_text("0 0.5 0.5 0.1 0.1\n")
    assert yolo.detect(tmp_path)


def test_coco_detection_looks_three_levels_down(tmp_path, shared):
    text = (shared / "roboflow-coco" / "test" / "_annotations.coco.json").read_text()
    (tmp_path / "other.json").write_text('{"x": 1}')
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "d.json").write_text(text)
    assert not coco.detect(tmp_path)
    (tmp_path / "a" / "b" / "e.JSON").write_text(text)
    assert coco.detect(tmp_path)


def test_voc_detection_reads_the_first_512_bytes(tmp_path):
    padding = "<!--" + "x" * (512 - len("<!---->") - len("<annotation")) + "-->"
    (tmp_path / "a.xml").write_text(padding + "<annotation></annotation>")
    assert len(padding) + len("<annotation") == 512 and not voc.detect(tmp_path)  # the ">" is byte 513
    (tmp_path / "a.xml").write_text(padding[:-4] + "-->" + "<annotation></annotation>")
    assert voc.detect(tmp_path)


def test_yolo_save_skips_only_its_own_bare_images(yolo_copy, tmp_path):
    write_image(yolo_copy / "images" / "zz1.jpg", 8, 8)
    write_image(yolo_copy / "images" / "zz2.jpg", 8, 8)
    ds = yolo.load(yolo_copy)
    bare = [r for r in ds.images if r.annotation is None]
    assert [r.path for r in bare] == ["images/zz1.jpg", "images/zz2.jpg"]
    bare[1].add_box(np.array([1.0, 1, 4, 4]), 0)
    seen = []
    yolo.save(ds, tmp_path / "out", on_progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (len(ds.images), len(ds.images))
    assert (
        not (tmp_path / "out" / "labels" / "zz1.txt").exists() and (tmp_path / "out" / "labels" / "zz2.txt").is_file()
    )
    converted = Dataset(yolo_copy, "voc", ds.classes, [ImageRecord("images/c.jpg", 8, 8)])
    yolo.save(converted, tmp_path / "converted")
    assert (tmp_path / "converted" / "labels" / "c.txt").read_text() == ""


def test_coco_save_record_writes_the_file_holding_the_record(shared, tmp_path):
    root = tmp_path / "coco"
    for split in ("test", "valid"):
        shutil.copytree(shared / "roboflow-coco" / "test", root / split)
    ds = coco.load(root)
    record = next(r for r in ds.images if r.annotation == "valid/_annotations.coco.json")
    assert coco.save_record(ds, record, tmp_path / "out") == tmp_path / "out" / "valid" / "_annotations.coco.json"


def test_voc_reread_names_the_file_of_an_unknown_class(voc_copy):
    ds = voc.load(voc_copy)
    scanned = [p.relative_to(voc_copy).as_posix() for p in voc_copy.rglob("*") if p.is_file()]
    rel = ds.images[0].annotation
    name = ds.classes[int(ds.images[0].class_ids[0])]
    with pytest.raises(ReadError) as e:
        voc.reread(Dataset(voc_copy, "voc", ["other"], ds.images), {0: rel}, scanned=scanned)
    assert str(e.value) == f"{rel}: label {name!r} is not one of the dataset's classes"


def test_coco_annotation_of_a_new_box():
    assert coco._annotation([1, 2, 4, 8], 3, 7, {}, None) == {
        "image_id": 7,
        "category_id": 3,
        "bbox": [1, 2, 3, 6],
        "area": 18,
        "iscrowd": 0,
        "segmentation": [],
    }
    polygon = np.array([[1.0, 2.0], [4.0, 2.0], [4.0, 8.0]])
    assert coco._annotation([1, 2, 4, 8], 3, 7, {}, polygon)["segmentation"] == [[1, 2, 4, 2, 4, 8]]
    assert coco._annotation([0, 0, 0.5, 0.25], 1, 1, {}, None)["area"] == 0.125
    inverted = coco._annotation([4, 8, 1, 2], 1, 1, {}, None)
    assert inverted["area"] == 0 and inverted["bbox"] == [4, 8, -3, -6]


def test_coco_annotation_keeps_what_the_file_had():
    kept = {"id": 5, "bbox": [0, 0, 3, 6], "area": 99, "iscrowd": 1, "segmentation": [[0, 0, 1, 1]], "k": "x"}
    same = coco._annotation([1e-9, 0, 3, 6], 2, 8, kept, None)  # within 1e-9: unchanged
    assert same == {**kept, "image_id": 8, "category_id": 2}
    moved = coco._annotation([0, 0, 0.5, 0.25], 2, 8, {"id": 5, "bbox": [0, 0, 3, 6], "area": 99}, None)
    assert moved == {"id": 5, "bbox": [0, 0, 0.5, 0.25], "area": 0.125, "image_id": 8, "category_id": 2, "iscrowd": 0}
    flat = coco._annotation([0, 0, 3, 0], 2, 8, {"id": 5, "bbox": [0, 0, 3, 6]}, None)
    assert flat["area"] == 0 and "segmentation" not in flat
    no_area = coco._annotation([0, 0, 0.5, 0.25], 1, 1, {"bbox": [0, 0, 0.5, 0.25]}, None)
    assert no_area == {"bbox": [0, 0, 0.5, 0.25], "area": 0.125, "iscrowd": 0, "image_id": 1, "category_id": 1}
    polygon = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 6.0]])
    with_polygon = coco._annotation([0, 0, 3, 6], 1, 1, {"id": 2, "bbox": [0, 0, 3, 6]}, polygon)
    assert with_polygon["segmentation"] == [[0, 0, 3, 0, 3, 6]]


def test_coco_categories_of():
    other = Dataset("/r", "voc", ["a", "b"], [ImageRecord("x.jpg", 4, 4, [[0, 0, 1, 1]], [2])])
    assert coco.categories_of(other) == [
        {"id": 1, "name": "a", "supercategory": "none"},
        {"id": 2, "name": "b", "supercategory": "none"},
        {"id": 3, "name": other.class_name(2), "supercategory": "none"},
    ]
    assert [c["id"] for c in coco.categories_of(Dataset("/r", "voc", ["a"], [ImageRecord("x.jpg", 4, 4)]))] == [1]
    assert coco.categories_of(Dataset("/r", "voc", [], [])) == []
    kept = [{"id": 0, "name": "x", "supercategory": "s"}, {"id": 5, "name": "y", "supercategory": "s"}]
    ds = Dataset(
        "/r",
        "coco",
        ["a", "b"],
        [ImageRecord("x.jpg", 4, 4, [[0, 0, 1, 1]], [2])],
        extra={"coco": {"categories": kept}},
    )
    assert coco.categories_of(ds) == [
        {"id": 0, "name": "a", "supercategory": "s"},
        {"id": 5, "name": "b", "supercategory": "s"},
        {"id": 6, "name": ds.class_name(2), "supercategory": "none"},
    ]
    ds.classes.append("c")  # a class added: the kept list no longer fits, ids start again at 1
    assert [c["id"] for c in coco.categories_of(ds)] == [1, 2, 3]
    assert coco.categories_of(Dataset("/r", "voc", ["a"], [], extra={"coco": {"categories": kept[:1]}}))[0]["id"] == 1


def test_yolo_detection_looks_below_the_root_only(tmp_path):
    root = tmp_path / "labels" / "ds"  # the root itself sits in a folder named labels
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "readme.txt").write_text("x")
    assert not yolo.detect(root)


def coco_records() -> list[ImageRecord]:
    r1 = ImageRecord(
        "sub/a.jpg", 10, 20, [[0, 0, 1, 1], [1, 1, 3, 3]], [0, 1], split="train", annotation="sub/ann.json"
    )
    r1.extra = {"coco": {"id": 7, "license": 1}}
    r1.box_extra = [
        {"coco": {"id": 3, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}, "coco_order": 1},
        {"coco_order": 0},
    ]
    r2 = ImageRecord("sub/b.jpg", 5, 6, [[0, 0, 2, 2]], [0], split="train")
    return [r1, r2, ImageRecord("c.jpg", 5, 6, split="val"), ImageRecord("d.jpg", 5, 6)]


def test_coco_to_dict_keeps_ids_and_order_and_numbers_new_ones():
    records = coco_records()
    ds = Dataset("/r", "coco", ["a", "b"], records)
    doc = coco.to_dict(ds, records[:2], "sub/ann.json")
    assert doc["info"] == {"description": "written by workbench"} and doc["licenses"] == []
    assert doc["images"] == [
        {"id": 7, "license": 1, "file_name": "a.jpg", "height": 20, "width": 10},
        {"id": 8, "file_name": "b.jpg", "height": 6, "width": 5},
    ]
    assert doc["annotations"] == [
        {"id": 4, "image_id": 7, "category_id": 2, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0, "segmentation": []},
        {"id": 3, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0, "image_id": 7, "category_id": 1},
        {"id": 5, "image_id": 8, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0, "segmentation": []},
    ]
    other = coco.to_dict(Dataset("/r", "voc", ["a", "b"], records), records[:2], "ann.json")
    assert [i["id"] for i in other["images"]] == [1, 2] and other["images"][0]["file_name"] == "sub/a.jpg"
    assert [(a["id"], a["image_id"], a["category_id"]) for a in other["annotations"]] == [
        (1, 1, 1),
        (2, 1, 2),
        (3, 2, 1),
    ]
    assert (
        coco.to_dict(ds, records[:1], "sub/ann.json", {"info": {"x": 1}, "@base": "."})["images"][0]["file_name"]
        == "sub/a.jpg"
    )


def test_coco_groups():
    records = coco_records()
    ds = Dataset("/r", "coco", ["a", "b"], records)
    groups = {k: [r.path for r in v] for k, v in coco._groups(ds).items()}
    assert groups == {"sub/ann.json": ["sub/a.jpg", "sub/b.jpg"], "val.json": ["c.jpg"], "annotations.json": ["d.jpg"]}
    flat = {k: [r.path for r in v] for k, v in coco._groups(ds, keep_files=False).items()}
    assert flat == {"train.json": ["sub/a.jpg", "sub/b.jpg"], "val.json": ["c.jpg"], "annotations.json": ["d.jpg"]}
