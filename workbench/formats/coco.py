"""COCO JSON: one file holds the images, annotations and categories of a split.

Coordinates: ``bbox`` is ``[x, y, w, h]`` in absolute pixels with ``x, y`` the top-left
corner, so ``x1 = x``, ``x2 = x + w``. Category ids are arbitrary integers (gaps, an
unused id 0, two categories with one name are all allowed); the model's class id is the
category's position in the file's ``categories`` list, and the ids are kept in
``extra['coco']['category_ids']`` to be written back.

Layouts: a single ``annotations.json`` (or any JSON with ``images``) whose ``file_name``s
resolve from its folder; a Roboflow export with ``train/``, ``valid/`` and ``test/`` each
holding ``_annotations.coco.json``; ``<split>.json`` files as ``workbench convert`` writes
them; and COCO's own ``annotations/instances_<split>.json`` beside ``<split>/`` images.

Each image and annotation dict is kept whole (``extra['coco']``), so ids, ``iscrowd``,
``segmentation``, ``license`` and unknown keys are written back in their order; only the
fields the model owns (``file_name``, ``width``, ``height``, ``bbox``, ``category_id``,
``image_id``, and ``area`` when a box moved) are rewritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import atomic_write, first_file, iter_files, relpath, safe_relpath
from workbench.formats import coco_write
from workbench.formats.common import (
    Capabilities,
    ErrorCollector,
    number,
    progress,
    size_from_header,
    split_of,
    to_int,
)
from workbench.formats.labelme import read_json

NAME = "coco"
LABEL = "COCO"
CAPABILITIES = Capabilities(
    per_image_files=False, class_list_file=False, classes_from_labels=False, reread_one_file=False, add_images=False
)
ROBOFLOW_FILE = "_annotations.coco.json"


def _is_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    # a COCO file is one JSON object; a list of tasks with "annotations" is Label Studio's
    return head.lstrip()[:1] == b"{" and (b'"images"' in head or b'"annotations"' in head) and b'"shapes"' not in head


def coco_files(root: Path) -> list[Path]:
    """COCO JSON files under ``root`` (at most two folders deep)."""
    out = []
    for path in iter_files(root, (".json",)):
        if len(path.relative_to(root).parts) <= 3 and _is_coco(path):
            out.append(path)
    return out


def detect(root: Path) -> bool:
    return first_file(root, (".json",), lambda p: len(p.relative_to(root).parts) <= 3 and _is_coco(p)) is not None


def _split_name(json_rel: str) -> str | None:
    """``train/_annotations.coco.json`` -> train, ``val.json`` -> val,
    ``annotations/instances_val2017.json`` -> val2017, ``annotations.json`` -> None."""
    path = PurePosixPath(json_rel)
    if path.name == ROBOFLOW_FILE:
        return split_of(json_rel) or (path.parent.name if str(path.parent) != "." else None)
    stem = path.stem
    if stem.startswith("instances_"):
        return stem[len("instances_") :]
    return stem if split_of(f"{stem}/x") else None


def _image_base(root: Path, json_path: Path, images: list[dict[str, Any]], split: str | None) -> Path:
    """The folder ``file_name``s are relative to: the JSON's own folder, unless the images
    are found in the root, ``images/`` or the split's folder instead."""
    candidates = [json_path.parent, root, root / "images"]
    if split:
        candidates += [root / split, root / "images" / split]
    sample = [img.get("file_name") for img in images[:5] if isinstance(img, dict)]
    sample = [s for s in sample if isinstance(s, str) and s]
    for base in candidates:
        if sample and all((base / s).is_file() for s in sample):
            return base
    return json_path.parent


def _bbox(ann: dict[str, Any], file: str, record: str) -> tuple[float, float, float, float]:
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ReadError(file, f"'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}", record) from None
    if not all(np.isfinite((x, y, w, h))):
        raise ReadError(file, f"'bbox' must be finite, got {bbox!r}", record)
    return x, y, x + w, y + h


