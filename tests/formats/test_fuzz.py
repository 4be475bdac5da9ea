"""Random bytes, and well-formed files with wrong fields, into every loader: a dataset, or the
workbench's own error. Never anything else."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import write_image
from workbench.annotations import Dataset
from workbench.errors import DatasetReadError, WorkbenchError
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


def _check(fmt: str, payload: bytes) -> Dataset | WorkbenchError:
    """Load ``payload`` as the one annotation file of a dataset, strictly and leniently: a dataset
    or the workbench's own error, never anything else. Returns what the strict load gave."""
    module, rel, _prefix = LAYOUTS[fmt]
    strict_result: Dataset | WorkbenchError | None = None
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
            except WorkbenchError as e:
                assert strict, "a lenient load must not raise for a bad file"
                strict_result = e
                continue
            assert isinstance(ds, Dataset)
            strict_result = ds if strict else strict_result
    finally:
        shutil.rmtree(root)
    return strict_result


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


# Structure-aware fuzzing: a well-formed file of each format, then one to three of its fields
# deleted or given a wrong value (another type, NaN, an infinity, a negative or huge number), in
# one of several encodings. Most examples get past the parse to the field checks; the test counts
# how many and asserts it (a strategy that stops at the parse tests nothing past it).

PARSE_LEVEL = ("cannot read", "malformed", "refused unsafe", "root element", "top level is not")

NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -0.0, 1e308, 2**63, 2**64, float("nan"), float("inf"), float("-inf")]),
)
WRONG = st.one_of(
    NUMBERS,
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JSON_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1"]
LABEL = "maske-ä"  # not ASCII: latin-1 and UTF-16 bytes differ from UTF-8


def _paths(tree, prefix=()) -> list[tuple]:
    """Every key or index path into a JSON-like tree, the tree's own fields first."""
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


@st.composite
def mutated(draw, tree):
    """``tree`` with one to three fields deleted or replaced by a wrong value."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        if not paths:
            break
        *parent_path, key = draw(st.sampled_from(paths))
        parent = tree
        for step in parent_path:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = draw(WRONG)
    return tree


def _json_bytes(doc, encoding: str) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=True).encode(encoding, errors="replace")


LABELME = {
    "version": "5.2.1",
    "flags": {},
    "shapes": [
        {"label": LABEL, "points": [[1.0, 1.5], [6.0, 7.0]], "shape_type": "rectangle", "flags": {}},
        {"label": "a", "points": [[0, 0], [4, 0], [4, 4]], "shape_type": "polygon"},
    ],
    "imagePath": "a.jpg",
    "imageHeight": 8,
    "imageWidth": 8,
}
COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 5], "area": 20, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0.5, 2, 3, 3], "area": 9, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": LABEL}, {"id": 2, "name": "a"}],
}
VOC = {
    "filename": "a.jpg",
    "size": {"width": 8, "height": 8, "depth": 3},
    "object": [
        {"name": LABEL, "pose": "Unspecified", "difficult": 0, "bndbox": {"xmin": 1, "ymin": 2, "xmax": 6, "ymax": 7}},
        {"name": "a", "bndbox": {"xmin": 2, "ymin": 1, "xmax": 5, "ymax": 4}},
    ],
}


def _xml(tag: str, value) -> str:
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</{tag}>"
    if isinstance(value, list):  # repeated elements (<object>), or a wrong value put in a field
        return "".join(_xml(tag, v) for v in value) if tag == "object" else f"<{tag}>{value}</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


@st.composite
def voc_files(draw) -> bytes:
    text = _xml("annotation", draw(mutated(VOC)))
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "iso-8859-1", "latin-1 undeclared"]))
    if encoding == "latin-1 undeclared":  # a file saved by an old tool: not UTF-8, and not saying so
        return text.encode("latin-1", errors="replace")
    declared = f'<?xml version="1.0" encoding="{encoding}"?>' + text
    return declared.encode(encoding, errors="replace")


@st.composite
def yolo_files(draw) -> bytes:
    rows = [[0, 0.5, 0.5, 0.25, 0.5], [0, 0.2, 0.3, 0.1, 0.1]]
    rows = [row if isinstance(row, list) else [row] for row in draw(mutated(rows))]
    if rows and draw(st.booleans()):  # a token too many or too few
        i = draw(st.integers(0, len(rows) - 1))
        rows[i] = [*rows[i], draw(NUMBERS)] if draw(st.booleans()) else rows[i][: draw(st.integers(0, 4))]
    lines = "\n".join(" ".join(str(v) for v in row) for row in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    return (lines + "\n").encode(encoding, errors="replace")


@st.composite
def json_files(draw, doc) -> bytes:
    return _json_bytes(draw(mutated(doc)), draw(st.sampled_from(JSON_ENCODINGS)))


STRUCTURED = {
    "voc": voc_files(),
    "yolo": yolo_files(),
    "labelme": json_files(LABELME),
    "coco": json_files(COCO),
}


def _outcome(fmt: str, payload: bytes) -> str:
    """``parse`` (stopped before the fields), ``field`` (a field check refused it) or ``loaded``;
    a loaded dataset holds finite boxes (a class id with no name is a health finding, not an error)."""
    ds = _check(fmt, payload)
    if isinstance(ds, WorkbenchError):
        e = ds
        reasons = [x.reason for x in e.errors] if isinstance(e, DatasetReadError) else [getattr(e, "reason", str(e))]
        return "parse" if any(r.startswith(PARSE_LEVEL) for r in reasons) else "field"
    for r in ds.images:
        assert np.isfinite(r.boxes).all(), (fmt, r.boxes)
    return "loaded"


@pytest.mark.parametrize("fmt", sorted(STRUCTURED))
def test_well_formed_files_with_wrong_fields_reach_the_field_checks(fmt, record_property):
    counts: Counter[str] = Counter()

    @settings(FUZZ, derandomize=True)  # the same examples every run: the counts below are stable
    @given(payload=STRUCTURED[fmt])
    def run(payload):
        outcome = _outcome(fmt, payload)
        event(outcome)
        counts[outcome] += 1

    run()
    total = sum(counts.values())
    record_property("outcomes", dict(counts))
    print(f"\n{fmt}: {dict(counts)} of {total}")
    # the parse-level share is the odd encodings (UTF-16 YOLO, undeclared latin-1 XML) and the
    # wrong values that JSON cannot read back (NaN in a strict JSON reader, for one)
    assert counts["parse"] <= 0.4 * total, counts  # most examples get past the parse ...
    assert counts["field"] >= 0.3 * total, counts  # ... and a field check refuses many of them
    assert counts["loaded"] >= 1, counts  # some wrong values are content, not structure (a finding)


@pytest.mark.parametrize(
    ("fmt", "payload", "reason"),
    [  # what the structured strategies found: each was a crash or an infinite box
        ("yolo", b"9223372036854775808 0.5 0.5 0.25 0.5\n", "class id 9223372036854775808 is too large"),
        ("yolo", b"0 2.2e307 0.5 0.25 0.5\n", "not normalised"),
        ("coco", json.dumps({**COCO, "images": [{"id": [], "file_name": "a.jpg"}]}).encode(), "image id []"),
        ("coco", json.dumps({**COCO, "annotations": [{"id": {}, "image_id": 1}]}).encode(), "annotation id {}"),
        ("coco", json.dumps({**COCO, "annotations": [{"id": 1, "image_id": [1]}]}).encode(), "image_id [1]"),
        (
            "coco",
            json.dumps({**COCO, "annotations": [{"id": 1, "image_id": 1, "category_id": 2**64}]}).encode(),
            "category_id",
        ),
    ],
)
def test_fields_the_fuzzing_found(fmt, payload, reason):
    error = _check(fmt, payload)
    assert isinstance(error, WorkbenchError) and reason in str(error), error
