"""COCO box AP through pycocotools (not re-implemented): the one bridge to it, torch-free.

Ground truth comes straight from the internal model: category ``i + 1`` is class
``classes[i]``; ignore regions are ``iscrowd=1`` boxes, so detections inside them count
neither as hits nor as false positives. COCO boxes are ``[x, y, w, h]`` pixels.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

from workbench.annotations import Dataset, ImageRecord
from workbench.splits import ClassMap

log = logging.getLogger(__name__)

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def coco_ground_truth(dataset: Dataset, records: list[ImageRecord], class_map: ClassMap) -> dict[str, Any]:
    """A COCO ground-truth dict for ``records`` (image id = index in ``records``)."""
    images, annotations = [], []
    for image_id, r in enumerate(records):
        images.append({"id": image_id, "width": int(r.width), "height": int(r.height), "file_name": r.path})
        boxes, labels, ignore, _ = class_map.targets(dataset, r)
        rows = [(b, int(lab), 0) for b, lab in zip(boxes, labels, strict=True)]
        rows += [(b, 1, 1) for b in ignore]
        for box, label, crowd in rows:
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
            if crowd:  # pycocotools matches crowd regions per category: add one per category
                for cat in range(1, len(class_map.classes) + 1):
                    annotations.append(_ann(len(annotations) + 1, image_id, cat, [x1, y1, w, h], crowd=1))
            else:
                annotations.append(_ann(len(annotations) + 1, image_id, label, [x1, y1, w, h], crowd=0))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_map.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float], *, crowd: int) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
    }


def coco_stats(gt: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools ``COCOeval`` bbox stats as ``{"AP": ..., "AP50": ..., ...}`` (fractions, -1 = undefined).

    ``detections``: COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections or not gt["annotations"]:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}
    # per-class AP (IoU 0.5:0.95, all areas, 100 detections)
    precision = ev.eval["precision"]  # (iou, recall, class, area, maxdet)
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        stats[f"AP/{gt['categories'][cat - 1]['name']}"] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return stats


__all__ = ["STAT_NAMES", "coco_ground_truth", "coco_stats"]
