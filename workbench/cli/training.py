"""The training sub-commands of ``workbench``: ``train``, ``jobs``, ``logs``, ``cancel``.

``add_commands(sub)`` registers them on the main parser (``workbench/cli/main.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from workbench.errors import WorkbenchError
from workbench.formats import FORMATS
from workbench.training import jobs
from workbench.training.config import build_config
from workbench.training.engines import DEFAULT_ENGINE, ENGINES
from workbench.training.executors import DEFAULT_EXECUTOR, EXECUTORS
from workbench.training.recipes import BEST, RECIPES
from workbench.training.registry import read_json


def _progress_line(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if not p:
        return job["state"]
    text = (
        f"{job['state']} epoch {p.get('epoch')}/{p.get('epochs')} iter {p.get('iteration')}/{p.get('iters_per_epoch')}"
    )
    if p.get("loss") is not None:
        text += f" loss {p['loss']:.4f}"
    if p.get("AP") is not None:
        text += f" AP {p['AP']:.4f} AP50 {p.get('AP50', 0):.4f}"
    return text + f" ETA {jobs.eta_text(p.get('eta_seconds'))}"


# the ``train`` flags that are ``TrainConfig`` fields of the same name (``None``: not given)
OPTIONS = (
    "engine model weights freeze_backbone detector gamma background epochs imgsz batch workers lr max_iters max_val_images "
    "seed rotation clip_grad time upscale face_threshold detector_time val_fraction gpus"
).split()


# the ``train`` flags that are executor options (``None``: not given; each executor keeps its own)
EXECUTOR_OPTIONS = {"ray_address": "address", "partition": "partition", "nodes": "nodes", "slurm_time": "time"}


def cmd_train(args: argparse.Namespace) -> int:
    where = {"executor": args.executor}
    where["executor_options"] = {name: getattr(args, flag) for flag, name in EXECUTOR_OPTIONS.items()}
    if args.resume:
        changes = {key: getattr(args, key) for key in ("epochs", "batch", "device", "workers", "max_iters", "gpus")}
        run = jobs.resume_job(args.resume, time=args.time, max_jobs=args.max_jobs, **where, **changes)
        print(f"resuming {run}")
    else:
        if not args.data:
            raise WorkbenchError("--data DATASET is required (or --resume RUN)")
        overrides = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
        overrides["data"] = args.data
        if args.src_format:
            overrides["format"] = args.src_format
        config = build_config(args.recipe, args.device, overrides)
        where["executor_options"] = {k: v for k, v in where["executor_options"].items() if v is not None}
        run = jobs.start_job(config, run=args.name, max_jobs=args.max_jobs, **where)
        print(f"started {run}")
    job = jobs.get_job(run)
    if job["executor"] != "local":
        print(f"  on:      {job['executor']} job {job['engine_id']} {job['executor_options']}")
    print(f"  log:     {job['folder']}/train.log   (workbench logs {run})")
    if not args.wait:
        print(f"  follow:  workbench jobs    stop: workbench cancel {run}")
        return 0
    return _wait_and_report(run)


def _wait_and_report(run: str) -> int:
    """Follow ``run`` on stderr until it ends; print its state and best metrics; 0 when it finished."""
    last = [""]

    def show(j: dict[str, Any]) -> None:
        line = _progress_line(j)
        if line != last[0]:
            print(f"  {line}", file=sys.stderr, flush=True)
            last[0] = line

    try:
        state = jobs.wait_job(run, poll=1.0, on_progress=show)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; {run} keeps training (workbench cancel {run} stops it)", file=sys.stderr)
        return 130
    job = jobs.get_job(run)
    print(f"{run}: {state}" + (f" ({job['message']})" if job.get("message") and state != "finished" else ""))
    card = read_json(f"{job['folder']}/model_card.json") if state == "finished" else None
    if card:
        best = card.get("best_metrics") or {}
        print(f"  best val AP {best.get('AP', 0):.4f} AP50 {best.get('AP50', 0):.4f} (epoch {best.get('epoch')})")
        print(f"  model card: {job['folder']}/MODEL_CARD.md")
    return 0 if state == "finished" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    rows = jobs.list_jobs()
    if args.json:
        for j in rows:
            j["config"] = dict(j["config"])
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no jobs yet (workbench train --data DATASET)")
        return 0
    print(f"{'RUN':40s} {'STATE':12s} {'MODEL':28s} {'EPOCH':>7s} {'AP':>7s} {'AP50':>7s} {'ETA':>8s}  STARTED")
    for j in rows:
        p, m = j["progress"], j["metrics"]
        epoch = f"{p.get('epoch', '-')}/{p.get('epochs', j['config'].get('epochs'))}"
        started = time.strftime("%m-%d %H:%M", time.localtime(j["started"] or j["created"]))
        eta = jobs.eta_text(p.get("eta_seconds")) if j["state"] == "running" else ""
        ap = f"{m['AP']:.4f}" if "AP" in m else "-"
        ap50 = f"{m['AP50']:.4f}" if "AP50" in m else "-"
        print(
            f"{j['run']:40s} {j['state']:12s} {j['config'].get('model', ''):28s} {epoch:>7s} {ap:>7s} {ap50:>7s} {eta:>8s}  {started}"
        )
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    text = jobs.job_log(args.run)
    lines = text.splitlines()
    print("\n".join(lines[-args.tail :] if args.tail else lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    before = jobs.get_job(args.run)["state"]
    if before not in jobs.ACTIVE:
        print(f"{args.run}: not running ({before})", file=sys.stderr)
        return 1
    state = jobs.cancel_job(args.run, timeout=args.timeout)
    print(f"{args.run}: {state}")
    return 0 if state == "cancelled" else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``jobs`` and ``cancel`` on the ``workbench`` sub-parser."""
    p = sub.add_parser("train", help="train a detector in a background job")
    p.add_argument("--data", help="dataset folder (any format) or an Ultralytics data.yaml (its splits are used)")
    p.add_argument("--from", dest="src_format", choices=sorted(FORMATS), help="dataset format (default: detected)")
    p.add_argument(
        "--recipe",
        help=f"start from a named preset (explicit flags override it): {', '.join(RECIPES)}, or best "
        f"({BEST['cpu']} on a CPU, {BEST['gpu']} on a GPU); GPU settings when --device is cuda",
    )
    engines = "; ".join(f"{e.name}: {e.summary}" for e in ENGINES.values())
    p.add_argument("--engine", choices=list(ENGINES), help=f"default {DEFAULT_ENGINE}. {engines}")
    p.add_argument(
        "--model",
        help="model name (default: fasterrcnn_resnet50_fpn_v2 on CUDA, fasterrcnn_mobilenet(_v2) on the CPU); "
        "torchvision: fasterrcnn_mobilenet_v2, fasterrcnn_mobilenet, fasterrcnn_resnet50_fpn_v2, "
        "retinanet_resnet50_fpn_v2, ssdlite320_mobilenet_v3_large, fcos_resnet50_fpn, fasterrcnn_resnet50_c4, "
        "ssd_mobilenet_v2_fpnlite, retinanet_mobilenet_v2_fpn; detectron2: a model-zoo "
        "config such as COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    )
    p.add_argument(
        "--weights",
        metavar="auto|coco|imagenet|none|PATH",
        help="starting weights (default auto), or a local file: a torchvision state dict (detector or backbone) "
        "or a detectron2 checkpoint; see docs/weights.md",
    )
    p.add_argument(
        "--freeze-backbone",
        action=argparse.BooleanOptionalAction,
        help="do not train the backbone network (the FPN and heads still train)",
    )
    p.add_argument("--epochs", type=int, help="epochs (default 12)")
    p.add_argument("--imgsz", type=int, help="longest image side in pixels (default: the model's)")
    p.add_argument("--batch", type=int, help="images per step and process (default 4)")
    p.add_argument("--device", help="auto, cpu or cuda (default auto)")
    p.add_argument("--gpus", type=int, help="GPUs (DDP processes through torchrun) on each node (default 1)")
    p.add_argument("--workers", type=int, help="data-loader processes (default 2)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.02 * batch / 8)")
    p.add_argument("--val-fraction", type=float, help="validation share when the dataset has no splits (0.2)")
    p.add_argument("--seed", type=int, help="split and shuffle seed (default 0)")
    p.add_argument("--clip-grad", type=float, help="clip the gradient norm to this (default 0: off)")
    p.add_argument("--rotation", type=float, help="random rotation augmentation, degrees (default 0: off)")
    p.add_argument(
        "--time",
        type=float,
        metavar="MINUTES",
        help="finish within this many minutes, validation included (epochs stay the upper bound; 0: no limit)",
    )
    faces = p.add_argument_group("two-stage (face-then-classify) options")
    faces.add_argument("--detector", choices=["retinaface", "mtcnn"], help="the face detector (default retinaface)")
    faces.add_argument(
        "--upscale", type=float, help="enlarge images this much before finding faces (default 2; the recipe: 3)"
    )
    faces.add_argument(
        "--face-threshold", type=float, help="the face detector's score cut (default 0.3; the recipe: 0.1)"
    )
    faces.add_argument(
        "--detector-time",
        type=float,
        metavar="MINUTES",
        help="fine-tune retinaface on the training faces first, this many minutes of --time (0: off)",
    )
    faces.add_argument(
        "--gamma", action=argparse.BooleanOptionalAction, help="brighten dark face crops before classifying them"
    )
    faces.add_argument(
        "--background",
        action=argparse.BooleanOptionalAction,
        help="teach the classifier 'not a face' from the detector's false faces (default on)",
    )
    p.add_argument("--max-iters", type=int, help="at most this many iterations per epoch (tiny runs)")
    p.add_argument("--max-val-images", type=int, help="validate on at most this many images (tiny runs)")
    p.add_argument("--name", help="run name (default <recipe or model>-<date>-<time>)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends; exit 0 when it finished")
    p.add_argument(
        "--max-jobs",
        type=int,
        metavar="N",
        help=f"start only while fewer than N jobs run (default ${jobs.MAX_JOBS_ENV}, else one per GPU, "
        "one without GPUs); jobs start in the order queued",
    )
    runs = p.add_argument_group("where the job runs (docs/scale.md)")
    executors = "; ".join(f"{name}: {summary}" for name, (_, summary) in EXECUTORS.items())
    runs.add_argument("--executor", choices=list(EXECUTORS), help=f"default {DEFAULT_EXECUTOR}. {executors}")
    runs.add_argument(
        "--ray-address", metavar="ADDRESS", help="the Ray cluster (default $WORKBENCH_RAY_ADDRESS, else $RAY_ADDRESS)"
    )
    runs.add_argument("--partition", help="the Slurm partition")
    runs.add_argument("--nodes", type=int, help="nodes of one DDP group, --gpus processes on each (ray, slurm)")
    runs.add_argument("--slurm-time", type=int, metavar="MINUTES", help="the Slurm job's time limit")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("logs", help="print a training job's log (and its cluster's log of it)")
    p.add_argument("run", help="run name")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("jobs", help="list training jobs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("cancel", help="stop a training job (it can be resumed)")
    p.add_argument("run", help="run name")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before SIGKILL (default 60)")
    p.set_defaults(func=cmd_cancel)