def parse_file(root: Path, json_path: Path) -> tuple[list[dict[str, Any]], list[ImageRecord], dict[str, Any]]:
    """One COCO file: ``(categories, records, top-level extra)``. Record ``class_ids`` hold
    *category ids* here; ``load`` maps them to class indices."""
    file = relpath(json_path, root)
    data = read_json(json_path, file)
    if not isinstance(data, dict):
        raise ReadError(file, "top level is not a JSON object")
    images = data.get("images")
    annotations = data.get("annotations", [])
    categories = data.get("categories", [])
    for key, value in (("images", images), ("annotations", annotations), ("categories", categories)):
        if not isinstance(value, list):
            raise ReadError(file, f"'{key}' is missing or not a list")
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise ReadError(file, "needs an integer 'id' and a string 'name'", f"category {i + 1}")
    split = _split_name(file)
    base = _image_base(root, json_path, images, split)
    records: dict[Any, ImageRecord] = {}
    for i, img in enumerate(images):
        where = f"image {i + 1}"
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise ReadError(file, "needs an 'id' and a 'file_name'", where)
        if not isinstance(img["id"], int | str):
            raise ReadError(file, f"image id {img['id']!r} is not an integer or a string", where)
        if img["id"] in records:
            raise ReadError(file, f"duplicate image id {img['id']!r}", where)
        base_rel = relpath(base, root)
        name = img["file_name"]
        rel = safe_relpath(f"{base_rel}/{name}" if base_rel != "." else name, file=file, record=f"{where}: file_name")
        width = to_int(img.get("width") or 0, file, "'width'", where)
        height = to_int(img.get("height") or 0, file, "'height'", where)
        if width <= 0 or height <= 0:
            width, height = size_from_header(root, rel)
        records[img["id"]] = ImageRecord(
            path=rel, width=width, height=height, split=split, annotation=file, extra={"coco": img}
        )
    grouped: dict[Any, list[tuple[tuple[float, float, float, float], int, dict[str, Any]]]] = {}
    ann_ids: set[Any] = set()
    for i, ann in enumerate(annotations):
        where = f"annotation {i + 1}"
        if not isinstance(ann, dict):
            raise ReadError(file, "is not a JSON object", where)
        if "id" in ann:
            if not isinstance(ann["id"], int | str):
                raise ReadError(file, f"annotation id {ann['id']!r} is not an integer or a string", where)
            where = f"annotation id {ann['id']}"
            if ann["id"] in ann_ids:
                raise ReadError(file, "duplicate annotation id", where)
            ann_ids.add(ann["id"])
        if not isinstance(ann.get("image_id"), int | str) or ann["image_id"] not in records:
            raise ReadError(file, f"image_id {ann.get('image_id')!r} is not in 'images'", where)
        if not isinstance(ann.get("category_id"), int) or not -(2**63) <= ann["category_id"] < 2**63:
            raise ReadError(file, f"category_id {ann.get('category_id')!r} is not an integer", where)
        grouped.setdefault(ann["image_id"], []).append((_bbox(ann, file, where), ann["category_id"], ann, i))
    for image_id, items in grouped.items():
        record = records[image_id]
        record.boxes = np.array([item[0] for item in items], dtype=np.float64)
        record.class_ids = np.array([item[1] for item in items], dtype=np.int64)
        record.polygons = [None] * len(items)
        # "coco_order": the annotation's place in the file, so a save keeps the file's order
        record.box_extra = [{"coco": ann, "coco_order": order} for _, _, ann, order in items]
    top = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    top["@base"] = relpath(base, root)
    return categories, list(records.values()), top


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read every COCO file under ``root`` into one dataset (each file's images get its split).

    Files must agree on their categories (same id, same name); the class list is their
    union in order of appearance. ``strict`` raises ``DatasetReadError`` naming every bad
    file; otherwise bad files are skipped and listed in ``Dataset.skipped``.
    """
    root = Path(root)
    errors = ErrorCollector(root, strict=strict)
    files = coco_files(root)
    categories: list[dict[str, Any]] = []
    index_of: dict[int, int] = {}
    images: list[ImageRecord] = []
    file_extra: dict[str, dict[str, Any]] = {}
    for json_path in progress(files, len(files), on_progress):
        parsed = errors.run(lambda p=json_path: parse_file(root, p))
        if parsed is None:
            continue
        cats, records, top = parsed
        file = relpath(json_path, root)
        conflict = next(
            (c for c in cats if c["id"] in index_of and categories[index_of[c["id"]]]["name"] != c["name"]), None
        )
        if conflict is not None:
            errors.errors.append(ReadError(file, f"category id {conflict['id']} has another name in another file"))
            continue
        unknown = {int(c) for r in records for c in r.class_ids} - {c["id"] for c in cats} - set(index_of)
        if unknown:
            errors.errors.append(ReadError(file, f"annotations use category ids {sorted(unknown)} not in 'categories'"))
            continue
        for cat in cats:
            if cat["id"] not in index_of:
                index_of[cat["id"]] = len(categories)
                categories.append(cat)
        for record in records:
            record.class_ids = np.array([index_of[int(c)] for c in record.class_ids], dtype=np.int64)
        file_extra[file] = top
        images.extend(records)
    skipped = errors.finish()
    return Dataset(
        root=root,
        format=NAME,
        classes=[c["name"] for c in categories],
        images=images,
        extra={"coco": {"categories": categories, "files": file_extra}},
        skipped=skipped,
    )


def categories_of(dataset: Dataset) -> list[dict[str, Any]]:
    """COCO categories for the dataset's classes: the original dicts when it came from COCO,
    else ids 1..K (0 is left for the background, as most COCO tools expect)."""
    kept = dataset.extra.get("coco", {}).get("categories") if dataset.format == NAME else None
    ids = [r.class_ids for r in dataset.images if len(r.class_ids)]
    used = int(np.concatenate(ids).max()) if ids else -1
    count = max(len(dataset.classes), used + 1)
    if kept and len(kept) == len(dataset.classes):
        out = [dict(c, name=name) for c, name in zip(kept, dataset.classes)]
        next_id = max(c["id"] for c in out) + 1
    else:
        out, next_id = [], 1
    for i in range(len(out), count):
        out.append({"id": next_id, "name": dataset.class_name(i), "supercategory": "none"})
        next_id += 1
    return out


def _annotation(box: list[float], category_id: int, image_id: Any, kept: dict[str, Any], polygon) -> dict:
    x1, y1, x2, y2 = box
    bbox = [number(x1), number(y1), number(x2 - x1), number(y2 - y1)]
    if not kept:  # a box from another format: the common case of a conversion, built directly
        segmentation = [[number(v) for v in polygon.reshape(-1)]] if polygon is not None else []
        area = number(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))
        return {
            "image_id": image_id,
            "category_id": category_id,
            "bbox": bbox,
            "area": area,
            "iscrowd": 0,
            "segmentation": segmentation,
        }
    ann = dict(kept)
    old = kept.get("bbox")
    unchanged = old is not None and all(
        abs(a - b) <= 1e-9 for a, b in zip((old[0], old[1], old[0] + old[2], old[1] + old[3]), box)
    )
    ann["image_id"] = image_id
    ann["category_id"] = category_id
    if not unchanged:
        ann["bbox"] = bbox
        ann["area"] = number(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))
    ann.setdefault("area", number(max(x2 - x1, 0.0) * max(y2 - y1, 0.0)))
    ann.setdefault("iscrowd", 0)
    if "segmentation" not in ann and (polygon is not None or not kept):
        ann["segmentation"] = [[number(v) for v in polygon.reshape(-1)]] if polygon is not None else []
    return ann


def to_dict(dataset: Dataset, records: list[ImageRecord], json_rel: str, top: dict[str, Any] | None = None) -> dict:
    """The COCO document for ``records`` written at ``json_rel`` (``file_name``s relative to its
    folder). Does not modify the records."""
    categories = categories_of(dataset)
    category_ids = [c["id"] for c in categories]
    top = dict(top or {})
    base = top.pop("@base", str(PurePosixPath(json_rel).parent))
    from_coco = dataset.format == NAME
    used_image_ids = {r.extra["coco"]["id"] for r in records if from_coco and "id" in r.extra.get("coco", {})}
    used_ann_ids = {e["coco"]["id"] for r in records if from_coco for e in r.box_extra if "id" in e.get("coco", {})}
    next_image = max([i for i in used_image_ids if isinstance(i, int)], default=0) + 1
    next_ann = max([i for i in used_ann_ids if isinstance(i, int)], default=0) + 1
    images, annotations, order = [], [], []
    for record in records:
        img = dict(record.extra.get("coco", {})) if from_coco else {}
        if "id" not in img:
            img["id"], next_image = next_image, next_image + 1
        img["file_name"] = record.path if base in ("", ".") else Path(os.path.relpath(record.path, base)).as_posix()
        img["height"] = int(record.height)
        img["width"] = int(record.width)
        images.append(img)
        rows = zip(record.boxes.tolist(), record.class_ids.tolist(), record.polygons, record.box_extra)
        for box, class_id, polygon, extra in rows:
            kept = extra.get("coco", {}) if from_coco else {}
            ann = _annotation(box, category_ids[class_id], img["id"], kept, polygon)
            if "id" not in ann:
                ann = {"id": next_ann, **ann}
                next_ann += 1
            annotations.append(ann)
            order.append(extra.get("coco_order", len(order) + 1e9) if from_coco else len(order))
    annotations = [ann for _, ann in sorted(zip(order, annotations), key=lambda item: item[0])]
    if not top:
        top = {"info": {"description": "written by workbench"}, "licenses": []}
    return {**top, "categories": categories, "images": images, "annotations": annotations}


def _groups(dataset: Dataset, keep_files: bool = True) -> dict[str, list[ImageRecord]]:
    """Which JSON file each record goes to: its own file when it came from COCO (and
    ``keep_files``), else ``annotations.json``, or ``<split>.json`` when there are splits."""
    groups: dict[str, list[ImageRecord]] = {}
    from_coco = dataset.format == NAME and keep_files
    by_split = {r.split: r.annotation for r in dataset.images if from_coco and r.annotation}
    for record in dataset.images:
        if from_coco and record.annotation:
            target = record.annotation
        elif from_coco and record.split in by_split:
            target = by_split[record.split]
        else:
            target = f"{record.split}.json" if record.split else "annotations.json"
        groups.setdefault(target, []).append(record)
    return groups


def _write(dataset: Dataset, root: Path, json_rel: str, records: list[ImageRecord]) -> Path:
    files = dataset.extra.get("coco", {}).get("files", {}) if dataset.format == NAME else {}
    text = coco_write.fast_text(dataset, records, json_rel, categories_of(dataset), files.get(json_rel))
    if text is None:  # read from COCO: the kept dicts are merged by to_dict
        text = json.dumps(
            to_dict(dataset, records, json_rel, files.get(json_rel)), ensure_ascii=False, separators=(",", ":")
        )
    out = root / json_rel
    atomic_write(out, text)
    return out


def save(
    dataset: Dataset,
    root: Path,
    *,
    keep_files: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write the COCO file(s) under ``root`` and return them. Compact JSON, as Roboflow writes it.

    ``keep_files=False`` writes ``annotations.json``/``<split>.json`` at the top of ``root``
    even for a dataset read from COCO files elsewhere (what ``workbench convert`` promises).
    """
    groups = _groups(dataset, keep_files)
    return [
        _write(dataset, Path(root), rel, records) for rel, records in progress(groups.items(), len(groups), on_progress)
    ]


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Rewrite the one COCO file that holds ``record`` (COCO keeps a split in one file)."""
    target, records = next((k, v) for k, v in _groups(dataset).items() if any(r is record for r in v))
    return _write(dataset, Path(root or dataset.root), target, records)


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: the JSON that lists it
    (none known for a record that came from another format)."""
    return [record.annotation] if record.annotation else []


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Rewrite every COCO file of ``dataset`` under ``root``: each one holds the categories."""
    for rel, records in _groups(dataset).items():
        _write(dataset, Path(root), rel, records)
