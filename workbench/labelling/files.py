"""The annotation files of a save: rendered by the format, compared with the disk, written all or
nothing, and the temp files a killed write left beside them removed. ``labelling.saving`` calls
these with the files' locks held."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from workbench import paths
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets.index import Stat, file_stat
from workbench.errors import WriteError
from workbench.fileio import atomic_write, is_temp_name, relpath
from workbench.formats import get_format
from workbench.labelling.journal import sha


def clean_temps(root: Path, rels: Iterable[str]) -> None:
    """Remove the temp files a killed ``atomic_write`` of these files left beside them
    (``.<name>.<random>.tmp``); the caller holds their locks. Each folder is listed once, by
    name alone (a folder of 100,000 annotation files: 30 ms; ``Path.glob`` took 100 ms)."""
    by_folder: dict[Path, set[str]] = {}
    for rel in rels:
        path = root / rel
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        try:
            listed = os.listdir(folder)
        except FileNotFoundError:  # a file saved into a folder not made yet
            continue
        for entry in listed:
            if (
                entry[0] == "."
                and entry[-4:] == ".tmp"
                and is_temp_name(entry)
                and entry[1:].rsplit(".", 2)[0] in names
            ):
                (folder / entry).unlink(missing_ok=True)


def render(dataset: Dataset, records: list[ImageRecord], class_files: bool) -> dict[str, bytes]:
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


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def changes(
    root: Path,
    rendered: dict[str, bytes | None],
    expected: dict[str, Stat | None] | None,
    accept: dict[str, set[str | None]] | None,
) -> tuple[dict[str, bytes | None], dict[str, bytes | None], list[str]]:
    """``(before, changed, conflicts)``: the current bytes of each file that changes, its new
    bytes, and the files that changed on disk since ``expected`` (a save) or whose bytes are not
    one of ``accept`` (an undo). ``expected=None`` checks nothing (just re-read under the lock)."""
    before: dict[str, bytes | None] = {}
    changed: dict[str, bytes | None] = {}
    conflicts = []
    for rel, data in rendered.items():
        path = root / rel
        current = read(path)
        if accept is not None:
            if sha(current) not in accept.get(rel, set()):
                conflicts.append(rel)
        elif expected is not None and file_stat(path) != expected.get(rel):
            if current != data:
                conflicts.append(rel)
            continue  # changed on disk, but already as we would write it
        if current != data:
            before[rel], changed[rel] = current, data
    return before, changed, conflicts


def write_all(root: Path, changed: dict[str, bytes | None], before: dict[str, bytes | None]) -> None:
    """Write every changed file, or none: what was written is put back when one fails."""
    written: list[str] = []
    try:
        for rel, data in changed.items():
            if data is None:
                (root / rel).unlink(missing_ok=True)
            else:
                atomic_write(root / rel, data)
            written.append(rel)
    except (WriteError, OSError) as e:
        for rel in written:
            if before[rel] is None:
                (root / rel).unlink(missing_ok=True)
            else:
                atomic_write(root / rel, before[rel])
        raise WriteError(f"{root}: save failed, nothing changed: {e}") from e
