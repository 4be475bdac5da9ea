"""Evaluation of a trained run on a dataset: COCO metrics, a confusion matrix, precision-recall curves.

    from workbench.evaluation import evaluate_run
    report = evaluate_run("latest", "datasets/facemask-sample")      # the run's own val split
    report.metrics["AP"], report.per_class["with_mask"]["AP50"]
    report.out_dir                                                   # models/<run>/eval/<name>/

Everything COCO (AP, AP50, AP75, APs/m/l, AR1/10/100, per-class AP and AP50, the PR curves)
comes from pycocotools' ``COCOeval`` on the ground truth that ``training.coco_eval`` builds
(category ``i + 1`` is the run's class ``i``; ignore regions are ``iscrowd`` boxes). pycocotools'
"undefined" (-1, e.g. APs when no small box exists) is reported as ``None``.

The confusion matrix is not a COCO metric; it is counted here, at one IoU (0.5) and one score
threshold (0.25): rows are the ground truth, columns the predictions, both ending with
``background``. First COCO's rule: detections, highest score first, each take the unmatched
ground-truth box of their own class with the highest IoU >= the threshold (the true positives,
the same as FiftyOne's classwise matching). Then the detections left, in the same order, take the
unmatched box of another class with the highest IoU (a class confusion). A detection still left
is a false positive (background row), unless it lies in an ignore region (intersection over its
own area >= the threshold, COCO's crowd rule), where it is not counted. Unmatched ground-truth boxes are false negatives (background
column). Per image, ``fp`` counts detections not matched to a box of their class and ``fn`` boxes
not found with their class, so a confusion counts once in each.

Boxes are the workbench's pixels ``x1, y1, x2, y2``; COCO boxes are ``[x, y, w, h]`` pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.errors import WorkbenchError
from workbench.metrics import STAT_NAMES, coco_ground_truth
from workbench.splits import ClassMap, split_records

log = logging.getLogger(__name__)

BACKGROUND = "background"
EVAL_DIR = "eval"  # inside a run folder: one sub-folder per evaluation (dataset + split)
METRICS_JSON = "metrics.json"
DETECTIONS_JSON = "detections.json"  # every detection, so the Errors page and FiftyOne need no model
COCO_RESULTS_JSON = "coco_results.json"
PLOTS = ("ap_per_class.png", "confusion.png", "pr_curves.png")
EVAL_SCORE_THRESHOLD = 0.001  # detections kept for AP: the whole precision-recall curve
EVAL_MAX_DETECTIONS = 100  # COCO's maxDets


# --------------------------------------------------------------------------- which images


def select_records(
    dataset: Dataset, *, split: str | None = None, run_dir: Path | None = None
) -> tuple[list[ImageRecord], str]:
    """``(records, description)``: the images to evaluate on.

    ``split`` ``None``: the run's own validation images (``split.json`` in ``run_dir``) when the
    run was trained on this dataset folder, else ``split_records``' validation split; ``"all"``: every image;
    another name: the dataset's split of that name.
    """
    records = sorted(dataset.images, key=lambda r: r.path)
    if split == "all":
        return records, "all images"
    if split:
        chosen = [r for r in records if (r.split or "").lower() == split.lower()]
        if not chosen:
            have = ", ".join(dataset.splits) or "none"
            raise WorkbenchError(f"{dataset.root}: no image in split {split!r} (splits: {have})")
        return chosen, f"split {split}"
    config = (_read_json(Path(run_dir) / "config.json") or {}) if run_dir is not None else {}
    if run_dir is not None and _same_folder(config.get("data"), dataset.root):
        saved = _read_json(Path(run_dir) / "split.json") or {}
        by_path = {r.path: r for r in records}
        val = [by_path[p] for p in saved.get("val", []) if p in by_path]
        if val:
            missing = len(saved.get("val", [])) - len(val)
            note = f" ({missing} no longer in the dataset)" if missing else ""
            return val, f"the run's validation images{note}"
    _train, val, how = split_records(dataset)
    return val, f"validation split ({how})"


def _same_folder(a: str | Path | None, b: str | Path) -> bool:
    try:
        return a is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def eval_name(dataset: Dataset, description: str) -> str:
    """A folder name for one evaluation: ``<dataset folder>-<split>``, filesystem-safe."""
    split = "val" if "validation" in description else description.replace("split ", "").replace(" images", "")
    text = f"{Path(dataset.root).name}-{split}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "eval"


# --------------------------------------------------------------------------- predictions


def predict_records(
    predictor: Any,
    root: Path,
    records: list[ImageRecord],
    *,
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    max_detections: int = EVAL_MAX_DETECTIONS,
    batch: int = 4,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Detections]:
    """Run ``predictor`` (a ``training.predict.Predictor``) on each record's image, in order."""
    from workbench.fileio import load_image

    out: list[Detections] = []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        images = [load_image(Path(root) / r.path, r.path) for r in chunk]
        out += predictor.predict_batch(
            images, score_threshold=score_threshold, iou_threshold=0.5, max_detections=max_detections
        )
        if on_progress:
            on_progress(len(out), len(records))
    return out


