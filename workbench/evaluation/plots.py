"""PNG plots of an evaluation: AP per class, the confusion matrix, precision-recall curves.

Each ``*_figure`` returns a matplotlib ``Figure`` (the Errors page shows it with ``st.pyplot``);
``save_plots`` writes all three into an evaluation folder. Headless: the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench.annotations import Dataset, Detections, ImageRecord
from workbench.drawing import class_colour, draw_boxes
from workbench.evaluation.report import PLOTS, EvalReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def ap_figure(report: EvalReport) -> Figure:
    """Horizontal bars: AP (IoU 0.50:0.95) and AP50 per class; classes without ground truth are left out."""
    names = [n for n, v in report.per_class.items() if v["AP"] is not None]
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(3, len(names)) + 1))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [report.per_class[n]["AP50"] for n in names], height=0.4, label="AP50", color="#9ecae1")
    ax.barh(y + 0.2, [report.per_class[n]["AP"] for n in names], height=0.4, label="AP", color="#3182bd")
    ax.set_yticks(y, [f"{n} ({report.per_class[n]['gt']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision (pycocotools)")
    ax.legend(loc="lower right")
    ax.set_title("AP per class (ground-truth boxes in brackets)", fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(report: EvalReport) -> Figure:
    """The confusion matrix as a heat map with counts; rows ground truth, columns predictions."""
    names = report.confusion["classes"]
    matrix = np.asarray(report.confusion["matrix"], dtype=np.int64)
    size = 1.0 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    shown = np.log1p(matrix)  # a log scale keeps the small off-diagonal counts visible
    image = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    peak = shown.max() if shown.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if peak and shown[i, j] > 0.6 * peak else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=9)
    ax.set_title(
        f"confusion at IoU {report.confusion['iou']:g}, score >= {report.confusion['score_threshold']:g}", fontsize=10
    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="log(1 + count)")
    fig.tight_layout()
    return fig


def pr_figure(report: EvalReport) -> Figure:
    """Precision-recall curves per class at IoU 0.50 (solid) and 0.75 (dashed)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, name in enumerate(report.classes):
        curve = report.pr_curves.get(name)
        if not curve or report.per_class.get(name, {}).get("AP") is None:
            continue
        colour = class_colour(i)
        ap50 = report.per_class[name]["AP50"]
        ax.plot(curve["recall"], curve["precision50"], color=colour, label=f"{name} (AP50 {ap50:.3f})")
        ax.plot(curve["recall"], curve["precision75"], color=colour, linestyle="--", alpha=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall per class (solid IoU 0.50, dashed 0.75)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def save_plots(report: EvalReport, out_dir: Path) -> list[Path]:
    """Write ``ap_per_class.png``, ``confusion.png`` and ``pr_curves.png`` into ``out_dir``."""
    written = []
    for name, make in zip(PLOTS, (ap_figure, confusion_figure, pr_figure), strict=True):
        fig = make(report)
        path = Path(out_dir) / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _dashed_rectangle(draw, box: tuple[float, float, float, float], *, colour: str, width: int, dash: int = 6) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min(1.0, (k + 1) / steps)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                fill=colour,
                width=width,
            )


def draw_comparison(
    image,
    *,
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    gt_names: list[str],
    pred_boxes: np.ndarray,
    pred_class_ids: np.ndarray,
    pred_scores: np.ndarray,
    pred_names: list[str],
):
    """A copy of ``image`` (PIL) with the ground truth in solid class-coloured boxes and the
    predictions in dashed ones labelled with class and score. Boxes are pixels ``x1, y1, x2, y2``;
    colours follow each list's own class ids (``workbench.drawing.class_colour``)."""
    out = draw_boxes(image, gt_boxes, gt_class_ids, gt_names, width=3, labels=False)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for box, class_id, score in zip(np.asarray(pred_boxes).reshape(-1, 4), pred_class_ids, pred_scores, strict=True):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = class_colour(int(class_id))
        _dashed_rectangle(draw, (x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), colour=colour, width=2)
        name = pred_names[int(class_id)] if 0 <= int(class_id) < len(pred_names) else str(int(class_id))
        draw.text((x1 + 2, max(0.0, y2 + 1)), f"{name} {float(score):.2f}", fill=colour, font=font)
    return out


def draw_evaluated(
    image: Image.Image,
    *,
    dataset: Dataset,
    record: ImageRecord,
    detections: Detections | None,
    classes: list[str],
    score_threshold: float,
) -> Image.Image:
    """``draw_comparison`` of one evaluated image: ``record``'s ground truth (solid) and the run's
    ``detections`` scoring at least ``score_threshold`` (dashed). The ground truth is coloured by
    the run's class ids (``classes``), so both styles share one colour per class; a dataset class
    the run does not know is drawn as ``other``."""
    names = (dataset.class_name(int(c)) for c in record.class_ids)
    gt_ids = [classes.index(n) if n in classes else len(classes) for n in names]
    det = detections if detections is not None else Detections()
    kept = det[det.scores >= score_threshold]
    return draw_comparison(
        image,
        gt_boxes=record.boxes,
        gt_class_ids=gt_ids,
        gt_names=[*classes, "other"],
        pred_boxes=kept.boxes,
        pred_class_ids=kept.class_ids,
        pred_scores=kept.scores,
        pred_names=classes,
    )
