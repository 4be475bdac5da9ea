"""The ``predict``, ``eval`` and ``errors`` sub-commands (registered by ``workbench.cli.build_parser``).

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.training.predictor import Predictor


def _progress(enabled: bool):
    from workbench.cli.main import progress_bars

    return progress_bars(enabled)


def _fiftyone_logs_to_stderr() -> None:
    """FiftyOne logs its progress to stdout (its handlers are added on import); keep stdout for
    our own output (``--json`` must print one JSON object and nothing else)."""
    from workbench.evaluation.fiftyone_app import fiftyone

    fiftyone()
    for name, item in list(logging.root.manager.loggerDict.items()):
        if not name.startswith(("fiftyone", "eta")) or not isinstance(item, logging.Logger):
            continue
        for handler in item.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is not sys.stderr:
                handler.setStream(sys.stderr)


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------- predict


def image_files(inputs: list[str]) -> list[tuple[Path, str]]:
    """``(path, shown name)`` of every image given: files as they are, folders searched recursively."""
    from workbench.fileio import IMAGE_EXTENSIONS, is_image, iter_files, relpath

    found: list[tuple[Path, str]] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(iter_files(path, tuple(IMAGE_EXTENSIONS)))
            if not files:
                raise WorkbenchError(f"{path}: no image in this folder")
            found += [(f, relpath(f, path)) for f in files]
        elif path.is_file():
            if not is_image(path):
                raise WorkbenchError(f"{path}: not an image file")
            found.append((path, path.name))
        else:
            raise WorkbenchError(f"{path}: no such file or folder")
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    from workbench.annotations import detections_to_json
    from workbench.fileio import load_image
    from workbench.inference.predict import load_predictor
    from workbench.inference.video import is_video

    videos = [Path(text) for text in args.inputs if Path(text).is_file() and is_video(text)]
    if videos and not args.out:
        raise WorkbenchError(f"{videos[0]}: a video needs --out DIR (the annotated video and its detections go there)")
    if args.video_step < 1:
        raise WorkbenchError(f"--video-step {args.video_step}: the model runs on every N-th frame, N >= 1")
    files = image_files([text for text in args.inputs if Path(text) not in videos])
    predictor = load_predictor(args.model, device=args.device)
    out_dir = Path(args.out) if args.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    coco_images: list[dict[str, Any]] = []
    coco_results: list[dict[str, Any]] = []
    used_names: set[str] = set()
    with _progress(not args.json) as update:
        for n, (path, shown) in enumerate(files):
            image = load_image(path, str(path))
            det = predictor.predict(image, score_threshold=args.score, iou_threshold=args.iou)
            height, width = image.shape[:2]
            results.append(
                {
                    "path": str(path),
                    "width": width,
                    "height": height,
                    "detections": detections_to_json(det, predictor.classes),
                }
            )
            if out_dir:
                from PIL import Image

                from workbench.drawing import draw_boxes

                name = _unique_name(shown.replace("/", "__"), used_names)
                drawn = draw_boxes(Image.fromarray(image), det.boxes, det.class_ids, predictor.classes)
                drawn.save(out_dir / (Path(name).stem + ".jpg"), quality=90)
                coco_images.append({"id": n, "file_name": str(path), "width": width, "height": height})
                for (x1, y1, x2, y2), s, c in zip(det.boxes, det.scores, det.class_ids, strict=True):
                    coco_results.append(
                        {
                            "image_id": n,
                            "category_id": int(c) + 1,
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                            "score": float(s),
                        }
                    )
            if update:
                update("predict", n + 1, len(files))
        video_names: set[str] = set()  # two clip.mp4 of different folders: clip_detections, clip-2_detections
        annotated = [
            predict_video(predictor, path, out_dir, args=args, used=video_names, update=update) for path in videos
        ]
    if out_dir and files:
        from workbench.fileio import atomic_write

        categories = [{"id": i + 1, "name": name} for i, name in enumerate(predictor.classes)]
        atomic_write(out_dir / "coco_results.json", json.dumps(coco_results))
        # the image ids and category ids the results refer to (a COCO file without annotations)
        atomic_write(out_dir / "coco_images.json", json.dumps({"images": coco_images, "categories": categories}))
    if args.json:
        summary = {"model": predictor.run_dir.name, "classes": predictor.classes, "images": results}
        print(json.dumps({**summary, "videos": annotated} if videos else summary, indent=2))
        return 0
    for item in results:
        dets = item["detections"]
        print(f"{item['path']}: {len(dets)} detection(s)")
        for d in dets:
            print(f"  {d['class']:24s} {d['score']:.3f}  [{', '.join(f'{v:.1f}' for v in d['box'])}]")
    if out_dir and files:
        print(f"wrote {len(results)} annotated image(s), coco_results.json and coco_images.json to {out_dir}")
    for item in annotated:
        print(
            f"{item['path']}: {item['frames']} frame(s), model run on {item['predicted_frames']}, "
            f"{item['detections']} detection(s), {item['seconds']:.1f} s; "
            f"wrote {item['video']} ({item['codec']}) and {item['detections_path']}"
        )
    return 0


def predict_video(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    *,
    args: argparse.Namespace,
    used: set[str],
    update: Callable[[str, int, int | None], None] | None,
) -> dict[str, Any]:
    """Annotate the video ``path`` into ``out_dir`` as ``<stem>_detections.webm`` with
    ``<stem>_detections.jsonl`` beside it (one line per frame); returns what was written."""
    from workbench.inference.video import annotate_video

    stem = Path(_unique_name(path.name, used)).stem + "_detections"
    result = annotate_video(
        predictor,
        path,
        out_dir / stem,
        score_threshold=args.score,
        iou_threshold=args.iou,
        frame_step=args.video_step,
        detections_path=out_dir / f"{stem}.jsonl",
        on_frame=(lambda done, total: update(path.name, done, total)) if update else None,
    )
    return {
        "path": str(path),
        "video": str(result.path),
        "detections_path": str(result.detections_path),
        "codec": result.fourcc,
        "frames": result.frames,
        "predicted_frames": result.predicted,
        "detections": result.detections,
        "seconds": round(result.seconds, 3),
    }


def _unique_name(name: str, used: set[str]) -> str:
    stem, n = Path(name).stem, 1
    candidate = stem
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate + Path(name).suffix


# --------------------------------------------------------------------------- eval


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.evaluation.evaluate import evaluate_run

    with _progress(not args.json) as update:
        ev = evaluate_run(
            args.model,
            args.data,
            fmt=args.src_format,
            split=args.split,
            score_threshold=args.score,
            batch=args.batch,
            device=args.device,
            on_progress=(lambda done, total: update("predict", done, total)) if update else None,
        )
    report = ev.report
    if args.json:
        print(json.dumps(report.summary(), indent=2))
        return 0
    print(f"run {report.run} on {report.dataset} ({report.split}, {len(report.images)} images)")
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


# --------------------------------------------------------------------------- errors


def cmd_errors(args: argparse.Namespace) -> int:
    from workbench.evaluation import fiftyone_app as fa

    _fiftyone_logs_to_stderr()
    with _progress(not args.json) as update:
        errors = fa.prepare_errors(
            args.model,
            args.data,
            fmt=args.src_format,
            split=args.split,
            score_threshold=args.score,
            device=args.device,
            on_progress=(lambda done, total: update("predict", done, total)) if update else None,
        )
    summary = {
        "fiftyone_dataset": errors.dataset.name,
        **errors.summary,
        "views": {name: len(errors.dataset.load_saved_view(name)) for name in errors.views},
    }
    if args.no_launch:
        if args.json:
            print(json.dumps(summary, indent=2))
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
    print(f"FiftyOne dataset {summary['fiftyone_dataset']}, evaluation key {summary['eval_key']}")
    print(f"  {summary['samples']} evaluated samples: {summary['tp']} TP, {summary['fp']} FP, {summary['fn']} FN")
    for name, state in summary["brain"].items():
        print(f"  brain {name}: {state}")
    print("saved views (samples):")
    for name, count in summary["views"].items():
        print(f"  {name:18s} {count}")
    sys.stdout.flush()


# --------------------------------------------------------------------------- registration


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``, ``eval`` and ``errors`` on the ``workbench`` parser's sub-parsers."""
    from workbench.formats import FORMATS

    formats = sorted(FORMATS)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="latest", help="run name, run folder or 'latest' (default)")
        p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")

    def data(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", required=True, help="dataset folder")
        p.add_argument("--from", dest="src_format", choices=formats, help="dataset format (default: detected)")
        p.add_argument(
            "--split", help="images to evaluate: a split name, or 'all' (default: the run's validation images)"
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
    p.add_argument("--json", action="store_true", help="print one JSON object (with the App's url)")
    p.set_defaults(func=cmd_errors)