def coco_results(detections: list[Detections]) -> list[dict[str, Any]]:
    """COCO results (image id = index, category = class id + 1, ``bbox`` ``[x, y, w, h]`` pixels)."""
    results = []
    for image_id, det in enumerate(detections):
        for (x1, y1, x2, y2), score, class_id in zip(det.boxes, det.scores, det.class_ids, strict=True):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id) + 1,
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "score": float(score),
                }
            )
    return results


# --------------------------------------------------------------------------- COCO metrics


def run_cocoeval(gt: dict[str, Any], results: list[dict[str, Any]]):
    """pycocotools' ``COCOeval`` (bbox) after evaluate/accumulate/summarize, or ``None`` without detections."""
    from pycocotools.coco import COCO
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


def _undefined_as_none(value: float) -> float | None:
    return None if value < 0 else float(value)


def coco_metrics(
    gt: dict[str, Any], results: list[dict[str, Any]], classes: list[str]
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]], dict[str, dict[str, list[float]]]]:
    """``(metrics, per_class, pr_curves)`` from pycocotools.

    * ``metrics``: ``AP``, ``AP50``, ... (``STAT_NAMES``), fractions; ``None`` where undefined.
    * ``per_class[name]``: ``AP`` (IoU 0.50:0.95) and ``AP50``, all areas, 100 detections, and
      ``gt`` (boxes of the class); a class without ground truth has ``None`` APs.
    * ``pr_curves[name]``: ``recall`` (COCO's 101 points) and ``precision`` at IoU 0.50 and
      0.75, all areas, 100 detections (precision 0 past the largest recall reached).
    """
    counts = {name: 0 for name in classes}
    for ann in gt["annotations"]:
        if not ann["iscrowd"]:
            counts[classes[ann["category_id"] - 1]] += 1
    ev = run_cocoeval(gt, results)
    recall = np.linspace(0.0, 1.0, 101)
    if ev is None:  # no detection at all (or no ground truth): AP 0 where there is something to find
        value = 0.0 if gt["annotations"] else None
        metrics = dict.fromkeys(STAT_NAMES, value)
        per_class = {
            name: {"AP": 0.0 if counts[name] else None, "AP50": 0.0 if counts[name] else None, "gt": counts[name]}
            for name in classes
        }
        zeros = [0.0] * len(recall)
        curves = {name: {"recall": recall.tolist(), "precision50": zeros, "precision75": zeros} for name in classes}
        return metrics, per_class, curves
    metrics = {name: _undefined_as_none(v) for name, v in zip(STAT_NAMES, ev.stats, strict=True)}
    precision = ev.eval["precision"]  # (iou thresholds, recall points, classes, areas, max dets)
    iou_50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    iou_75 = int(np.argmin(np.abs(ev.params.iouThrs - 0.75)))
    per_class, curves = {}, {}
    for k, cat in enumerate(ev.params.catIds):
        name = classes[cat - 1]
        p = precision[:, :, k, 0, -1]
        per_class[name] = {"AP": _mean_defined(p), "AP50": _mean_defined(p[iou_50]), "gt": counts[name]}
        curves[name] = {
            "recall": ev.params.recThrs.tolist(),
            "precision50": np.clip(p[iou_50], 0, None).tolist(),
            "precision75": np.clip(p[iou_75], 0, None).tolist(),
        }
    return metrics, per_class, curves


