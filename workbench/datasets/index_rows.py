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

Box extras repeat: every VOC box carries the same ``{"voc": {"pose": "Unspecified", ...}}``, and
decoding 400,000 copies of it was a third of a 100,000-image warm open. ``dump_records`` writes
each box extra that occurs more than once into one shared table, and the rows then hold its
position there (a JSON int where a box extra object would be). ``load_records`` decodes the table
once and gives every box its own copy (``_fresh``): records never share a dict, as after a load.

Reading checks nothing beyond what JSON and ``ImageRecord`` check: a row that does not decode
raises, and the index treats that as a cache miss.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import json
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import numpy as np

try:  # a faster writer of plain JSON where installed (Gradio's dependency)
    import orjson
except ImportError:  # pragma: no cover - the workbench's own environment has it
    orjson = None

from workbench.annotations import ImageRecord

TAG = "\x00wb"  # no format writes a NUL into a key, and one that does is escaped (see _encode)
_MARK = json.dumps(TAG)[:-1]  # how a tag starts in JSON text: a row without it needs no decoding hook
_NUMBER_KINDS = "biuf"  # numpy dtypes whose values JSON holds exactly (bool, int, unsigned, float)
_PLAIN = (str, float, bool, type(None))  # and ints within 64 bits (``_encode``)
_INT_LIMIT = 2**63  # an int this large or larger is tagged: orjson reads a bigger one as a float
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
    if kind is int:
        return value if -_INT_LIMIT < value < _INT_LIMIT else {TAG: "int", "v": str(value)}
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
    if kind == "int":
        if type(value) is not str or not value.lstrip("-").isdigit():
            raise ValueError("index row: a tagged int that is not digits")
        return int(value)
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


def plain_dumps(value: Any) -> str:
    """Plain data (``str`` keys, lists, tuples, strs, ints) as compact JSON text, quickly: the
    state of 200,000 files is written and compared on every open."""
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # orjson.JSONEncodeError: an int over 64 bits, a lone surrogate
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Any:
    """The value ``dumps`` wrote; raises ``ValueError`` (or ``TypeError``) on anything else.

    Text with no tag is read by orjson where installed (a 100,000-image dataset's rows in half
    json's time): the rows hold no int it would read as a float, ``_encode`` tags those. What
    orjson refuses and json reads (NaN, infinities, a lone surrogate) is read by json."""
    if type(text) is not str:
        raise TypeError(f"index row: expected JSON text, got {type(text).__name__}")
    if _MARK in text:
        return json.loads(text, object_hook=_untag)
    if orjson is not None:
        try:
            return orjson.loads(text)
        except (ValueError, UnicodeError):  # orjson.JSONDecodeError is a ValueError
            pass
    return json.loads(text)


def _array(value: Any, *, dtype: type, columns: int | None) -> Any:
    if type(value) is np.ndarray:  # a tagged array: not the usual layout, kept as it was
        return value
    array = np.array(value, dtype=dtype)
    return array.reshape(-1, columns) if columns else array


def record_row(record: ImageRecord, box_extra: list[Any] | None = None) -> list[Any]:
    """``record`` as the JSON-ready array of the module docstring; ``box_extra``: its box extras
    already encoded (some as positions in the shared table), else they are encoded here."""
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
        _inline(record.box_extra) if box_extra is None else box_extra,
        _encode(record.split),
        _encode(record.annotation),
        _encode(record.extra),
    ]


def _inline(box_extra: Any) -> Any:
    """Box extras written in the row. An int would read as a position in the shared table: such
    a box extra (never a format's: they are dicts) is written only in the table (``dump_records``)."""
    if type(box_extra) is list and any(type(e) is int for e in box_extra):
        raise Unencodable("the index rows hold an int box extra only in the shared table")
    return _encode(box_extra)


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dump_record(record: ImageRecord) -> str:
    """One record as the text of one index row (its box extras written in the row)."""
    return _text(record_row(record))


def dump_records(records: Sequence[ImageRecord]) -> tuple[list[str], str]:
    """The rows of ``records`` and the table of the box extras they share, as JSON text: a box
    extra found more than once is written there once, and its rows hold its position."""
    encoded: list[list[Any] | None] = []
    texts: list[list[str]] = []
    for r in records:
        if type(r.box_extra) is list:
            values = [_encode(e) for e in r.box_extra]
            encoded.append(values)
            texts.append([_text(v) for v in values])
        else:  # not a list: written as it is, and read back as a cache miss (``record_from_row``)
            encoded.append(None)
            texts.append([])
    shared: dict[str, int] = {}
    for text, count in Counter(chain.from_iterable(texts)).items():
        if count > 1 or text.lstrip("-").isdigit():  # an int is never written in a row (``_inline``)
            shared[text] = len(shared)
    rows = []
    for r, values, keys in zip(records, encoded, texts, strict=True):
        box_extra = None if values is None else [shared.get(k, v) for k, v in zip(keys, values, strict=True)]
        rows.append(_text(record_row(r, box_extra)))
    return rows, "[" + ",".join(shared) + "]"


