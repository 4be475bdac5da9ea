"""The dataset list: the datasets the user added, the one opened last, and adding images to one.

``<workspace>/datasets.json`` (the workspace folder is ``workbench.paths.home()``) holds each
dataset's display name, resolved folder and format, and the one opened last. On first run the
bundled sample is copied into ``<workspace>/samples/`` and added, so that edits never modify the
repository's own files. The other things the workspace holds are described where they are
kept: the index cache (``datasets.index``), thumbnails (``datasets.thumbnails``), versions
(``datasets.versions``) and the edit journal (``labelling.saving``).

Every change of ``datasets.json`` (add, remove, set current, the first run's sample) reads,
changes and writes it under ``locks.locked`` of the file, so two workbench processes (the app,
the CLI, the demo) never lose each other's update; the write is ``fileio.atomic_write``.

No Streamlit here: the pages call these functions and cache what they return.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbench.annotations import Dataset
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write, is_image
from workbench.formats import FORMATS, capabilities, detect_format, get_format, labels, yolo_yaml
from workbench.locks import locked
from workbench.paths import SAMPLE_DATASET, home


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


@contextmanager
def _changing_list() -> Iterator[dict]:
    """The dataset list, read under its inter-process lock and written back when the block ends
    without an error; no other process reads or writes the list in between."""
    path = _list_file()
    with locked(path):
        data = _read_list()
        yield data
        atomic_write(path, json.dumps(data, indent=2) + "\n")


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
    if yolo_yaml.is_data_yaml(root):
        yolo_yaml.parse(root)  # a data.yaml stands for its dataset: refuse a bad one now
    elif not root.is_dir():
        raise WorkbenchError(f"{root}: not a folder")
    fmt = get_format(fmt).NAME if fmt else detect_format(root)
    entry = DatasetEntry(name=name or root.name, path=str(root), format=fmt)
    with _changing_list() as data:
        data["datasets"] = [d for d in data["datasets"] if d.get("path") != entry.path]
        data["datasets"].append({"name": entry.name, "path": entry.path, "format": entry.format})
        data["current"] = entry.path
    return entry


def remove_dataset(path: str | os.PathLike) -> None:
    """Forget a dataset (its files are not touched)."""
    with _changing_list() as data:
        data["datasets"] = [d for d in data["datasets"] if d.get("path") != str(path)]
        if data.get("current") == str(path):
            data["current"] = data["datasets"][-1]["path"] if data["datasets"] else None


def set_current(path: str | os.PathLike) -> None:
    with _changing_list() as data:
        data["current"] = str(path)


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
    workspace already had a dataset list. Under the list's lock: two processes starting at once
    copy and add the sample once."""
    with locked(_list_file()):
        if not is_fresh() or not SAMPLE_DATASET.is_dir():
            if is_fresh():
                with _changing_list():
                    pass  # an empty list: the workspace is no longer fresh
            return None
        target = home() / "samples" / SAMPLE_DATASET.name
        if not target.exists():
            shutil.copytree(SAMPLE_DATASET, target)
        return add_dataset(target, "voc", name=SAMPLE_DATASET.name)


def cannot_add_images(fmt: str) -> str:
    """Why images cannot be added to a dataset in format ``fmt``, and what to do instead."""
    able = [name for name, module in FORMATS.items() if module.CAPABILITIES.add_images]
    return (
        f"a {get_format(fmt).LABEL} dataset lists its images in its annotation file; add images to a "
        f"{labels(able)} dataset, or convert it first"
    )


def image_folder(dataset: Dataset) -> str:
    """Where new images of ``dataset`` go, relative to its root: the folder holding most of its
    images (``images``, ``JPEGImages``, ``images/train`` ...), else ``images``."""
    folders = Counter(r.path.rpartition("/")[0] for r in dataset.images)
    return folders.most_common(1)[0][0] if folders else "images"


def add_images(dataset: Dataset, files: dict[str, bytes] | Iterable[Path]) -> list[str]:
    """Copy new images into ``dataset``'s image folder (``image_folder``): ``files`` is
    ``{file name: bytes}`` (an upload) or image paths (a folder's files). A name already taken
    gets a ``-2``, ``-3`` ... suffix (under the folder's lock: never an image overwritten by
    another process's upload); a non-image is skipped. Returns the relative paths written.

    The new images have no annotation file yet: the next open lists them as unlabelled records,
    which the review queue puts first. Only a format whose ``Capabilities.add_images`` holds
    allows it (COCO keeps its image list inside its JSON): ``WorkbenchError`` otherwise."""
    if not capabilities(dataset.format).add_images:
        raise WorkbenchError(f"{dataset.root}: {cannot_add_images(dataset.format)}")
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
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with locked(target):  # another process adding the same name picks the next free one
            out, n = target / name, 1
            while out.exists():
                n += 1
                out = target / f"{stem}-{n}{dot}{ext}"
            atomic_write(out, data)
        written.append(f"{folder}/{out.name}" if folder else out.name)
    return written
