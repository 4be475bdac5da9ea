"""Saving edits back to the dataset's own format, with a journal that can undo them.

``save_record`` (one record) and ``save_class_change`` (a dataset-wide class edit made with
``labelling.edits``) write the files that changed:

1. the new files are rendered by the format's own ``save_record`` (and ``save_class_list``
   when the class list changed) into a scratch folder;
2. ``locks.locked(file)`` is taken for every file to write, in sorted order (so two saves of
   overlapping files cannot deadlock): the check below and the write are atomic with respect to
   every other workbench process;
3. a file whose bytes would not change is left alone;
4. a file that changed on disk since it was loaded (its size or mtime differs from the state
   the caller passes) refuses the whole save with ``ConflictError`` naming who saved it (from
   the journal); nothing is written. One exception: a file listing many images (COCO), when
   the record being saved is still on disk as it was loaded, is re-read and merged: the
   saved record replaces its own, every other record stays as on disk;
5. the journal is written around the files so that a process killed at any point leaves it
   consistent with them: the old and new bytes go to blobs first, then the entry, marked
   pending, then the files (each ``atomic_write``: old or new bytes, never half), then a
   ``done`` line. A pending entry whose files hold their new bytes is a save that happened
   (undo restores it); one whose files hold the old bytes never happened. A temp file that a
   killed ``atomic_write`` left beside a file is removed by the next save of that file, under
   its lock (no other workbench process can be writing it then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import locks
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets.index import OpenDataset, Stat, file_stat, update_index
from workbench.errors import WorkbenchError
from workbench.formats import capabilities, get_format
from workbench.labelling.files import changes, clean_temps, read, render, write_all
from workbench.labelling.journal import Journal, describe
from workbench.labelling.journal import sha as _sha

__all__ = ["ConflictError", "Journal", "NothingToUndo", "SaveResult", "save_class_change", "save_record", "undo"]


class ConflictError(WorkbenchError):
    """A file changed on disk since it was loaded; the save was refused and nothing written.
    ``by`` says who made each file what it is now, where a workbench save did."""

    def __init__(self, root: Path | str, files: list[str], by: dict[str, str] | None = None) -> None:
        self.root = str(root)
        self.files = list(files)
        self.by = dict(by or {})
        names = ", ".join(f"{f} (saved by {self.by[f]})" if f in self.by else f for f in self.files)
        super().__init__(
            f"{names} changed on disk since the dataset was loaded (another tab, person or tool saved it); "
            "nothing was saved. Reload the dataset to see the change, then edit again."
        )


class NothingToUndo(WorkbenchError):
    """The journal holds no edit of this dataset that can still be undone."""


@dataclass
class SaveResult:
    """Files written (relative path -> new ``(size, mtime_ns)``, ``None`` if removed), the journal
    entry id (``None`` when nothing changed) and the positions of the records saved."""

    files: dict[str, Stat | None] = field(default_factory=dict)
    entry: int | None = None
    positions: list[int] = field(default_factory=list)


def _conflict(root: Path, files: list[str], journal: Journal | None) -> ConflictError:
    journal = journal or Journal()
    by = {}
    for rel in files:
        writer = journal.last_writer(root, rel, _sha(read(root / rel)))
        if writer is not None:
            by[rel] = describe(writer)
    return ConflictError(root, files, by)


Rerender = Callable[[list[str]], dict[str, bytes | None]]


def _commit(
    root: Path,
    rendered: dict[str, bytes | None],
    expected: dict[str, Stat | None],
    *,
    journal: Journal | None,
    fmt: str,
    message: str,
    undoes: int | None = None,
    accept: dict[str, set[str | None]] | None = None,
    rerender: Rerender | None = None,
) -> SaveResult:
    """Under the lock of every file in ``rendered``: check, then write the files whose bytes
    change (``None`` removes a file) with the journal around them (see the module docstring).
    On a conflict ``rerender(conflicts)``, when given, may return the files merged with what is
    on disk now (or raise ``ConflictError``)."""
    with ExitStack() as held:
        for rel in sorted(rendered):
            held.enter_context(locks.locked(root / rel))
        clean_temps(root, rendered)
        before, changed, conflicts = changes(root, rendered, expected, accept)
        if conflicts and rerender is not None:
            merged = rerender(conflicts)
            if set(merged) - set(rendered):
                raise _conflict(root, conflicts, journal)  # a merge needing more files than are locked
            before, changed, conflicts = changes(root, merged, None, None)
        if conflicts:
            raise _conflict(root, conflicts, journal)
        if not changed:
            return SaveResult()
        entry = None
        if journal is not None:
            record: dict[str, Any] = {"root": str(root), "format": fmt, "message": message}
            if undoes is not None:
                record["undoes"] = undoes
            record["files"] = [
                {
                    "path": rel,
                    "before": None if before[rel] is None else journal.put(before[rel]),
                    "after": None if data is None else journal.put(data),
                }
                for rel, data in changed.items()
            ]
            entry = journal.append(record, pending=True)
        write_all(root, changed, before)
        if entry is not None:
            journal.done(entry)
        return SaveResult(files={rel: file_stat(root / rel) for rel in changed}, entry=entry)


def files_of(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The annotation file(s) a save of ``record`` writes, relative to the root."""
    return get_format(dataset.format).annotation_files(dataset, record)


