"""Edits to a dataset, saved back to its own format, with a journal that can undo them.

Record edits (``relabel_box``, ``move_box``, ``add_box``, ``delete_box``, ``apply_drawn``) change
an ``ImageRecord`` in memory. Dataset-wide edits (``add_class``, ``rename_class``,
``merge_classes``, ``delete_class``) change a ``Dataset`` in memory and return how many boxes
and images they touch. ``save_record`` and ``save_class_change`` write the files that changed:

1. the new files are rendered by the format's own ``save_record`` into a scratch folder;
2. a file whose bytes would not change is left alone;
3. a file that changed on disk since it was loaded (its size or mtime differs from the
   state the caller passes) refuses the whole save with ``ConflictError``: nothing is written;
4. every file is written atomically, and the journal gets one line naming each file's
   previous bytes (kept beside it), so ``undo`` restores them byte for byte, even after a restart.

Coordinates are the model's: float pixels ``x1, y1, x2, y2``, x2/y2 exclusive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import paths
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import catalog as workspace
from workbench.errors import WorkbenchError, WriteError
from workbench.fileio import atomic_write, relpath
from workbench.formats import get_format

Stat = workspace.Stat


class ConflictError(WorkbenchError):
    """A file changed on disk since it was loaded; the save was refused and nothing written."""

    def __init__(self, root: Path | str, files: list[str]) -> None:
        self.root = str(root)
        self.files = list(files)
        names = ", ".join(self.files)
        super().__init__(
            f"{names} changed on disk since the dataset was loaded (another tab or tool saved it); "
            "nothing was saved. Reload the dataset to see the change, then edit again."
        )


class NothingToUndo(WorkbenchError):
    """The journal holds no edit of this dataset that can still be undone."""


@dataclass
class ClassChange:
    """What a dataset-wide class edit touches: boxes changed (relabelled or deleted) and images."""

    boxes: int = 0
    images: int = 0


@dataclass
class SaveResult:
    """Files written (relative path -> new ``(size, mtime_ns)``, ``None`` if removed), the journal
    entry id (``None`` when nothing changed) and the positions of the records saved."""

    files: dict[str, Stat | None] = field(default_factory=dict)
    entry: int | None = None
    positions: list[int] = field(default_factory=list)


# --- record edits -----------------------------------------------------------------------


def _check_index(record: ImageRecord, index: int) -> None:
    if not 0 <= index < len(record):
        raise WorkbenchError(f"{record.path}: no box {index + 1} (it has {len(record)})")


def _check_box(record: ImageRecord, box: Sequence[float]) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64).reshape(4)
    if not np.isfinite(array).all():
        raise WorkbenchError(f"{record.path}: box {list(array)} is not finite")
    if array[2] <= array[0] or array[3] <= array[1]:
        raise WorkbenchError(f"{record.path}: box {list(array)} has zero or negative size")
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


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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
        overlaps = sorted(
            ((-_iou(new[n], old[o]), n, o) for n in free_new for o in free_old if _iou(new[n], old[o]) > 0),
        )
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


# --- dataset-wide class edits ---------------------------------------------------------------


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


# --- the journal ---------------------------------------------------------------------------


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


_JOURNAL_LOCK = threading.Lock()


class Journal:
    """An append-only JSON Lines file of saves. Each line: ``id``, ``time``, ``root``, ``format``,
    ``message``, ``files`` (``path``, ``before`` and ``after`` as the SHA-256 of the file's
    bytes, ``null`` when it did not exist) and, for an undo, ``undoes``.

    The bytes themselves are kept once each in ``journal-blobs/<sha256>`` beside the journal
    (a 5 MB COCO file edited 100 times must not make every page load read 500 MB of JSON);
    a blob is written before the line that names it.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else paths.home() / "journal.jsonl"
        self.blobs = self.path.parent / "journal-blobs"

    def put(self, data: bytes) -> str:
        """Keep ``data``; returns its SHA-256, the name to ``get`` it back by."""
        sha = _sha(data)
        target = self.blobs / sha
        if not target.is_file():
            atomic_write(target, data)
        return sha

    def get(self, sha: str) -> bytes:
        try:
            data = (self.blobs / sha).read_bytes()
        except FileNotFoundError:
            raise WorkbenchError(f"{self.blobs / sha}: the journal's copy of the file is missing") from None
        if _sha(data) != sha:
            raise WorkbenchError(f"{self.blobs / sha}: the journal's copy of the file is damaged")
        return data

    def entries(self, root: Path | str | None = None) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: ignore it, keep the rest
                if root is None or entry.get("root") == str(root):
                    out.append(entry)
        return out

    def append(self, entry: dict[str, Any]) -> int:
        with _JOURNAL_LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            last = self.entries()
            entry = {"id": (last[-1]["id"] + 1) if last else 1, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return entry["id"]

    def undoable(self, root: Path | str) -> list[dict[str, Any]]:
        """Saves of ``root`` not yet undone, newest last."""
        entries = self.entries(root)
        undone = {e["undoes"] for e in entries if "undoes" in e}
        return [e for e in entries if "undoes" not in e and e["id"] not in undone]


# --- saving ----------------------------------------------------------------------------------


def _render(dataset: Dataset, records: list[ImageRecord], class_files: bool) -> dict[str, bytes]:
    """The files the format writes for ``records`` (and its class-list files when asked), as
    ``relative path -> bytes``, rendered in a scratch folder: nothing under the root is touched."""
    module = get_format(dataset.format)
    scratch = Path(tempfile.mkdtemp(prefix="render-", dir=paths.home()))
    try:
        if class_files and dataset.format == "yolo":
            module.save_names(dataset, scratch)
        if class_files and dataset.format == "coco":
            seen: set[str | None] = set()
            for r in dataset.images:
                if r.annotation not in seen:
                    seen.add(r.annotation)
                    module.save_record(dataset, r, scratch)
        for r in records:
            module.save_record(dataset, r, scratch)
        out = {}
        for dirpath, _, filenames in os.walk(scratch):
            for name in filenames:
                path = Path(dirpath) / name
                out[relpath(path, scratch)] = path.read_bytes()
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _commit(
    root: Path,
    rendered: dict[str, bytes | None],
    expected: dict[str, Stat | None],
    *,
    journal: Journal | None,
    fmt: str,
    message: str,
    undoes: int | None = None,
    expect_sha: dict[str, str | None] | None = None,
) -> SaveResult:
    """Write the files whose bytes change (``None`` removes a file), after checking that none
    changed on disk since ``expected`` (or, for an undo, since ``expect_sha``)."""
    before: dict[str, bytes | None] = {}
    changed: dict[str, bytes | None] = {}
    conflicts = []
    for rel, data in rendered.items():
        path = root / rel
        current = _read(path)
        if expect_sha is not None:
            if _sha(current) != expect_sha.get(rel):
                conflicts.append(rel)
        elif workspace.file_stat(path) != expected.get(rel):
            if current != data:
                conflicts.append(rel)
            continue  # changed on disk, but already as we would write it
        if current != data:
            before[rel], changed[rel] = current, data
    if conflicts:
        raise ConflictError(root, conflicts)
    if not changed:
        return SaveResult()
    written: list[str] = []
    try:
        for rel, data in changed.items():
            path = root / rel
            if data is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, data)
            written.append(rel)
    except (WriteError, OSError) as e:
        for rel in written:  # put back what was already written: all or nothing
            if before[rel] is None:
                (root / rel).unlink(missing_ok=True)
            else:
                atomic_write(root / rel, before[rel])
        raise WriteError(f"{root}: save failed, nothing changed: {e}") from e
    entry = None
    if journal is not None:
        record: dict[str, Any] = {"root": str(root), "format": fmt, "message": message}
        if undoes is not None:
            record["undoes"] = undoes
        record["files"] = [
            {
                "path": rel,
                "before": None if before[rel] is None else journal.put(before[rel]),
                "after": _sha(data),
            }
            for rel, data in changed.items()
        ]
        entry = journal.append(record)
    return SaveResult(files={rel: workspace.file_stat(root / rel) for rel in changed}, entry=entry)


