"""Saving edits back to the dataset's own format, with a journal that can undo them.

``save_record`` (one record) and ``save_class_change`` (a dataset-wide class edit made with
``labelling.edits``) write the files that changed:

1. the new files are rendered by the format's own ``save_record`` (and ``save_class_list``
   when the class list changed) into a scratch folder;
2. a file whose bytes would not change is left alone;
3. a file that changed on disk since it was loaded (its size or mtime differs from the
   state the caller passes) refuses the whole save with ``ConflictError``: nothing is written;
4. every file is written atomically, and the journal gets one line naming each file's
   previous bytes (kept beside it), so ``undo`` restores them byte for byte, even after a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import paths
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets.index import OpenDataset, Stat, file_stat, update_index
from workbench.errors import WorkbenchError, WriteError
from workbench.fileio import atomic_write, relpath
from workbench.formats import capabilities, get_format


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
class SaveResult:
    """Files written (relative path -> new ``(size, mtime_ns)``, ``None`` if removed), the journal
    entry id (``None`` when nothing changed) and the positions of the records saved."""

    files: dict[str, Stat | None] = field(default_factory=dict)
    entry: int | None = None
    positions: list[int] = field(default_factory=list)


_JOURNAL_LOCK = threading.Lock()


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


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


def _render(dataset: Dataset, records: list[ImageRecord], class_files: bool) -> dict[str, bytes]:
    """The files the format writes for ``records`` (and its class-list files when asked), as
    ``relative path -> bytes``, rendered in a scratch folder: nothing under the root is touched."""
    module = get_format(dataset.format)
    scratch = Path(tempfile.mkdtemp(prefix="render-", dir=paths.home()))
    try:
        if class_files:
            module.save_class_list(dataset, scratch)
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
        elif file_stat(path) != expected.get(rel):
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
        stored = not capabilities(dataset.format).classes_from_labels  # a class list of its own
        class_files = stored and _class_files_changed(opened, dataset)
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
        if class_files or not stored:
            opened.classes_on_disk = list(dataset.classes)
        _finish(opened, dataset, result, [position])
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
    the dataset (``index.open_dataset`` sees the changed files)."""
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
