"""workbench/formats/yolo.py, against the mutants mutmut left alive in it (docs/mutation.md):
``parse_lines`` refusals with their exact messages and limits, the names file read and written
back in each of its forms, ``to_text``'s numbers, and ``read_record`` without an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.formats import yolo


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 x 0.1", "a.txt: line 1: expected 'class cx cy w h', got '0 0.5 0.5 x 0.1'"),
        ("\n\n1.0 0.5 0.5 0.1 0.1", "a.txt: line 3: expected 'class cx cy w h', got '1.0 0.5 0.5 0.1 0.1'"),
        ("0 " + "x" * 100, f"a.txt: line 1: expected 'class cx cy w h', got {'0 ' + 'x' * 78!r}"),
        ("-1 0.5 0.5 0.1 0.1", "a.txt: line 1: negative class id -1"),
        (f"{2**31} 0.5 0.5 0.1 0.1", f"a.txt: line 1: class id {2**31} is too large"),
        ("0 0.5 nan 0.1 0.1", "a.txt: line 1: coordinates must be finite numbers"),
        ("0 0.5 0.5 inf 0.1", "a.txt: line 1: coordinates must be finite numbers"),
        ("0 0.5 0.5 1000000.5 0.1", "a.txt: line 1: a coordinate is over 1e+06 image sizes: not normalised"),
        ("0 -1000001 0.5 0.1 0.1", "a.txt: line 1: a coordinate is over 1e+06 image sizes: not normalised"),
        ("0 0.5 0.5 0.1", "a.txt: line 1: expected 4 coordinates or a polygon, got 3 numbers"),
        ("0 0.1 0.1 0.2 0.1 0.2 0.3 0.4", "a.txt: line 1: expected 4 coordinates or a polygon, got 7 numbers"),
        ("0 0.1 0.1 0.2 0.1 0.2", "a.txt: line 1: expected 4 coordinates or a polygon, got 5 numbers"),
        ("0", "a.txt: line 1: expected 4 coordinates or a polygon, got 0 numbers"),
    ],
)
def test_parse_lines_refusals(text, message):
    with pytest.raises(ReadError) as e:
        yolo.parse_lines(text, "a.txt")
    assert str(e.value) == message


def test_parse_lines_limits_and_shapes():
    ids, boxes, polygons = yolo.parse_lines(f"{2**31 - 1} 0.5 0.5 1000000 0.2\n", "a.txt")
    assert ids.tolist() == [2**31 - 1] and boxes[0, 2] == 0.5 + 500000 and polygons == [None]
    ids, boxes, polygons = yolo.parse_lines("", "a.txt")
    assert ids.dtype == np.int64 and boxes.dtype == np.float64 and boxes.shape == (0, 4) and polygons == []
    ids, boxes, polygons = yolo.parse_lines("2 0.1 0.2 0.5 0.2 0.3 0.6\n1 0.5 0.5 0.2 0.4\n", "a.txt")
    assert ids.dtype == np.int64 and ids.tolist() == [2, 1]
    np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.5, 0.6], [0.4, 0.3, 0.6, 0.7]])
    assert polygons[0].dtype == np.float64 and polygons[0].shape == (3, 2) and polygons[1] is None
    np.testing.assert_array_equal(polygons[0], [[0.1, 0.2], [0.5, 0.2], [0.3, 0.6]])


def test_to_text_numbers():
    record = ImageRecord(
        path="images/a.jpg",
        width=200,
        height=100,
        boxes=np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 1.0 / 3.0, 1.0]]),
        class_ids=np.array([3, 0]),
        polygons=[None, None],
    )
    lines = yolo.to_text(record).splitlines()
    assert lines[0] == "3 0.150000 0.400000 0.200000 0.400000"
    assert lines[1] == "0 0.0008333333 0.005000 0.0016666667 0.010000"
    poly = ImageRecord(
        path="a.jpg",
        width=10,
        height=20,
        boxes=np.array([[1.0, 2.0, 5.0, 10.0]]),
        class_ids=np.array([1]),
        polygons=[np.array([[1.0, 2.0], [5.0, 2.0], [5.0, 10.0]])],
    )
    assert yolo.to_text(poly) == "1 0.100000 0.100000 0.500000 0.100000 0.500000 0.500000\n"
    bare = ImageRecord(path="a.jpg", width=0, height=0, extra={"yolo": {"lines": ["0 0.5 0.5 0.1 0.1", "  "]}})
    assert yolo.to_text(bare) == "0 0.5 0.5 0.1 0.1\n  \n"
    with pytest.raises(ValueError, match=r"^a\.jpg: image size unknown, cannot normalise YOLO coordinates$"):
        yolo.to_text(ImageRecord(path="a.jpg", width=0, height=5))


def test_read_record_without_an_image_keeps_the_lines(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    record = yolo.read_record(tmp_path, image_rel=None, label_rel="labels/a.txt")
    assert (record.path, record.width, record.height, record.annotation) == ("images/a.jpg", 0, 0, "labels/a.txt")
    assert record.extra == {"yolo": {"lines": ["0 0.5 0.5 0.2 0.2"]}} and len(record) == 0
    write_image(tmp_path / "images" / "a.jpg", 50, 40)
    record = yolo.read_record(tmp_path, image_rel="images/a.jpg", label_rel="labels/a.txt")
    np.testing.assert_allclose(record.boxes, [[20.0, 16.0, 30.0, 24.0]])
    assert record.box_extra == [{}] and record.polygons == [None] and record.extra == {}
    (tmp_path / "labels" / "b.txt").write_bytes(b"\xff\xfe0")
    with pytest.raises(ReadError, match=r"^labels/b.txt: cannot read: "):
        yolo.read_record(tmp_path, image_rel=None, label_rel="labels/b.txt")
    assert yolo.read_record(tmp_path, image_rel="images/a.jpg", label_rel=None).annotation is None


@pytest.mark.parametrize(
    ("name", "text", "classes", "kept"),
    [
        ("classes.txt", "a\n\n b \n", ["a", "b"], {}),
        ("obj.names", "x\ny\n", ["x", "y"], {}),
        ("data.yaml", "names: [a, b]\nnc: 2\n", ["a", "b"], {"names": ["a", "b"], "nc": 2}),
        ("data.yml", "names: {1: b, 0: a}\n", ["a", "b"], {"names": {1: "b", 0: "a"}}),
    ],
)
def test_read_names(tmp_path, name, text, classes, kept):
    (tmp_path / name).write_text(text)
    assert yolo.read_names(tmp_path / name, tmp_path) == (classes, kept)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: [a\n", "data.yaml: malformed YAML: "),
        ("- a\n- b\n", "data.yaml: has no 'names' key"),
        ("nc: 2\n", "data.yaml: has no 'names' key"),
    ],
)
def test_read_names_refusals(tmp_path, text, message):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(ReadError) as e:
        yolo.read_names(tmp_path / "data.yaml", tmp_path)
    assert str(e.value).startswith(message) and e.value.file == "data.yaml"
    (tmp_path / "classes.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ReadError, match=r"^classes.txt: cannot read: "):
        yolo.read_names(tmp_path / "classes.txt", tmp_path)


def dataset(extra: dict, *, fmt: str = "yolo", splits: tuple[str, ...] = ()) -> Dataset:
    images = [ImageRecord(path=f"{s}/images/{s}.jpg", width=4, height=4, split=s) for s in splits]
    return Dataset(root=Path("/none"), format=fmt, classes=["a", "b"], images=images, extra={"yolo": extra})


def test_save_names_back_to_its_own_file_in_its_own_form(tmp_path):
    yolo.save_names(dataset({"names_file": "labels/obj.names"}), tmp_path)
    assert (tmp_path / "labels" / "obj.names").read_text() == "a\nb\n" and not (tmp_path / "data.yaml").exists()

    kept = {"path": "/data", "train": "t", "names": {0: "x", 1: "y"}, "nc": 2, "extra": 1}
    yolo.save_names(dataset({"names_file": "dataset.yaml", "data_yaml": kept}), tmp_path)
    written = yaml.safe_load((tmp_path / "dataset.yaml").read_text())
    assert written == {"path": "/data", "train": "t", "names": {0: "a", 1: "b"}, "nc": 2, "extra": 1}
    assert list(written) == ["path", "train", "names", "nc", "extra"] and not (tmp_path / "classes.txt").exists()

    yolo.save_names(dataset({"names_file": "data.yml", "data_yaml": {"names": ["x"], "path": "."}}), tmp_path)
    assert yaml.safe_load((tmp_path / "data.yml").read_text()) == {"names": ["a", "b"], "path": "."}  # no nc added


def test_save_names_for_another_format_writes_classes_txt_and_a_data_yaml(tmp_path):
    yolo.save_names(dataset({"names_file": "obj.names"}, fmt="voc", splits=("train", "valid", "test")), tmp_path)
    assert (tmp_path / "classes.txt").read_text() == "a\nb\n" and not (tmp_path / "obj.names").exists()
    text = (tmp_path / "data.yaml").read_text()
    assert yaml.safe_load(text) == {
        "path": ".",
        "train": "train/images",
        "val": "valid/images",
        "test": "test/images",
        "names": ["a", "b"],
        "nc": 2,
    }
    assert text.startswith("path: .\ntrain: train/images\n")  # its own order, not sorted
