"""The one internal annotation model. Every format is converted to and from it.

Coordinates (written down once, here):

* ``ImageRecord.boxes`` is an ``(N, 4)`` float64 array of pixel coordinates
  ``x1, y1, x2, y2``, 0-based, with ``x2``/``y2`` exclusive: a box covering the
  whole of a ``W x H`` image is ``[0, 0, W, H]``. This is detectron2's
  ``BoxMode.XYXY_ABS`` and torchvision's box convention.
* ``ImageRecord.class_ids`` is an ``(N,)`` int64 array of indices into
  ``Dataset.classes``. An id outside the list is kept (a YOLO file may name class 7
  with only two names known); the health report lists it.
* ``ImageRecord.polygons[i]`` is the ``(K, 2)`` float64 polygon that box ``i`` was
  derived from (its min/max), in the same pixel space, or ``None``.

Each format module converts its own convention at its edge; see ``workbench/formats``.
Fields a format carries that this model does not name ride along in ``extra`` dicts
(per dataset, per image, per box) so that a save gives them back.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

IGNORE_LABEL = "__ignore__"  # LabelMe's conventional label for regions to ignore


def _as_boxes(boxes: Any) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    return array.reshape(-1, 4) if array.ndim == 1 and array.shape[0] == 4 else array


@dataclass
class ImageRecord:
    """One image and its boxes.

    Attributes:
        path: image path relative to the dataset root, with ``/`` separators.
        width, height: image size in pixels (from the annotation, else the header).
        boxes: ``(N, 4)`` float64, ``x1, y1, x2, y2`` pixels (see module docstring).
        class_ids: ``(N,)`` int64 indices into ``Dataset.classes``.
        polygons: ``N`` entries, each a ``(K, 2)`` float64 array or ``None``.
        box_extra: ``N`` dicts of per-box fields the model does not name.
        split: ``"train"``, ``"val"``, ... or ``None`` when the dataset has no splits.
        annotation: path of this image's own annotation file relative to the root,
            for formats with one file per image (VOC, LabelMe, YOLO), else ``None``.
        extra: per-image fields the model does not name.
    """

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    polygons: list[np.ndarray | None] | None = None
    box_extra: list[dict[str, Any]] | None = None
    split: str | None = None
    annotation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"{self.path}: boxes must have shape (N, 4), got {self.boxes.shape}")
        if self.class_ids.shape != (n,):
            raise ValueError(f"{self.path}: {n} boxes but {self.class_ids.shape[0]} class ids")
        if self.polygons is None:
            self.polygons = [None] * n
        if self.box_extra is None:
            self.box_extra = [{} for _ in range(n)]
        self.polygons = [None if p is None else np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in self.polygons]
        if len(self.polygons) != n or len(self.box_extra) != n:
            raise ValueError(
                f"{self.path}: {n} boxes but {len(self.polygons)} polygons and {len(self.box_extra)} box_extra"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    def copy(self) -> ImageRecord:
        """A deep copy: editing it never touches this record."""
        return copy.deepcopy(self)

    def add_box(
        self,
        box: Any,
        class_id: int,
        *,
        polygon: np.ndarray | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Append one box ``[x1, y1, x2, y2]`` (pixels) of class ``class_id``."""
        self.boxes = np.vstack([self.boxes, np.asarray(box, dtype=np.float64).reshape(1, 4)])
        self.class_ids = np.append(self.class_ids, np.int64(class_id))
        self.polygons.append(None if polygon is None else np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
        self.box_extra.append(dict(extra or {}))

    def remove_box(self, index: int) -> None:
        """Delete box ``index`` with its polygon and extra fields."""
        keep = np.arange(len(self)) != index
        self.boxes = self.boxes[keep]
        self.class_ids = self.class_ids[keep]
        del self.polygons[index]
        del self.box_extra[index]

    def same_boxes(self, other: ImageRecord, atol: float = 0.0) -> bool:
        """True when both records hold the same boxes (within ``atol`` pixels) and classes."""
        return (
            self.boxes.shape == other.boxes.shape
            and np.array_equal(self.class_ids, other.class_ids)
            and bool(np.allclose(self.boxes, other.boxes, rtol=0.0, atol=atol))
        )


@dataclass
class Dataset:
    """An ordered class list and the image records of one dataset.

    ``classes`` may hold the same name twice (a COCO file can): class ids, not names,
    identify a class. ``skipped`` lists the files left out by a lenient load.
    """

    root: Path
    format: str
    classes: list[str] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def splits(self) -> list[str]:
        """Split names in order of first appearance; empty when the dataset has none."""
        return list(dict.fromkeys(r.split for r in self.images if r.split is not None))

    @property
    def num_boxes(self) -> int:
        return sum(len(r) for r in self.images)

    def class_name(self, class_id: int) -> str:
        """The name of ``class_id``, or its number as text when the list has no name for it."""
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)

    def class_id(self, name: str, *, add: bool = False) -> int:
        """The first id named ``name``; with ``add=True`` a new class is appended if missing."""
        try:
            return self.classes.index(name)
        except ValueError:
            if not add:
                raise KeyError(f"no class named {name!r}") from None
            self.classes.append(name)
            return len(self.classes) - 1

    def class_counts(self) -> dict[str, int]:
        """Boxes per class name, in class-list order (classes with no box count 0)."""
        ids = Counter(int(i) for r in self.images for i in r.class_ids)
        counts: dict[str, int] = {name: 0 for name in self.classes}
        for class_id, n in sorted(ids.items()):
            name = self.class_name(class_id)
            counts[name] = counts.get(name, 0) + n
        return counts

    def record(self, path: str) -> ImageRecord:
        """The record whose relative image path is ``path``."""
        for r in self.images:
            if r.path == path:
                return r
        raise KeyError(f"{self.root}: no image {path!r}")

    def copy(self) -> Dataset:
        """A deep copy: saving or editing it never touches this dataset."""
        return copy.deepcopy(self)


