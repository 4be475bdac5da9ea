"""Evaluation of a trained run on a dataset: which images, the predictions, COCO metrics, a
confusion matrix, the precision-recall curves, saved into the run (``evaluation.report``).

    from workbench.evaluation.evaluate import evaluate_run
    ev = evaluate_run("latest", "datasets/facemask-sample")    # see select_records for the images
    ev.report.metrics["AP"], ev.report.per_class["with_mask"]["AP50"]
    ev.report.out_dir                                          # models/<run>/eval/<name>/

Everything COCO (AP, AP50, AP75, APs/m/l, AR1/10/100, per-class AP and AP50, the PR curves)
comes from pycocotools through ``workbench.metrics`` (category ``i + 1`` is the run's class
``i``; ignore regions are ``iscrowd`` boxes).

The confusion matrix is not a COCO metric; it is counted here, at one IoU (0.5) and one score
threshold (0.25): rows are the ground truth, columns the predictions, both ending with
``background``. First COCO's rule: detections, highest score first, each take the unmatched
ground-truth box of their own class with the highest IoU >= the threshold (the true positives,
the same as FiftyOne's classwise matching). Then the detections left, in the same order, take
the unmatched box of another class with the highest IoU (a class confusion). A detection still
left is a false positive (background row), unless it lies in an ignore region (intersection
over its own area >= the threshold, COCO's crowd rule), where it is not counted. Unmatched
ground-truth boxes are false negatives (background column). Per image, ``fp`` counts detections
not matched to a box of their class and ``fn`` boxes not found with their class, so a confusion
counts once in each.

Importing this module does not import torch: only ``evaluate_run`` loads a model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.boxes import iou
from workbench.errors import WorkbenchError
from workbench.evaluation.plots import save_plots
from workbench.evaluation.report import (
    BACKGROUND,
    EVAL_DIR,
    EvalReport,
    load_report,
    read_detections,
    read_json,
    same_folder,
    save_report,
)
from workbench.formats import load_dataset
from workbench.inference.images import predict_records
from workbench.metrics import coco_ground_truth, coco_metrics, coco_results
from workbench.splits import ClassMap, split_records

VALIDATION = "val"  # the split name that falls back to a validation split when the dataset has none


def select_records(
    dataset: Dataset, *, split: str | None = None, run_dir: Path | None = None
) -> tuple[list[ImageRecord], str]:
    """``(records, description)``: the images to evaluate on, and which they are in words.

    ``split``:

    * ``None`` (the default): on the dataset the run trained on (``config.json``'s ``data`` in
      ``run_dir``), the run's own validation images (``split.json``), else ``split_records``'
      validation split, the one training made; on any other dataset, every image: none of them
      was trained on, and a new test folder is meant to be scored whole.
    * ``"all"``: every image.
    * another name: the dataset's split of that name; ``"val"`` on a dataset without a ``val``
      split: the default's validation images on the run's own dataset, else ``split_records``'
      validation split.
    """
    records = sorted(dataset.images, key=lambda r: r.path)
    if split == "all":
        return records, "all images"
    has_split = split is not None and any((r.split or "").lower() == split.lower() for r in records)
    if split and (has_split or split.lower() != VALIDATION):
        chosen = [r for r in records if (r.split or "").lower() == split.lower()]
        if not chosen:
            have = ", ".join(dataset.splits) or "none"
            raise WorkbenchError(f"{dataset.root}: no image in split {split!r} (splits: {have})")
        return chosen, f"split {split}"
    config = (read_json(Path(run_dir) / "config.json") or {}) if run_dir is not None else {}
    own = run_dir is not None and same_folder(config.get("data"), dataset.root)
    if own:
        saved = read_json(Path(run_dir) / "split.json") or {}
        by_path = {r.path: r for r in records}
        val = [by_path[p] for p in saved.get("val", []) if p in by_path]
        if val:
            missing = len(saved.get("val", [])) - len(val)
            note = f" ({missing} no longer in the dataset)" if missing else ""
            return val, f"the run's validation images{note}"
    if split is None and run_dir is not None and not own:
        return records, "all images (not the dataset the run trained on)"
    _train, val, how = split_records(dataset)
    return val, f"validation split ({how})"


def eval_name(dataset: Dataset, description: str) -> str:
    """A folder name for one evaluation: ``<dataset folder>-<val|all|split name>``, filesystem-safe."""
    if "validation" in description:
        split = "val"
    elif description.startswith("all images"):
        split = "all"
    else:
        split = description.removeprefix("split ")
    text = f"{Path(dataset.root).name}-{split}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "eval"


def match_image(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    det_boxes: np.ndarray,
    det_labels: np.ndarray,
    det_scores: np.ndarray,
    *,
    ignore_boxes: np.ndarray | None = None,
    iou_threshold: float = 0.5,
) -> list[tuple[int, int]]:
    """The confusion pairs of one image: ``(gt label, predicted label)`` with ``-1`` for background.

    Labels are class indices (0-based). See the module docstring for the matching rule.
    """
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    det_labels = np.asarray(det_labels, dtype=np.int64).reshape(-1)
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64).reshape(-1), kind="stable")
    ious = iou(det_boxes, gt_boxes)
    ignore_overlap = (
        iou(det_boxes, ignore_boxes, crowd=True).max(axis=1)
        if ignore_boxes is not None and len(ignore_boxes) and len(det_labels)
        else np.zeros(len(det_labels))
    )
    taken = np.zeros(len(gt_labels), dtype=bool)
    matched = np.full(len(det_labels), -1)
    # pass 1, COCO's rule: each detection (highest score first) takes the free box of its own
    # class with the highest IoU >= the threshold (these are the true positives);
    # pass 2: the detections left take a free box of another class (the class confusions).
    for same_class in (True, False):
        for d in order:
            if matched[d] >= 0 or not len(gt_labels):
                continue
            free = (~taken) & (ious[d] >= iou_threshold)
            if same_class:
                free &= gt_labels == det_labels[d]
            if free.any():
                g = int(np.argmax(np.where(free, ious[d], -1.0)))
                taken[g] = True
                matched[d] = g
    pairs: list[tuple[int, int]] = []
    for d in order:
        if matched[d] >= 0:
            pairs.append((int(gt_labels[matched[d]]), int(det_labels[d])))
        elif ignore_overlap[d] < iou_threshold:
            pairs.append((-1, int(det_labels[d])))
    pairs += [(int(label), -1) for label in gt_labels[~taken]]
    return pairs


def confusion_matrix(pairs: list[tuple[int, int]], num_classes: int) -> np.ndarray:
    """``(C + 1, C + 1)`` counts; rows ground truth, columns predictions, index ``C`` = background."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for gt, pred in pairs:
        matrix[gt if gt >= 0 else num_classes, pred if pred >= 0 else num_classes] += 1
    return matrix


