"""Model suggestions: a trained model's boxes kept in the workspace until a person accepts them.

``suggest`` runs a run's model (``inference.predict.load_predictor``) over a dataset's images and
stores its boxes, one file per dataset folder, in ``<workspace>/suggestions/<folder>-<8 hex>.json``::

    {"root", "run", "run_hash" (the dataset hash the run trained on), "created", "score",
     "new_classes" (may accepting add class names the dataset lacks?),
     "images": {path: [{"id", "box": [x1, y1, x2, y2], "score", "label"}, ...]}}

The run is the latest one trained on the dataset unless named (``registry.choose_run``); a run
whose classes differ from the dataset's is refused unless ``any_classes``. Every change of the
store is a read-modify-write under the file's inter-process lock (``locks.locked``), written
with ``atomic_write``: processes suggesting, rejecting and accepting at once lose no update.

The dataset's own files are never written by ``suggest`` or ``reject``. ``accept`` adds the
chosen boxes (optionally edited first) to the image's record and saves it through
``saving.save_record``: the dataset's own format, the conflict check, the journal (so ``undo``
takes it back). Boxes are the model's pixels ``x1, y1, x2, y2`` (x2/y2 exclusive) in the
image's stored pixel grid; class names are the run's, mapped to the dataset's class list by
name. A name the dataset lacks is refused on accept unless the user asked for new classes
(``add_classes``, by default the store's ``new_classes``: set by ``any_classes``, or when the
dataset had no class yet; a store written without it, by hand or by an older workbench, keeps
the old rule and adds them). No Streamlit here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench import paths
from workbench.annotations import ImageRecord
from workbench.boxes import iou as box_iou
from workbench.datasets.catalog import resolve_path
from workbench.datasets.index import OpenDataset, open_dataset
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.inference.images import predict_records
from workbench.labelling import edits, saving
from workbench.locks import locked
from workbench.training.registry import check_classes, choose_run

DEFAULT_SCORE = 0.5
DUPLICATE_IOU = 0.7  # a suggestion overlapping a label of its class this much is that label


def store_path(root: Path | str) -> Path:
    resolved = str(resolve_path(root))
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(resolved).name).strip("-") or "dataset"
    return paths.home() / "suggestions" / f"{name}-{hashlib.sha1(resolved.encode()).hexdigest()[:8]}.json"


def load(root: Path | str) -> dict[str, Any]:
    """The stored suggestions of the dataset in ``root`` (an empty store when there are none)."""
    try:
        data = json.loads(store_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data.setdefault("images", {})
    return data


def save(root: Path | str, data: dict[str, Any]) -> None:
    """Write the whole store (atomically); callers that read it first do so inside ``changing``."""
    atomic_write(store_path(root), json.dumps(data, separators=(",", ":")) + "\n")


@contextmanager
def changing(root: Path | str) -> Iterator[dict[str, Any]]:
    """``with changing(root) as data:`` the store, read and written back under its inter-process
    lock, so two processes changing it at once both land."""
    path = store_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path):
        data = load(root)
        yield data
        save(root, data)


def pending(root: Path | str, path: str | None = None) -> dict[str, list[dict[str, Any]]] | list[dict[str, Any]]:
    """All pending suggestions ``{image path: [suggestion, ...]}``, or one image's list."""
    images = load(root)["images"]
    return images if path is None else list(images.get(path, []))


def counts(root: Path | str) -> dict[str, int]:
    """``{"images", "boxes"}`` pending."""
    images = load(root)["images"]
    return {"images": sum(1 for v in images.values() if v), "boxes": sum(len(v) for v in images.values())}


@dataclass
class SuggestResult:
    """What ``suggest`` did: images run, boxes stored, seconds predicting and storing."""

    run: str
    images: int = 0
    boxes: int = 0
    skipped_labelled: int = 0
    predict_seconds: float = 0.0
    store_seconds: float = 0.0
    per_image: dict[str, int] = field(default_factory=dict)


def to_json(det: Any, classes: list[str], start_id: int = 0) -> list[dict[str, Any]]:
    """``Detections`` as stored suggestions (ids from ``start_id``)."""
    return [
        {
            "id": start_id + k,
            "box": [round(float(v), 2) for v in b],
            "score": round(float(s), 4),
            "label": classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c)),
        }
        for k, (b, s, c) in enumerate(zip(det.boxes, det.scores, det.class_ids, strict=True))
    ]


