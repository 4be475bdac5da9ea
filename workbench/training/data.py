"""From the internal model to torch: a ``Dataset`` and box-aware augmentation for the torchvision engine.

``DetectionDataset`` yields ``(image, target)`` as torchvision's detection models want them:
image ``(3, H, W)`` float32 in ``[0, 1]``; target ``boxes`` ``(N, 4)`` float32 ``x1, y1, x2, y2``
pixels, ``labels`` ``(N,)`` int64 (1-based, through the run's ``splits.ClassMap``; 0 is the
background), ``image_id`` int. The frozen class list and the splits are ``workbench.splits``'.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from workbench.annotations import Dataset, ImageRecord
from workbench.fileio import load_image
from workbench.splits import ClassMap

log = logging.getLogger(__name__)


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