def compute_report(
    dataset: Dataset,
    records: list[ImageRecord],
    detections: list[Detections],
    classes: list[str],
    *,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    run: str = "",
    split: str = "",
) -> EvalReport:
    """All metrics of ``detections`` (one per record, class ids index ``classes``) against ``records``.

    AP uses every detection given (pass them with a low score threshold); the confusion matrix
    and the per-image counts use those scoring at least ``score_threshold``.
    """
    if len(detections) != len(records):
        raise ValueError(f"{len(records)} images but {len(detections)} detection sets")
    class_map = ClassMap.build(dataset, classes)
    gt = coco_ground_truth(dataset, records, class_map)
    metrics, per_class, curves = coco_metrics(gt, coco_results(detections), classes)
    pairs_all: list[tuple[int, int]] = []
    images = []
    for record, det in zip(records, detections, strict=True):
        boxes, labels, ignore, _ = class_map.targets(dataset, record)
        keep = det.scores >= score_threshold
        pairs = match_image(
            boxes,
            labels - 1,
            det.boxes[keep],
            det.class_ids[keep],
            det.scores[keep],
            ignore_boxes=ignore,
            iou_threshold=iou_threshold,
        )
        pairs_all += pairs
        tp = sum(1 for g, p in pairs if g == p and g >= 0)
        images.append(
            {
                "path": record.path,
                "tp": tp,
                "fp": sum(1 for g, p in pairs if p >= 0) - tp,
                "fn": sum(1 for g, p in pairs if g >= 0) - tp,
                "detections": int(keep.sum()),
            }
        )
    confusion = {
        "classes": [*classes, BACKGROUND],
        "matrix": confusion_matrix(pairs_all, len(classes)).tolist(),
        "rows": "ground truth",
        "columns": "predicted",
        "iou": iou_threshold,
        "score_threshold": score_threshold,
    }
    return EvalReport(
        run=run,
        dataset=str(dataset.root),
        split=split,
        classes=list(classes),
        metrics=metrics,
        per_class=per_class,
        confusion=confusion,
        pr_curves=curves,
        images=images,
    )