# --------------------------------------------------------------------------- confusion matrix


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, *, crowd: bool = False) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``x1, y1, x2, y2`` boxes, through ``pycocotools.mask.iou``.

    ``crowd=True`` gives COCO's crowd overlap: intersection over the area of the ``a`` box.
    """
    from pycocotools import mask as mask_utils

    a, b = _xywh(boxes_a), _xywh(boxes_b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(a.tolist(), b.tolist(), [int(crowd)] * len(b)), dtype=np.float64).reshape(
        len(a), len(b)
    )


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
    ious = box_iou(det_boxes, gt_boxes)
    ignore_overlap = (
        box_iou(det_boxes, ignore_boxes, crowd=True).max(axis=1)
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


# --------------------------------------------------------------------------- the report


@dataclass
class EvalReport:
    """One evaluation of a run on a set of images (what ``metrics.json`` holds).

    Attributes:
        run: the run's name. dataset: the dataset folder. split: how the images were chosen.
        classes: the run's class list (confusion indices; ``background`` is index ``len(classes)``).
        metrics: ``AP``, ``AP50``, ... fractions (``None`` where pycocotools has no value).
        per_class: ``name -> {"AP", "AP50", "gt"}``.
        confusion: ``{"classes": names + ["background"], "matrix": rows gt, cols predicted,
            "iou": 0.5, "score_threshold": t}``.
        pr_curves: ``name -> {"recall", "precision50", "precision75"}``.
        images: per image ``{"path", "tp", "fp", "fn", "detections"}`` at the score threshold.
        timing: seconds spent predicting and computing.
    """

    run: str
    dataset: str
    split: str
    classes: list[str]
    metrics: dict[str, float | None]
    per_class: dict[str, dict[str, Any]]
    confusion: dict[str, Any]
    pr_curves: dict[str, dict[str, list[float]]]
    images: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The ``workbench eval --json`` object: metrics, per-class AP/AP50 (classes with ground
        truth; the others are listed under ``no_ground_truth``) and the confusion matrix."""
        out: dict[str, Any] = {k: v for k, v in self.metrics.items()}
        out["per_class"] = {
            name: {"AP": v["AP"], "AP50": v["AP50"]} for name, v in self.per_class.items() if v["AP"] is not None
        }
        out["no_ground_truth"] = [name for name, v in self.per_class.items() if v["AP"] is None]
        out["confusion"] = self.confusion
        out["run"], out["dataset"], out["split"], out["images"] = self.run, self.dataset, self.split, len(self.images)
        if self.out_dir is not None:
            out["saved"] = str(self.out_dir)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "dataset": self.dataset,
            "split": self.split,
            "classes": self.classes,
            "metrics": self.metrics,
            "per_class": self.per_class,
            "confusion": self.confusion,
            "pr_curves": self.pr_curves,
            "images": self.images,
            "timing": self.timing,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], out_dir: Path | None = None) -> EvalReport:
        return cls(**{k: data[k] for k in ("run", "dataset", "split", "classes", "metrics", "per_class",
                                           "confusion", "pr_curves")},
                   images=data.get("images", []), timing=data.get("timing", {}), out_dir=out_dir)  # fmt: skip

    def worst_images(self, n: int = 12) -> list[dict[str, Any]]:
        """The ``n`` images with the most false positives plus false negatives (ties: by path)."""
        ranked = sorted(self.images, key=lambda im: (-(im["fp"] + im["fn"]), im["path"]))
        return [im for im in ranked[:n] if im["fp"] + im["fn"] > 0]


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
    matrix = confusion_matrix(pairs_all, len(classes))
    confusion = {
        "classes": [*classes, BACKGROUND],
        "matrix": matrix.tolist(),
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


# --------------------------------------------------------------------------- files in the run


def detections_json(records: list[ImageRecord], detections: list[Detections]) -> dict[str, Any]:
    """``{path: {"boxes": [[x1, y1, x2, y2], ...], "scores": [...], "class_ids": [...]}}`` (full precision)."""
    return {
        r.path: {"boxes": d.boxes.tolist(), "scores": d.scores.tolist(), "class_ids": d.class_ids.tolist()}
        for r, d in zip(records, detections, strict=True)
    }


def read_detections(out_dir: Path) -> dict[str, Detections]:
    """The detections an evaluation saved, by image path."""
    data = _read_json(Path(out_dir) / DETECTIONS_JSON) or {}
    return {path: Detections(d["boxes"], d["scores"], d["class_ids"]) for path, d in data.items()}


def save_report(report: EvalReport, out_dir: Path, *, records: list[ImageRecord], detections: list[Detections]) -> Path:
    """Write ``metrics.json``, ``detections.json``, ``coco_results.json`` and the PNG plots into ``out_dir``."""
    from workbench.evaluation.plots import save_plots
    from workbench.fileio import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / DETECTIONS_JSON, json.dumps(detections_json(records, detections)))
    results = coco_results(detections)
    for item in results:  # a results file others can read: the COCO image ids are the file names' order
        item["file_name"] = records[item["image_id"]].path
    atomic_write(out_dir / COCO_RESULTS_JSON, json.dumps(results))
    save_plots(report, out_dir)
    report.out_dir = out_dir
    atomic_write(out_dir / METRICS_JSON, json.dumps(report.to_json(), indent=1) + "\n")
    return out_dir


def list_reports(run_dir: Path) -> list[Path]:
    """The evaluation folders of a run (newest first)."""
    root = Path(run_dir) / EVAL_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / METRICS_JSON).is_file()]
    return sorted(found, key=lambda p: (p / METRICS_JSON).stat().st_mtime, reverse=True)


def load_report(out_dir: Path) -> EvalReport:
    data = _read_json(Path(out_dir) / METRICS_JSON)
    if not data:
        raise WorkbenchError(f"{out_dir}: no {METRICS_JSON}; run `workbench eval` first")
    return EvalReport.from_json(data, out_dir=Path(out_dir))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- one call


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
    """Predict with run ``run`` (``"latest"``, a name or a folder) on dataset ``data`` and compute
    every metric; with ``save`` write them into ``<run>/eval/<dataset>-<split>/``."""
    from workbench.formats import load_dataset
    from workbench.inference.predict import load_predictor

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
        save_report(
            report,
            predictor.run_dir / EVAL_DIR / eval_name(dataset, how),
            records=records,
            detections=detections,
        )
    return Evaluation(report, dataset, records, detections, predictor.classes, predictor.run_dir.name)


__all__ = [
    "BACKGROUND",
    "EvalReport",
    "Evaluation",
    "box_iou",
    "coco_metrics",
    "coco_results",
    "compute_report",
    "confusion_matrix",
    "evaluate_run",
    "list_reports",
    "load_evaluation",
    "load_report",
    "match_image",
    "predict_records",
    "read_detections",
    "save_report",
    "select_records",
]
