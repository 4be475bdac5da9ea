"""The workspace: what the workbench remembers between runs, and its disk caches.

The workspace folder is ``$WORKBENCH_HOME`` when set, else ``<project root>/.workbench/``.
It holds:

* ``datasets.json``: the datasets the user added (name, resolved path, format) and the
  one opened last;
* ``index.sqlite``: the dataset index (labels and image sizes, never pixels), one row
  per image record, valid while every file under the dataset root keeps its path, size
  and mtime; a changed, added or removed file makes the next open re-read the dataset;
* ``thumbs/``: JPEG thumbnails keyed by the image's path, size and mtime;
* ``journal.jsonl``: the edit journal (see ``workbench.edits``);
* ``samples/``: the writable copy of the bundled sample dataset.

No Streamlit here: the pages call these functions and cache what they return.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import pickle
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError, WorkbenchError
from workbench.fileio import atomic_write, is_image, natural_key
from workbench.formats import detect_format, get_format
from workbench.paths import SAMPLE_DATASET, home

INDEX_VERSION = 2  # bump when the pickled record layout changes: old rows are then ignored
THUMB_SIZE = 256  # px, the longer side of a gallery thumbnail

Stat = tuple[int, int]  # (size in bytes, mtime in ns)


# --- the list of datasets ---------------------------------------------------------


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset the user added: a display name, its resolved folder and its format."""

    name: str
    path: str
    format: str


def _list_file() -> Path:
    return home() / "datasets.json"


def _read_list() -> dict:
    path = _list_file()
    if not path.is_file():
        return {"datasets": [], "current": None}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"datasets": [], "current": None}
    data.setdefault("datasets", [])
    data.setdefault("current", None)
    return data


def _write_list(data: dict) -> None:
    atomic_write(_list_file(), json.dumps(data, indent=2) + "\n")


def is_fresh() -> bool:
    """True when the workspace has never had a dataset list (first run)."""
    return not _list_file().is_file()


def list_datasets() -> list[DatasetEntry]:
    """The datasets added so far, in the order they were added."""
    out = []
    for item in _read_list()["datasets"]:
        try:
            out.append(DatasetEntry(name=item["name"], path=item["path"], format=item["format"]))
        except (KeyError, TypeError):
            continue
    return out


def resolve_path(text: str | os.PathLike) -> Path:
    """A path typed by the user, with ``~`` expanded and made absolute (symlinks resolved)."""
    text = str(text).strip().strip('"').strip("'")
    if not text:
        raise WorkbenchError("no path given")
    return Path(text).expanduser().resolve()


def add_dataset(path: str | os.PathLike, fmt: str | None = None, *, name: str | None = None) -> DatasetEntry:
    """Remember the dataset in ``path`` (format detected unless ``fmt`` is given) and make it
    the current one. Adding a folder twice updates its entry."""
    root = resolve_path(path)
    if not root.is_dir():
        raise WorkbenchError(f"{root}: not a folder")
    fmt = get_format(fmt).NAME if fmt else detect_format(root)
    entry = DatasetEntry(name=name or root.name, path=str(root), format=fmt)
    data = _read_list()
    data["datasets"] = [d for d in data["datasets"] if d.get("path") != entry.path]
    data["datasets"].append({"name": entry.name, "path": entry.path, "format": entry.format})
    data["current"] = entry.path
    _write_list(data)
    return entry


def remove_dataset(path: str | os.PathLike) -> None:
    """Forget a dataset (its files are not touched)."""
    data = _read_list()
    data["datasets"] = [d for d in data["datasets"] if d.get("path") != str(path)]
    if data.get("current") == str(path):
        data["current"] = data["datasets"][-1]["path"] if data["datasets"] else None
    _write_list(data)


def set_current(path: str | os.PathLike) -> None:
    data = _read_list()
    data["current"] = str(path)
    _write_list(data)


def current_dataset() -> DatasetEntry | None:
    """The dataset opened last, or ``None``."""
    entries = list_datasets()
    current = _read_list().get("current")
    return next((e for e in entries if e.path == current), entries[-1] if entries else None)


