"""The ``predict``, ``eval`` and ``errors`` sub-commands (registered by ``workbench.cli.main.build_parser``).

    workbench predict --model latest photo.jpg folder/ clip.mp4 [--json] [--out DIR] [--video-step N]
    workbench eval    --model latest --data datasets/facemask-sample [--split val|all|NAME] [--json]
    workbench errors  --model latest --data datasets/facemask-sample [--port 5151]

Each is ``cmd_<name>(args) -> int``; a ``WorkbenchError`` is reported by ``workbench.cli.main``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from typing import Any

from workbench.cli.common import print_json, progress_bars, stage
from workbench.evaluation import fiftyone_app as fa
from workbench.evaluation import fiftyone_db
from workbench.evaluation.evaluate import evaluate_run
from workbench.formats import FORMATS
from workbench.inference.images import predict_inputs


def _fiftyone_logs_to_stderr() -> None:
    """FiftyOne logs its progress to stdout (its handlers are added on import); keep stdout for
    our own output (``--json`` must print one JSON object and nothing else)."""
    fa.fiftyone()
    for name, item in list(logging.root.manager.loggerDict.items()):
        if not name.startswith(("fiftyone", "eta")) or not isinstance(item, logging.Logger):
            continue
        for handler in item.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
                if getattr(handler.stream, "closed", False):  # an earlier run's stderr, since closed:
                    handler.stream = sys.stderr  # setStream would flush it and raise
                else:
                    handler.setStream(sys.stderr)


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


def cmd_predict(args: argparse.Namespace) -> int:
    with progress_bars(not args.json) as update:
        result = predict_inputs(
            args.inputs,
            model=args.model,
            device=args.device,
            score_threshold=args.score,
            iou_threshold=args.iou,
            out_dir=args.out,
            video_step=args.video_step,
            on_progress=update,
        )
    if args.json:
        print_json(result.to_json())
        return 0
    for item in result.images:
        dets = item["detections"]
        print(f"{item['path']}: {len(dets)} detection(s)")
        for d in dets:
            print(f"  {d['class']:24s} {d['score']:.3f}  [{', '.join(f'{v:.1f}' for v in d['box'])}]")
    if result.out_dir and result.images:
        print(
            f"wrote {len(result.images)} annotated image(s), coco_results.json and coco_images.json to {result.out_dir}"
        )
    for item in result.videos:
        print(
            f"{item['path']}: {item['frames']} frame(s), model run on {item['predicted_frames']}, "
            f"{item['detections']} detection(s), {item['seconds']:.1f} s; "
            f"wrote {item['video']} ({item['codec']}) and {item['detections_path']}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    with progress_bars(not args.json) as update:
        ev = evaluate_run(
            args.model,
            args.data,
            fmt=args.src_format,
            split=args.split,
            score_threshold=args.score,
            batch=args.batch,
            device=args.device,
            on_progress=stage(update, "predict"),
        )
    report = ev.report
    if args.json:
        print_json(report.summary())
        return 0
    print(f"run {report.run}: scored {report.scored()}")
    print("COCO metrics (pycocotools):")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
        print(f"  {key:6s} {_fmt(report.metrics.get(key))}")
    print(f"  {'class':30s} {'AP':>7s} {'AP50':>7s} {'boxes':>6s}")
    for name, v in report.per_class.items():
        print(f"  {name:30s} {_fmt(v['AP']):>7s} {_fmt(v['AP50']):>7s} {v['gt']:6d}")
    conf = report.confusion
    print(
        f"confusion (rows ground truth, columns predicted; IoU {conf['iou']:g}, score >= {conf['score_threshold']:g}):"
    )
    width = max(len(n) for n in conf["classes"]) + 1
    print(" " * (width + 2) + "".join(f"{n[:10]:>11s}" for n in conf["classes"]))
    for name, row in zip(conf["classes"], conf["matrix"], strict=True):
        print(f"  {name:{width}s}" + "".join(f"{v:11d}" for v in row))
    print(f"saved metrics.json, detections.json and plots to {report.out_dir}")
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    fiftyone_db.configure(uri=args.database_uri, path_map=args.path_map)  # before FiftyOne is imported
    _fiftyone_logs_to_stderr()
    with progress_bars(not args.json) as update:
        errors = fa.prepare_errors(
            args.model,
            args.data,
            fmt=args.src_format,
            split=args.split,
            score_threshold=args.score,
            device=args.device,
            on_progress=stage(update, "predict"),
        )
    summary = errors.to_json()
    if args.no_launch:
        if args.json:
            print_json(summary)
        else:
            _print_errors(summary)
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # FiftyOne prints its own launch message
        session = fa.launch(errors.dataset, address=args.address, port=args.port)
    summary["url"] = fa.view_url(session, errors.dataset)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        _print_errors(summary)
        print(f"\nFiftyOne App: {summary['url']}  (Ctrl-C to stop)", flush=True)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
    return 0


def _print_errors(summary: dict[str, Any]) -> None:
    print(f"FiftyOne dataset {summary['fiftyone_dataset']} ({summary['database']} database), key {summary['eval_key']}")
    print(f"  {summary['samples']} evaluated samples: {summary['tp']} TP, {summary['fp']} FP, {summary['fn']} FN")
    for name, state in summary["brain"].items():
        print(f"  brain {name}: {state}")
    print("saved views (samples):")
    for name, count in summary["views"].items():
        print(f"  {name:18s} {count}")
    sys.stdout.flush()


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``, ``eval`` and ``errors`` on the ``workbench`` parser's sub-parsers."""
    formats = sorted(FORMATS)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="latest", help="run name, run folder or 'latest' (default)")
        p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")

    def data(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="dataset folder")
        p.add_argument("--from", dest="src_format", choices=formats, help="dataset format (default: detected)")
        p.add_argument(
            "--split",
            help="images to evaluate: a split name, 'val' or 'all' (default: the run's validation images "
            "on the dataset it trained on, every image of any other dataset)",
        )
        p.add_argument(
            "--score", type=float, default=0.25, help="score threshold of the confusion matrix and the views (0.25)"
        )

    p = sub.add_parser("predict", help="run a trained model on images and videos")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders of images, video files (.mp4 .avi .mov .mkv .webm)",
    )
    common(p)
    p.add_argument("--score", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the detections as one JSON object")
    p.add_argument(
        "--out",
        help="write annotated images, coco_results.json and coco_images.json here; "
        "and for a video (required then) <name>_detections.webm and <name>_detections.jsonl",
    )
    p.add_argument(
        "--video-step", type=int, default=1, metavar="N", help="run the model on every N-th video frame (default 1)"
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="COCO metrics, confusion matrix and PR curves of a run on a dataset")
    common(p)
    data(p)
    p.add_argument("--batch", type=int, default=4, help="images per prediction batch (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("errors", help="error analysis in FiftyOne: evaluate, load, open the App")
    common(p)
    data(p)
    p.add_argument("--address", default="127.0.0.1", help="App address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5151, help="App port (default 5151)")
    p.add_argument(
        "--no-launch", action="store_true", help="build the FiftyOne dataset and views, do not start the App"
    )
    p.add_argument(
        "--database-uri",
        help="MongoDB server for FiftyOne (default: $WORKBENCH_FIFTYONE_URI, $FIFTYONE_DATABASE_URI, else local)",
    )
    p.add_argument(
        "--path-map",
        action="append",
        metavar="LOCAL=SHARED",
        help="store image paths under LOCAL as under SHARED (repeatable; default: $WORKBENCH_PATH_MAP)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (with the App's url)")
    p.set_defaults(func=cmd_errors)
