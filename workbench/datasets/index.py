"""The index cache: datasets loaded once, kept in SQLite, re-read only where a file changed.

``<workspace>/index.sqlite`` holds, per dataset root, its records (labels and image sizes, never
pixels) one row each, the box extras they share (``index_rows.dump_records``), and the
``(size, mtime_ns)`` of every file under the root when they were read: one JSON text in ``meta``
and, after saves, the files saved since in ``saved_files`` (a save writes those few rows, not the
state of 200,000 files; the next open that finds the cache valid folds them back). The cache is
valid while every file keeps its path, size and mtime (``file_state``); when only annotation
files changed, and the format can re-read one file (``Capabilities.reread_one_file``), just
those are re-read; anything else makes the next open load the dataset again.

Rows are plain JSON (``datasets.index_rows``), never pickles: whoever can write the workspace
must not be able to run code in the processes that open it. A row that does not decode is a
cache miss: the dataset is read again from its files.

``get_open`` keeps one ``OpenDataset`` per dataset in this process, shared by every page and
session, so a save shows everywhere at once. No Streamlit here.

Several processes share the database: every read and every write is one SQLite transaction
(a write takes the write lock first, ``BEGIN IMMEDIATE``), a busy database is waited for
(``BUSY_TIMEOUT``), and the journal mode is WAL on a local disk and the rollback journal on a
network file system (``locks.sqlite_journal_mode``).
"""

from __future__ import annotations

import gc
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.annotations import Dataset
from workbench.datasets import index_rows
from workbench.datasets.catalog import resolve_path
from workbench.datasets.file_state import Stat, scan
from workbench.datasets.file_state import file_stat as file_stat  # where the labelling modules take it
from workbench.errors import ReadError
from workbench.formats import capabilities, detect_format, get_format, load_dataset, yolo_yaml
from workbench.locks import connect_sqlite, transaction
from workbench.paths import home

INDEX_VERSION = 5  # bump when the row layout changes: old rows are then ignored (2: pickles, 3: no shared extras, 4: untagged big ints)
BUSY_TIMEOUT = 60.0  # seconds another process may hold the database's write lock


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
    source: Path | None = None  # the data.yaml it was opened from; such a dataset is never cached
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.classes_on_disk is None:
            self.classes_on_disk = list(self.dataset.classes)

    @property
    def root(self) -> Path:
        return self.dataset.root


def _connect() -> sqlite3.Connection:
    """A connection in autocommit mode (``_db`` opens the transactions), the tables created."""
    path = home() / "index.sqlite"
    db = connect_sqlite(path, busy_timeout=BUSY_TIMEOUT)
    try:
        wal = db.execute("PRAGMA journal_mode").fetchone()[0].upper() == "WAL"
        db.execute("PRAGMA synchronous = NORMAL" if wal else "PRAGMA synchronous = FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS meta"
            " (root TEXT PRIMARY KEY, version INTEGER, format TEXT, files BLOB, dataset BLOB)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS records (root TEXT, pos INTEGER, record BLOB, PRIMARY KEY (root, pos))")
        db.execute("CREATE TABLE IF NOT EXISTS shared (root TEXT PRIMARY KEY, box_extra BLOB)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS saved_files"
            " (root TEXT, rel TEXT, size INTEGER, mtime INTEGER, PRIMARY KEY (root, rel))"
        )
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def _db(*, write: bool) -> Iterator[sqlite3.Connection]:
    """One connection and one transaction: committed on success, rolled back on an error.

    A write starts with ``BEGIN IMMEDIATE`` (the write lock at once, waited for up to
    ``BUSY_TIMEOUT``), so two processes never both read, then both write; a read sees one
    snapshot, so the meta row and the records rows always belong together."""
    db = _connect()
    try:
        with transaction(db, write=write):
            yield db
    finally:
        db.close()


def _dataset_header(dataset: Dataset) -> str:
    """The dataset without its records (format, classes, extra, skipped, record count), as JSON."""
    # ReadError's __init__ takes its parts, not the message: keep the parts.
    skipped = [
        [e.file, e.reason, e.record] if isinstance(e, ReadError) else [str(e), str(e), None] for e in dataset.skipped
    ]
    return index_rows.dumps(
        {
            "format": dataset.format,
            "classes": list(dataset.classes),
            "extra": dataset.extra,
            "skipped": skipped,
            "images": len(dataset.images),
        }
    )


def _files(stats: dict[str, Stat]) -> str:
    return index_rows.plain_dumps(stats)


def store_index(opened: OpenDataset) -> None:
    """Write the whole index of ``opened`` to the cache; a dataset holding a value the rows cannot
    hold exactly (``index_rows.Unencodable``) is not cached, and its old rows are dropped."""
    dataset = opened.dataset
    key = str(dataset.root)
    if opened.source is not None:
        return  # a data.yaml's records are not its root folder's: they must not fill that folder's rows
    try:
        texts, shared = index_rows.dump_records(dataset.images)
        header = _dataset_header(dataset)
    except index_rows.Unencodable:
        forget_index(key)
        return
    with _db(write=True) as db:
        _delete(db, key, "records", "saved_files")
        db.executemany("INSERT INTO records VALUES (?, ?, ?)", ((key, i, t) for i, t in enumerate(texts)))
        db.execute("INSERT OR REPLACE INTO shared VALUES (?, ?)", (key, shared))
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?, ?, ?, ?)",
            (key, INDEX_VERSION, dataset.format, _files(opened.stats), header),
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
    if opened.source is not None:
        return  # not cached (``store_index``)
    try:
        rows = [(key, i, index_rows.dump_record(dataset.images[i])) for i in positions]
        header = _dataset_header(dataset)
    except index_rows.Unencodable:
        forget_index(key)
        return
    saved = [(key, rel, *(st or (None, None))) for rel, st in files.items()]
    with _db(write=True) as db:
        db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", rows)
        db.executemany("INSERT OR REPLACE INTO saved_files VALUES (?, ?, ?, ?)", saved)
        db.execute("UPDATE meta SET dataset = ? WHERE root = ?", (header, key))


