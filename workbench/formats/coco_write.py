"""COCO JSON text written straight from the records, for datasets that did not come from COCO.

``coco.to_dict`` builds one dict per image and per annotation and ``json.dumps`` walks them
again; on a 10,000-image conversion that is most of the conversion's time. Here the numbers
of every box are worked out at once with numpy and each image and annotation is formatted
as its JSON fragment, so the text is the one ``json.dumps(to_dict(...), ensure_ascii=False,
separators=(",", ":"))`` writes, byte for byte (the tests compare them), without the dicts.

A dataset read from COCO keeps each image and annotation dict whole (``extra["coco"]``), and
those are merged and dumped by ``coco.to_dict`` as before: ``fast_text`` returns ``None``.
"""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.formats.common import number

DEFAULT_TOP = {"info": {"description": "written by workbench"}, "licenses": []}
_ANNOTATION = '{"id":%d,"image_id":%d,"category_id":%s,"bbox":[%s,%s,%s,%s],"area":%s,"iscrowd":0,"segmentation":%s}'
_EXACT = 2.0**53  # below this every integral float64 is an exact int64


def numbers(values: np.ndarray) -> list[int | float]:
    """``common.number`` of every value of a float64 array, the integral ones at once."""
    rounded = np.rint(values)
    near = (np.abs(values - rounded) < 1e-9) & (np.abs(rounded) < _EXACT)
    if near.all():
        return rounded.astype(np.int64).tolist()
    ints = np.where(near, rounded, 0).astype(np.int64).tolist()
    return [i if n else number(v) for v, i, n in zip(values.tolist(), ints, near.tolist())]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _segmentation(polygon: np.ndarray | None) -> str:
    return "[]" if polygon is None else _dumps([[number(v) for v in polygon.reshape(-1)]])


def fast_text(
    dataset: Dataset,
    records: list[ImageRecord],
    json_rel: str,
    categories: list[dict[str, Any]],
    top: dict[str, Any] | None = None,
) -> str | None:
    """The COCO document ``coco.to_dict`` makes for ``records``, as JSON text; ``None`` for a
    dataset read from COCO (its kept dicts go through ``to_dict``) or an unusual ``top``."""
    top = dict(top or {})
    base = top.pop("@base", str(PurePosixPath(json_rel).parent))
    if dataset.format == "coco" or any(k in top for k in ("categories", "images", "annotations")):
        return None
    category_ids = [c["id"] for c in categories]
    counts = [len(r.boxes) for r in records]
    boxes = np.concatenate([r.boxes for r in records]).astype(np.float64) if records else np.zeros((0, 4))
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    w, h = x2 - x1, y2 - y1
    area = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    values = numbers(np.stack([x1, y1, w, h, area], axis=1).ravel())
    class_ids = np.concatenate([r.class_ids for r in records]).tolist() if records else []
    image_ids = np.repeat(np.arange(1, len(records) + 1), counts).tolist()
    segmentations = [_segmentation(p) for r in records for p in r.polygons]
    images = []
    for image_id, record in enumerate(records, 1):
        name = record.path if base in ("", ".") else Path(os.path.relpath(record.path, base)).as_posix()
        images.append(
            f'{{"id":{image_id},"file_name":{encode_basestring(name)},'
            f'"height":{int(record.height)},"width":{int(record.width)}}}'
        )
    category = [category_ids[c] for c in class_ids]
    columns = (values[0::5], values[1::5], values[2::5], values[3::5], values[4::5])
    rows = zip(range(1, len(class_ids) + 1), image_ids, category, *columns, segmentations)
    annotations = [_ANNOTATION % row for row in rows]
    head = _dumps({**(top or DEFAULT_TOP), "categories": categories})[:-1]
    return f'{head},"images":[{",".join(images)}],"annotations":[{",".join(annotations)}]}}'
