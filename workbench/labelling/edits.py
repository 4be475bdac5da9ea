"""Edits to a dataset in memory: boxes of one record, and the class list of the whole dataset.

Record edits (``relabel_box``, ``move_box``, ``add_box``, ``delete_box``, ``apply_drawn``) change
an ``ImageRecord``. Dataset-wide edits (``add_class``, ``rename_class``, ``merge_classes``,
``delete_class``) change a ``Dataset`` (a ``copy_for_class_edit`` of the opened one) and return
how many boxes and images they touch. Nothing here writes a file: ``labelling.saving`` does.

Coordinates are the model's: float pixels ``x1, y1, x2, y2``, x2/y2 exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.boxes import iou
from workbench.errors import WorkbenchError


@dataclass
class ClassChange:
    """What a dataset-wide class edit touches: boxes changed (relabelled or deleted) and images."""

    boxes: int = 0
    images: int = 0


def _check_index(record: ImageRecord, index: int) -> None:
    if not 0 <= index < len(record):
        raise WorkbenchError(f"{record.path}: no box {index + 1} (it has {len(record)})")


def _check_box(record: ImageRecord, box: Sequence[float]) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(array).all():
        raise WorkbenchError(f"{record.path}: box {array.tolist()} is not finite")
    if array[2] <= array[0] or array[3] <= array[1]:
        raise WorkbenchError(f"{record.path}: box {array.tolist()} has zero or negative size")
    return array


def relabel_box(record: ImageRecord, index: int, class_id: int) -> None:
    """Give box ``index`` (0-based) the class ``class_id``; everything else about it is kept."""
    _check_index(record, index)
    record.class_ids[index] = int(class_id)


def move_box(record: ImageRecord, index: int, box: Sequence[float]) -> None:
    """Move or resize box ``index`` to ``box`` (``x1, y1, x2, y2`` px). Its polygon no longer
    describes it and is dropped (a COCO ``segmentation`` too); other fields are kept."""
    _check_index(record, index)
    record.boxes[index] = _check_box(record, box)
    record.polygons[index] = None
    coco = record.box_extra[index].get("coco")
    if isinstance(coco, dict) and "segmentation" in coco:
        record.box_extra[index] = {
            **record.box_extra[index],
            "coco": {k: v for k, v in coco.items() if k != "segmentation"},
        }


def add_box(record: ImageRecord, box: Sequence[float], class_id: int) -> int:
    """Append a new box; returns its index."""
    record.add_box(_check_box(record, box), int(class_id))
    return len(record) - 1


def delete_box(record: ImageRecord, index: int) -> None:
    _check_index(record, index)
    record.remove_box(index)


def apply_drawn(
    record: ImageRecord,
    drawn: Sequence[tuple[Sequence[float], int]],
    *,
    shown: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    tol: float = 1.0,
) -> list[str]:
    """Make ``record`` hold the boxes a drawing component returned, keeping every box's fields.

    A component returns the whole list, reordered and with float noise, and without ids, so
    the returned boxes are matched to the record's: first those within ``tol`` px of a box as
    it was ``shown`` (the component may have clamped it), then by overlap, then by distance.
    A matched box keeps its original coordinates unless it moved; unmatched old boxes are
    deleted, unmatched new ones added. Moved and new boxes are rounded to whole pixels and
    clipped to the image. Returns one line per change, numbering boxes as they were.
    """
    old = record.boxes if shown is None else np.asarray(shown, dtype=np.float64).reshape(-1, 4)
    new = np.asarray([b for b, _ in drawn], dtype=np.float64).reshape(-1, 4)
    new_ids = [int(c) for _, c in drawn]
    name = (lambda i: names[i] if 0 <= i < len(names) else str(i)) if names else str
    pairs: dict[int, int] = {}  # new index -> old index
    free_old, free_new = set(range(len(old))), set(range(len(new)))
    if len(old) and len(new):
        diff = np.abs(new[:, None, :] - old[None, :, :]).max(axis=2)
        candidates = sorted(
            (float(diff[n, o]), new_ids[n] != int(record.class_ids[o]), n, o)
            for n in range(len(new))
            for o in range(len(old))
            if diff[n, o] <= tol
        )
        for _, _, n, o in candidates:
            if n in free_new and o in free_old:
                pairs[n] = o
                free_new.discard(n)
                free_old.discard(o)
        overlap = iou(new, old)
        overlaps = sorted((-overlap[n, o], n, o) for n in free_new for o in free_old if overlap[n, o] > 0)
        for _, n, o in overlaps:
            if n in free_new and o in free_old:
                pairs[n] = o
                free_new.discard(n)
                free_old.discard(o)
        centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
        distances = sorted(
            (float(np.linalg.norm(centre(new[n]) - centre(old[o]))), n, o) for n in free_new for o in free_old
        )
        for _, n, o in distances:
            if n in free_new and o in free_old:
                pairs[n] = o
                free_new.discard(n)
                free_old.discard(o)

    limit = np.array([record.width or np.inf, record.height or np.inf] * 2)

    def tidy(box: np.ndarray) -> np.ndarray:
        out = np.clip(np.round(box), 0, limit)
        return out

    changes: list[str] = []
    for n, o in sorted(pairs.items(), key=lambda item: item[1]):
        if new_ids[n] != int(record.class_ids[o]):
            changes.append(f"box {o + 1}: {name(int(record.class_ids[o]))} → {name(new_ids[n])}")
            relabel_box(record, o, new_ids[n])
        if np.abs(new[n] - old[o]).max() > tol:
            box = tidy(new[n])
            if box[2] > box[0] and box[3] > box[1]:
                move_box(record, o, box)
                changes.append(f"box {o + 1} ({name(new_ids[n])}): moved to {box_text(box)}")
    for o in sorted(free_old, reverse=True):
        changes.append(f"box {o + 1} ({name(int(record.class_ids[o]))}): deleted")
        delete_box(record, o)
    for n in sorted(free_new):
        box = tidy(new[n])
        if box[2] > box[0] and box[3] > box[1]:
            add_box(record, box, new_ids[n])
            changes.append(f"new box {len(record)} ({name(new_ids[n])}) at {box_text(box)}")
    return changes


def box_text(box: Iterable[float]) -> str:
    x1, y1, x2, y2 = (float(v) for v in box)
    return f"({x1:.4g}, {y1:.4g})-({x2:.4g}, {y2:.4g})"


def class_usage(dataset: Dataset, class_id: int) -> ClassChange:
    """Boxes of ``class_id`` and the images that hold them."""
    counts = [int(np.count_nonzero(r.class_ids == class_id)) for r in dataset.images]
    return ClassChange(boxes=sum(counts), images=sum(1 for c in counts if c))


def add_class(dataset: Dataset | list[str], name: str) -> int:
    """Append a class named ``name`` (stripped, not empty, not already there) to a dataset or
    a class list; returns its id."""
    classes = dataset.classes if isinstance(dataset, Dataset) else dataset
    name = name.strip()
    if not name:
        raise WorkbenchError("a class name cannot be empty")
    if name in classes:
        raise WorkbenchError(f"class {name!r} already exists")
    classes.append(name)
    return len(classes) - 1


def _check_class(dataset: Dataset, class_id: int) -> None:
    if not 0 <= class_id < len(dataset.classes):
        raise WorkbenchError(f"{dataset.root}: no class {class_id} (there are {len(dataset.classes)})")


def rename_class(dataset: Dataset, class_id: int, new_name: str) -> ClassChange:
    """Rename a class; its boxes keep their id. Renaming onto another class's name is a merge."""
    _check_class(dataset, class_id)
    new_name = new_name.strip()
    if not new_name:
        raise WorkbenchError("a class name cannot be empty")
    if new_name in dataset.classes and dataset.classes.index(new_name) != class_id:
        raise WorkbenchError(f"class {new_name!r} already exists: merge the two classes instead")
    usage = class_usage(dataset, class_id)
    dataset.classes[class_id] = new_name
    return usage