def save_evaluation(
    report: EvalReport, out_dir: Path, *, records: list[ImageRecord], detections: list[Detections]
) -> Path:
    """Write the report's files (``report.save_report``) and its PNG plots into ``out_dir``."""
    save_report(report, out_dir, records=records, detections=detections)
    save_plots(report, out_dir)
    return Path(out_dir)


@dataclass
class Evaluation:
    """What ``evaluate_run`` did: the report and what it needed (so FiftyOne can reuse them)."""

    report: EvalReport
    dataset: Dataset
    records: list[ImageRecord]
    detections: list[Detections]
    classes: list[str]
    run: str


def load_evaluation(out_dir: Path, dataset: Dataset) -> Evaluation:
    """A saved evaluation with its detections, matched to ``dataset``'s records by image path
    (images no longer in the dataset are left out), without running the model again."""
    report = load_report(out_dir)
    saved = read_detections(out_dir)
    by_path = {r.path: r for r in dataset.images}
    paths = [im["path"] for im in report.images if im["path"] in by_path and im["path"] in saved]
    return Evaluation(
        report=report,
        dataset=dataset,
        records=[by_path[p] for p in paths],
        detections=[saved[p] for p in paths],
        classes=list(report.classes),
        run=report.run,
    )


def evaluate_run(
    run: str | Path,
    data: str | Path,
    *,
    fmt: str | None = None,
    split: str | None = None,
    score_threshold: float = 0.25,
    batch: int = 4,
    device: str = "auto",
    save: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Predict with run ``run`` (``"latest"``, a name or a folder) on dataset ``data`` (the images
    ``select_records`` picks for ``split``) and compute every metric; with ``save`` write them
    into ``<run>/eval/<dataset>-<split>/``."""
    from workbench.inference.predict import load_predictor  # torch: the rest of this module is torch-free

    predictor = load_predictor(run, device=device)
    dataset = load_dataset(data, fmt, strict=False)
    records, how = select_records(dataset, split=split, run_dir=predictor.run_dir)
    if not records:
        raise WorkbenchError(f"{dataset.root}: no image to evaluate on ({how})")
    t0 = time.perf_counter()
    detections = predict_records(predictor, dataset.root, records, batch=batch, on_progress=on_progress)
    t1 = time.perf_counter()
    report = compute_report(
        dataset,
        records,
        detections,
        predictor.classes,
        score_threshold=score_threshold,
        run=predictor.run_dir.name,
        split=how,
    )
    t2 = time.perf_counter()
    report.timing = {"predict_seconds": t1 - t0, "metrics_seconds": t2 - t1, "images": len(records)}
    if save:
        out_dir = predictor.run_dir / EVAL_DIR / eval_name(dataset, how)
        save_evaluation(report, out_dir, records=records, detections=detections)
    return Evaluation(report, dataset, records, detections, predictor.classes, predictor.run_dir.name)


__all__ = [
    "Evaluation",
    "compute_report",
    "confusion_matrix",
    "eval_name",
    "evaluate_run",
    "load_evaluation",
    "match_image",
    "save_evaluation",
    "select_records",
]
