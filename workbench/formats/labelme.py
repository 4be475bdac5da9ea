"""LabelMe JSON: one ``.json`` per image, usually beside it.

Coordinates: ``points`` are ``[x, y]`` pixels. A ``rectangle`` is two opposite corners in
the order the user dragged them (either may come first), so the box is their min/max;
the original points are kept and written back while the box is unchanged. A
``polygon``'s box is its min/max and the polygon is kept. Other shape types (circle,
line, point, linestrip, mask) are not boxes: they ride along untouched.

``imagePath`` is relative to the JSON's folder; one that leaves the dataset root is
refused. ``imageData`` (the image embedded as base64) is kept as it is. LabelMe's
``__ignore__`` label is an ordinary class name here (``annotations.IGNORE_LABEL``); the
training and evaluation code treat its boxes as regions to ignore.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import atomic_write, first_file, is_image, iter_files, relpath, safe_relpath
from workbench.formats.common import (
    Capabilities,
    ErrorCollector,
    ImageIndex,
    class_ids_of,
    progress,
    size_from_header,
    split_of,
    to_int,
)

NAME = "labelme"
LABEL = "LabelMe"
CAPABILITIES = Capabilities(
    per_image_files=True,
    class_list_file=False,
    classes_from_labels=True,
    reread_one_file=True,
    add_images=True,
    embedded_images=True,
)
BOX_SHAPES = ("rectangle", "polygon")
VERSION = "5.5.0"


def read_json(path: Path, file: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except OSError as e:
        raise ReadError(file, f"cannot read: {e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ReadError(file, f"malformed JSON: {e}") from e


def _points(shape: dict[str, Any], file: str, record: str) -> np.ndarray:
    try:
        points = np.asarray(shape["points"], dtype=np.float64)
    except KeyError:
        raise ReadError(file, "shape has no 'points'", record) from None
    except (TypeError, ValueError):
        raise ReadError(file, "'points' must be a list of [x, y] numbers", record) from None
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ReadError(file, "'points' must be a list of [x, y] numbers", record)
    return points


def parse(data: Any, file: str, json_dir: str) -> ImageRecord:
    """One LabelMe document as a record whose ``class_ids`` are still unset (names in
    ``extra['_names']``, turned into ids by ``load``)."""
    if not isinstance(data, dict):
        raise ReadError(file, "top level is not a JSON object")
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise ReadError(file, "'shapes' is missing or not a list")
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise ReadError(file, "'imagePath' is missing")
    rel = safe_relpath(f"{json_dir}/{image_path}" if json_dir else image_path, file=file, record="imagePath")
    width = to_int(data.get("imageWidth") or 0, file, "'imageWidth'")
    height = to_int(data.get("imageHeight") or 0, file, "'imageHeight'")

    boxes, names, polygons, box_extra, others = [], [], [], [], []
    for i, shape in enumerate(shapes):
        record = f"shape {i + 1}"
        if not isinstance(shape, dict):
            raise ReadError(file, "shape is not a JSON object", record)
        shape_type = shape.get("shape_type") or "polygon"  # LabelMe's default
        label = shape.get("label")
        if not isinstance(label, str):
            raise ReadError(file, "shape has no 'label'", record)
        if shape_type not in BOX_SHAPES:
            others.append([i, shape])
            continue
        points = _points(shape, file, record)
        if shape_type == "rectangle" and len(points) != 2:
            raise ReadError(file, f"rectangle has {len(points)} points, expected 2", record)
        if shape_type == "polygon" and len(points) < 3:
            raise ReadError(file, f"polygon has {len(points)} points, expected 3 or more", record)
        boxes.append((*points.min(axis=0), *points.max(axis=0)))
        names.append(label)
        polygons.append(points if shape_type == "polygon" else None)
        fields = {k: v for k, v in shape.items() if k not in ("label", "points")}
        if shape_type == "rectangle":
            fields["@points"] = points.tolist()  # drag order, written back while the box is unchanged
        box_extra.append({"labelme": fields})

    extra = {k: v for k, v in data.items() if k not in ("shapes", "imageWidth", "imageHeight")}
    if others:
        extra["@other_shapes"] = others
    record = ImageRecord(
        path=rel,
        width=width,
        height=height,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        class_ids=np.zeros(len(names), dtype=np.int64),
        polygons=polygons,
        box_extra=box_extra,
        split=split_of(rel),
        extra={"labelme": extra, "_names": names},
    )
    return record


def read_record(root: Path, path: Path) -> ImageRecord:
    """One JSON file (``path``, under ``root``) read as ``load`` reads it. ``class_ids`` are all
    0: the labels of the boxes are in ``extra["_names"]``, for the caller to turn into ids of its
    dataset's classes. A ``ReadError`` names the file (and the shape) when it cannot be read."""
    file = relpath(path, root)
    json_dir = str(PurePosixPath(file).parent)
    record = parse(read_json(path, file), file, "" if json_dir == "." else json_dir)
    record.annotation = file
    if not (is_image(record.path) and (root / record.path).is_file()):
        # LabelMe writes the JSON's own name as imagePath when it embeds imageData;
        # the image beside the JSON, with its stem, is then the one meant.
        sibling = next((p for p in path.parent.glob(path.stem + ".*") if is_image(p)), None)
        if sibling is not None:
            record.path = relpath(sibling, root)
    record.extra["labelme"]["@path"] = record.path  # imagePath is kept while this holds
    if record.width <= 0 or record.height <= 0:
        record.width, record.height = size_from_header(root, record.path)
    return record


