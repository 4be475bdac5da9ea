"""workbench/formats/coco.py ``parse_file``, against the mutants mutmut left alive in it
(docs/mutation.md): every refusal with its exact message, file and record, the optional keys,
the image size from the header, and what a good file gives, field by field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_image
from workbench.errors import ReadError
from workbench.formats import coco

GOOD = {
    "info": {"year": 2026},
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
        {"id": "b", "file_name": "b.jpg", "width": 40, "height": 30, "license": 2},
    ],
    "annotations": [
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 8, "image_id": "b", "category_id": 5, "bbox": [0.5, 1.5, 2, 3]},
        {"id": 9, "image_id": 1, "category_id": 5, "bbox": [20, 10, 4, 4]},
    ],
    "categories": [{"id": 3, "name": "with_mask"}, {"id": 5, "name": "without_mask"}],
}


def parse(tmp_path: Path, data) -> tuple:
    for name in ("a.jpg", "b.jpg"):
        if not (tmp_path / name).exists():
            write_image(tmp_path / name, 40, 30)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return coco.parse_file(tmp_path, path)


def changed(change) -> dict:
    data = copy.deepcopy(GOOD)
    change(data)
    return data


CASES = [
    (lambda d: d.clear() or d.update(x=1), "annotations.json: 'images' is missing or not a list"),
    (lambda d: d.update(images={}), "annotations.json: 'images' is missing or not a list"),
    (lambda d: d.update(annotations={}), "annotations.json: 'annotations' is missing or not a list"),
    (lambda d: d.update(categories="x"), "annotations.json: 'categories' is missing or not a list"),
    (
        lambda d: d["categories"].append({"id": "6", "name": "x"}),
        "annotations.json: category 3: needs an integer 'id' and a string 'name'",
    ),
    (
        lambda d: d["categories"][0].update(name=4),
        "annotations.json: category 1: needs an integer 'id' and a string 'name'",
    ),
    (
        lambda d: d["categories"].insert(1, "x"),
        "annotations.json: category 2: needs an integer 'id' and a string 'name'",
    ),
    (lambda d: d["images"][0].pop("id"), "annotations.json: image 1: needs an 'id' and a 'file_name'"),
    (lambda d: d["images"][1].update(file_name=3), "annotations.json: image 2: needs an 'id' and a 'file_name'"),
    (lambda d: d["images"].append(5), "annotations.json: image 3: needs an 'id' and a 'file_name'"),
    (
        lambda d: d["images"][0].update(id=1.5),
        "annotations.json: image 1: image id 1.5 is not an integer or a string",
    ),
    (lambda d: d["images"][1].update(id=1), "annotations.json: image 2: duplicate image id 1"),
    (lambda d: d["images"][0].update(width="wide"), "annotations.json: image 1: 'width' is 'wide', not a number"),
    (lambda d: d["images"][1].update(height=[1]), "annotations.json: image 2: 'height' is [1], not a number"),
    (lambda d: d["annotations"].insert(0, 4), "annotations.json: annotation 1: is not a JSON object"),
    (
        lambda d: d["annotations"][1].update(id=2.5),
        "annotations.json: annotation 2: annotation id 2.5 is not an integer or a string",
    ),
    (lambda d: d["annotations"][2].update(id=7), "annotations.json: annotation id 7: duplicate annotation id"),
    (
        lambda d: d["annotations"][0].pop("image_id"),
        "annotations.json: annotation id 7: image_id None is not in 'images'",
    ),
    (
        lambda d: d["annotations"][0].pop("id") and d["annotations"][0].update(image_id=[1]),
        "annotations.json: annotation 1: image_id [1] is not in 'images'",
    ),
    (
        lambda d: d["annotations"][1].update(image_id=2),
        "annotations.json: annotation id 8: image_id 2 is not in 'images'",
    ),
    (
        lambda d: d["annotations"][0].update(category_id="3"),
        "annotations.json: annotation id 7: category_id '3' is not an integer",
    ),
    (
        lambda d: d["annotations"][0].update(category_id=2**63),
        f"annotations.json: annotation id 7: category_id {2**63} is not an integer",
    ),
    (
        lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
        "annotations.json: annotation id 7: 'bbox' must be 4 numbers [x, y, w, h], got [1, 2, 3]",
    ),
    (
        lambda d: d["annotations"][0].update(bbox=[1, 2, "w", 4]),
        "annotations.json: annotation id 7: 'bbox' must be 4 numbers [x, y, w, h], got [1, 2, 'w', 4]",
    ),
    (
        lambda d: d["annotations"][0].pop("bbox"),
        "annotations.json: annotation id 7: 'bbox' must be 4 numbers [x, y, w, h], got None",
    ),
    (
        lambda d: d["annotations"][2].update(bbox=[1, 2, float("inf"), 4]),
        "annotations.json: annotation id 9: 'bbox' must be finite, got [1, 2, inf, 4]",
    ),
]


@pytest.mark.parametrize(("change", "message"), CASES)
def test_each_refusal_names_the_file_the_record_and_the_reason(tmp_path, change, message):
    with pytest.raises(ReadError) as e:
        parse(tmp_path, changed(change))
    assert str(e.value) == message
    assert e.value.file == "annotations.json"


def test_not_an_object_and_not_json(tmp_path):
    with pytest.raises(ReadError) as e:
        parse(tmp_path, [GOOD])
    assert str(e.value) == "annotations.json: top level is not a JSON object" and e.value.record is None
    (tmp_path / "annotations.json").write_text("{")
    with pytest.raises(ReadError) as e:
        coco.parse_file(tmp_path, tmp_path / "annotations.json")
    assert str(e.value).startswith("annotations.json: malformed JSON: ")


def test_a_good_file_field_by_field(tmp_path):
    categories, records, top = parse(tmp_path, GOOD)
    assert categories == GOOD["categories"]
    assert top == {"info": {"year": 2026}, "@base": "."}
    a, b = records
    assert (a.path, a.width, a.height, a.split, a.annotation) == ("a.jpg", 40, 30, None, "annotations.json")
    assert a.extra == {"coco": GOOD["images"][0]} and b.extra == {"coco": GOOD["images"][1]}
    assert a.boxes.dtype == np.float64 and a.class_ids.dtype == np.int64
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 7], [20, 10, 24, 14]])
    np.testing.assert_array_equal(a.class_ids, [3, 5])  # category ids here; load maps them to classes
    np.testing.assert_array_equal(b.boxes, [[0.5, 1.5, 2.5, 4.5]])
    assert a.polygons == [None, None] and b.polygons == [None]
    assert a.box_extra == [
        {"coco": GOOD["annotations"][0], "coco_order": 0},
        {"coco": GOOD["annotations"][2], "coco_order": 2},
    ]
    assert b.box_extra == [{"coco": GOOD["annotations"][1], "coco_order": 1}]


def test_annotations_and_categories_may_be_missing_and_ids_reach_the_int64_limits(tmp_path):
    data = {"images": GOOD["images"]}
    categories, records, top = parse(tmp_path, data)
    assert categories == [] and [len(r.boxes) for r in records] == [0, 0] and top == {"@base": "."}
    for category_id in (-(2**63), 2**63 - 1):
        data = changed(lambda d, c=category_id: d["annotations"][0].update(category_id=c))
        assert parse(tmp_path, data)[1][0].class_ids[0] == category_id


def test_a_missing_or_zero_size_is_read_from_the_image_header(tmp_path):
    write_image(tmp_path / "a.jpg", 64, 48)
    data = changed(lambda d: d["images"][0].update(width=0) or d["images"][1].pop("height"))
    a, b = parse(tmp_path, data)[1]
    assert (a.width, a.height) == (64, 48) and (b.width, b.height) == (40, 30)
    assert a.extra["coco"]["width"] == 0  # the file's own values are kept for the save


def test_file_names_resolve_from_the_folder_that_holds_them(tmp_path):
    """A ``train.json`` at the root naming images that live in ``images/train/``: the split is
    ``train`` and each path is under that folder."""
    write_image(tmp_path / "images" / "train" / "a.jpg", 40, 30)
    write_image(tmp_path / "images" / "train" / "b.jpg", 40, 30)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(GOOD))
    _, records, top = coco.parse_file(tmp_path, path)
    assert [r.path for r in records] == ["images/train/a.jpg", "images/train/b.jpg"]
    assert {r.split for r in records} == {"train"} and top["@base"] == "images/train"
    assert {r.annotation for r in records} == {"train.json"}
