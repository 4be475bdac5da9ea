"""Small faces: the face-then-classify pipeline with its face detector on enlarged images or on tiles.

Not a test. Many faces of the shared face-mask set are under 20 px. For one finished
``face-then-classify`` run, on its own validation images, side by side in one process, each way
of running the face detector (the classifier, box correction and scores unchanged):

    .venv/bin/python benchmarks/small_faces.py --model RUN [--limit N] [--json PATH]

- ``xU``: the whole image enlarged ``U`` times (``upscale``; the recipe's setting is x2);
- ``tiles xU``: SAHI's slicing: the whole image at x1, plus a 2 x 2 grid of tiles overlapping by a
  quarter, each enlarged ``U``; the boxes of all of them merged by NMS (IoU 0.5), so a face cut by
  a tile edge is kept whole from the other pass.

Per setting: pycocotools' AP, AP50 and APs (COCO "small": under 32 x 32 px) of the whole
pipeline, the recall at IoU 0.5 of the faces under 20 px (class-agnostic), and the CPU latency per
image (median of ``predict`` on each image, after a warm-up), so that the best setting within
the latency target (0.15 s per image) can be read off.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LATENCY_TARGET = 0.15  # seconds per image, issue 20's target for the default CPU recipe
SMALL = 20  # px: "small faces" here (a side under 20 px)


def tiled(detect_at: Callable[[float], Callable], upscale: float, *, overlap: float = 0.25) -> Callable:
    """A detector that runs ``detect_at(1)`` on the whole image and ``detect_at(upscale)`` on a
    2 x 2 grid of overlapping tiles, merging every box by NMS."""
    import torch
    from torchvision.ops import nms

    whole, part = detect_at(1.0), detect_at(upscale)

    def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        th, tw = int(h * (1 + overlap) / 2), int(w * (1 + overlap) / 2)
        b, s = whole(rgb)
        boxes, scores = [b], [s]
        for y in (0, h - th):
            for x in (0, w - tw):
                b, s = part(np.ascontiguousarray(rgb[y : y + th, x : x + tw]))
                boxes.append(b + np.array([x, y, x, y], dtype=np.float64))
                scores.append(s)
        b, s = np.concatenate(boxes).reshape(-1, 4), np.concatenate(scores)
        if not len(b):
            return b, s
        keep = nms(torch.from_numpy(b), torch.from_numpy(s), 0.5).numpy()
        return b[keep], s[keep]

    return detect


def small_recall(records, detections) -> tuple[float, int]:
    """Share of the ground-truth faces with both sides under ``SMALL`` px that some detection
    overlaps at IoU >= 0.5 (any class), and how many such faces there are."""
    from workbench.boxes import iou

    found = total = 0
    for record, det in zip(records, detections, strict=True):
        gt = record.boxes[
            (record.boxes[:, 2] - record.boxes[:, 0] < SMALL) & (record.boxes[:, 3] - record.boxes[:, 1] < SMALL)
        ]
        total += len(gt)
        if len(gt) and len(det):
            found += int((iou(gt, det.boxes[det.scores >= 0.25]).max(axis=1, initial=0) >= 0.5).sum())
    return (found / total if total else 0.0), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="latest", help="a finished face-then-classify run")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "andrewmvd-voc"))
    parser.add_argument("--limit", type=int, help="the first N validation images only")
    parser.add_argument("--json", type=Path, help="also write the figures there")
    args = parser.parse_args()

    import torch

    from workbench.evaluation.evaluate import compute_report, select_records
    from workbench.fileio import load_image
    from workbench.formats import load_dataset
    from workbench.inference.predict import load_predictor
    from workbench.training import retinaface as rf

    predictor = load_predictor(args.model, device="cpu")
    if predictor.card.get("engine") != "two-stage" or predictor.tuned_detector is None:
        print(f"{args.model}: not a face-then-classify run with a fine-tuned detector", file=sys.stderr)
        return 2
    dataset = load_dataset(args.data, strict=False)
    records, how = select_records(dataset, split="val", run_dir=predictor.run_dir)
    records = records[: args.limit] if args.limit else records
    images = [load_image(Path(dataset.root) / r.path) for r in records]
    threshold = float(predictor.config.get("face_threshold", 0.3))

    def detect_at(upscale: float) -> Callable:
        return rf.face_detector(predictor.tuned_detector, upscale=upscale, threshold=threshold)

    settings = {f"x{u:g}": detect_at(u) for u in (1.0, 1.5, 2.0, 2.5, 3.0)}
    settings.update({f"tiles x{u:g}": tiled(detect_at, u) for u in (1.5, 2.0)})
    print(
        f"run {predictor.run_dir.name}: {how}, {len(records)} images, torch threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    rows = {}
    for name, detect in settings.items():
        predictor.detect = detect
        predictor.predict(images[0])  # warm-up
        detections, seconds = [], []
        for image in images:
            start = time.perf_counter()
            detections.append(predictor.predict(image, score_threshold=0.001))
            seconds.append(time.perf_counter() - start)
        report = compute_report(dataset, records, detections, predictor.classes)
        recall, small = small_recall(records, detections)
        rows[name] = {
            "AP": round(report.metrics["AP"], 4),
            "AP50": round(report.metrics["AP50"], 4),
            "APs": round(report.metrics["APs"], 4),
            f"recall<{SMALL}px": round(recall, 4),
            "latency": round(statistics.median(seconds), 4),
        }
        print(f"{name:10s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
    within = {k: v for k, v in rows.items() if v["latency"] <= LATENCY_TARGET}
    best = max(within or rows, key=lambda k: rows[k]["AP"])
    print(f"\n{small} faces under {SMALL} px. Best AP within {LATENCY_TARGET} s per image: {best}")
    if args.json:
        report = {
            "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "run": predictor.run_dir.name,
            "images": len(records),
            "small_faces": small,
            "load": round(os.getloadavg()[0], 2),
            "settings": rows,
            "best_within_latency": best,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
