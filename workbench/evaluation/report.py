"""An evaluation report and its files in the run folder: what the Errors page, FiftyOne and the
labelling queue read without a model (and without torch).

    <run>/eval/<dataset>-<split>/
        metrics.json        the EvalReport (metrics, per class, confusion, PR curves, per image)
        detections.json     every detection, by image path, full precision
        coco_results.json   the same as COCO results, with each image's file name
        *.png               the plots (``evaluation.plots``)

Boxes are the workbench's pixels ``x1, y1, x2, y2``; COCO boxes are ``[x, y, w, h]`` pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.annotations import Detections, ImageRecord
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.metrics import coco_results

BACKGROUND = "background"
EVAL_DIR = "eval"  # inside a run folder: one sub-folder per evaluation (dataset + split)
METRICS_JSON = "metrics.json"
DETECTIONS_JSON = "detections.json"  # every detection, so the Errors page and FiftyOne need no model
COCO_RESULTS_JSON = "coco_results.json"
PLOTS = ("ap_per_class.png", "confusion.png", "pr_curves.png")


@dataclass
class EvalReport:
    """One evaluation of a run on a set of images (what ``metrics.json`` holds).

    Attributes:
        run: the run's name. dataset: the dataset folder. split: which images were scored, in words.
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
        truth; the others are listed under ``no_ground_truth``), the confusion matrix, and which
        images were scored (``split``, in words) and how many (``images``)."""
        out: dict[str, Any] = dict(self.metrics)
        out["per_class"] = {
            name: {"AP": v["AP"], "AP50": v["AP50"]} for name, v in self.per_class.items() if v["AP"] is not None
        }
        out["no_ground_truth"] = [name for name, v in self.per_class.items() if v["AP"] is None]
        out["confusion"] = self.confusion
        out["run"], out["dataset"], out["split"], out["images"] = self.run, self.dataset, self.split, len(self.images)
        out["scored"] = self.scored()
        if self.out_dir is not None:
            out["saved"] = str(self.out_dir)
        return out

    def scored(self) -> str:
        """Which images were scored and how many, as one line: ``8 images of FOLDER: all images``."""
        return f"{len(self.images)} images of {self.dataset}: {self.split}"

    def is_of(self, dataset_root: str | Path) -> bool:
        """Whether this evaluation was of the dataset folder ``dataset_root``."""
        return same_folder(self.dataset, dataset_root)

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
        keys = ("run", "dataset", "split", "classes", "metrics", "per_class", "confusion", "pr_curves")
        return cls(
            **{k: data[k] for k in keys},
            images=data.get("images", []),
            timing=data.get("timing", {}),
            out_dir=out_dir,
        )

    def worst_images(self, n: int = 12) -> list[dict[str, Any]]:
        """The ``n`` images with the most false positives plus false negatives (ties: by path)."""
        ranked = sorted(self.images, key=lambda im: (-(im["fp"] + im["fn"]), im["path"]))
        return [im for im in ranked[:n] if im["fp"] + im["fn"] > 0]


def compare_per_class(report: EvalReport, other: EvalReport) -> list[dict[str, Any]]:
    """Per-class AP of two reports side by side, then the overall AP: rows ``{"class", "ours",
    "theirs", "difference"}`` (``None`` where either has no value), classes in order of appearance."""
    rows = []
    for name in dict.fromkeys([*report.per_class, *other.per_class]):
        rows.append(
            _row(name, (report.per_class.get(name) or {}).get("AP"), (other.per_class.get(name) or {}).get("AP"))
        )
    rows.append(_row("all (AP)", report.metrics.get("AP"), other.metrics.get("AP")))
    return rows


def _row(name: str, ours: float | None, theirs: float | None) -> dict[str, Any]:
    difference = None if ours is None or theirs is None else ours - theirs
    return {"class": name, "ours": ours, "theirs": theirs, "difference": difference}


def same_folder(a: str | Path | None, b: str | Path) -> bool:
    """Whether two paths name the same folder (``~`` expanded, links resolved)."""
    try:
        return a is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def detections_json(records: list[ImageRecord], detections: list[Detections]) -> dict[str, Any]:
    """``{path: {"boxes": [[x1, y1, x2, y2], ...], "scores": [...], "class_ids": [...]}}`` (full precision)."""
    return {
        r.path: {"boxes": d.boxes.tolist(), "scores": d.scores.tolist(), "class_ids": d.class_ids.tolist()}
        for r, d in zip(records, detections, strict=True)
    }


def read_detections(out_dir: Path) -> dict[str, Detections]:
    """The detections an evaluation saved, by image path."""
    data = read_json(Path(out_dir) / DETECTIONS_JSON) or {}
    return {path: Detections(d["boxes"], d["scores"], d["class_ids"]) for path, d in data.items()}


def save_report(report: EvalReport, out_dir: Path, *, records: list[ImageRecord], detections: list[Detections]) -> Path:
    """Write ``metrics.json``, ``detections.json`` and ``coco_results.json`` into ``out_dir``
    (``evaluate.save_evaluation`` adds the plots); sets ``report.out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / DETECTIONS_JSON, json.dumps(detections_json(records, detections)))
    results = coco_results(detections)
    for item in results:  # a results file others can read: the COCO image ids are the file names' order
        item["file_name"] = records[item["image_id"]].path
    atomic_write(out_dir / COCO_RESULTS_JSON, json.dumps(results))
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
    data = read_json(Path(out_dir) / METRICS_JSON)
    if not data:
        raise WorkbenchError(f"{out_dir}: no {METRICS_JSON}; run `workbench eval` first")
    return EvalReport.from_json(data, out_dir=Path(out_dir))


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


__all__ = [
    "BACKGROUND",
    "EvalReport",
    "compare_per_class",
    "detections_json",
    "list_reports",
    "load_report",
    "read_detections",
    "same_folder",
    "save_report",
]