def reread(dataset: Dataset, files: dict[int, str], *, scanned: Iterable[str] = ()) -> dict[int, ImageRecord]:
    """The records at the positions of ``files`` (``position -> JSON path`` relative to the root)
    read again, as a full load reads them, with class ids of ``dataset.classes``. (``scanned`` is
    not needed: each JSON names its image.) A ``ReadError`` when a file cannot be read or names a
    class the dataset does not have."""
    out = {}
    for position, rel in files.items():
        record = read_record(dataset.root, dataset.root / rel)
        names = record.extra.pop("_names")
        record.class_ids = np.array(class_ids_of(names, dataset.classes, rel), dtype=np.int64)
        out[position] = record
    return out


def embedded_image(record: ImageRecord) -> bytes | None:
    """The image bytes the record's JSON embeds as base64 ``imageData``, else ``None``."""
    data = record.extra.get("labelme", {}).get("imageData")
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def _is_labelme(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"shapes"' in head or b'"imagePath"' in head


def detect(root: Path) -> bool:
    """A folder holds LabelMe when one of its JSON files has ``shapes``/``imagePath``."""
    return first_file(root, (".json",), _is_labelme) is not None


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read every LabelMe JSON under ``root``. Class order is the order labels first appear.

    ``strict`` raises ``DatasetReadError`` naming every bad file; otherwise bad files are
    skipped and listed in ``Dataset.skipped``.
    """
    root = Path(root)
    files = [p for p in iter_files(root, (".json",)) if _is_labelme(p)]
    errors = ErrorCollector(root, strict=strict)
    classes: list[str] = []
    ids: dict[str, int] = {}
    images: list[ImageRecord] = []
    for path in progress(files, len(files), on_progress):
        record = errors.run(lambda p=path: read_record(root, p))
        if record is None:
            continue
        names = record.extra.pop("_names")
        for name in names:
            if name not in ids:
                ids[name] = len(classes)
                classes.append(name)
        record.class_ids = np.array([ids[n] for n in names], dtype=np.int64)
        images.append(record)
    # Images with no JSON: no shapes yet, no annotation file (the health report lists them).
    # The image of a bad JSON is left out with it: it is not an image without shapes.
    claimed = {r.path for r in images} | {e.file.rsplit(".", 1)[0] for e in errors.errors}
    for rel in ImageIndex(root).paths:
        if rel not in claimed and rel.rsplit(".", 1)[0] not in claimed:
            width, height = size_from_header(root, rel)
            images.append(ImageRecord(path=rel, width=width, height=height, split=split_of(rel)))
    skipped = errors.finish()
    return Dataset(root=root, format=NAME, classes=classes, images=images, skipped=skipped)


def annotation_path(dataset: Dataset, record: ImageRecord) -> str:
    """The record's own JSON when it came from LabelMe, else a JSON beside the image."""
    if dataset.format == NAME and record.annotation:
        return record.annotation
    return record.path.rsplit(".", 1)[0] + ".json"


def to_json(record: ImageRecord, classes: Dataset, annotation: str) -> dict[str, Any]:
    """The LabelMe document for one record, its JSON at ``annotation``. Does not modify ``record``."""
    extra = dict(record.extra.get("labelme", {}))
    others = [list(item) for item in extra.pop("@other_shapes", [])]
    loaded_path = extra.pop("@path", None)
    json_dir = str(PurePosixPath(annotation).parent)
    image_path = Path(os.path.relpath(record.path, json_dir if json_dir != "." else ".")).as_posix()
    shapes: list[dict[str, Any]] = []
    for i, (box, class_id) in enumerate(zip(record.boxes, record.class_ids)):
        fields = dict(record.box_extra[i].get("labelme", {}))
        original = fields.pop("@points", None)
        polygon = record.polygons[i]
        shape_type = "polygon" if polygon is not None else "rectangle"
        if polygon is not None:
            points = polygon.tolist()
        elif original is not None and np.allclose(
            [*np.min(original, axis=0), *np.max(original, axis=0)], box, rtol=0, atol=1e-9
        ):
            points = original
        else:
            points = [[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]
        shape = {"label": classes.class_name(int(class_id)), "points": points}
        shape.update(fields or {"group_id": None, "description": "", "shape_type": shape_type, "flags": {}})
        shape["shape_type"] = shape_type
        shapes.append(shape)
    for index, shape in sorted(others, key=lambda item: item[0]):
        shapes.insert(min(index, len(shapes)), shape)
    doc: dict[str, Any] = {"version": VERSION, "flags": {}}
    doc.update(extra)
    doc["shapes"] = shapes
    if "imagePath" not in extra or loaded_path != record.path:
        doc["imagePath"] = image_path
    doc.setdefault("imageData", None)
    doc["imageHeight"] = int(record.height)
    doc["imageWidth"] = int(record.width)
    return doc


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: its JSON."""
    return [annotation_path(dataset, record)]


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Nothing to write: LabelMe keeps the class names in the shapes' ``label``s."""


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Write one record's JSON atomically (LabelMe's own layout: indent 2); returns the file."""
    annotation = annotation_path(dataset, record)
    out = Path(root or dataset.root) / annotation
    doc = to_json(record, dataset, annotation)
    atomic_write(out, json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    return out


def save(dataset: Dataset, root: Path, *, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write one JSON per image (an image that had none and still has no shape gets none)."""
    root = Path(root)
    for record in progress(dataset.images, len(dataset.images), on_progress):
        if dataset.format == NAME and record.annotation is None and not len(record):
            continue
        save_record(dataset, record, root)
