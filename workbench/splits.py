"""Which images and boxes a run trains and validates on: the splits, the frozen class list, the class map.

* ``freeze_classes`` fixes the run's class list; model label ``i + 1`` is class ``classes[i]``
  (0 is the background). Ignore regions (``__ignore__`` boxes, COCO ``iscrowd``) are not a
  class: training leaves them out, the COCO evaluation marks them ``iscrowd``. A resumed run
  maps the dataset's classes onto the frozen list by name, so a relabel or a reordered class
  list cannot shift class ids under a trained model.
* ``split_records`` uses the dataset's own train/val splits when it has them, else a
  reproducible split stratified by each image's rarest class.

Torch-free: evaluation, FiftyOne and the pages use these without loading a framework.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from workbench.annotations import IGNORE_LABEL, Dataset, ImageRecord
from workbench.errors import WorkbenchError

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