def expected_state(opened: OpenDataset, files: Iterable[str]) -> dict[str, Stat | None]:
    """The state the files had when ``opened`` was loaded (or last saved by this workbench):
    what a save must find on disk to go ahead."""
    return {rel: opened.stats.get(rel) for rel in files}


def _class_files_changed(opened: OpenDataset, dataset: Dataset) -> bool:
    return list(dataset.classes) != list(opened.classes_on_disk)


def _finish(opened: OpenDataset, dataset: Dataset, result: SaveResult, positions: list[int]) -> None:
    result.positions = positions
    opened.dataset.classes[:] = dataset.classes
    if result.files:
        opened.revision += 1
    update_index(opened, positions, result.files)


def _ranked(box_extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``box_extra`` with each top-level number (a box's place in a file listing many images,
    which moves when another image's boxes change) replaced by its rank among the record's boxes."""
    out = [dict(extra) for extra in box_extra]
    for key in {k for extra in out for k, v in extra.items() if isinstance(v, int | float)}:
        values = sorted({extra[key] for extra in out if isinstance(extra.get(key), int | float)})
        for extra in out:
            if isinstance(extra.get(key), int | float):
                extra[key] = values.index(extra[key])
    return out


def _record_key(dataset: Dataset, record: ImageRecord) -> tuple:
    """What a record says, comparable across two loads of a dataset (class names, not ids)."""
    return (
        record.path,
        record.width,
        record.height,
        record.split,
        record.boxes.tolist(),
        [dataset.class_name(int(c)) for c in record.class_ids],
        [None if p is None else np.asarray(p).tolist() for p in record.polygons],
        _ranked(record.box_extra),
        record.extra,
    )


def _merger(opened: OpenDataset, position: int, dataset: Dataset, merged: dict[str, Dataset]) -> Rerender:
    """For a format whose files list many images (COCO): on a conflict, re-read the dataset from
    disk and, when the record at ``position`` is there as it was loaded, render ``dataset``'s
    record into what is on disk (the merged dataset is left in ``merged["dataset"]``).
    Anything else (the same record changed, images added or removed) refuses the save."""
    base = opened.dataset

    def rerender(conflicts: list[str]) -> dict[str, bytes | None]:
        fresh = get_format(base.format).load(base.root, strict=False)
        if [r.path for r in fresh.images] != [r.path for r in base.images] or _record_key(
            fresh, fresh.images[position]
        ) != _record_key(base, base.images[position]):
            raise _Refused(conflicts)
        record = dataset.images[position].copy()
        classes = list(fresh.classes)
        for name in dataset.classes:
            if name not in classes:
                classes.append(name)
        record.class_ids = np.asarray([classes.index(dataset.class_name(int(c))) for c in record.class_ids])
        images = list(fresh.images)
        images[position] = record
        out = Dataset(
            root=base.root, format=base.format, classes=classes, images=images, extra=fresh.extra, skipped=fresh.skipped
        )
        merged["dataset"] = out
        class_files = classes != list(fresh.classes) and not capabilities(base.format).classes_from_labels
        return dict(render(out, [record], class_files))

    return rerender


class _Refused(Exception):
    """Raised inside ``_commit`` by a merge that cannot be done: the caller names the authors."""

    def __init__(self, files: list[str]) -> None:
        self.files = files


def save_record(
    opened: OpenDataset,
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
    ``ConflictError`` when a file changed on disk since (unless it lists many images and only
    others changed: then the record is merged into it); nothing is then written or changed."""
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
        able = capabilities(dataset.format)
        stored = not able.classes_from_labels  # a class list of its own
        class_files = stored and _class_files_changed(opened, dataset)
        rendered = render(dataset, [record], class_files)
        wanted = {rel: opened.stats.get(rel) for rel in rendered}
        wanted.update(expected or {})
        merged: dict[str, Dataset] = {}
        try:
            result = _commit(
                base.root,
                dict(rendered),
                wanted,
                journal=journal,
                fmt=dataset.format,
                message=message or f"edit {record.path}",
                rerender=None if able.per_image_files else _merger(opened, position, dataset, merged),
            )
        except _Refused as e:
            raise _conflict(base.root, e.files, journal) from None
        positions = [position]
        if "dataset" in merged:  # other records of the file came from disk: take them all
            dataset = merged["dataset"]
            positions = [i for i, r in enumerate(dataset.images) if r.annotation in result.files or i == position]
            base.images[:] = dataset.images
            opened.classes_on_disk = list(dataset.classes)
        base.images[position] = dataset.images[position]
        if class_files or not stored:
            opened.classes_on_disk = list(dataset.classes)
        _finish(opened, dataset, result, positions)
        return result


def save_class_change(
    opened: OpenDataset,
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
        rendered = render(changed, [changed.images[i] for i in positions], class_files)
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


def undo(root: Path | str, *, entry: int | None = None, journal: Journal | None = None) -> dict[str, Any]:
    """Undo the save ``entry`` names (default: the journal author's last save of the dataset in
    ``root`` not yet undone): every file it wrote gets back its previous bytes (or is removed if
    it did not exist). Refused with ``ConflictError`` when a file changed since that save.
    Returns the journal entry undone. The caller reloads the dataset (``index.open_dataset``
    sees the changed files)."""
    journal = journal or Journal()
    root = Path(root)
    undoable = journal.undoable(root, author=None if entry is not None else journal.author)
    chosen = [e for e in undoable if entry is None or e["id"] == entry]
    if not chosen:
        raise NothingToUndo(
            f"{root}: nothing to undo" + (f" (entry {entry} is not a save that can be undone)" if entry else "")
        )
    target = chosen[-1]
    rendered = {f["path"]: None if f["before"] is None else journal.get(f["before"]) for f in target["files"]}
    # a file may already hold its old bytes: the save was killed before writing it
    accept = {f["path"]: {f["after"], f["before"]} for f in target["files"]}
    result = _commit(
        root,
        rendered,
        {},
        journal=journal,
        fmt=target.get("format", ""),
        message=f"undo: {target.get('message', '')}",
        undoes=target["id"],
        accept=accept,
    )
    if result.entry is None:  # the files already held their old bytes: still mark it undone
        journal.append(
            {
                "root": str(root),
                "format": target.get("format", ""),
                "message": "undo",
                "undoes": target["id"],
                "files": [],
            }
        )
    return target
