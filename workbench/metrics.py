"""COCO box AP through pycocotools (not re-implemented): the one bridge to it, torch-free.

Ground truth comes straight from the internal model: category ``i + 1`` is class
``classes[i]``; ignore regions are ``iscrowd=1`` boxes, so detections inside them count
neither as hits nor as false positives. COCO boxes are ``[x, y, w, h]`` pixels; image ids
are indices into the records evaluated.

``coco_stats`` is what the training engines log per epoch; ``coco_metrics`` is what an
evaluation report holds (per-class AP and the precision-recall curves too). Both read one
``cocoeval`` run. pycocotools' "undefined" is -1 in ``coco_stats`` and ``None`` in
``coco_metrics``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import numpy as np

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.boxes import xyxy_to_xywh
from workbench.splits import ClassMap

log = logging.getLogger(__name__)

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def coco_ground_truth(dataset: Dataset, records: list[ImageRecord], class_map: ClassMap) -> dict[str, Any]:
    """A COCO ground-truth dict for ``records`` (image id = index in ``records``)."""
    images, annotations = [], []
    for image_id, r in enumerate(records):
        images.append({"id": image_id, "width": int(r.width), "height": int(r.height), "file_name": r.path})
        boxes, labels, ignore, _ = class_map.targets(dataset, r)
        rows = [(b, int(lab), 0) for b, lab in zip(xyxy_to_xywh(boxes), labels, strict=True)]
        rows += [(b, 1, 1) for b in xyxy_to_xywh(ignore)]
        for box, label, crowd in rows:
            x, y, w, h = (float(v) for v in box)
            bbox = [x, y, max(0.0, w), max(0.0, h)]
            if crowd:  # pycocotools matches crowd regions per category: add one per category
                for cat in range(1, len(class_map.classes) + 1):
                    annotations.append(_ann(len(annotations) + 1, image_id, cat, bbox, crowd=1))
            else:
                annotations.append(_ann(len(annotations) + 1, image_id, label, bbox, crowd=0))
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


def coco_results(detections: list[Detections], image_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """COCO results of one ``Detections`` per image: ``image_id`` (the index, or ``image_ids[i]``),
    ``category_id`` (class id + 1), ``bbox`` ``[x, y, w, h]`` pixels and ``score``."""
    results = []
    for i, det in enumerate(detections):
        image_id = i if image_ids is None else int(image_ids[i])
        for bbox, score, class_id in zip(xyxy_to_xywh(det.boxes), det.scores, det.class_ids, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id) + 1,
                    "bbox": [float(v) for v in bbox],
                    "score": float(score),
                }
            )
    return results


def cocoeval(gt: dict[str, Any], results: list[dict[str, Any]]):
    """pycocotools' ``COCOeval`` (bbox) after evaluate/accumulate/summarize, or ``None`` without
    detections or without ground truth (pycocotools cannot load an empty results list)."""
    from pycocotools.coco import COCO  # a C extension with its own imports: loaded when AP is computed
    from pycocotools.cocoeval import COCOeval

    if not results or not gt["annotations"]:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_defined(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return float(values.mean()) if values.size else None


def _class_precision(ev) -> dict[int, np.ndarray]:
    """``category id -> (iou thresholds, recall points)`` precision, all areas, 100 detections."""
    precision = ev.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    return {cat: precision[:, :, k, 0, -1] for k, cat in enumerate(ev.params.catIds)}


def coco_stats(gt: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools ``COCOeval`` bbox stats as ``{"AP": ..., "AP50": ..., ..., "AP/<class>": ...}``
    (fractions, -1 = undefined; all 0 without detections).

    ``detections``: COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
    """
    ev = cocoeval(gt, detections)
    if ev is None:
        return dict.fromkeys(STAT_NAMES, 0.0)
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}
    for cat, p in _class_precision(ev).items():  # per-class AP: IoU 0.5:0.95
        ap = _mean_defined(p)
        stats[f"AP/{gt['categories'][cat - 1]['name']}"] = -1.0 if ap is None else ap
    return stats


def coco_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], classes: list[str]
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """``(metrics, per_class, pr_curves)`` from pycocotools.

    * ``metrics``: ``AP``, ``AP50``, ... (``STAT_NAMES``), fractions; ``None`` where undefined.
    * ``per_class[name]``: ``AP`` (IoU 0.50:0.95) and ``AP50``, all areas, 100 detections, and
      ``gt`` (boxes of the class); a class without ground truth has ``None`` APs.
    * ``pr_curves[name]``: ``recall`` (COCO's 101 points) and ``precision50`` / ``precision75``
      at IoU 0.50 and 0.75, all areas, 100 detections (0 past the largest recall reached).
    """
    counts = {name: 0 for name in classes}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            counts[classes[ann["category_id"] - 1]] += 1
    ev = cocoeval(gt, results)
    if ev is None:  # no detection at all (or no ground truth): AP 0 where there is something to find
        value = 0.0 if gt["annotations"] else None
        zero = {name: 0.0 if counts[name] else None for name in classes}
        recall, flat = np.linspace(0.0, 1.0, 101).tolist(), [0.0] * 101
        per_class = {name: {"AP": zero[name], "AP50": zero[name], "gt": counts[name]} for name in classes}
        curves = {name: {"recall": recall, "precision50": flat, "precision75": flat} for name in classes}
        return dict.fromkeys(STAT_NAMES, value), per_class, curves
    metrics = {name: None if v < 0 else float(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}
    iou_50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    iou_75 = int(np.argmin(np.abs(ev.params.iouThrs - 0.75)))
    per_class, curves = {}, {}
    for cat, p in _class_precision(ev).items():
        name = classes[cat - 1]
        per_class[name] = {"AP": _mean_defined(p), "AP50": _mean_defined(p[iou_50]), "gt": counts[name]}
        curves[name] = {
            "recall": ev.params.recThrs.tolist(),
            "precision50": np.clip(p[iou_50], 0, None).tolist(),
            "precision75": np.clip(p[iou_75], 0, None).tolist(),
        }
    return metrics, per_class, curves


__all__ = ["STAT_NAMES", "coco_ground_truth", "coco_metrics", "coco_results", "coco_stats", "cocoeval"]
