"""The index cache: datasets loaded once, kept in SQLite, re-read only where a file changed.

``<workspace>/index.sqlite`` holds, per dataset root, its records (labels and image sizes, never
pixels) pickled one row each, and the ``(size, mtime_ns)`` of every file under the root when
they were read. The cache is valid while every file keeps its path, size and mtime; when only
annotation files changed, and the format can re-read one file (``Capabilities.reread_one_file``),
just those are re-read; anything else makes the next open load the dataset again.

``get_open`` keeps one ``OpenDataset`` per dataset in this process, shared by every page and
session, so a save shows everywhere at once. No Streamlit here.
"""

from __future__ import annotations

import gc
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.annotations import Dataset
from workbench.datasets.catalog import resolve_path
from workbench.errors import ReadError
from workbench.formats import capabilities, detect_format, get_format
from workbench.paths import home

INDEX_VERSION = 2  # bump when the pickled record layout changes: old rows are then ignored

Stat = tuple[int, int]  # (size in bytes, mtime in ns)


def scan(root: Path) -> dict[str, Stat]:
    """``relative path -> (size, mtime_ns)`` of every file under ``root``: hidden folders and
    files skipped, symlinked files followed, symlinked folders not entered (as ``os.walk``)."""
    out: dict[str, Stat] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):  # as os.walk: no loops
                        stack.append((Path(entry.path), prefix + entry.name + "/"))
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                out[prefix + entry.name] = (st.st_size, st.st_mtime_ns)
    return out