def content_hash(dataset: Dataset) -> str:
    """sha256 of the annotations' content (classes, and per image: path, size, boxes, classes, splits).

    Independent of the file format and layout: the same labels give the same hash.
    """
    h = hashlib.sha256()
    h.update(json.dumps(dataset.classes).encode())
    for r in sorted(dataset.images, key=lambda r: r.path):
        h.update(json.dumps([r.path, r.width, r.height, r.split]).encode())
        h.update(np.ascontiguousarray(r.boxes, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(r.class_ids, dtype=np.int64).tobytes())
    return h.hexdigest()


@dataclass
class Detections:
    """Detections in one image, as parallel arrays.

    Attributes:
        boxes: ``(N, 4)`` float64 pixels ``x1, y1, x2, y2`` in the original image.
        scores: ``(N,)`` float64 confidences in ``[0, 1]``, highest first.
        class_ids: ``(N,)`` int64 indices into ``Predictor.classes``.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if self.scores.shape != (n,) or self.class_ids.shape != (n,):
            raise ValueError(f"{n} boxes but {len(self.scores)} scores and {len(self.class_ids)} class ids")

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Detections:
        """A subset: ``det[det.scores > 0.5]``, ``det[:3]``."""
        return Detections(self.boxes[index], self.scores[index], self.class_ids[index])

    def to_supervision(self, class_names: list[str] | None = None) -> Any:
        """These detections as a ``supervision.Detections`` (for its annotators and trackers):
        ``xyxy``, ``confidence`` and ``class_id`` are our boxes, scores and class ids (copies),
        and with ``class_names`` (``Predictor.classes``) ``data["class_name"]`` names each box,
        which supervision's label annotators show. Needs ``pip install supervision``."""
        sv = _supervision()
        data = {}
        if class_names is not None:
            data["class_name"] = np.array([_name(class_names, int(c)) for c in self.class_ids], dtype=str)
        return sv.Detections(
            xyxy=self.boxes.astype(np.float64, copy=True),
            confidence=self.scores.copy(),
            class_id=self.class_ids.copy(),
            data=data,
        )

    @classmethod
    def from_supervision(cls, detections: Any, class_names: list[str] | None = None) -> Detections:
        """A ``supervision.Detections`` as ours. Its ``class_id`` is kept; without one, its
        ``data["class_name"]`` is looked up in ``class_names``. Without ``confidence`` (labels,
        not predictions) every score is 1. Masks, tracker ids and other data are not carried."""
        boxes = np.asarray(detections.xyxy, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if detections.confidence is None else detections.confidence
        if detections.class_id is not None:
            class_ids = detections.class_id
        elif n == 0:
            class_ids = np.zeros(0, dtype=np.int64)
        elif class_names is not None and "class_name" in detections.data:
            unknown = sorted({str(c) for c in detections.data["class_name"]} - set(class_names))
            if unknown:
                raise WorkbenchError(f"supervision detections name classes not in class_names: {unknown}")
            class_ids = [class_names.index(str(c)) for c in detections.data["class_name"]]
        else:
            raise WorkbenchError("supervision detections have no class_id; give class_names to read data['class_name']")
        return cls(boxes.copy(), np.array(scores, dtype=np.float64), np.array(class_ids, dtype=np.int64))


def _name(class_names: list[str], class_id: int) -> str:
    if not 0 <= class_id < len(class_names):
        raise WorkbenchError(f"class id {class_id} beyond the {len(class_names)} class names")
    return class_names[class_id]


def _supervision() -> Any:
    """The ``supervision`` module: an optional dependency, imported only by the methods that need it."""
    try:
        import supervision  # here, not at the top: supervision is optional and the floor stays light
    except ImportError as e:
        raise WorkbenchError("supervision interop needs the supervision package: pip install supervision") from e
    return supervision


def detections_to_json(det: Detections, classes: list[str]) -> list[dict[str, Any]]:
    """Plain JSON records ``{"box": [x1, y1, x2, y2], "score", "class_id", "class"}``."""
    return [
        {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "class_id": int(c), "class": classes[c]}
        for b, s, c in zip(det.boxes, det.scores, det.class_ids, strict=True)
    ]
