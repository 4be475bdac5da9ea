"""``workbench ui``: open the Streamlit workbench (``app.py``) in this process."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workbench.paths import PROJECT_ROOT


def streamlit_command(*, address: str, port: int, data: str | None) -> list[str]:
    """The ``python -m streamlit run app.py ...`` command line, headless, bound to ``address:port``;
    ``data`` (a dataset folder) is passed to the app as ``--data``."""
    command = [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py")]
    command += ["--server.address", address, "--server.port", str(port), "--server.headless", "true"]
    if data:
        command += ["--", "--data", str(Path(data).resolve())]
    return command


def cmd_ui(args: argparse.Namespace) -> int:
    command = streamlit_command(address=args.address, port=args.port, data=args.data)
    print(f"workbench on http://{args.address}:{args.port}", file=sys.stderr, flush=True)
    # Become Streamlit (no child left behind when this process is stopped).
    os.execve(sys.executable, command, dict(os.environ, FIFTYONE_DO_NOT_TRACK="true"))
    return 0  # not reached


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="open the Streamlit workbench")
    p.add_argument("--data", help="dataset folder to open (default: the bundled sample)")
    p.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_ui)