def files_of(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The annotation file(s) a save of ``record`` writes, relative to the root."""
    if dataset.format == "coco":
        return [record.annotation] if record.annotation else []
    return [get_format(dataset.format).annotation_path(dataset, record)]


def expected_state(opened: workspace.OpenDataset, files: Iterable[str]) -> dict[str, Stat | None]:
    """The state the files had when ``opened`` was loaded (or last saved by this workbench):
    what a save must find on disk to go ahead."""
    return {rel: opened.stats.get(rel) for rel in files}


def _class_files_changed(opened: workspace.OpenDataset, dataset: Dataset) -> bool:
    return list(dataset.classes) != list(opened.classes_on_disk)


def _finish(opened: workspace.OpenDataset, dataset: Dataset, result: SaveResult, positions: list[int]) -> None:
    result.positions = positions
    opened.dataset.classes[:] = dataset.classes
    if result.files:
        opened.revision += 1
    workspace.update_index(opened, positions, result.files)


def save_record(
    opened: workspace.OpenDataset,
    position: int,
    record: ImageRecord,
    *,
    classes: list[str] | None = None,
    expected: dict[str, Stat | None] | None = None,
    journal: Journal | None = None,
    message: str = "",
) -> SaveResult:
    """Save ``record`` as the dataset's image at ``position`` (with ``classes`` as the class list
    when given, e.g. after a class was added). ``expected`` is the state of the record's files
    when the user started editing it (default: when the dataset was loaded). Raises
    ``ConflictError`` when a file changed on disk since; nothing is then written or changed."""
    with opened.lock:
        base = opened.dataset
        if not 0 <= position < len(base.images) or base.images[position].path != record.path:
            raise WorkbenchError(f"{record.path}: the dataset was reloaded since this image was opened; open it again")
        dataset = Dataset(
            root=base.root,
            format=base.format,
            classes=list(classes if classes is not None else base.classes),
            images=list(base.images),
            extra=base.extra,
            skipped=base.skipped,
        )
        dataset.images[position] = record
        class_files = _class_files_changed(opened, dataset) and dataset.format in ("yolo", "coco")
        rendered = _render(dataset, [record], class_files)
        wanted = {rel: opened.stats.get(rel) for rel in rendered}
        wanted.update(expected or {})
        result = _commit(
            base.root,
            dict(rendered),
            wanted,
            journal=journal,
            fmt=dataset.format,
            message=message or f"edit {record.path}",
        )
        base.images[position] = record
        if class_files or dataset.format not in ("yolo", "coco"):
            opened.classes_on_disk = list(dataset.classes)
        _finish(opened, dataset, result, [position])
        return result


def save_class_change(
    opened: workspace.OpenDataset,
    changed: Dataset,
    *,
    journal: Journal | None = None,
    message: str = "",
) -> SaveResult:
    """Save a dataset-wide class edit: ``changed`` is a ``copy_for_class_edit`` of the opened
    dataset with the edit applied. Only files whose bytes change are written; a conflict on
    any of them refuses the whole save."""
    with opened.lock:
        base = opened.dataset
        if len(changed.images) != len(base.images):
            raise WorkbenchError("the edited dataset does not match the opened one; reload it")
        positions = []
        for i, (old, new) in enumerate(zip(base.images, changed.images, strict=True)):
            old_names = [base.class_name(int(c)) for c in old.class_ids]
            new_names = [changed.class_name(int(c)) for c in new.class_ids]
            if (
                old_names != new_names
                or not np.array_equal(old.class_ids, new.class_ids)
                or old.boxes.shape != new.boxes.shape
            ):
                positions.append(i)
        class_files = _class_files_changed(opened, changed)
        rendered = _render(changed, [changed.images[i] for i in positions], class_files)
        result = _commit(
            base.root,
            dict(rendered),
            {rel: opened.stats.get(rel) for rel in rendered},
            journal=journal,
            fmt=changed.format,
            message=message or "class edit",
        )
        for i in positions:
            base.images[i] = changed.images[i]
        opened.classes_on_disk = list(changed.classes)
        _finish(opened, changed, result, positions)
        return result


def undo(root: Path | str, *, journal: Journal | None = None) -> dict[str, Any]:
    """Undo the last save of the dataset in ``root`` not yet undone: every file it wrote gets
    back its previous bytes (or is removed if it did not exist). Refused with ``ConflictError``
    when a file changed since that save. Returns the journal entry undone. The caller reloads
    the dataset (``workspace.open_dataset`` sees the changed files)."""
    journal = journal or Journal()
    root = Path(root)
    undoable = journal.undoable(root)
    if not undoable:
        raise NothingToUndo(f"{root}: nothing to undo")
    entry = undoable[-1]
    rendered = {f["path"]: None if f["before"] is None else journal.get(f["before"]) for f in entry["files"]}
    expect_sha = {f["path"]: f["after"] for f in entry["files"]}
    result = _commit(
        root,
        rendered,
        {},
        journal=journal,
        fmt=entry.get("format", ""),
        message=f"undo: {entry.get('message', '')}",
        undoes=entry["id"],
        expect_sha=expect_sha,
    )
    if result.entry is None:  # the files already held their old bytes: still mark it undone
        journal.append(
            {
                "root": str(root),
                "format": entry.get("format", ""),
                "message": "undo",
                "undoes": entry["id"],
                "files": [],
            }
        )
    return entry
