"""COCO box AP of a torch model on validation records: the per-epoch validation of the engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from workbench.annotations import Dataset, ImageRecord
from workbench.metrics import coco_ground_truth, coco_stats
from workbench.splits import ClassMap
from workbench.training.data import DetectionDataset, collate, eval_transforms
from workbench.training.models import set_postprocess


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    records: list[ImageRecord],
    class_map: ClassMap,
    *,
    device: torch.device,
    batch: int = 4,
    workers: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """COCO stats of ``model`` on ``records`` (model in eval mode, low score threshold)."""
    was_training = model.training
    model.eval()
    set_postprocess(model, score_threshold=0.001, iou_threshold=0.5, max_detections=100)
    ds = DetectionDataset(dataset, records, class_map, eval_transforms())
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate, persistent_workers=False
    )
    results: list[dict[str, Any]] = []
    for images, targets in loader:
        if should_stop and should_stop():
            break
        outputs = model([im.to(device) for im in images])
        for out, target in zip(outputs, targets, strict=True):
            boxes = out["boxes"].float().cpu().numpy()
            for (x1, y1, x2, y2), score, label in zip(
                boxes, out["scores"].cpu().numpy(), out["labels"].cpu().numpy(), strict=True
            ):
                results.append(
                    {
                        "image_id": int(target["image_id"]),
                        "category_id": int(label),
                        "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                        "score": float(score),
                    }
                )
    model.train(was_training)
    return coco_stats(coco_ground_truth(dataset, records, class_map), results)
