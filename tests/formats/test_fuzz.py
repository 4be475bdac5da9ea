"""Random bytes into every loader: a dataset, or the workbench's own error. Never anything else."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_image
from workbench.annotations import Dataset
from workbench.errors import WorkbenchError
from workbench.formats import coco, labelme, voc, yolo

LAYOUTS = {
    "voc": (voc, "annotations/a.xml", b"<annotation><filename>a.jpg</filename>"),
    "yolo": (yolo, "labels/a.txt", b"0 0.5 0.5 0.1 0.1\n"),
    "labelme": (labelme, "a.json", b'{"shapes": [], "imagePath": "a.jpg"'),
    "coco": (coco, "annotations.json", b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": ['),
}

_IMAGE = None


def _image() -> bytes:
    global _IMAGE
    if _IMAGE is None:
        with tempfile.TemporaryDirectory() as d:
            _IMAGE = write_image(Path(d) / "a.jpg", 8, 8).read_bytes()
    return _IMAGE


def _check(fmt: str, payload: bytes) -> None:
    module, rel, _prefix = LAYOUTS[fmt]
    root = Path(tempfile.mkdtemp())
    try:
        (root / "images").mkdir()
        (root / "images" / "a.jpg").write_bytes(_image())
        (root / "a.jpg").write_bytes(_image())
        (root / "classes.txt").write_text("a\n")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
        for strict in (True, False):
            try:
                ds = module.load(root, strict=strict)
            except WorkbenchError:
                assert strict, "a lenient load must not raise for a bad file"
                continue
            assert isinstance(ds, Dataset)
    finally:
        shutil.rmtree(root)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(fmt=st.sampled_from(sorted(LAYOUTS)), data=st.binary(max_size=300))
def test_random_bytes(fmt, data):
    _check(fmt, data)


@FUZZ
@given(fmt=st.sampled_from(sorted(LAYOUTS)), data=st.binary(max_size=200))
def test_random_bytes_after_a_valid_prefix(fmt, data):
    """Bytes appended to the start of a real file reach deeper into each parser."""
    _check(fmt, LAYOUTS[fmt][2] + data)


@FUZZ
@given(
    fmt=st.sampled_from(["labelme", "coco"]),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    ),
)
def test_random_json_values_in_known_keys(fmt, value):
    import json

    if fmt == "labelme":
        doc = {
            "shapes": [{"label": "a", "points": value, "shape_type": "rectangle"}],
            "imagePath": "a.jpg",
            "imageWidth": value,
        }
    else:
        doc = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": value}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": value}],
            "categories": [{"id": 1, "name": "a"}],
        }
    _check(fmt, json.dumps(doc, allow_nan=True).encode())


def test_edge_values_seen_by_hand():
    """Values hypothesis rarely draws: infinities and huge numbers in integer fields."""
    import json

    inf = float("inf")
    _check("labelme", json.dumps({"shapes": [], "imagePath": "a.jpg", "imageWidth": inf}).encode())
    _check(
        "labelme",
        json.dumps({"shapes": [{"label": "a", "points": [[1e308, 1], [1e309, 2]]}], "imagePath": "a.jpg"}).encode(),
    )
    _check("coco", json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": inf}], "annotations": []}).encode())
    _check(
        "coco",
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 1e309, 1]}],
            }
        ).encode(),
    )
    _check("voc", b"<annotation><size><width>1e999</width><height>-inf</height></size></annotation>")
    _check(
        "voc",
        b"<annotation><object><name>a</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
    )
    _check("yolo", b"0 1e999 0.5 0.1 0.1\n")