def _remove_class(dataset: Dataset, class_id: int) -> None:
    """Drop ``class_id`` from the class list; higher ids move down by one (no box may use it)."""
    del dataset.classes[class_id]
    for r in dataset.images:
        if len(r) and (r.class_ids > class_id).any():
            r.class_ids = np.where(r.class_ids > class_id, r.class_ids - 1, r.class_ids)


def merge_classes(dataset: Dataset, source: int, target: int) -> ClassChange:
    """Relabel every box of ``source`` as ``target`` and remove ``source`` from the class list."""
    _check_class(dataset, source)
    _check_class(dataset, target)
    if source == target:
        raise WorkbenchError("cannot merge a class into itself")
    usage = class_usage(dataset, source)
    for r in dataset.images:
        if len(r) and (r.class_ids == source).any():
            r.class_ids = np.where(r.class_ids == source, target, r.class_ids)
    _remove_class(dataset, source)
    return usage


def delete_class(dataset: Dataset, class_id: int) -> ClassChange:
    """Delete every box of ``class_id`` and remove the class from the list."""
    _check_class(dataset, class_id)
    usage = class_usage(dataset, class_id)
    for r in dataset.images:
        for i in sorted(np.flatnonzero(r.class_ids == class_id), reverse=True):
            r.remove_box(int(i))
    _remove_class(dataset, class_id)
    return usage


def copy_for_class_edit(dataset: Dataset) -> Dataset:
    """A copy that a class edit may change without touching ``dataset``: records are copied
    shallowly with their own ``class_ids``, boxes and lists (the costly deep copy of every
    field is not needed, since class edits replace those and never mutate the rest)."""
    images = []
    for r in dataset.images:
        c = ImageRecord.__new__(ImageRecord)
        c.__dict__.update(r.__dict__)
        c.boxes = r.boxes.copy()
        c.class_ids = r.class_ids.copy()
        c.polygons = list(r.polygons)
        c.box_extra = list(r.box_extra)
        images.append(c)
    return Dataset(
        root=dataset.root,
        format=dataset.format,
        classes=list(dataset.classes),
        images=images,
        extra=dataset.extra,
        skipped=dataset.skipped,
    )