def find_dataset(path: str | os.PathLike) -> DatasetEntry | None:
    return next((e for e in list_datasets() if e.path == str(path)), None)


def ensure_sample() -> DatasetEntry | None:
    """On first run, copy the bundled sample into the workspace and add it, so that edits
    never modify the repository's own files. Returns the entry, or ``None`` when the
    workspace already had a dataset list."""
    if not is_fresh() or not SAMPLE_DATASET.is_dir():
        if is_fresh():
            _write_list({"datasets": [], "current": None})
        return None
    target = home() / "samples" / SAMPLE_DATASET.name
    if not target.exists():
        shutil.copytree(SAMPLE_DATASET, target)
    return add_dataset(target, "voc", name=SAMPLE_DATASET.name)


# --- the index cache ------------------------------------------------------------------


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
    ``edits.save_record`` refuses to write a file whose state on disk differs from it.
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
    """Class names in the order a VOC/LabelMe load finds them: first use, files in order."""
    seen: dict[str, None] = {}
    for r in dataset.images:
        for c in r.class_ids:
            seen.setdefault(dataset.classes[int(c)], None)
    return list(seen)


def _image_index(root: Path, files: dict[str, Stat]):
    """``formats.common.ImageIndex(root)`` built from a scan already made instead of walking the
    folder again: its images in ``iter_files`` order (folders in name order, depth first, files in
    natural order), so that look-ups give what the format's own index gives."""
    from workbench.formats.common import ImageIndex

    def order(rel: str) -> tuple:
        folders, _, name = rel.rpartition("/")
        return (tuple(folders.split("/")) if folders else (), natural_key(name))

    return ImageIndex(root, sorted((rel for rel in files if is_image(rel)), key=order))


def _reread(dataset: Dataset, old: dict[str, Stat], new: dict[str, Stat]) -> list[int] | None:
    """Re-read, in place, only the annotation files that changed since ``dataset`` was cached;
    returns the positions re-read, or ``None`` when that cannot give what a full load would
    (a file added or removed, a non-annotation file changed, a new or vanished class name, a
    file that no longer parses): the caller then loads everything again.

    Uses each per-image format's own one-file reader (``voc.read_record``,
    ``labelme.read_record``, ``yolo.read_record``), so the records are exactly those a full load
    makes.
    """
    from workbench.formats import labelme, voc, yolo

    if set(old) != set(new) or dataset.format not in ("voc", "labelme", "yolo") or dataset.skipped:
        return None
    changed = [rel for rel, st in new.items() if old[rel] != st]
    position = {r.annotation: i for i, r in enumerate(dataset.images) if r.annotation}
    if not changed or any(rel not in position for rel in changed):
        return None
    root = dataset.root
    try:
        if dataset.format == "voc":
            index, splits = _image_index(root, new), voc.image_sets(root)
        for rel in changed:
            i = position[rel]
            if dataset.format == "voc":
                record = voc.read_record(root, root / rel, index=index, splits=splits)
            elif dataset.format == "labelme":
                record = labelme.read_record(root, root / rel)
            else:
                record = yolo.read_record(root, image_rel=dataset.images[i].path, label_rel=rel)
            if record.path != dataset.images[i].path:
                return None
            if dataset.format != "yolo":
                names = record.extra.pop("_names")
                if any(n not in dataset.classes for n in names):
                    return None
                record.class_ids = np.array([dataset.classes.index(n) for n in names], dtype=np.int64)
            dataset.images[i] = record
    except (ReadError, OSError, ValueError, AttributeError):
        return None
    if dataset.format != "yolo" and _first_appearance(dataset) != dataset.classes:
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


# --- thumbnails ---------------------------------------------------------------------------


def _thumb_path(image: Path, st: Stat, size: int) -> Path:
    digest = hashlib.sha1(f"{image}|{st[0]}|{st[1]}|{size}".encode()).hexdigest()
    return home() / "thumbs" / digest[:2] / f"{digest}.jpg"


