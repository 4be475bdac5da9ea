"""workbench/formats/coco.py (and the common and LabelMe helpers it reads with), against the
mutants mutmut left alive in them (docs/mutation.md): how COCO files are found (the 64 KiB
head, leading blanks, LabelMe look-alikes, unreadable files, three levels down), the folder
``file_name``s resolve from, split names, a lenient load's skips and conflicts, sizes trusted
from the file, areas and segmentations written back, saves of datasets built in code, UTF-8
text, a record merged into a fresh read of its file, and JSON with a byte-order mark."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_voc_subset, write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError, ReadError
from workbench.formats import coco, common, labelme, voc

CATEGORIES = [{"id": 1, "name": "with_mask"}, {"id": 2, "name": "without_mask"}]


def doc(names: list[str], annotations: list[dict] | None = None, categories: list[dict] | None = None) -> dict:
    """A small COCO document: images 1..N named ``names`` (40 x 30), its annotations and categories."""
    images = [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names, 1)]
    return {"images": images, "annotations": annotations or [], "categories": categories or CATEGORIES}


def box(id_: int, image_id: int, category_id: int = 1, bbox: list[float] | None = None) -> dict:
    return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": bbox or [2, 3, 10, 5]}


def write(path: Path, data: dict, *, images: bool = True) -> Path:
    """Write ``data`` at ``path`` and, with ``images``, its images beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    if images:
        for img in data["images"]:
            write_image(path.parent / img["file_name"], 40, 30)
    return path


@pytest.fixture
def roboflow(shared, tmp_path) -> Path:
    """A copy of the shared Roboflow export's ``test`` split (73 images, 380 boxes)."""
    root = tmp_path / "coco"
    shutil.copytree(shared / "roboflow-coco" / "test", root / "test")
    return root


# ---- which files are COCO files


def test_a_file_that_starts_with_blank_lines_is_a_coco_file(roboflow):
    path = roboflow / "test" / "_annotations.coco.json"
    path.write_text("\n  \t" + path.read_text())
    assert coco.detect(roboflow) and coco.coco_files(roboflow) == [path]
    assert len(coco.load(roboflow).images) == 73


def test_annotations_in_the_head_make_a_coco_file_when_images_come_later(roboflow):
    """A file that lists its annotations first: ``"images"`` lies beyond the 64 KiB read."""
    path = roboflow / "test" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    pad = {"description": "x" * 70_000}
    reordered = {
        "annotations": data["annotations"],
        "info": pad,
        "images": data["images"],
        "categories": data["categories"],
    }
    text = json.dumps(reordered)
    assert text.index('"images"') > 65_536
    path.write_text(text)
    assert coco.coco_files(roboflow) == [path] and coco.detect(roboflow)
    assert len(coco.load(roboflow).images) == 73


@pytest.mark.parametrize(("extra", "found"), [(0, True), (1, False)])
def test_detection_reads_the_first_64_kib(tmp_path, extra, found):
    """``"images"`` ending at byte 65,536 is seen; one byte further it is not (no
    ``"annotations"`` key comes before it)."""
    head, tail = '{"info": {"description": "', '"}, "images"'
    text = head + "x" * (65_536 + extra - len(head) - len(tail)) + tail
    assert len(text) == 65_536 + extra
    path = tmp_path / "annotations.json"
    path.write_text(text + ': [], "annotations": [], "categories": []}')
    assert coco.detect(tmp_path) is found
    assert coco.coco_files(tmp_path) == ([path] if found else [])


def test_a_labelme_file_with_a_label_named_annotations_is_not_a_coco_file(shared, tmp_path):
    """LabelMe JSON has ``"shapes"``; a label or flag spelled like a COCO key does not make it COCO."""
    for name in ("2011_000003.json", "2011_000003.jpg"):
        shutil.copy2(shared / "labelme-examples" / "bbox_detection" / name, tmp_path / name)
    path = tmp_path / "2011_000003.json"
    data = json.loads(path.read_text())
    data["shapes"][0]["label"] = "annotations"
    data["flags"] = {"images": True}
    path.write_text(json.dumps(data))
    assert not coco.detect(tmp_path) and coco.coco_files(tmp_path) == []
    assert labelme.load(tmp_path).classes[0] == "annotations"


