"""Dataset versions: a content hash of a dataset's annotations (never its pixels) with a readable name.

A version is taken automatically when training starts (``take_for_training``, called by the
training loop's ``prepare_run``) and by hand (the Datasets page, ``workbench version SRC``).
The workspace keeps, per dataset folder, under ``<workspace>/versions/<folder>-<8 hex>/``:

* ``versions.json``: the list of versions, oldest first, each ``{"name", "hash", "created",
  "reason", "images", "boxes", "runs"}``;
* ``<hash>.json.gz``: the snapshot of the labels of that version (class names, and per image
  its size, split and boxes with class names), what ``diff`` compares.

The hash is ``annotations.content_hash``, the one a run's model card records as ``dataset_hash``:
a run's card therefore names its version by hash, and the run folder gets
``dataset_version.json`` with the name. Boxes are the model's pixels ``x1, y1, x2, y2``.

``diff`` matches boxes per image: identical boxes first (same class, same coordinates within
``SAME_PX``), then the same place with another class (relabelled), then the same class and
overlapping (IoU >= ``MOVED_IOU``: moved), then any overlap (moved and relabelled); what is left
is removed (old) or added (new).

Taking a version reads, changes and writes ``versions.json`` under ``locks.locked`` of that file
(and writes the snapshot under it too), so versions taken by several processes at once (two
training runs, the CLI and the app) are all recorded, each name given once. No Streamlit here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import paths
from workbench.annotations import Dataset, content_hash
from workbench.boxes import iou
from workbench.datasets.catalog import resolve_path
from workbench.datasets.index import open_dataset
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.locks import locked

SAME_PX = 0.5  # boxes closer than this (px, every side) are the same box
MOVED_IOU = 0.3  # an old and a new box of one image overlapping at least this much are one box moved
CURRENT = "current"  # the name of the labels as they are now, in ``diff``


def snapshot(dataset: Dataset) -> dict[str, Any]:
    """The labels of ``dataset`` as plain JSON: ``{"classes", "images": {path: {"width", "height",
    "split", "boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...]}}}``."""
    return {
        "classes": list(dataset.classes),
        "images": {
            r.path: {
                "width": int(r.width),
                "height": int(r.height),
                "split": r.split,
                "boxes": r.boxes.tolist(),
                "labels": [dataset.class_name(int(c)) for c in r.class_ids],
            }
            for r in dataset.images
        },
    }


def store_dir(root: Path | str) -> Path:
    """The folder holding the versions of the dataset in ``root``."""
    resolved = str(resolve_path(root))
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(resolved).name).strip("-") or "dataset"
    return paths.home() / "versions" / f"{name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}"


def _list_file(root: Path | str) -> Path:
    return store_dir(root) / "versions.json"


def list_versions(root: Path | str) -> list[dict[str, Any]]:
    """The versions of the dataset in ``root``, oldest first."""
    path = _list_file(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _write_list(root: Path | str, versions: list[dict[str, Any]]) -> None:
    atomic_write(_list_file(root), json.dumps(versions, indent=1) + "\n")


def _next_name(versions: list[dict[str, Any]]) -> str:
    numbers = [int(m.group(1)) for v in versions if (m := re.fullmatch(r"v(\d+)", str(v.get("name", ""))))]
    return f"v{max(numbers, default=0) + 1}"


def take_version(
    dataset: Dataset, *, name: str | None = None, reason: str = "by hand", run: str | None = None
) -> dict[str, Any]:
    """Record the current labels of ``dataset`` as a version; returns its entry.

    Labels already recorded (same hash) are not stored twice: that version is returned, with
    ``run`` added to its runs (and renamed when ``name`` is given)."""
    root = dataset.root
    digest = content_hash(dataset)
    if name is not None:
        name = name.strip()
        if not name or name == CURRENT:
            raise WorkbenchError(f"bad version name {name!r}")
    with locked(_list_file(root)):
        versions = list_versions(root)
        if name is not None and any(v["name"] == name and v["hash"] != digest for v in versions):
            raise WorkbenchError(f"{root}: a version named {name!r} exists already with other labels")
        blob = store_dir(root) / f"{digest}.json.gz"
        if not blob.is_file():
            atomic_write(blob, gzip.compress(json.dumps(snapshot(dataset)).encode(), compresslevel=5))
        entry = next((v for v in versions if v["hash"] == digest), None)
        if entry is None:
            entry = {
                "name": name or _next_name(versions),
                "hash": digest,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "reason": reason,
                "images": len(dataset.images),
                "boxes": dataset.num_boxes,
                "runs": [],
            }
            versions.append(entry)
        elif name:
            entry["name"] = name
        if run and run not in entry["runs"]:
            entry["runs"].append(run)
        _write_list(root, versions)
    return entry


def take_version_of(
    root: Path | str, fmt: str | None = None, *, name: str | None = None, reason: str = "by hand"
) -> dict[str, Any]:
    """Open the dataset in ``root`` (format ``fmt``, default detected) and take a version of its
    labels (``take_version``); what ``workbench version`` runs."""
    return take_version(open_dataset(root, fmt).dataset, name=name, reason=reason)


def take_for_training(dataset: Dataset, folder: Path | str) -> str:
    """The hook the training loop calls when a run starts: take the version of the labels it
    trains on and write ``dataset_version.json`` (name, hash) into the run folder. Returns the
    version's name. Never fails the run: a problem is logged and ``""`` returned."""
    try:
        folder = Path(folder)
        entry = take_version(dataset, reason=f"training {folder.name}", run=folder.name)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(
            folder / "dataset_version.json",
            json.dumps({"name": entry["name"], "hash": entry["hash"], "dataset": str(dataset.root)}) + "\n",
        )
        return entry["name"]
    except Exception as e:  # a version is a convenience; training must go on without it
        logging.getLogger("workbench.versions").warning("could not record the dataset version: %s", e)
        return ""


def find_version(root: Path | str, ref: str) -> dict[str, Any]:
    """The version named ``ref``, or whose hash starts with ``ref`` (at least 6 characters)."""
    versions = list_versions(root)
    for v in reversed(versions):
        if v["name"] == ref:
            return v
    if len(ref) >= 6:
        found = [v for v in versions if v["hash"].startswith(ref.lower())]
        if len(found) == 1:
            return found[0]
    names = ", ".join(v["name"] for v in versions) or "none yet"
    raise WorkbenchError(f"{root}: no version {ref!r} (versions: {names})")


def load_snapshot(root: Path | str, version: dict[str, Any] | str) -> dict[str, Any]:
    """The labels of a version (an entry or a reference, see ``find_version``)."""
    entry = version if isinstance(version, dict) else find_version(root, version)
    blob = store_dir(root) / f"{entry['hash']}.json.gz"
    try:
        return json.loads(gzip.decompress(blob.read_bytes()))
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{blob}: the labels of version {entry['name']!r} cannot be read: {e}") from e


def version_of_hash(root: Path | str, digest: str | None) -> dict[str, Any] | None:
    return next((v for v in list_versions(root) if v["hash"] == digest), None) if digest else None


def run_version(run_dir: Path | str) -> dict[str, Any] | None:
    """The dataset version a run trained on: ``{"name", "hash", "dataset"}`` from the run's
    ``dataset_version.json``, else by its model card's ``dataset_hash``; ``None`` when unknown."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / "dataset_version.json").read_text(encoding="utf-8"))
        if data.get("name"):
            return data
    except (OSError, ValueError):
        pass
    for name in ("model_card.json", "config.json"):
        try:
            card = json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        dataset = card.get("dataset") or card.get("data")
        if dataset and card.get("dataset_hash"):
            found = version_of_hash(dataset, card["dataset_hash"])
            if found:
                return {"name": found["name"], "hash": found["hash"], "dataset": dataset}
            return {"name": card["dataset_hash"][:12], "hash": card["dataset_hash"], "dataset": dataset}
    return None


@dataclass
class ImageDiff:
    """What changed in one image: counts and one line per change."""

    path: str
    added: int = 0
    removed: int = 0
    moved: int = 0
    relabelled: int = 0
    changes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.added + self.removed + self.moved + self.relabelled


@dataclass
class Diff:
    """Box changes between two label sets: per image, per class (by the box's new class, or its
    old class for a removal; a relabel counts under the old class) and in total."""

    images: list[ImageDiff] = field(default_factory=list)
    per_class: dict[str, Counter] = field(default_factory=dict)
    images_added: list[str] = field(default_factory=list)
    images_removed: list[str] = field(default_factory=list)
    classes_added: list[str] = field(default_factory=list)
    classes_removed: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        out = Counter()
        for d in self.images:
            out.update({"added": d.added, "removed": d.removed, "moved": d.moved, "relabelled": d.relabelled})
        return {k: out[k] for k in ("added", "removed", "moved", "relabelled")}

    @property
    def edits(self) -> int:
        return sum(self.totals().values())

    def to_json(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "images_added": self.images_added,
            "images_removed": self.images_removed,
            "classes_added": self.classes_added,
            "classes_removed": self.classes_removed,
            "per_class": {k: dict(v) for k, v in sorted(self.per_class.items())},
            "per_image": {
                d.path: {
                    "added": d.added,
                    "removed": d.removed,
                    "moved": d.moved,
                    "relabelled": d.relabelled,
                    "changes": d.changes,
                }
                for d in self.images
            },
        }


def _box(b) -> str:
    return "[" + ", ".join(f"{v:g}" for v in np.round(np.asarray(b, dtype=float), 1)) + "]"


def diff_image(path: str, old: dict[str, Any] | None, new: dict[str, Any] | None, per_class: dict) -> ImageDiff:
    """The changes from ``old`` to ``new`` (snapshot image entries; ``None``: no such image)."""
    ob = np.asarray((old or {}).get("boxes") or [], dtype=np.float64).reshape(-1, 4)
    nb = np.asarray((new or {}).get("boxes") or [], dtype=np.float64).reshape(-1, 4)
    ol, nl = list((old or {}).get("labels") or []), list((new or {}).get("labels") or [])
    out = ImageDiff(path)
    free_o, free_n = set(range(len(ob))), set(range(len(nb)))

    def count(name: str, what: str) -> None:
        per_class.setdefault(name, Counter())[what] += 1

    close = np.abs(ob[:, None, :] - nb[None, :, :]).max(axis=2) <= SAME_PX if len(ob) and len(nb) else None
    overlap = iou(ob, nb)
    for same_class in (True, False):  # untouched boxes, then relabelled in place
        for i in sorted(free_o):
            for j in sorted(free_n):
                if close is not None and close[i, j] and (ol[i] == nl[j]) == same_class:
                    free_o.discard(i)
                    free_n.discard(j)
                    if not same_class:
                        out.relabelled += 1
                        count(ol[i], "relabelled")
                        out.changes.append(f"relabelled {ol[i]} → {nl[j]} at {_box(ob[i])}")
                    break
    for same_class in (True, False):  # moved, then moved and relabelled: best overlap first
        pairs = sorted(
            ((overlap[i, j], i, j) for i in free_o for j in free_n if (ol[i] == nl[j]) == same_class),
            reverse=True,
        )
        for value, i, j in pairs:
            if value < MOVED_IOU or i not in free_o or j not in free_n:
                continue
            free_o.discard(i)
            free_n.discard(j)
            out.moved += 1
            count(nl[j], "moved")
            text = f"moved {nl[j]} {_box(ob[i])} → {_box(nb[j])}"
            if not same_class:
                out.relabelled += 1
                count(ol[i], "relabelled")
                text = f"moved and relabelled {ol[i]} → {nl[j]}: {_box(ob[i])} → {_box(nb[j])}"
            out.changes.append(text)
    for i in sorted(free_o):
        out.removed += 1
        count(ol[i], "removed")
        out.changes.append(f"removed {ol[i]} {_box(ob[i])}")
    for j in sorted(free_n):
        out.added += 1
        count(nl[j], "added")
        out.changes.append(f"added {nl[j]} {_box(nb[j])}")
    return out


def diff_snapshots(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """Every box change from snapshot ``old`` to snapshot ``new`` (see the module docstring)."""
    result = Diff()
    oi, ni = old.get("images", {}), new.get("images", {})
    result.images_added = sorted(set(ni) - set(oi))
    result.images_removed = sorted(set(oi) - set(ni))
    result.classes_added = [c for c in new.get("classes", []) if c not in old.get("classes", [])]
    result.classes_removed = [c for c in old.get("classes", []) if c not in new.get("classes", [])]
    for path in sorted(set(oi) | set(ni)):
        d = diff_image(path, oi.get(path), ni.get(path), result.per_class)
        if d.total:
            result.images.append(d)
    return result


def labels_of(root: Path | str, ref: str, current: Dataset | None = None) -> dict[str, Any]:
    """The snapshot of version ``ref``, or of the labels now when ``ref`` is ``"current"``."""
    if ref == CURRENT:
        dataset = current if current is not None else open_dataset(root).dataset
        return snapshot(dataset)
    return load_snapshot(root, ref)


def diff(root: Path | str, old: str, new: str = CURRENT, *, current: Dataset | None = None) -> Diff:
    """The box changes of the dataset in ``root`` from version ``old`` to version ``new``
    (names, hash prefixes, or ``"current"``: the labels on disk now, or ``current`` when given)."""
    return diff_snapshots(labels_of(root, old, current), labels_of(root, new, current))


def edits_since(root: Path | str, digest: str | None, current: Dataset) -> int | None:
    """Box edits (added + removed + moved + relabelled) from the version of hash ``digest`` to
    ``current``; ``None`` when that version's labels were never recorded."""
    entry = version_of_hash(root, digest)
    if entry is None:
        return None
    if entry["hash"] == content_hash(current):
        return 0
    return diff_snapshots(load_snapshot(root, entry), snapshot(current)).edits
