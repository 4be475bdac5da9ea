"""``workbench demo``: serve the Gradio demo of a trained model in this process.

    workbench demo [--model RUN|latest] [--data DATASET] [--any-classes] [--port N] [--share] [--auth USER:PASS]

Without ``--model`` it serves the latest run trained on ``--data`` (default: the workspace's
current dataset), else ``latest``; a run whose classes differ from the dataset's is refused
unless ``--any-classes`` (``registry.choose_run``). ``workbench.demo.server`` does the serving;
the Demo page starts this command in the background.
"""

from __future__ import annotations

import argparse

from workbench.datasets.catalog import current_dataset
from workbench.demo.server import AUTH_ENV, DEFAULT_PORT, serve
from workbench.training.registry import model_for


def cmd_demo(args: argparse.Namespace) -> int:
    if args.data:
        data, fmt = args.data, None
    else:
        entry = current_dataset()
        data, fmt = (entry.path, entry.format) if entry else (None, None)
    serve(
        model=model_for(data, fmt=fmt, run=args.model, any_classes=args.any_classes),
        host=args.host,
        port=args.port,
        share=args.share,
        auth=args.auth,
        device=args.device,
        concurrency=args.concurrency,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve a Gradio demo of a trained model (image, webcam, video, API)")
    p.add_argument(
        "--model",
        metavar="RUN",
        help="run name, run folder, 'latest' or 'latest:DATASET' (default: the latest run trained on --data, else 'latest')",
    )
    p.add_argument("--data", metavar="DATASET", help="the dataset the model is for (default: the current dataset)")
    p.add_argument("--any-classes", action="store_true", help="serve a model whose classes differ from the dataset's")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (keeps serving locally if none)")
    p.add_argument(
        "--auth", metavar="USER:PASS", help=f"require this login (or set {AUTH_ENV}, which `ps` does not show)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--concurrency", type=int, default=2, help="requests of one kind run at once (default 2)")
    p.set_defaults(func=cmd_demo)
