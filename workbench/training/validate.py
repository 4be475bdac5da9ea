"""COCO box AP of a torch model on validation records: the per-epoch validation of the engines."""

from __future__ import annotations

from collections.abc import Callable

import torch

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.metrics import coco_ground_truth, coco_results, coco_stats
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
    detections: list[Detections] = []
    image_ids: list[int] = []
    for images, targets in loader:
        if should_stop and should_stop():
            break
        outputs = model([im.to(device) for im in images])
        for out, target in zip(outputs, targets, strict=True):
            labels = out["labels"].cpu().numpy() - 1  # the model's label 0 is the background
            detections.append(Detections(out["boxes"].float().cpu().numpy(), out["scores"].cpu().numpy(), labels))
            image_ids.append(int(target["image_id"]))
    model.train(was_training)
    results = coco_results(detections, image_ids)
    return coco_stats(coco_ground_truth(dataset, records, class_map), results)
