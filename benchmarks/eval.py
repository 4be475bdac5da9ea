"""Evaluation overhead, measured side by side in one run: predicting vs COCO metrics vs FiftyOne.

    FIFTYONE_DO_NOT_TRACK=true .venv/bin/python benchmarks/eval.py [--model latest] [--split val|all] [--limit N]

On the shared VOC set (``../shared/datasets/andrewmvd-voc``, only read):

1. loads run ``--model`` (default ``latest``; a run name or folder) and picks the images
   (``--split``: ``val``, the run's own validation images when it was trained on this set, else
   the workbench's validation split; ``all``: every image; ``--limit`` keeps the first N);
2. times, in this order and in one process:

   * ``predict``: the model on every image (``inference.images.predict_records``, score >= 0.001,
     100 detections per image: what ``workbench eval`` runs; the model is loaded and warmed
     up on one image first, outside the timing);
   * ``coco``: pycocotools AP/AR, per-class AP, PR curves, the confusion matrix
     (``evaluation.evaluate.compute_report``);
   * ``fiftyone``: building the FiftyOne dataset (``refresh``), loading the predictions,
     ``evaluate_detections`` twice (classwise and not), fiftyone-brain mistakenness and the
     saved views (``fiftyone_app.evaluate``). The mongod start-up is timed apart and left out;

3. prints seconds per step and the overhead ``(coco + fiftyone) / predict``.

FiftyOne runs on a database in a temporary folder (removed at the end; its mongod stops with
this process), so the benchmark never touches ``~/.fiftyone``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_VOC = REPO.parent / "shared" / "datasets" / "andrewmvd-voc"
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="latest", help="run name, folder or 'latest'")
    parser.add_argument("--data", default=str(SHARED_VOC), help="dataset folder (default: the shared VOC set)")
    parser.add_argument("--split", default="val", help="val (default) or all")
    parser.add_argument("--limit", type=int, default=None, help="evaluate at most N images")
    parser.add_argument("--score", type=float, default=0.25, help="score threshold of the FiftyOne predictions")
    args = parser.parse_args()

    db = Path(tempfile.mkdtemp(prefix="wb-bench-fiftyone-"))
    os.environ["FIFTYONE_DATABASE_DIR"] = str(db / "db")
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        return run(args)
    finally:
        try:
            import fiftyone.core.odm.database as fodb

            fodb._disconnect()
            if fodb._db_service is not None:
                fodb._db_service.stop()
        except ImportError:
            pass
        shutil.rmtree(db, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from workbench.evaluation import fiftyone_app as fa
    from workbench.evaluation.evaluate import compute_report, select_records
    from workbench.fileio import load_image
    from workbench.formats import load_dataset
    from workbench.inference.images import predict_records
    from workbench.inference.predict import load_predictor

    predictor = load_predictor(args.model, device="cpu")
    dataset = load_dataset(args.data, strict=False)
    records, how = select_records(dataset, split=args.split, run_dir=predictor.run_dir)
    if args.limit:
        records = records[: args.limit]
    boxes = sum(len(r) for r in records)
    print(f"model {predictor.run_dir.name} ({predictor.card.get('model')}, imgsz {predictor.model.transform.max_size})")
    print(f"data  {dataset.root}: {how}, {len(records)} images, {boxes} boxes")
    print(
        f"host  {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} threads {torch.get_num_threads()}"
    )
    predictor.predict(load_image(Path(dataset.root) / records[0].path))  # warm-up, not timed

    t0 = time.perf_counter()
    detections = predict_records(predictor, dataset.root, records)
    t_predict = time.perf_counter() - t0

    t0 = time.perf_counter()
    report = compute_report(dataset, records, detections, predictor.classes, score_threshold=args.score)
    t_coco = time.perf_counter() - t0

    t0 = time.perf_counter()
    fo = fa.fiftyone()
    fo.list_datasets()  # starts mongod in the temporary folder
    t_db = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds = fa.refresh(dataset, name="workbench-benchmark")
    t_build = time.perf_counter() - t0
    built = len(ds)  # every image of the dataset, as `workbench errors` builds it
    t0 = time.perf_counter()
    kept = [d[d.scores >= args.score] for d in detections]
    fa.load_predictions(ds, dataset, records, kept, predictor.classes, run=predictor.run_dir.name)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = fa.evaluate(ds, predictor.run_dir.name)
    t_eval = time.perf_counter() - t0
    ds.delete()

    t_fiftyone = t_build + t_load + t_eval
    n = len(records)
    print()
    print(f"{'step':44s} {'seconds':>9s} {'ms/image':>9s} {'x predict':>10s}")
    rows = [
        ("predict (the model)", t_predict),
        ("COCO metrics + confusion (pycocotools)", t_coco),
        (f"FiftyOne: build the dataset ({built} samples)", t_build),
        ("FiftyOne: load predictions", t_load),
        ("FiftyOne: evaluate x2 + brain + views", t_eval),
        ("FiftyOne total", t_fiftyone),
        ("overhead: COCO + FiftyOne", t_coco + t_fiftyone),
    ]
    for name, seconds in rows:
        print(f"{name:44s} {seconds:9.2f} {1000 * seconds / n:9.1f} {seconds / t_predict:10.3f}")
    print(f"{'(mongod start-up, left out)':44s} {t_db:9.2f}")
    print("(ms/image: per evaluated image)")
    print()
    print(f"AP {report.metrics['AP']:.4f}  AP50 {report.metrics['AP50']:.4f}  (pycocotools, {n} images)")
    print(
        f"FiftyOne {summary['eval_key']}: {summary['tp']} TP, {summary['fp']} FP, {summary['fn']} FN; brain {summary['brain']}"
    )
    print(f"evaluation overhead / prediction time = {(t_coco + t_fiftyone) / t_predict:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