def _delete(db: sqlite3.Connection, key: str, *tables: str) -> None:
    for table in tables:
        db.execute(f"DELETE FROM {table} WHERE root = ?", (key,))  # the table names are ours, never input


def forget_index(root: Path | str) -> None:
    with _db(write=True) as db:
        _delete(db, str(root), "records", "shared", "saved_files", "meta")


def _fold(key: str, files: str, saved: list[tuple], stats: dict[str, Stat]) -> None:
    """Write ``stats`` (the cached state, found valid) as the root's file state and drop the
    ``saved`` rows it holds, unless the cache changed meanwhile: then only a later open folds."""
    with _db(write=True) as db:
        row = db.execute("SELECT version, files FROM meta WHERE root = ?", (key,)).fetchone()
        if row is None or row[0] != INDEX_VERSION or row[1] != files:
            return
        db.executemany(
            "DELETE FROM saved_files WHERE root = ? AND rel = ? AND size IS ? AND mtime IS ?",
            ((key, *s) for s in saved),
        )
        db.execute("UPDATE meta SET files = ? WHERE root = ?", (_files(stats), key))


@contextmanager
def no_gc() -> Iterator[None]:
    """Decoding (or loading, or converting) 10,000 records allocates ~1M objects; the cyclic GC
    would walk them again and again (it doubles the time) although none of them can be garbage
    yet. Restores the GC as it was, with what was allocated meanwhile moved to the oldest
    generation unscanned (``freeze`` then ``unfreeze``): the first young collection after
    ``enable`` would otherwise walk every one of those objects once more, only to keep them."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _cached(
    root: Path, fmt: str | None, current: dict[str, Stat] | None = None
) -> tuple[Dataset, dict[str, Stat]] | None:
    """The cached dataset of ``root`` (in format ``fmt``, when given) and the state of its files
    when it was cached, or ``None``: also when any row cannot be read (a damaged or tampered
    cache is a miss, never fatal and never code that runs). ``current``: the files' state now;
    when the cached state is the same text, it is not decoded (the common case, and 200,000
    entries on a 100,000-image folder). Folds the files saved since it was cached (``_fold``)."""
    key = str(root)
    try:
        with _db(write=False) as db:
            row = db.execute("SELECT version, format, files, dataset FROM meta WHERE root = ?", (key,)).fetchone()
            if row is None or row[0] != INDEX_VERSION or (fmt and row[1] != fmt):
                return None
            shared = db.execute("SELECT box_extra FROM shared WHERE root = ?", (key,)).fetchone()
            saved = db.execute("SELECT rel, size, mtime FROM saved_files WHERE root = ?", (key,)).fetchall()
            blobs = [b for (b,) in db.execute("SELECT record FROM records WHERE root = ? ORDER BY pos", (key,))]
    except sqlite3.DatabaseError:
        return None
    try:
        with no_gc():
            if type(row[2]) is not str or shared is None:
                raise TypeError("files: not JSON text")
            if current is not None and not saved and row[2] == _files(current):
                stats = current
            else:
                stats = {rel: (int(size), int(mtime)) for rel, (size, mtime) in json.loads(row[2]).items()}
                for rel, size, mtime in saved:
                    if size is None:
                        stats.pop(rel, None)
                    else:
                        stats[str(rel)] = (int(size), int(mtime))
            header = index_rows.loads(row[3])
            images = index_rows.load_records(blobs, shared[0])
            if len(images) != header["images"]:
                raise ValueError("records missing")
            dataset = Dataset(
                root=root, format=str(header["format"]), classes=list(header["classes"]), extra=header["extra"]
            )
            dataset.images = images
            dataset.skipped = [ReadError(file, reason, record) for file, reason, record in header["skipped"]]
    except Exception:  # a cache that cannot be read is rebuilt, never fatal
        return None
    if saved and stats == current:
        try:
            _fold(key, row[2], saved, stats)
        except sqlite3.Error:  # a locked or read-only cache: folded by a later open
            pass
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
    if yolo_yaml.is_data_yaml(root):  # read afresh: the cache is per folder, a data.yaml picks images of one
        dataset = load_dataset(root, fmt, strict=False, on_progress=on_progress)
        opened = OpenDataset(dataset, scan(dataset.root), source=root)
        opened.seconds = time.perf_counter() - start
        return opened
    stats = scan(root)
    cached = _cached(root, fmt, stats) if use_cache else None
    if cached is not None:
        dataset, old = cached
        if old == stats:
            return OpenDataset(dataset, stats, from_cache=True, seconds=time.perf_counter() - start)
        positions = _reread(dataset, old, stats)
        changed = {rel: st for rel, st in stats.items() if old.get(rel) != st}
        # the files re-read are as the scan found them (not written meanwhile); any other file
        # keeps the state of that scan, so a change to it since shows at the next open
        if positions is not None and all(file_stat(root / rel) == st for rel, st in changed.items()):
            opened = OpenDataset(dataset, dict(old), from_cache=True)
            update_index(opened, positions, changed)
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