def file_stat(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class OpenDataset:
    """A loaded dataset with the state of its files when it was loaded.

    ``stats`` maps every file under the root to its ``(size, mtime_ns)`` at load time;
    ``saving.save_record`` refuses to write a file whose state on disk differs from it.
    ``revision`` grows with every save, for caches keyed on the dataset's content.
    """

    dataset: Dataset
    stats: dict[str, Stat]
    from_cache: bool = False
    seconds: float = 0.0
    revision: int = 0
    classes_on_disk: list[str] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.classes_on_disk is None:
            self.classes_on_disk = list(self.dataset.classes)

    @property
    def root(self) -> Path:
        return self.dataset.root


def _connect() -> sqlite3.Connection:
    db = sqlite3.connect(home() / "index.sqlite", timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS meta (
            root TEXT PRIMARY KEY, version INTEGER, format TEXT, files BLOB, dataset BLOB);
        CREATE TABLE IF NOT EXISTS records (
            root TEXT, pos INTEGER, record BLOB, PRIMARY KEY (root, pos));
        """
    )
    return db


_DB_LOCK = threading.Lock()


@contextmanager
def _db() -> Iterator[sqlite3.Connection]:
    """One connection, one transaction (committed on success), closed afterwards."""
    with _DB_LOCK:
        db = _connect()
        try:
            with db:
                yield db
        finally:
            db.close()


def _dataset_header(dataset: Dataset) -> bytes:
    """The dataset without its records (classes, extra, skipped), pickled."""
    # ReadError does not pickle (its __init__ takes more than the message): keep its parts.
    skipped = [
        (e.file, e.reason, e.record) if isinstance(e, ReadError) else (str(e), str(e), None) for e in dataset.skipped
    ]
    shell = Dataset(root=dataset.root, format=dataset.format, classes=list(dataset.classes), extra=dataset.extra)
    return pickle.dumps((shell, skipped), protocol=pickle.HIGHEST_PROTOCOL)


def store_index(opened: OpenDataset) -> None:
    """Write the whole index of ``opened`` to the cache."""
    dataset = opened.dataset
    key = str(dataset.root)
    rows = [(key, i, pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL)) for i, r in enumerate(dataset.images)]
    with _db() as db:
        db.execute("DELETE FROM records WHERE root = ?", (key,))
        db.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?)",
            (key, INDEX_VERSION, dataset.format, pickle.dumps(opened.stats), _dataset_header(dataset)),
        )


def update_index(opened: OpenDataset, positions: Iterable[int], files: dict[str, Stat | None]) -> None:
    """After a save: rewrite the cached rows of the records at ``positions`` and the new
    state of the files written (``None`` when a file was removed). Cheap: a few rows."""
    dataset = opened.dataset
    key = str(dataset.root)
    for rel, st in files.items():
        if st is None:
            opened.stats.pop(rel, None)
        else:
            opened.stats[rel] = st
    rows = [(key, i, pickle.dumps(dataset.images[i], protocol=pickle.HIGHEST_PROTOCOL)) for i in positions]
    with _db() as db:
        db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", rows)
        db.execute(
            "UPDATE meta SET files = ?, dataset = ? WHERE root = ?",
            (pickle.dumps(opened.stats), _dataset_header(dataset), key),
        )


def forget_index(root: Path | str) -> None:
    with _db() as db:
        db.execute("DELETE FROM records WHERE root = ?", (str(root),))
        db.execute("DELETE FROM meta WHERE root = ?", (str(root),))


@contextmanager
def _no_gc() -> Iterator[None]:
    """Unpickling 10,000 records allocates ~1M objects; the cyclic GC would walk them again and
    again (it doubles the time) although none of them can be garbage yet."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cached(root: Path, fmt: str | None) -> tuple[Dataset, dict[str, Stat]] | None:
    """The cached dataset of ``root`` (in format ``fmt``, when given) and the state of its files
    when it was cached, or ``None``."""
    key = str(root)
    with _db() as db:
        row = db.execute("SELECT version, format, files, dataset FROM meta WHERE root = ?", (key,)).fetchone()
        if row is None or row[0] != INDEX_VERSION or (fmt and row[1] != fmt):
            return None
        blobs = db.execute("SELECT record FROM records WHERE root = ? ORDER BY pos", (key,)).fetchall()
    try:
        with _no_gc():
            stats = pickle.loads(row[2])
            dataset, skipped = pickle.loads(row[3])
            dataset.images = [pickle.loads(b) for (b,) in blobs]
    except Exception:  # a cache that cannot be read is rebuilt, never fatal
        return None
    dataset.root = root
    dataset.skipped = [ReadError(file, reason, record) for file, reason, record in skipped]
    return dataset, stats


def _first_appearance(dataset: Dataset) -> list[str]:
    """Class names in the order a load finds them when they come from the labels: first use,
    records in order."""
    seen: dict[str, None] = {}
    for r in dataset.images:
        for c in r.class_ids:
            seen.setdefault(dataset.classes[int(c)], None)
    return list(seen)


def _reread(dataset: Dataset, old: dict[str, Stat], new: dict[str, Stat]) -> list[int] | None:
    """Re-read, in place, only the annotation files that changed since ``dataset`` was cached;
    returns the positions re-read, or ``None`` when that cannot give what a full load would
    (a file added or removed, a non-annotation file changed, a new or vanished class name, a
    file that no longer parses): the caller then loads everything again.

    Uses the format's own ``reread``, so the records are exactly those a full load makes.
    """
    able = capabilities(dataset.format)
    if set(old) != set(new) or not able.reread_one_file or dataset.skipped:
        return None
    changed = [rel for rel, st in new.items() if old[rel] != st]
    position = {r.annotation: i for i, r in enumerate(dataset.images) if r.annotation}
    if not changed or any(rel not in position for rel in changed):
        return None
    try:
        records = get_format(dataset.format).reread(dataset, {position[rel]: rel for rel in changed}, scanned=new)
    except (ReadError, OSError, ValueError, AttributeError):
        return None
    if any(record.path != dataset.images[i].path for i, record in records.items()):
        return None
    for i, record in records.items():
        dataset.images[i] = record
    if able.classes_from_labels and _first_appearance(dataset) != dataset.classes:
        return None
    return [position[rel] for rel in changed]


def open_dataset(
    root: Path | str,
    fmt: str | None = None,
    *,
    use_cache: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> OpenDataset:
    """Load a dataset leniently (bad files are listed in ``Dataset.skipped``), from the index
    cache when no file under its root changed since it was cached."""
    start = time.perf_counter()
    root = resolve_path(root)
    fmt = get_format(fmt).NAME if fmt else None
    stats = scan(root)
    cached = _cached(root, fmt) if use_cache else None
    if cached is not None:
        dataset, old = cached
        if old == stats:
            return OpenDataset(dataset, stats, from_cache=True, seconds=time.perf_counter() - start)
        positions = _reread(dataset, old, stats)
        if positions is not None and scan(root) == stats:
            opened = OpenDataset(dataset, dict(old), from_cache=True)
            update_index(opened, positions, {rel: stats[rel] for rel in stats if stats[rel] != old[rel]})
            opened.seconds = time.perf_counter() - start
            return opened
    fmt = fmt or detect_format(root)
    dataset = get_format(fmt).load(root, strict=False, on_progress=on_progress)
    after = scan(root)
    opened = OpenDataset(dataset, after, from_cache=False)
    if use_cache and after == stats:  # nothing changed while loading: safe to cache
        store_index(opened)
    opened.seconds = time.perf_counter() - start
    return opened


_OPEN: dict[tuple[str, str | None], OpenDataset] = {}  # what get_open holds, by (root, format)
_OPEN_LOCK = threading.Lock()


def get_open(root: Path | str, fmt: str | None = None, *, reload: bool = False) -> OpenDataset:
    """The dataset in ``root`` as this process holds it (opened on first use, from the index
    cache when valid). Every page shares the one copy, so a save shows everywhere at once.
    ``reload=True`` reads it again (after an undo, or when a file changed on disk)."""
    key = (str(resolve_path(root)), fmt)
    with _OPEN_LOCK:
        opened = _OPEN.get(key)
        if opened is None or reload:
            opened = open_dataset(root, fmt)
            _OPEN[key] = opened
        return opened


def filter_images(
    dataset: Dataset,
    *,
    classes: Iterable[str] = (),
    kinds: Iterable[str] = (),
    splits: Iterable[str] = (),
    empty: bool = False,
    search: str = "",
    report=None,
) -> list[int]:
    """Positions of the images that pass every filter given: holding a box of any of
    ``classes``; having a health finding of any of ``kinds`` (from ``report``); in any of
    ``splits``; with no box (``empty``); whose path contains ``search`` (case-insensitive)."""
    class_set = {i for i, name in enumerate(dataset.classes) if name in set(classes)}
    class_set |= {int(c) for c in classes if str(c).isdigit() and int(c) >= len(dataset.classes)}
    split_set = set(splits)
    kind_set = set(kinds)
    flagged: set[str] | None = None
    if kind_set and report is not None:
        flagged = {f.image or f.file for f in report.findings if f.kind in kind_set}
    needle = search.strip().lower()
    out = []
    for i, r in enumerate(dataset.images):
        if class_set and not any(int(c) in class_set for c in r.class_ids):
            continue
        if split_set and r.split not in split_set:
            continue
        if empty and len(r):
            continue
        if needle and needle not in r.path.lower():
            continue
        if flagged is not None and r.path not in flagged and (r.annotation or "") not in flagged:
            continue
        out.append(i)
    return out