def test_a_dangling_link_named_json_is_not_a_coco_file(roboflow):
    os.symlink(roboflow / "gone.json", roboflow / "test" / "a.json")
    assert coco.coco_files(roboflow) == [roboflow / "test" / "_annotations.coco.json"]
    assert len(coco.load(roboflow).images) == 73
    alone = roboflow / "alone"
    alone.mkdir()
    os.symlink(roboflow / "gone.json", alone / "b.json")
    assert not coco.detect(alone)


def test_coco_files_are_read_down_to_two_folders_deep_and_others_are_left_out(tmp_path):
    (tmp_path / "other.json").write_text('{"x": 1}')
    shallow = write(tmp_path / "a" / "b" / "e.json", doc(["e.jpg"]))
    write(tmp_path / "a" / "b" / "c" / "d.json", doc(["d.jpg"]))
    assert coco.coco_files(tmp_path) == [shallow]
    assert [r.path for r in coco.load(tmp_path).images] == ["a/b/e.jpg"]


# ---- the folder file_names resolve from, and split names


def test_file_names_resolve_from_the_images_folder_of_the_root(tmp_path):
    write_image(tmp_path / "images" / "a.jpg", 40, 30)
    write(tmp_path / "labels" / "coco.json", doc(["a.jpg"]), images=False)
    assert [(r.path, r.split) for r in coco.load(tmp_path).images] == [("images/a.jpg", None)]


def test_a_split_file_still_finds_its_images_in_the_images_folder(tmp_path):
    write_image(tmp_path / "images" / "a.jpg", 40, 30)
    write(tmp_path / "train.json", doc(["a.jpg"]), images=False)
    assert [(r.path, r.split) for r in coco.load(tmp_path).images] == [("images/a.jpg", "train")]


def test_the_first_five_file_names_decide_the_folder(tmp_path):
    """Five of six images beside the JSON, all six in ``images/``: the JSON's folder wins, as
    only the first five names are looked for."""
    names = [f"a{i}.jpg" for i in range(1, 7)]
    for name in names:
        write_image(tmp_path / "images" / name, 40, 30)
        if name != "a6.jpg":
            write_image(tmp_path / "labels" / name, 40, 30)
    write(tmp_path / "labels" / "coco.json", doc(names), images=False)
    assert [r.path for r in coco.load(tmp_path).images] == [f"labels/{n}" for n in names]


@pytest.mark.parametrize(
    ("folder", "split"), [("", None), ("batch1/", "batch1"), ("valid/", "valid"), ("images/test/", "test")]
)
def test_a_roboflow_file_is_named_by_its_folder(tmp_path, folder, split):
    write(tmp_path / f"{folder}_annotations.coco.json", doc(["a.jpg"]))
    (record,) = coco.load(tmp_path).images
    assert record.split == split and record.path == f"{folder}a.jpg"


# ---- sizes and category ids of parse_file


def test_a_width_or_height_of_one_pixel_is_taken_from_the_file(tmp_path):
    data = doc(["a.jpg", "b.jpg"])
    data["images"][0]["width"] = 1
    data["images"][1]["height"] = 1
    write(tmp_path / "annotations.json", data)
    assert [(r.width, r.height) for r in coco.load(tmp_path).images] == [(1, 30), (40, 1)]


def test_a_category_id_below_the_int64_range_is_refused(tmp_path):
    path = write(tmp_path / "annotations.json", doc(["a.jpg"], [box(7, 1, category_id=-(2**63) - 1)]))
    with pytest.raises(ReadError) as e:
        coco.parse_file(tmp_path, path)
    assert str(e.value) == "annotations.json: annotation id 7: category_id -9223372036854775809 is not an integer"


