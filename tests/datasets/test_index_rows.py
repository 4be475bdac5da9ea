"""The index cache's rows as plain JSON: every value an ImageRecord carries comes back exactly, types included."""

from __future__ import annotations

import dataclasses
import datetime
import math

import numpy as np
import pytest

from workbench.annotations import ImageRecord
from workbench.datasets import index, index_rows


def assert_identical(a, b, where: str = "value") -> None:
    """``a == b`` with the same types all the way down (a tuple is not a list, ``np.float64`` not ``float``)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (np.isnan(a) and np.isnan(b))), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
        if isinstance(a, float):
            assert math.copysign(1, a) == math.copysign(1, b), where  # -0.0 stays -0.0


def assert_same_record(a: ImageRecord, b: ImageRecord) -> None:
    for f in dataclasses.fields(ImageRecord):
        assert_identical(getattr(a, f.name), getattr(b, f.name), f"{a.path}.{f.name}")


@pytest.mark.parametrize(
    "value",
    [
        {"pose": "Unspecified", "truncated": "0", "bndbox": {"xmin": "1"}},
        {"n": 1, "f": 0.1, "neg": -0.0, "big": 2**70, "t": True, "none": None, "text": "ünï\x00code"},
        {"tuple": (1, "a", (2.5,)), "list": [1, [2, (3,)]]},
        {0: "person", 1: "car"},  # YAML names with int keys
        {(1, 2): "tuple key", 1.5: "float key"},
        {index_rows.TAG: "tuple", "v": [1]},  # a user dict that looks like a tag
        {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
        {"f64": np.float64(0.1), "i32": np.int32(-3), "b": np.bool_(True), "u8": np.uint8(255)},
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "e": np.zeros((0, 2), dtype=np.int16)},
        {"bytes": b"\x00\xff\x80", "date": datetime.date(2024, 2, 29), "dt": datetime.datetime(2024, 1, 1, 12, 30)},
        [],
        {},
    ],
)
def test_values_come_back_exactly(value):
    assert_identical(index_rows.loads(index_rows.dumps(value)), value)


@pytest.mark.parametrize("value", [2**63, -(2**63), 2**64 + 1, -(10**30)])
def test_an_int_over_64_bits_is_tagged_so_no_reader_makes_it_a_float(value):
    text = index_rows.dumps([value, 1.5])
    assert index_rows._MARK in text
    assert index_rows.loads(text) == [value, 1.5] and type(index_rows.loads(text)[0]) is int


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63) + 1, 0])
def test_an_int_within_64_bits_is_written_as_a_json_number(value):
    assert index_rows.dumps([value]) == f"[{value}]"
    assert index_rows.loads(f"[{value}]") == [value]


def test_text_orjson_refuses_is_read_by_json():
    assert math.isnan(index_rows.loads("[NaN]")[0])
    assert index_rows.loads('["\\ud800"]') == ["\ud800"]  # a lone surrogate


@pytest.mark.parametrize("value", [{1, 2}, object(), {"x": complex(1, 2)}, np.array(["a"], dtype=object)])
def test_a_value_json_cannot_hold_exactly_is_refused(value):
    with pytest.raises(index_rows.Unencodable):
        index_rows.dumps(value)


def _records() -> list[ImageRecord]:
    plain = ImageRecord(path="images/a.png", width=640, height=480)
    boxed = ImageRecord(
        path="images/b.png",
        width=100,
        height=50,
        boxes=np.array([[0.1, 0.2, 10.3, 20.4], [1 / 3, 2 / 3, 99.999999999, 49.0]]),
        class_ids=np.array([0, 7]),
        polygons=[np.array([[0.1, 0.2], [10.3, 20.4], [5.5, 1e-9]]), None],
        box_extra=[{"voc": {"pose": "Left", "parts": ("head",)}}, {"coco": {"id": 12, "bbox": [1, 2, 3, 4]}}],
        split="val",
        annotation="labels/b.txt",
        extra={"yolo": {"lines": ["0 0.5 0.5 0.1 0.1"]}, "_names": ("a", "b"), 3: np.float64(2.5)},
    )
    return [plain, boxed]


def test_records_come_back_exactly():
    rows = [index_rows.dump_record(r) for r in _records()]
    assert all(isinstance(r, str) for r in rows)
    for a, b in zip(_records(), index_rows.load_records(rows), strict=True):
        assert_same_record(a, b)


@pytest.mark.parametrize(
    "row",
    [
        "",
        "[1,2",
        '{"a": 1}',
        "[1,2,3,4,5,6,7,8,9,10]",
        '["p",1,1,[1,2,3],[],[],[],null,null,{}]',
        '["p",1,1,[1,2,3,4],[0,1],[null,null],[{},{}],null,null,{}]',
        '["p",1,1,[1,2,3,4],[0],[null,null],[{}],null,null,{}]',
        '["p",1,1,[1,2,3,4],[0],[null],[],null,null,{}]',
        '["p",1,1,[1,2,3,"x"],[0],[null],[{}],null,null,{}]',
    ],
)
def test_a_bad_row_raises(row):
    with pytest.raises((ValueError, TypeError)):
        index_rows.load_records([row])


@pytest.mark.parametrize("name", ["andrewmvd-voc", "labelme-examples", "macwinwin-yolo", "roboflow-coco"])
def test_every_shared_dataset_comes_back_from_the_cache_exactly(shared, name):
    cold = index.open_dataset(shared / name)
    warm = index.open_dataset(shared / name)
    assert not cold.from_cache and warm.from_cache
    a, b = cold.dataset, warm.dataset
    assert (a.root, a.format) == (b.root, b.format)
    assert_identical(a.classes, b.classes, "classes")
    assert_identical(a.extra, b.extra, "extra")
    assert [(e.file, e.reason, e.record) for e in a.skipped] == [(e.file, e.reason, e.record) for e in b.skipped]
    assert len(a.images) == len(b.images)
    for x, y in zip(a.images, b.images, strict=True):
        assert_same_record(x, y)
    assert warm.stats == cold.stats


def test_a_plain_row_is_the_record_the_constructor_makes():
    """Rows with plain boxes and no polygon skip ``__post_init__``: same values, dtypes, shapes."""
    records = [
        ImageRecord(path="a.png", width=4, height=3),
        ImageRecord(path="b.png", width=9, height=9, boxes=[[1, 2, 3, 4], [0.5, 0, 9, 9]], class_ids=[2, 0]),
    ]
    for want, got in zip(records, index_rows.load_records([index_rows.dump_record(r) for r in records]), strict=True):
        assert_same_record(want, got)
        assert got.boxes.shape == (len(want), 4) and got.boxes.dtype == np.float64 and got.boxes.flags.writeable
        assert got.class_ids.shape == (len(want),) and got.class_ids.dtype == np.int64
        assert got.polygons == [None] * len(want) and got.box_extra == [{}] * len(want)
        got.add_box(np.array([0.0, 0, 1, 1]), 1)  # and it edits as any record
        assert len(got) == len(want) + 1