def suggest(
    root: Path | str,
    *,
    run: str | Path | None = None,
    any_classes: bool = False,
    fmt: str | None = None,
    only_unlabelled: bool = False,
    score: float = DEFAULT_SCORE,
    paths: Iterable[str] | None = None,
    batch: int = 4,
    device: str = "auto",
    predictor: Any = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SuggestResult:
    """Run model ``run`` over the images of the dataset in ``root`` (only those with no box when
    ``only_unlabelled``; only ``paths`` when given) and store its boxes scoring at least ``score``
    as suggestions, replacing the images' earlier suggestions. A box that duplicates a label (same
    class, IoU >= ``DUPLICATE_IOU``) is not stored. The dataset's files are only read.

    ``run`` defaults to the latest run trained on this dataset (``registry.choose_run``); a run
    whose classes differ is refused (``ClassMismatch``) unless ``any_classes``, which also lets
    accepting add the run's class names to the dataset. A given ``predictor`` is used as it is."""
    # torch and onnxruntime load here, when a model runs: the Annotate page imports this module
    # for the stored suggestions.
    from workbench.inference.onnx_predictor import is_onnx_file
    from workbench.inference.predict import load_predictor

    opened = open_dataset(root, fmt)
    dataset = opened.dataset
    records = list(dataset.images)
    if paths is not None:
        wanted = set(paths)
        records = [r for r in records if r.path in wanted]
    result = SuggestResult(run="")
    if only_unlabelled:
        labelled = [r for r in records if len(r)]
        result.skipped_labelled = len(labelled)
        records = [r for r in records if not len(r)]
    if predictor is None and run is not None and is_onnx_file(run):  # an exported file: its classes are inside
        predictor = load_predictor(run, device=device)
        check_classes(
            Path(run).name, predictor.classes, dataset=dataset.root, classes=dataset.classes, any_classes=any_classes
        )
    elif predictor is None:
        chosen = choose_run(dataset.root, dataset.classes, run=run, any_classes=any_classes)
        predictor = load_predictor(chosen, device=device)
    result.run = predictor.run_dir.name
    t0 = time.perf_counter()
    detections = predict_records(
        predictor, dataset.root, records, score_threshold=score, batch=batch, on_progress=on_progress
    )
    t1 = time.perf_counter()
    with changing(dataset.root) as data:
        data.update(
            {
                "root": str(dataset.root),
                "run": result.run,
                "run_hash": (predictor.card or {}).get("dataset_hash"),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "score": score,
                "new_classes": bool(any_classes or not dataset.classes),
            }
        )
        next_id = int(data.get("next_id", 0))
        for r, det in zip(records, detections, strict=True):
            items = [s for s in to_json(det, predictor.classes, next_id) if not duplicates(dataset, r, s)]
            next_id += len(items)
            data["images"][r.path] = items
            result.per_image[r.path] = len(items)
        data["next_id"] = next_id
        data["images"] = {k: v for k, v in data["images"].items() if v}
    result.store_seconds = time.perf_counter() - t1
    result.predict_seconds = t1 - t0
    result.images = len(records)
    result.boxes = sum(result.per_image.values())
    return result


def duplicates(dataset: Any, record: ImageRecord, suggestion: dict[str, Any], iou: float = DUPLICATE_IOU) -> bool:
    """True when ``record`` already holds a box of the suggestion's class overlapping it at ``iou``:
    the label exists, there is nothing to suggest."""
    same = [i for i, c in enumerate(record.class_ids) if dataset.class_name(int(c)) == suggestion["label"]]
    if not same:
        return False
    overlap = box_iou(np.asarray([suggestion["box"]], dtype=np.float64), record.boxes[same])
    return bool((overlap >= iou).any())


def _remove(root: Path | str, path: str, ids: set[int]) -> int:
    with changing(root) as data:
        items = data["images"].get(path, [])
        kept = [s for s in items if s["id"] not in ids]
        if kept:
            data["images"][path] = kept
        else:
            data["images"].pop(path, None)
    return len(items) - len(kept)


def reject(root: Path | str, path: str, ids: Iterable[int] | None = None) -> int:
    """Drop suggestions of image ``path`` (every one when ``ids`` is ``None``); returns how many.
    The dataset is not touched."""
    ids = {s["id"] for s in pending(root, path)} if ids is None else set(ids)
    return _remove(root, path, ids)


def select(items: list[dict[str, Any]], *, ids: Iterable[int] | None = None, min_score: float | None = None):
    """The suggestions with one of ``ids``, or scoring at least ``min_score``."""
    if ids is not None:
        wanted = set(ids)
        return [s for s in items if s["id"] in wanted]
    if min_score is not None:
        return [s for s in items if s["score"] >= min_score]
    return list(items)


def add_to_record(
    record: ImageRecord, classes: list[str], chosen: list[dict[str, Any]], *, add_classes: bool = True
) -> list[str]:
    """Append the chosen suggestions to ``record`` (``classes`` gains a name it lacks, when
    ``add_classes``; else such a suggestion raises ``WorkbenchError`` before anything is added);
    returns one line per box added. Boxes are clipped to the image; the suggestion's score rides
    along in nothing written (formats keep no scores)."""
    foreign = sorted({s["label"] for s in chosen if s["label"] not in classes})
    if foreign and not add_classes:
        raise WorkbenchError(
            f"{record.path}: the suggestion's class {', '.join(foreign)} is not a class of this dataset "
            f"({', '.join(classes)}); pick one of its classes (edit, then accept), or allow new classes"
        )
    lines = []
    for s in chosen:
        x1, y1, x2, y2 = (float(v) for v in s["box"])
        box = [max(0.0, x1), max(0.0, y1), min(float(record.width), x2), min(float(record.height), y2)]
        box = [round(v, 1) for v in box]
        if s["label"] not in classes:
            classes.append(s["label"])
        edits.add_box(record, box, classes.index(s["label"]))
        lines.append(f"accepted suggestion {s['label']} {edits.box_text(box)} (score {s['score']:.2f})")
    return lines


def accept(
    opened: OpenDataset,
    path: str,
    *,
    ids: Iterable[int] | None = None,
    min_score: float | None = None,
    edited: dict[int, dict[str, Any]] | None = None,
    record: ImageRecord | None = None,
    classes: list[str] | None = None,
    expected: dict | None = None,
    journal: saving.Journal | None = None,
    message: str = "",
    notes: Iterable[str] = (),
    add_classes: bool | None = None,
) -> saving.SaveResult:
    """Accept suggestions of image ``path``: those with ``ids``, or scoring at least ``min_score``
    (every pending one when neither is given). ``edited`` maps an id to a changed ``{"box",
    "label"}`` (edit, then accept). They are added to ``record`` (default: the image's record as
    loaded; the Annotate page passes its working copy) and saved with ``saving.save_record``, which
    writes the dataset's own format and the journal (``notes``: the record's other unsaved changes,
    for the journal's message). The accepted suggestions leave the store. A class name the
    dataset lacks is refused unless ``add_classes`` (default: the store's ``new_classes``)."""
    journal = journal if journal is not None else saving.Journal()
    dataset = opened.dataset
    position = next((i for i, r in enumerate(dataset.images) if r.path == path), None)
    if position is None:
        raise WorkbenchError(f"{dataset.root}: no image {path!r}")
    stored = load(dataset.root)
    chosen = select(list(stored["images"].get(path, [])), ids=ids, min_score=min_score)
    if not chosen:
        return saving.SaveResult()
    chosen = [{**s, **(edited or {}).get(s["id"], {})} for s in chosen]
    work = (record if record is not None else dataset.images[position]).copy()
    names = list(classes if classes is not None else dataset.classes)
    allowed = bool(stored.get("new_classes", True)) if add_classes is None else add_classes
    lines = add_to_record(work, names, chosen, add_classes=allowed)
    result = saving.save_record(
        opened,
        position,
        work,
        classes=names,
        expected=expected,
        journal=journal,
        message=message or f"{path}: " + "; ".join([*notes, *lines]),
    )
    _remove(dataset.root, path, {s["id"] for s in chosen})
    return result


def score_summary(items: list[dict[str, Any]]) -> float | None:
    """The mean score of an image's suggestions (its confidence), ``None`` without any."""
    return float(np.mean([s["score"] for s in items])) if items else None


__all__ = [
    "DEFAULT_SCORE",
    "SuggestResult",
    "accept",
    "add_to_record",
    "changing",
    "counts",
    "load",
    "pending",
    "reject",
    "select",
    "store_path",
    "suggest",
]