# ---- load: lenient skips, conflicts, progress, dtypes


def three_files(tmp_path: Path, middle: dict) -> None:
    """``a.json`` (bad JSON), ``b.json`` (``middle``) and a good ``c.json``, each with its own image."""
    (tmp_path / "a.json").write_text('{"images": [')
    write(tmp_path / "b.json", middle)
    write(tmp_path / "c.json", doc(["c.jpg"], [box(1, 1, category_id=1)], [{"id": 1, "name": "with_mask"}]))


def test_a_lenient_load_skips_each_bad_file_and_reads_the_rest(tmp_path):
    three_files(tmp_path, doc(["b.jpg"], [box(1, 1, category_id=9)]))
    ds = coco.load(tmp_path, strict=False)
    assert [r.path for r in ds.images] == ["c.jpg"] and ds.classes == ["with_mask"]
    assert [(e.file, e.reason) for e in ds.skipped] == [
        ("a.json", "malformed JSON: Expecting value: line 1 column 13 (char 12)"),
        ("b.json", "annotations use category ids [9] not in 'categories'"),
    ]


def test_a_category_id_with_another_name_in_another_file_is_refused(tmp_path):
    three_files(tmp_path, doc(["b.jpg"], [box(1, 1)], [{"id": 1, "name": "mask"}]))
    write(tmp_path / "d.json", doc(["d.jpg"], [box(1, 1, category_id=2)], [{"id": 2, "name": "other"}]))
    ds = coco.load(tmp_path, strict=False)
    assert [r.path for r in ds.images] == ["b.jpg", "d.jpg"] and ds.classes == ["mask", "other"]
    assert [str(e) for e in ds.skipped][1] == "c.json: category id 1 has another name in another file"
    (tmp_path / "a.json").unlink()
    with pytest.raises(DatasetReadError) as e:
        coco.load(tmp_path)
    assert str(e.value) == f"{tmp_path}: 1 bad file:\n  c.json: category id 1 has another name in another file"
    assert e.value.root == str(tmp_path) and e.value.errors[0].file == "c.json"


def test_a_load_reports_progress_file_by_file(tmp_path):
    write(tmp_path / "train.json", doc(["a.jpg"]))
    write(tmp_path / "val.json", doc(["b.jpg"]))
    seen = []
    coco.load(tmp_path, on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


def test_class_ids_are_int64_also_for_an_image_without_boxes(roboflow):
    path = roboflow / "test" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 0]
    path.write_text(json.dumps(data))
    ds = coco.load(roboflow)
    assert len(ds.images[0]) == 0 and len(ds.images) == 73
    assert {r.class_ids.dtype for r in ds.images} == {np.dtype(np.int64)}
    assert {r.boxes.dtype for r in ds.images} == {np.dtype(np.float64)}


# ---- what a save writes


def test_an_annotation_without_area_gets_the_area_of_its_box(roboflow, tmp_path):
    path = roboflow / "test" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        del ann["area"]
    path.write_text(json.dumps(data))
    coco.save(coco.load(roboflow), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "test" / "_annotations.coco.json").read_text())
    assert [a["area"] for a in written["annotations"]] == [
        common.number(a["bbox"][2] * a["bbox"][3]) for a in data["annotations"]
    ]
    assert [a["bbox"] for a in written["annotations"]] == [a["bbox"] for a in data["annotations"]]


