"""From the internal model to torch: frozen class list, splits, a ``Dataset`` and box-aware augmentation.

* ``freeze_classes`` fixes the run's class list; model label ``i + 1`` is class ``classes[i]``
  (0 is torchvision's background). Ignore regions (``__ignore__`` boxes, COCO ``iscrowd``)
  are not a class: training leaves them out, the COCO evaluation marks them ``iscrowd``.
  A resumed run maps the dataset's classes onto the frozen list by name, so a relabel
  or a reordered class list cannot shift class ids under a trained model.
* ``split_records`` uses the dataset's own train/val splits when it has them, else a
  reproducible split stratified by each image's rarest class.
* ``DetectionDataset`` yields ``(image, target)`` as torchvision's detection models want them:
  image ``(3, H, W)`` float32 in ``[0, 1]``; target ``boxes`` ``(N, 4)`` float32
  ``x1, y1, x2, y2`` pixels, ``labels`` ``(N,)`` int64 (1-based), ``image_id`` int.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from workbench.annotations import IGNORE_LABEL, Dataset, ImageRecord
from workbench.errors import WorkbenchError
from workbench.fileio import load_image

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "training")
VAL_SPLITS = ("val", "valid", "validation", "test")


def is_ignore(dataset: Dataset, record: ImageRecord, index: int) -> bool:
    """True when box ``index`` of ``record`` is an ignore region, not an object."""
    if dataset.class_name(int(record.class_ids[index])) == IGNORE_LABEL:
        return True
    coco = (record.box_extra[index] or {}).get("coco") or {}
    return bool(coco.get("iscrowd", 0))


def freeze_classes(dataset: Dataset) -> list[str]:
    """The class list a new run trains on: the dataset's, without the ignore label."""
    classes = [c for c in dataset.classes if c != IGNORE_LABEL]
    if not classes:
        raise WorkbenchError(f"{dataset.root}: no classes to train on")
    return classes


@dataclass
class ClassMap:
    """Dataset class id -> run label (1-based; 0 = background), built by class name."""

    classes: list[str]
    labels: dict[int, int]

    @classmethod
    def build(cls, dataset: Dataset, classes: list[str]) -> ClassMap:
        labels: dict[int, int] = {}
        for dataset_id, name in enumerate(dataset.classes):
            if name in classes:
                labels[dataset_id] = classes.index(name) + 1
        unknown = [c for c in dataset.classes if c not in classes and c != IGNORE_LABEL]
        if unknown:
            log.warning("classes not in the run's frozen class list, their boxes are left out: %s", unknown)
        return cls(list(classes), labels)

    def targets(self, dataset: Dataset, record: ImageRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(boxes (N, 4), labels (N,), ignore_boxes (M, 4), skipped)`` of one record."""
        keep, labels, ignore, skipped = [], [], [], 0
        for i in range(len(record)):
            if is_ignore(dataset, record, i):
                ignore.append(i)
                continue
            label = self.labels.get(int(record.class_ids[i]))
            x1, y1, x2, y2 = record.boxes[i]
            if label is None or not (x2 > x1 and y2 > y1):
                skipped += 1
                continue
            keep.append(i)
            labels.append(label)
        return (
            record.boxes[keep].reshape(-1, 4),
            np.asarray(labels, dtype=np.int64),
            record.boxes[ignore].reshape(-1, 4),
            skipped,
        )


def split_records(
    dataset: Dataset, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord], str]:
    """``(train, val, how)``: the dataset's own splits, else a stratified reproducible split.

    The stratified split groups images by their rarest class (by box count over the whole
    dataset; images without boxes form their own group), shuffles each group with ``seed``
    and sends ``round(val_fraction * n)`` of it (at least one from a group of two or more)
    to validation. The same dataset and seed always give the same split.
    """
    records = sorted(dataset.images, key=lambda r: r.path)
    by_split: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_split.setdefault((r.split or "").lower(), []).append(r)
    train = [r for name in TRAIN_SPLITS for r in by_split.get(name, [])]
    val_name = next((name for name in VAL_SPLITS if by_split.get(name)), None)
    if train and val_name:
        return train, by_split[val_name], f"dataset splits: {len(train)} train, {len(by_split[val_name])} {val_name}"
    if len(records) < 2:
        raise WorkbenchError(f"{dataset.root}: {len(records)} image(s); need at least 2 to train and validate")
    counts = Counter(int(c) for r in records for c in r.class_ids)
    groups: dict[int, list[ImageRecord]] = {}
    for r in records:
        present = {int(c) for c in r.class_ids}
        key = min(present, key=lambda c: (counts[c], c)) if present else -1
        groups.setdefault(key, []).append(r)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        n_val = round(val_fraction * len(group))
        if n_val == 0 and len(group) >= 2 and val_fraction > 0:
            n_val = 1
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    if not train or not val:
        raise WorkbenchError(f"{dataset.root}: cannot split {len(records)} images into train and val")
    train.sort(key=lambda r: r.path)
    val.sort(key=lambda r: r.path)
    return train, val, f"stratified {1 - val_fraction:.0%}/{val_fraction:.0%} split, seed {seed}"


def dataset_hash(dataset: Dataset) -> str:
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


def train_transforms(
    imgsz: int, *, scale: tuple[float, float] = (0.75, 1.25), color: float = 0.2, rotation: float = 0.0, hflip=True
) -> v2.Transform:
    """Box-aware training augmentation on uint8 images.

    Scale jitter resizes so that the longest side is ``imgsz * U(scale)`` pixels (the
    model's own resize is skipped in training), then horizontal flip, colour jitter,
    an optional rotation of up to ``rotation`` degrees (boxes become the rotated corners'
    hull), and boxes left with no area are dropped with their labels.
    """
    steps: list[v2.Transform] = [v2.ScaleJitter(target_size=(imgsz, imgsz), scale_range=scale, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color > 0:
        # no hue jitter: it converts every pixel to HSV and back, the slowest step of the loader
        steps.append(v2.ColorJitter(brightness=color, contrast=color, saturation=color))
    if rotation > 0:
        steps.append(v2.RandomRotation(rotation))
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transforms() -> v2.Transform:
    """No resize (the model resizes and maps boxes back), just ``[0, 1]`` floats."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


class DetectionDataset(torch.utils.data.Dataset):
    """A torch ``Dataset`` over image records of the internal model.

    Item ``i`` is ``(image, target)``: image ``(3, H, W)`` float32 in ``[0, 1]``; target
    ``{"boxes": (N, 4) float32 pixels, "labels": (N,) int64, "image_id": i}``.
    """

    def __init__(
        self, dataset: Dataset, records: list[ImageRecord], class_map: ClassMap, transforms: v2.Transform | None
    ) -> None:
        self.root = Path(dataset.root)
        self.records = records
        self.transforms = transforms
        self.targets = []
        skipped = 0
        for r in records:
            boxes, labels, _ignore, n = class_map.targets(dataset, r)
            self.targets.append((boxes, labels))
            skipped += n
        if skipped:
            log.warning("%d box(es) with an unknown class or no area left out of training", skipped)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        array = load_image(self.root / record.path, record.path)
        image = tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))  # decoded arrays are read-only
        boxes, labels = self.targets[index]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                format="XYXY",
                canvas_size=tuple(array.shape[:2]),
            ),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4),
            "labels": target["labels"],
            "image_id": index,
        }


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Lists of images and targets (detection models take images of different sizes)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
