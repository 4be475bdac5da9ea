"""``workbench demo``: serve the Gradio demo of a trained model in this process.

    workbench demo [--model RUN|latest] [--port N] [--share] [--auth USER:PASS]

``workbench.demo.server`` does the serving; the Demo page starts this command in the background.
"""

from __future__ import annotations

import argparse

from workbench.demo.server import AUTH_ENV, DEFAULT_PORT, serve


def cmd_demo(args: argparse.Namespace) -> int:
    serve(
        model=args.model,
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
    p.add_argument("--model", default="latest", metavar="RUN", help="run name, run folder or 'latest' (default)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--share", action="store_true", help="ask Gradio for a public link (keeps serving locally if none)")
    p.add_argument(
        "--auth", metavar="USER:PASS", help=f"require this login (or set {AUTH_ENV}, which `ps` does not show)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--concurrency", type=int, default=2, help="requests of one kind run at once (default 2)")
    p.set_defaults(func=cmd_demo)