def _fresh(value: Any) -> Callable[[], Any] | None:
    """A function that returns a new deep copy of the decoded ``value``, or ``None`` when
    ``value`` cannot be changed in place (a str, a number, ``None``): much faster than
    ``copy.deepcopy`` for the plain dicts box extras are."""
    kind = type(value)
    if kind in _PLAIN:
        return None
    if kind is dict:
        items = [(k, v, _fresh(v)) for k, v in value.items()]
        if all(f is None for _, _, f in items):
            return value.copy
        if len(items) == 1:  # {"voc": {...}}: the box extra of every format
            key, _, inner = items[0]
            return lambda: {key: inner()}
        return lambda: {k: v if f is None else f() for k, v, f in items}
    if kind is list:
        parts = [(v, _fresh(v)) for v in value]
        if all(f is None for _, f in parts):
            return value.copy
        return lambda: [v if f is None else f() for v, f in parts]
    return lambda: copy.deepcopy(value)  # tuples, arrays, bytes, dates: rare in a box extra


def _copies(shared: str) -> dict[int, Callable[[], Any]]:
    """Position in the shared table -> a function giving a new copy of that box extra."""
    table = loads(shared)
    if type(table) is not list:
        raise ValueError("index rows: the shared box extras are not a list")
    return {i: _fresh(v) or (lambda v=v: v) for i, v in enumerate(table)}


def _plain(row: list[Any]) -> ImageRecord | None:
    """The record of a row with plain boxes and class ids and no polygon, its boxes and class ids
    still the row's lists (``_arrays`` makes them arrays); ``None`` for any other row. Its shapes
    are checked here, so it is made without ``ImageRecord.__post_init__`` converting every value
    once more."""
    path, _, _, boxes, ids, polygons, box_extra, _, _, extra = row
    if not (
        _PLAIN_FIELDS
        and type(boxes) is list
        and type(ids) is list
        and type(polygons) is list
        and type(box_extra) is list
        and len(boxes) == 4 * len(ids)
        and len(ids) == len(polygons) == len(box_extra)
        and polygons.count(None) == len(polygons)
    ):
        return None
    if type(path) is not str or type(extra) is not dict:
        raise ValueError("index row: not a record")
    record = object.__new__(ImageRecord)
    record.__dict__.update(zip(_ROW_FIELDS, row))
    return record


def _arrays(records: list[ImageRecord]) -> None:
    """The boxes and class ids of ``_plain`` records as arrays: all of them in one array each (one
    conversion, not one per record), every record holding its own rows of it."""
    boxes = np.array(list(chain.from_iterable([r.boxes for r in records])), dtype=np.float64)
    ids = np.array(list(chain.from_iterable([r.class_ids for r in records])), dtype=np.int64)
    if boxes.ndim != 1 or ids.ndim != 1 or boxes.size != 4 * ids.size:
        raise ValueError("index row: boxes and class ids do not match")
    boxes = boxes.reshape(-1, 4)
    start = 0
    for r in records:
        fields = r.__dict__
        end = start + len(fields["class_ids"])
        fields["boxes"] = boxes[start:end]
        fields["class_ids"] = ids[start:end]
        start = end


def record_from_row(row: list[Any]) -> ImageRecord:
    """The ``ImageRecord`` of a decoded row (``ImageRecord`` checks the shapes)."""
    path, width, height, boxes, ids, polygons, box_extra, split, annotation, extra = row
    if type(path) is not str or type(extra) is not dict or type(box_extra) is not list:
        raise ValueError("index row: not a record")
    record = _plain(row)
    if record is not None:
        _arrays([record])
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


def load_records(rows: list[str], shared: str = "[]") -> list[ImageRecord]:
    """The records of index rows, in order, their box extras at table positions taken from
    ``shared`` (what ``dump_records`` returned); raises on any row that is not one
    ``dump_record`` or ``dump_records`` wrote."""
    if any(type(r) is not str for r in rows):
        raise TypeError("index row: expected JSON text")
    copies = _copies(shared)
    if not rows:
        return []
    decoded = loads("[" + ",".join(rows) + "]")  # one parse for all rows: much faster than one each
    if len(decoded) != len(rows):  # an empty row, or one holding two values
        raise ValueError(f"index row: {len(rows)} rows hold {len(decoded)} values")
    out, plain, width = [], [], len(_ROW_FIELDS)
    try:
        for row in decoded:
            if type(row) is not list or len(row) != width or type(row[6]) is not list:
                raise ValueError("index row: not a record")
            if row[6]:
                row[6] = [copies[e]() if type(e) is int else e for e in row[6]]
            record = _plain(row)
            if record is None:
                record = record_from_row(row)
            else:
                plain.append(record)
            out.append(record)
    except KeyError as e:
        raise ValueError(f"index row: no shared box extra {e}") from None
    _arrays(plain)
    return out
