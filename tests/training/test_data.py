"""Data pipeline: frozen classes, splits, hashes, the torch Dataset and box-aware augmentation."""

from __future__ import annotations

import numpy as np
import torch

from workbench.formats import load_dataset
from workbench.splits import ClassMap, freeze_classes
from workbench.training.data import DetectionDataset, collate, train_transforms


def test_torch_dataset_and_augmentation(tiny_voc):
    ds = load_dataset(tiny_voc)
    classes = freeze_classes(ds)
    torch.manual_seed(0)
    tds = DetectionDataset(ds, ds.images, ClassMap.build(ds, classes), train_transforms(160, rotation=5.0))
    images, targets = collate([tds[i] for i in range(len(tds))])
    for image, target, record in zip(images, targets, ds.images, strict=True):
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
        h, w = image.shape[1:]
        assert 0.75 * 160 - 1 <= max(h, w) <= 1.25 * 160 + 1  # scale jitter around the longest side
        boxes = target["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(target["labels"]) <= len(record)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert set(target["labels"].tolist()) <= {1, 2, 3}
    assert sum(len(t["boxes"]) for t in targets) >= 0.8 * ds.num_boxes


def test_flip_moves_boxes_with_the_image(tiny_voc):
    from torchvision.transforms import v2

    ds = load_dataset(tiny_voc)
    record = ds.images[0]
    plain = DetectionDataset(ds, [record], ClassMap.build(ds, freeze_classes(ds)), None)
    flipped = DetectionDataset(ds, [record], ClassMap.build(ds, freeze_classes(ds)), v2.RandomHorizontalFlip(1.0))
    (im, t), (fim, ft) = plain[0], flipped[0]
    w = im.shape[2]
    assert torch.equal(fim, im.flip(-1))
    expected = torch.stack([w - t["boxes"][:, 2], t["boxes"][:, 1], w - t["boxes"][:, 0], t["boxes"][:, 3]], 1)
    assert torch.allclose(ft["boxes"], expected)
    assert np.allclose(t["boxes"].numpy(), record.boxes)  # no transform: the annotation's own pixels
