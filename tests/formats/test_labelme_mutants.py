"""Tests written against the mutants mutmut left alive in workbench.formats.labelme
(docs/mutation.md): every parse error word for word, the record a document becomes, the JSON a
record becomes (other shapes in place, ``imagePath`` kept or rewritten), rereads, embedded images."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError, ReadError
from workbench.formats import labelme


def rect(label="a", points=((1, 2), (3, 4)), **kw):
    return {"label": label, "shape_type": "rectangle", "points": [list(p) for p in points], **kw}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "f.json: top level is not a JSON object"),
        ({"shapes": None, "imagePath": "a.jpg"}, "f.json: 'shapes' is missing or not a list"),
        ({"shapes": [], "imagePath": ""}, "f.json: 'imagePath' is missing"),
        ({"shapes": [], "imagePath": 3}, "f.json: 'imagePath' is missing"),
        ({"shapes": [rect(), "x"], "imagePath": "a.jpg"}, "f.json: shape 2: shape is not a JSON object"),
        ({"shapes": [{"label": 1}], "imagePath": "a.jpg"}, "f.json: shape 1: shape has no 'label'"),
        (
            {"shapes": [{"label": "a", "shape_type": "rectangle"}], "imagePath": "a.jpg"},
            "f.json: shape 1: shape has no 'points'",
        ),
        (
            {"shapes": [rect(points=((1, 2, 3), (1, 2, 3)))], "imagePath": "a.jpg"},
            "f.json: shape 1: 'points' must be a list of [x, y] numbers",
        ),
        (
            {"shapes": [rect(points=((1, float("nan")), (1, 2)))], "imagePath": "a.jpg"},
            "f.json: shape 1: 'points' must be a list of [x, y] numbers",
        ),
        (
            {"shapes": [{"label": "a", "points": [1, 2]}], "imagePath": "a.jpg"},
            "f.json: shape 1: 'points' must be a list of [x, y] numbers",
        ),
        (
            {"shapes": [{"label": "a", "points": {"x": 1}}], "imagePath": "a.jpg"},
            "f.json: shape 1: 'points' must be a list of [x, y] numbers",
        ),
        (
            {"shapes": [{"label": "a", "points": [[1, "x"]]}], "imagePath": "a.jpg"},
            "f.json: shape 1: 'points' must be a list of [x, y] numbers",
        ),
        (
            {"shapes": [{"label": "a", "points": [[1, 2], [3, 4]]}], "imagePath": "a.jpg"},
            "f.json: shape 1: polygon has 2 points, expected 3 or more",
        ),
        (
            {"shapes": [rect(points=((1, 2), (3, 4), (5, 6)))], "imagePath": "a.jpg"},
            "f.json: shape 1: rectangle has 3 points, expected 2",
        ),
        ({"shapes": [], "imagePath": "a.jpg", "imageWidth": "x"}, "f.json: 'imageWidth' is 'x', not a number"),
        ({"shapes": [], "imagePath": "a.jpg", "imageHeight": "x"}, "f.json: 'imageHeight' is 'x', not a number"),
        ({"shapes": [], "imagePath": "../a.jpg"}, "f.json: imagePath: path '../a.jpg' escapes the dataset root"),
    ],
)
def test_parse_errors_word_for_word(data, message):
    with pytest.raises(ReadError) as e:
        labelme.parse(data, "f.json", "")
    assert str(e.value) == message


def test_parse_builds_the_record():
    data = {
        "shapes": [
            rect(points=((3, 4), (1, 2)), flags={"k": 1}),
            {"label": "p", "shape_type": "circle", "points": [[1, 1], [2, 2]]},
            {"label": "b", "points": [[0, 0], [4, 0], [2, 3]]},
        ],
        "imagePath": "a.jpg",
        "imageWidth": 10,
        "imageHeight": 20,
        "version": "4",
    }
    r = labelme.parse(data, "train/f.json", "train")
    assert (r.path, r.width, r.height, r.split) == ("train/a.jpg", 10, 20, "train")
    assert r.boxes.tolist() == [[1, 2, 3, 4], [0, 0, 4, 3]] and r.class_ids.tolist() == [0, 0]
    assert r.polygons[0] is None and r.polygons[1].tolist() == [[0, 0], [4, 0], [2, 3]]
    assert r.box_extra == [
        {"labelme": {"shape_type": "rectangle", "flags": {"k": 1}, "@points": [[3.0, 4.0], [1.0, 2.0]]}},
        {"labelme": {}},
    ]
    assert r.extra == {
        "labelme": {
            "imagePath": "a.jpg",
            "version": "4",
            "@other_shapes": [[1, {"label": "p", "shape_type": "circle", "points": [[1, 1], [2, 2]]}]],
        },
        "_names": ["a", "b"],
    }
    empty = labelme.parse({"shapes": [], "imagePath": "a.jpg", "imageWidth": None}, "f.json", "")
    assert (
        empty.boxes.shape == (0, 4)
        and (empty.width, empty.height) == (0, 0)
        and "@other_shapes" not in empty.extra["labelme"]
    )


DOC = {
    "version": "4.0",
    "flags": {"f": True},
    "shapes": [
        rect("b", ((3, 4), (1, 2)), group_id=2),
        {"label": "line", "points": [[1, 1], [2, 2]], "shape_type": "line"},
        {"label": "a", "points": [[0, 0], [4, 0], [2, 3]], "shape_type": "polygon"},
        {"label": "pt", "points": [[1, 1]], "shape_type": "point"},
    ],
    "imagePath": "x.json",
    "imageData": None,
}


@pytest.fixture
def embedded(tmp_path) -> Path:
    """A JSON whose imagePath is its own name (LabelMe does that when it embeds the image) and
    no size, beside its image."""
    root = tmp_path / "ds"
    write_image(root / "sub" / "x.jpg", 30, 20)
    (root / "sub" / "x.json").write_text(json.dumps(DOC))
    return root


def test_read_record_finds_the_sibling_image_and_its_size(embedded):
    r = labelme.read_record(embedded, embedded / "sub" / "x.json")
    assert (r.path, r.annotation, r.width, r.height) == ("sub/x.jpg", "sub/x.json", 30, 20)
    assert r.extra["labelme"]["@path"] == "sub/x.jpg" and r.extra["_names"] == ["b", "a"]


def test_the_json_written_back_is_the_json_read(embedded):
    ds = labelme.load(embedded)
    assert ds.classes == ["b", "a"] and ds.images[0].class_ids.tolist() == [0, 1]
    doc = labelme.to_json(ds.images[0], ds, "sub/x.json")
    assert doc == {
        **DOC,
        "shapes": [{**s, "points": np.asarray(s["points"], float).tolist()} for s in DOC["shapes"]],
        "imageHeight": 20,
        "imageWidth": 30,
    }
    assert list(doc) == ["version", "flags", "imagePath", "imageData", "shapes", "imageHeight", "imageWidth"]
    assert [s["label"] for s in doc["shapes"]] == ["b", "line", "a", "pt"]
    ds.images[0].boxes[0] = [1, 2, 5, 6]  # moved: the points come from the box
    assert labelme.to_json(ds.images[0], ds, "sub/x.json")["shapes"][0] == {
        "label": "b",
        "points": [[1.0, 2.0], [5.0, 6.0]],
        "shape_type": "rectangle",
        "group_id": 2,
    }
    ds.images[0].path = "sub/z.jpg"  # the image moved: imagePath is written anew, relative to the JSON
    assert labelme.to_json(ds.images[0], ds, "sub/x.json")["imagePath"] == "z.jpg"
    assert labelme.to_json(ds.images[0], ds, "other/x.json")["imagePath"] == "../sub/z.jpg"


def test_a_new_record_gets_labelme_defaults(embedded):
    ds = labelme.load(embedded)
    rec = ImageRecord("q/y.png", 8, 9, [[1, 1, 2, 2]], [1])
    assert labelme.annotation_path(ds, rec) == "q/y.json" and labelme.annotation_files(ds, rec) == ["q/y.json"]
    assert labelme.to_json(rec, ds, "q/y.json") == {
        "version": "5.5.0",
        "flags": {},
        "shapes": [
            {
                "label": "a",
                "points": [[1.0, 1.0], [2.0, 2.0]],
                "group_id": None,
                "description": "",
                "shape_type": "rectangle",
                "flags": {},
            }
        ],
        "imagePath": "y.png",
        "imageData": None,
        "imageHeight": 9,
        "imageWidth": 8,
    }
    assert labelme.to_json(rec, ds, "y.json")["imagePath"] == "q/y.png"
    other = Dataset(embedded, "voc", ["a"], [])
    rec.annotation = "ann/y.xml"
    assert labelme.annotation_path(other, rec) == "q/y.json"
    assert labelme.annotation_path(ds, ds.images[0]) == "sub/x.json"


def test_other_shapes_past_the_end_go_last():
    ds = Dataset("/r", "labelme", ["a"], [])
    rec = ImageRecord("a.jpg", 8, 9, [[1, 1, 2, 2]], [0])
    rec.extra["labelme"] = {"@other_shapes": [[5, {"label": "z"}], [0, {"label": "y"}]]}
    assert [s["label"] for s in labelme.to_json(rec, ds, "a.json")["shapes"]] == ["y", "a", "z"]


def test_save_record_and_save(embedded, tmp_path):
    ds = labelme.load(embedded)
    out = labelme.save_record(ds, ds.images[0], tmp_path / "out")
    assert out == tmp_path / "out" / "sub" / "x.json"
    text = out.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "version": "4.0",\n  "flags": {\n    "f": true\n  },')
    write_image(embedded / "bare.jpg", 5, 5)
    ds = labelme.load(embedded)
    assert [(r.path, r.annotation) for r in ds.images] == [("sub/x.jpg", "sub/x.json"), ("bare.jpg", None)]
    seen = []
    labelme.save(ds, tmp_path / "again", on_progress=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)]
    assert sorted(p.relative_to(tmp_path / "again").as_posix() for p in (tmp_path / "again").rglob("*.json")) == [
        "sub/x.json"
    ]
    ds.images[1].add_box(np.array([1.0, 1, 3, 3]), 0)
    labelme.save(ds, tmp_path / "third")
    assert (tmp_path / "third" / "bare.json").is_file()
    converted = Dataset(embedded, "voc", ["a"], [ImageRecord("c.jpg", 5, 5)])
    labelme.save(converted, tmp_path / "converted")  # another format's records: every image gets a JSON
    assert (tmp_path / "converted" / "c.json").is_file()
    assert labelme.save_class_list(ds, tmp_path) is None


def test_reread_gives_the_dataset_class_ids(embedded):
    ds = labelme.load(embedded)
    ds.classes = ["x", "a", "b"]
    (r,) = labelme.reread(ds, {0: "sub/x.json"}).values()
    assert r.class_ids.tolist() == [2, 1] and "_names" not in r.extra and r.annotation == "sub/x.json"
    assert list(labelme.reread(ds, {4: "sub/x.json"})) == [4]
    ds.classes = ["a"]
    with pytest.raises(ReadError, match=r"sub/x\.json.*'b'"):
        labelme.reread(ds, {0: "sub/x.json"})


def test_embedded_image():
    rec = ImageRecord("a.jpg", 1, 1)
    assert labelme.embedded_image(rec) is None
    rec.extra["labelme"] = {"imageData": ""}
    assert labelme.embedded_image(rec) is None
    rec.extra["labelme"] = {"imageData": base64.b64encode(b"bytes").decode()}
    assert labelme.embedded_image(rec) == b"bytes"
    rec.extra["labelme"] = {"imageData": "Ynl0\nZXM="}  # wrapped lines: the newline is not base64
    assert labelme.embedded_image(rec) == b"bytes"
    rec.extra["labelme"] = {"imageData": "abc"}  # bad padding
    assert labelme.embedded_image(rec) is None
    rec.extra["labelme"] = {"imageData": "é"}
    assert labelme.embedded_image(rec) is None


def test_detection_reads_the_head_of_the_file(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"images": []}))
    assert not labelme.detect(tmp_path)
    (tmp_path / "late.json").write_text(json.dumps({"pad": "x" * 5000, "shapes": []}))
    assert not labelme.detect(tmp_path) and not labelme._is_labelme(tmp_path / "missing.json")
    (tmp_path / "b.json").write_text(json.dumps({"imagePath": "b.jpg"}))
    assert labelme.detect(tmp_path) and labelme._is_labelme(tmp_path / "b.json")
    (tmp_path / "b.json").write_text(json.dumps({"shapes": []}))
    assert labelme._is_labelme(tmp_path / "b.json")


def test_load_orders_classes_and_leaves_out_bad_files(tmp_path):
    write_image(tmp_path / "a.jpg", 10, 10)
    write_image(tmp_path / "b.jpg", 10, 10)
    write_image(tmp_path / "c.jpg", 10, 10)
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [rect("z"), rect("y"), rect("z")], "imagePath": "a.jpg"}))
    (tmp_path / "b.json").write_text('{"shapes": [,], "imagePath": "b.jpg"}')
    (tmp_path / "c.json").write_text(json.dumps({"shapes": [rect("x"), rect("y")], "imagePath": "c.jpg"}))
    with pytest.raises(DatasetReadError):
        labelme.load(tmp_path)
    seen = []
    ds = labelme.load(tmp_path, strict=False, on_progress=lambda i, n: seen.append((i, n)))
    assert ds.classes == ["z", "y", "x"] and ds.format == "labelme" and ds.root == tmp_path
    assert [(r.path, r.class_ids.tolist()) for r in ds.images] == [("a.jpg", [0, 1, 0]), ("c.jpg", [2, 1])]
    assert [e.file for e in ds.skipped] == ["b.json"] and seen[-1] == (3, 3)
    assert (ds.images[0].width, ds.images[0].height) == (10, 10)


def test_read_json_errors(tmp_path):
    with pytest.raises(ReadError) as e:
        labelme.read_json(tmp_path / "missing.json", "m.json")
    assert str(e.value).startswith("m.json: cannot read: ")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ReadError) as e:
        labelme.read_json(tmp_path / "bad.json", "bad.json")
    assert str(e.value).startswith("bad.json: malformed JSON: ")


def test_image_path_is_relative_to_the_json_folder(tmp_path):
    write_image(tmp_path / "x.jpg", 8, 8)  # a decoy at the root with the same name
    write_image(tmp_path / "sub" / "x.jpg", 30, 20)
    (tmp_path / "sub" / "x.json").write_text(json.dumps({"shapes": [], "imagePath": "x.jpg"}))
    assert labelme.read_record(tmp_path, tmp_path / "sub" / "x.json").path == "sub/x.jpg"
    # an imagePath outside the JSON's folder is kept even with an image of the JSON's stem beside it
    write_image(tmp_path / "images" / "y.jpg", 30, 20)
    write_image(tmp_path / "ann" / "y.png", 8, 8)
    (tmp_path / "ann" / "y.json").write_text(json.dumps({"shapes": [], "imagePath": "../images/y.jpg"}))
    assert labelme.read_record(tmp_path, tmp_path / "ann" / "y.json").path == "images/y.jpg"


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(1, 1, (1, 1)), (0, 5, (30, 20)), (5, 0, (30, 20)), (0, 0, (30, 20)), (-3, 5, (30, 20))],
)
def test_size_from_the_header_only_when_the_json_has_none(tmp_path, width, height, expected):
    write_image(tmp_path / "a.jpg", 30, 20)
    doc = {"shapes": [], "imagePath": "a.jpg", "imageWidth": width, "imageHeight": height}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    r = labelme.read_record(tmp_path, tmp_path / "a.json")
    assert (r.width, r.height) == expected


def test_the_head_read_for_detection_is_4096_bytes(tmp_path):
    start = len('{"pad": "') + 4077 + len('", ')
    assert start == 4089  # '"shapes"' ends at byte 4097: one byte past the head
    (tmp_path / "a.json").write_text('{"pad": "' + "x" * 4077 + '", "shapes": []}')
    assert not labelme._is_labelme(tmp_path / "a.json")
    (tmp_path / "a.json").write_text('{"pad": "' + "x" * 4076 + '", "shapes": []}')
    assert labelme._is_labelme(tmp_path / "a.json")


def test_dotted_names_and_bad_files_keep_their_images_out(tmp_path):
    for name in ("a.b", "c.d", "train/e"):
        write_image(tmp_path / f"{name}.jpg", 10, 10)
    (tmp_path / "a.b.json").write_text('{"shapes": [,], "imagePath": "a.b.jpg"}')
    (tmp_path / "c.d.json").write_text(json.dumps({"shapes": [rect("é")], "imagePath": "c.d.jpg"}))
    with pytest.raises(DatasetReadError) as e:
        labelme.load(tmp_path)
    assert e.value.root == str(tmp_path)
    ds = labelme.load(tmp_path, strict=False)
    assert [(r.path, r.annotation, r.split) for r in ds.images] == [
        ("c.d.jpg", "c.d.json", None),
        ("train/e.jpg", None, "train"),
    ]
    assert labelme.annotation_path(ds, ds.images[1]) == "train/e.json"
    other = Dataset(tmp_path, "voc", ["a"], [])
    assert labelme.annotation_path(other, ImageRecord("x.y.png", 1, 1)) == "x.y.json"
    out = labelme.save_record(ds, ds.images[0], tmp_path / "out")
    assert '"label": "é"' in out.read_text(encoding="utf-8")


def test_save_goes_on_past_images_left_bare(tmp_path):
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.jpg", 10, 10)
    (tmp_path / "a.json").write_text(json.dumps({"shapes": [rect()], "imagePath": "a.jpg"}))
    ds = labelme.load(tmp_path)
    assert [r.path for r in ds.images] == ["a.jpg", "b.jpg", "c.jpg"]
    ds.images[2].add_box(np.array([1.0, 1, 3, 3]), 0)
    labelme.save(ds, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["a.json", "c.json"]


def test_rectangle_points_are_kept_only_while_the_box_is_exactly_theirs():
    ds = Dataset("/r", "labelme", ["a"], [])
    for shift, kept in [(0.0, True), (5e-10, True), (5e-9, False)]:
        rec = ImageRecord("a.jpg", 5000, 5000, [[1000 + shift, 1000, 2000, 2000]], [0])
        rec.box_extra = [{"labelme": {"@points": [[2000.0, 2000.0], [1000.0, 1000.0]]}}]
        points = labelme.to_json(rec, ds, "a.json")["shapes"][0]["points"]
        assert (points == [[2000.0, 2000.0], [1000.0, 1000.0]]) is kept, shift
    rec = ImageRecord("a.jpg", 5000, 5000, [[1000.005, 1000, 2000, 2000]], [0])  # within rtol 1e-5, not atol
    rec.box_extra = [{"labelme": {"@points": [[1000.0, 1000.0], [2000.0, 2000.0]]}}]
    assert labelme.to_json(rec, ds, "a.json")["shapes"][0]["points"] == [[1000.005, 1000.0], [2000.0, 2000.0]]
