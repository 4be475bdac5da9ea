from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_image
from workbench.annotations import IGNORE_LABEL
from workbench.errors import DatasetReadError
from workbench.formats import labelme


def _shape(label: str, points: list, shape_type: str = "rectangle", **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": shape_type, "flags": {}, **extra}


def _doc(shapes: list, image_path: str = "a.jpg", **extra) -> dict:
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": 50,
        "imageWidth": 100,
        **extra,
    }


def _dataset(root: Path, doc: dict, name: str = "a") -> Path:
    write_image(root / f"{name}.jpg", 100, 50)
    (root / f"{name}.json").write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(
    ("shapes", "boxes"),
    [
        ([], np.zeros((0, 4))),
        ([_shape("a", [[10, 5], [30, 25]])], [[10, 5, 30, 25]]),
        # dragged from bottom-right to top-left: the same box
        ([_shape("a", [[30, 25], [10, 5]])], [[10, 5, 30, 25]]),
        ([_shape("a", [[30, 5], [10, 25]])], [[10, 5, 30, 25]]),
        ([_shape("a", [[10, 5], [30, 8], [20, 25.5]], "polygon")], [[10, 5, 30, 25.5]]),
    ],
)
def test_boxes_from_rectangles_and_polygons(tmp_path, shapes, boxes):
    ds = labelme.load(_dataset(tmp_path, _doc(shapes)))
    np.testing.assert_array_equal(ds.images[0].boxes, np.asarray(boxes, dtype=float).reshape(-1, 4))


def test_drag_order_polygon_and_fields_survive_a_save(tmp_path):
    shapes = [
        _shape("a", [[30, 25], [10, 5]], group_id=3, description="blurry", flags={"occluded": True}),
        _shape("b", [[10, 5], [30, 8], [20, 25]], "polygon"),
        _shape("p", [[1, 1]], "point"),
        _shape(IGNORE_LABEL, [[0, 0], [5, 0], [5, 5]], "polygon"),
        _shape("c", [[40, 40], [45, 45]], "circle"),
    ]
    root = _dataset(tmp_path / "src", _doc(shapes, flags={"night": True}, custom_key=[1, 2]))
    ds = labelme.load(root)
    assert ds.classes == ["a", "b", IGNORE_LABEL]  # points and circles are not boxes
    np.testing.assert_array_equal(ds.images[0].polygons[1], [[10, 5], [30, 8], [20, 25]])
    snapshot = ds.copy()
    labelme.save(ds, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "a.json").read_text()) == json.loads((root / "a.json").read_text())
    assert ds.images[0].extra == snapshot.images[0].extra and ds.images[0].box_extra == snapshot.images[0].box_extra


def test_moved_rectangle_is_written_from_the_box(tmp_path):
    ds = labelme.load(_dataset(tmp_path, _doc([_shape("a", [[30, 25], [10, 5]])])))
    ds.images[0].boxes[0] = [11, 6, 31, 26]
    doc = labelme.to_json(ds.images[0], ds, "a.json")
    assert doc["shapes"][0]["points"] == [[11.0, 6.0], [31.0, 26.0]]


def test_embedded_image_data(tmp_path):
    image = write_image(tmp_path / "tmp.jpg", 100, 50)
    data = base64.b64encode(image.read_bytes()).decode()
    root = tmp_path / "ds"
    root.mkdir()
    (root / "x.json").write_text(json.dumps(_doc([_shape("a", [[1, 1], [5, 5]])], image_path="x.json", imageData=data)))
    ds = labelme.load(root)
    assert ds.images[0].extra["labelme"]["imageData"] == data
    labelme.save(ds, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "x.json").read_text())["imageData"] == data


def test_read_record_reads_one_file_as_load_does(tmp_path):
    root = _dataset(tmp_path, _doc([_shape("b", [[9, 9], [1, 2]]), _shape("a", [[1, 1], [5, 1], [3, 4]], "polygon")]))
    loaded = labelme.load(root)
    record = labelme.read_record(root, root / "a.json")
    assert record.extra.pop("_names") == ["b", "a"] and record.class_ids.tolist() == [0, 0]
    record.class_ids = np.array([loaded.classes.index(n) for n in ("b", "a")])
    expected = loaded.images[0]
    assert record.same_boxes(expected) and (record.path, record.annotation) == ("a.jpg", "a.json")
    assert record.box_extra == expected.box_extra and record.extra == expected.extra


def test_image_without_json_is_listed(tmp_path):
    root = _dataset(tmp_path, _doc([]))
    write_image(root / "b.jpg", 10, 10)
    ds = labelme.load(root)
    assert {r.path: r.annotation for r in ds.images} == {"a.jpg": "a.json", "b.jpg": None}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc([]) | {"imagePath": "../../etc/passwd"}, "escapes the dataset root"),
        (_doc([]) | {"imagePath": "/etc/passwd"}, "not relative"),
        (_doc([]) | {"shapes": "x"}, "'shapes' is missing or not a list"),
        (_doc([_shape("a", [[1, 1]])]), "shape 1: rectangle has 1 points"),
        (_doc([_shape("a", [[1, 1], [2, 2]]), _shape("a", [["x", 1], [2, 2]])]), "shape 2: 'points' must be"),
        (_doc([{"points": [[1, 1], [2, 2]], "shape_type": "rectangle"}]), "shape 1: shape has no 'label'"),
        ({"shapes": []}, "'imagePath' is missing"),
    ],
)
def test_bad_files_name_file_and_shape(tmp_path, doc, message):
    root = _dataset(tmp_path, doc)
    with pytest.raises(DatasetReadError) as info:
        labelme.load(root)
    (error,) = info.value.errors
    assert error.file == "a.json" and message in str(error)


def test_malformed_json(tmp_path):
    write_image(tmp_path / "a.jpg", 10, 10)
    (tmp_path / "a.json").write_text('{"shapes": [, "imagePath": "a.jpg"}')
    with pytest.raises(DatasetReadError, match=r"a\.json: malformed JSON"):
        labelme.load(tmp_path)


def test_shared_labelme_examples(shared, tmp_path):
    root = shared / "labelme-examples"
    ds = labelme.load(root)
    # The README's table says 15 images and 56 shapes, but its own section 4 lists
    # 3 + 3 + 5 + 1 = 12 images, and the 12 JSON files hold 46 shapes (checked by hand).
    assert len(ds) == 12 and ds.num_boxes == 46
    assert ds.class_counts()[IGNORE_LABEL] == 2
    embedded = ds.record("with_image_data/apc2016_obj3.jpg")
    assert embedded.extra["labelme"]["imagePath"] == "apc2016_obj3.json" and embedded.extra["labelme"]["imageData"]
    polygons = [p for r in ds.images for p in r.polygons if p is not None]
    assert len(polygons) == 46 - 9  # all but the 9 rectangles of bbox_detection/
    out = tmp_path / "out"
    labelme.save(ds, out)
    for record in ds.images:
        assert json.loads((out / record.annotation).read_text()) == json.loads((root / record.annotation).read_text())
    shutil.copytree(root, tmp_path / "copy", ignore=shutil.ignore_patterns("*.json"))
    shutil.copytree(out, tmp_path / "copy", dirs_exist_ok=True)
    again = labelme.load(tmp_path / "copy")
    assert all(a.same_boxes(b) for a, b in zip(again.images, ds.images))