def thumbnail(image: Path, size: int = THUMB_SIZE) -> tuple[Image.Image, float] | None:
    """The image scaled so its longer side is at most ``size`` px, and the scale factor
    (thumbnail px per image px). Cached on disk keyed by path, size and mtime. ``None``
    when the image is missing or unreadable."""
    from workbench.drawing import make_thumbnail

    st = file_stat(image)
    if st is None:
        return None
    cache = _thumb_path(image, st, size)
    try:
        with Image.open(cache) as cached:
            thumb = cached.copy()
            full = cached.info.get("comment", b"")
    except (OSError, ValueError):
        thumb, full = None, b""
    if thumb is not None and full:
        width = int(full.decode().split("x")[0])
        return thumb, thumb.width / width
    made = make_thumbnail(image, size)
    if made is None:
        return None
    thumb, width = made
    cache.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=85, comment=f"{width}x".encode())
    atomic_write(cache, buf.getvalue())
    return thumb, thumb.width / width


def tile(dataset: Dataset, record: ImageRecord, size: int = THUMB_SIZE) -> bytes:
    """A gallery tile: the cached thumbnail with the record's boxes drawn, as JPEG bytes."""
    from workbench.drawing import draw_boxes, placeholder

    made = thumbnail(dataset.root / record.path, size)
    if made is None:
        image = placeholder(size, "image not found")
    else:
        thumb, scale = made
        image = draw_boxes(thumb, record.boxes * scale, record.class_ids, dataset, width=2, labels=False)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


# --- datasets open in this process, shared by every page and session -----------------------

_OPEN: dict[tuple[str, str | None], OpenDataset] = {}
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


def health(opened: OpenDataset):
    """The health report of ``opened`` at its current revision (computed once per revision)."""
    from workbench.datasets.health import check

    with opened.lock:
        cached = getattr(opened, "_health", None)
        if cached is not None and cached[0] == opened.revision:
            return cached[1]
        report = check(opened.dataset)
        opened._health = (opened.revision, report)
        return report


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


def record_findings(dataset: Dataset, record: ImageRecord, classes: list[str] | None = None) -> list:
    """The health findings of one record (its boxes and its image header), for the record as it
    is being edited (``classes``: the class list being edited). Cheap: no other file is read."""
    from workbench.datasets import health

    shell = Dataset(root=dataset.root, format=dataset.format, classes=list(classes or dataset.classes))
    return health.check_record(shell, record)


# --- adding images ------------------------------------------------------------------------


def image_folder(dataset: Dataset) -> str:
    """Where new images of ``dataset`` go, relative to its root: the folder holding most of its
    images (``images``, ``JPEGImages``, ``images/train`` ...), else ``images``."""
    from collections import Counter

    folders = Counter(r.path.rpartition("/")[0] for r in dataset.images)
    return folders.most_common(1)[0][0] if folders else "images"


def add_images(dataset: Dataset, files: dict[str, bytes] | Iterable[Path]) -> list[str]:
    """Copy new images into ``dataset``'s image folder (``image_folder``): ``files`` is
    ``{file name: bytes}`` (an upload) or image paths (a folder's files). A name already taken
    gets a ``-2``, ``-3`` ... suffix; a non-image is skipped. Returns the relative paths written.

    The new images have no annotation file yet: the next open lists them as unlabelled records
    (VOC, LabelMe, YOLO), which the review queue puts first. COCO keeps its image list inside its
    JSON, so images cannot be added to it this way."""
    if dataset.format == "coco":
        raise WorkbenchError(
            f"{dataset.root}: a COCO dataset lists its images in its JSON file; add images to a VOC, YOLO or "
            "LabelMe dataset, or convert it first"
        )
    folder = image_folder(dataset)
    target = dataset.root / folder if folder else dataset.root
    target.mkdir(parents=True, exist_ok=True)
    items = files.items() if isinstance(files, dict) else ((Path(p).name, Path(p)) for p in files)
    written = []
    for name, source in items:
        name = Path(name).name
        if not is_image(name):
            continue
        stem, dot, ext = name.rpartition(".")
        out, n = target / name, 1
        while out.exists():
            n += 1
            out = target / f"{stem}-{n}{dot}{ext}"
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        atomic_write(out, data)
        written.append(f"{folder}/{out.name}" if folder else out.name)
    return written