def test_a_kept_segmentation_is_written_back_even_when_the_record_has_a_polygon():
    rle = {"size": [30, 40], "counts": "abc"}
    record = ImageRecord("a.jpg", 40, 30, [[2, 3, 12, 8]], [0], polygons=[[[2, 3], [12, 3], [12, 8]]])
    record.extra = {"coco": {"id": 4, "file_name": "a.jpg"}}
    record.box_extra = [{"coco": {"id": 9, "bbox": [2, 3, 10, 5], "segmentation": rle}, "coco_order": 0}]
    ds = Dataset("/r", "coco", ["a"], [record])
    (ann,) = coco.to_dict(ds, [record], "annotations.json")["annotations"]
    assert ann["segmentation"] == rle and ann["id"] == 9


def test_a_voc_dataset_saved_as_coco_reads_back_the_same(shared, tmp_path):
    voc_root = copy_voc_subset(shared, tmp_path / "voc", ["maksssksksss0", "maksssksksss1", "maksssksksss2"])
    source = voc.load(voc_root)
    (out,) = coco.save(source, voc_root)
    assert out == voc_root / "annotations.json"
    again = coco.load(voc_root)
    assert again.classes == source.classes
    assert [r.path for r in again.images] == [r.path for r in source.images]
    for a, b in zip(again.images, source.images):
        assert [source.classes[c] for c in b.class_ids] == [again.classes[c] for c in a.class_ids]
        assert np.allclose(a.boxes, b.boxes, atol=1e-6, rtol=0)
    expected = coco.to_dict(source, source.images, "annotations.json")
    assert out.read_text() == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("extra", [{}, {"coco": {"categories": [{"id": 3, "name": "a"}]}}])
def test_a_coco_dataset_built_in_code_saves(tmp_path, extra):
    record = ImageRecord("a.jpg", 40, 30, [[2, 3, 12, 8]], [0])
    ds = Dataset(tmp_path, "coco", ["a"], [record], extra=extra)
    assert coco.save(ds, tmp_path) == [tmp_path / "annotations.json"]
    written = json.loads((tmp_path / "annotations.json").read_text())
    assert written["images"] == [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 40}]
    assert [(a["id"], a["bbox"]) for a in written["annotations"]] == [(1, [2, 3, 10, 5])]
    assert written["categories"][0]["id"] == (3 if extra else 1)


def test_names_are_written_as_utf8_not_escaped(roboflow, tmp_path):
    ds = coco.load(roboflow)
    ds.classes[4] = "маска"
    coco.save(ds, tmp_path / "out")
    raw = (tmp_path / "out" / "test" / "_annotations.coco.json").read_bytes()
    assert "маска".encode() in raw and b"\\u" not in raw
    assert coco.load(tmp_path / "out").classes[4] == "маска"


def test_a_record_from_an_earlier_read_merges_into_a_fresh_read_of_its_file(roboflow):
    """Another tab deleted an image's boxes, so the annotations after it moved up in the file;
    this tab's record, read before, still carries their old places, which now clash with the
    fresh file's: the save still writes every box of every image once."""
    earlier = coco.load(roboflow)
    other = coco.load(roboflow)
    while len(other.images[0]):
        other.images[0].remove_box(0)
    coco.save_record(other, other.images[0])
    fresh = coco.load(roboflow)
    mine = earlier.images[2]
    mine.remove_box(0)
    fresh.images[2] = mine
    coco.save_record(fresh, mine)
    again = coco.load(roboflow)
    assert len(again.images[0]) == 0 and again.images[2].same_boxes(mine)
    assert [r.same_boxes(s) for r, s in zip(again.images[3:], earlier.images[3:])] == [True] * 70


# ---- the helpers from common and labelme


def test_a_json_file_with_a_byte_order_mark_is_read(roboflow):
    path = roboflow / "test" / "_annotations.coco.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(labelme.read_json(path, "x.json")["images"]) == 73


def test_walk_has_looks_at_20000_files_by_default(tmp_path):
    for i in range(20_001):
        (tmp_path / f"f{i}").touch()
    calls = []
    assert not common.walk_has(tmp_path, lambda name: (calls.append(name), len(calls) > 20_000)[1])
    assert len(calls) == 20_000
