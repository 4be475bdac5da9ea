"""The rows of the index cache as plain JSON: text that can hold data only, never code to run.

Anyone who can write the workspace can write ``index.sqlite``, so its rows must not be a format
that runs code when read (pickle does). A record is one JSON array::

    [path, width, height, boxes, class_ids, polygons, box_extra, split, annotation, extra]

``boxes`` is the flat list of the ``(N, 4)`` float64 array, ``class_ids`` the list of the int64
ids, ``polygons`` a flat list per box (or ``null``). Floats are written with ``repr``, so every
value reads back bit for bit.

``extra`` dicts must come back exactly as a format loaded them, and JSON alone would turn a
tuple into a list, an ``int`` key into a ``str`` or a ``numpy.float64`` into a ``float``. Values
JSON keeps (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``)
are written as they are; any other is written as a tagged object ``{TAG: kind, "v": ...}``
(tuples, dicts with other keys, numpy arrays and scalars, bytes, dates), and a user dict that
happens to hold ``TAG`` is tagged too, so a tag is never ambiguous. A value of any other type
raises ``Unencodable``: that dataset is then not cached rather than cached inexactly.

Reading checks nothing beyond what JSON and ``ImageRecord`` check: a row that does not decode
raises, and the index treats that as a cache miss.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
from typing import Any

import numpy as np

from workbench.annotations import ImageRecord

TAG = "\x00wb"  # no format writes a NUL into a key, and one that does is escaped (see _encode)
_MARK = json.dumps(TAG)[:-1]  # how a tag starts in JSON text: a row without it needs no decoding hook
_NUMBER_KINDS = "biuf"  # numpy dtypes whose values JSON holds exactly (bool, int, unsigned, float)
_PLAIN = (str, int, float, bool, type(None))
_ROW_FIELDS = ("path", "width", "height", "boxes", "class_ids", "polygons", "box_extra", "split", "annotation", "extra")
# a record is built field by field only while these are all of ImageRecord's fields
_PLAIN_FIELDS = tuple(f.name for f in dataclasses.fields(ImageRecord)) == _ROW_FIELDS


class Unencodable(TypeError):
    """A value of a type the index rows cannot hold exactly."""


def _encode(value: Any) -> Any:
    """``value`` as JSON-ready data, with tags for what JSON would change (module docstring)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list:
        return [_encode(v) for v in value]
    if kind is dict:
        if TAG not in value and all(type(k) is str for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {TAG: "dict", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if kind is tuple:
        return {TAG: "tuple", "v": [_encode(v) for v in value]}
    if kind is np.ndarray and value.dtype.kind in _NUMBER_KINDS:
        return {TAG: "array", "dtype": value.dtype.str, "shape": list(value.shape), "v": value.ravel().tolist()}
    if isinstance(value, np.generic) and value.dtype.kind in _NUMBER_KINDS:
        return {TAG: "scalar", "dtype": value.dtype.str, "v": value.item()}
    if kind is bytes:
        return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
    if kind in (datetime.date, datetime.datetime):
        return {TAG: kind.__name__, "v": value.isoformat()}
    raise Unencodable(f"the index cache cannot hold a {kind.__module__}.{kind.__qualname__} exactly")


def _untag(obj: dict[str, Any]) -> Any:
    """``json.loads``' object hook: a tagged object back to its value, any other dict as it is."""
    kind = obj.get(TAG)
    if kind is None:
        return obj
    value = obj["v"]
    if kind == "dict":
        return {k: v for k, v in value}
    if kind == "tuple":
        return tuple(value)
    if kind == "array":
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in _NUMBER_KINDS:
            raise ValueError(f"index row: dtype {dtype} is not a number type")
        return np.array(value, dtype=dtype).reshape(obj["shape"])
    if kind == "scalar":
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in _NUMBER_KINDS:
            raise ValueError(f"index row: dtype {dtype} is not a number type")
        return dtype.type(value)
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if kind == "date":
        return datetime.date.fromisoformat(value)
    if kind == "datetime":
        return datetime.datetime.fromisoformat(value)
    raise ValueError(f"index row: unknown tag {kind!r}")


def dumps(value: Any) -> str:
    """Any value the rows can hold (``extra`` dicts, the dataset header) as compact JSON text."""
    return json.dumps(_encode(value), separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Any:
    """The value ``dumps`` wrote; raises ``ValueError`` (or ``TypeError``) on anything else."""
    if type(text) is not str:
        raise TypeError(f"index row: expected JSON text, got {type(text).__name__}")
    return json.loads(text, object_hook=_untag) if _MARK in text else json.loads(text)


def _array(value: Any, *, dtype: type, columns: int | None) -> Any:
    if type(value) is np.ndarray:  # a tagged array: not the usual layout, kept as it was
        return value
    array = np.array(value, dtype=dtype)
    return array.reshape(-1, columns) if columns else array


def record_row(record: ImageRecord) -> list[Any]:
    """``record`` as the JSON-ready array of the module docstring."""
    boxes, ids = record.boxes, record.class_ids
    return [
        _encode(record.path),
        _encode(record.width),
        _encode(record.height),
        boxes.ravel().tolist() if boxes.dtype == np.float64 and boxes.shape[1:] == (4,) else _encode(boxes),
        ids.tolist() if ids.dtype == np.int64 and ids.ndim == 1 else _encode(ids),
        [
            None if p is None else (p.ravel().tolist() if p.dtype == np.float64 and p.shape[1:] == (2,) else _encode(p))
            for p in record.polygons
        ],
        _encode(record.box_extra),
        _encode(record.split),
        _encode(record.annotation),
        _encode(record.extra),
    ]


def dump_record(record: ImageRecord) -> str:
    """One record as the text of one index row."""
    return json.dumps(record_row(record), separators=(",", ":"), ensure_ascii=False)


def record_from_row(row: list[Any]) -> ImageRecord:
    """The ``ImageRecord`` of a decoded row (``ImageRecord`` checks the shapes)."""
    path, width, height, boxes, ids, polygons, box_extra, split, annotation, extra = row
    if type(path) is not str or type(extra) is not dict or type(box_extra) is not list:
        raise ValueError("index row: not a record")
    if (
        _PLAIN_FIELDS
        and type(boxes) is list
        and type(ids) is list
        and type(polygons) is list
        and len(boxes) == 4 * len(ids)
        and len(ids) == len(polygons) == len(box_extra)
        and polygons.count(None) == len(polygons)
    ):
        # The common row (plain boxes, no polygon): the shapes are checked here, so the record is
        # made without ``ImageRecord.__post_init__`` converting every value once more.
        record = object.__new__(ImageRecord)
        record.__dict__.update(
            path=path,
            width=width,
            height=height,
            boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
            class_ids=np.array(ids, dtype=np.int64),
            polygons=polygons,
            box_extra=box_extra,
            split=split,
            annotation=annotation,
            extra=extra,
        )
        return record
    return ImageRecord(
        path=path,
        width=width,
        height=height,
        boxes=_array(boxes, dtype=np.float64, columns=4),
        class_ids=_array(ids, dtype=np.int64, columns=None),
        polygons=[None if p is None else _array(p, dtype=np.float64, columns=2) for p in polygons],
        box_extra=box_extra,
        split=split,
        annotation=annotation,
        extra=extra,
    )


def load_records(rows: list[str]) -> list[ImageRecord]:
    """The records of index rows, in order; raises on any row that is not one ``dump_record`` wrote."""
    if any(type(r) is not str for r in rows):
        raise TypeError("index row: expected JSON text")
    if not rows:
        return []
    decoded = loads("[" + ",".join(rows) + "]")  # one parse for all rows: much faster than one each
    if len(decoded) != len(rows):  # an empty row, or one holding two values
        raise ValueError(f"index row: {len(rows)} rows hold {len(decoded)} values")
    return [record_from_row(r) for r in decoded]
