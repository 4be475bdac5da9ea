"""The ``workbench`` command line: every job of the workbench without the UI.

Each sub-command is a plain function ``cmd_<name>(args) -> int`` registered in ``build_parser``.
Exit codes: 0 success, 1 the job failed (bad input, bad files), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from workbench.cli.evaluation import add_commands as add_eval_commands
from workbench.cli.labelling import add_commands as add_labelling_commands
from workbench.cli.training import add_commands as add_training_commands
from workbench.datasets.convert import IMAGE_MODES, convert
from workbench.datasets.health import KINDS, check
from workbench.demo.server import add_commands as add_demo_commands
from workbench.errors import DatasetReadError, WorkbenchError
from workbench.formats import FORMATS, load_dataset
from workbench.paths import PROJECT_ROOT


def _error(message: str) -> None:
    print(f"workbench: error: {message}", file=sys.stderr)


@contextmanager
def progress_bars(enabled: bool):
    """Yield ``on_progress(stage, done, total)`` drawing one tqdm bar per stage on a terminal;
    a no-op when output is not a terminal or ``enabled`` is false."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            # A terminal that reports 0 x 0 (a fresh pty) would get an invisible bar.
            size = shutil.get_terminal_size((100, 24))
            bar = bars[stage] = tqdm(
                total=total, desc=stage, unit="file", leave=False, file=sys.stderr, ncols=size.columns, nrows=size.lines
            )
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def _stage(update: Callable[[str, int, int], None] | None, name: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: update(name, done, total)) if update else None


def cmd_convert(args: argparse.Namespace) -> int:
    with progress_bars(not args.json) as update:
        result = convert(
            args.src,
            args.out,
            args.to,
            src_format=args.src_format,
            images=args.images,
            skip_bad=args.skip_bad,
            on_progress=update,
        )
    summary = {
        "out": str(result.out),
        "format": result.to,
        "images": len(result.dataset.images),
        "boxes": result.dataset.num_boxes,
        "images_written": result.images_written,
        "missing_images": result.missing_images,
        "skipped": [str(e) for e in result.skipped],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {result.to} to {result.out}: {summary['images']} images, {summary['boxes']} boxes")
    if result.skipped:
        print(f"skipped {len(result.skipped)} bad file(s):", file=sys.stderr)
        for e in result.skipped:
            print(f"  {e}", file=sys.stderr)
    if result.missing_images:
        print(f"{len(result.missing_images)} image(s) not found in the source, not copied:", file=sys.stderr)
        for path in result.missing_images[:20]:
            print(f"  {path}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with progress_bars(not args.json) as update:
        dataset = load_dataset(args.src, args.src_format, strict=False, on_progress=_stage(update, "read"))
        report = check(dataset, on_progress=_stage(update, "check"))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(f"{dataset.root} ({dataset.format}): {report.images} images, {report.boxes} boxes")
    if report.splits:
        print("splits: " + ", ".join(f"{k} {v}" for k, v in report.splits.items()))
    print("classes:")
    for name, count in report.classes.items():
        print(f"  {name:30s} {count:6d}")
    print("box sizes (sqrt(w*h) px):")
    peak = max(report.size_histogram.values(), default=0) or 1
    for label, count in report.size_histogram.items():
        print(f"  {label:>8s} {count:6d} {'#' * round(40 * count / peak)}")
    groups = report.by_kind()
    if not groups:
        print("no findings")
    for kind, findings in groups.items():
        print(f"{KINDS.get(kind, kind)} ({kind}): {len(findings)}")
        for f in findings[: args.limit]:
            print(f"  {f.file}: {f.detail}")
        if len(findings) > args.limit:
            print(f"  ... and {len(findings) - args.limit} more (--limit, or --json for all)")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    env = dict(os.environ, FIFTYONE_DO_NOT_TRACK="true")
    command = [
        sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"),
        "--server.address", args.address, "--server.port", str(args.port), "--server.headless", "true",
    ]  # fmt: skip
    if args.data:
        command += ["--", "--data", str(Path(args.data).resolve())]
    print(f"workbench on http://{args.address}:{args.port}", file=sys.stderr)
    sys.stderr.flush()
    # Become Streamlit (no child left behind when this process is stopped).
    os.execve(sys.executable, command, env)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Object-detection workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formats = sorted(FORMATS)

    p = sub.add_parser("convert", help="convert a dataset to another format (any to any)")
    p.add_argument("src", help="dataset folder")
    p.add_argument("--to", required=True, choices=formats, help="output format")
    p.add_argument("--out", required=True, help="output folder (annotations and images)")
    p.add_argument("--from", dest="src_format", choices=formats, help="source format (default: detected)")
    p.add_argument(
        "--images", choices=IMAGE_MODES, default="link", help="hard-link (default), copy, symlink or leave images"
    )
    p.add_argument("--skip-bad", action="store_true", help="convert the good files and list the bad ones")
    p.add_argument("--json", action="store_true", help="print a JSON summary, no progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("check", help="dataset health report")
    p.add_argument("src", help="dataset folder")
    p.add_argument("--from", dest="src_format", choices=formats, help="format (default: detected)")
    p.add_argument("--json", action="store_true", help="print one JSON object, no progress bar")
    p.add_argument("--limit", type=int, default=10, help="findings shown per kind (default 10)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("ui", help="open the Streamlit workbench")
    p.add_argument("--data", help="dataset folder to open (default: the bundled sample)")
    p.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_ui)
    # The other jobs' sub-commands live beside their code (training, evaluation, demo, labelling).
    for add_commands in (add_training_commands, add_eval_commands, add_demo_commands, add_labelling_commands):
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatasetReadError as e:
        _error(f"{e}\n(pass --skip-bad to convert the rest)" if args.command == "convert" else str(e))
        return 1
    except WorkbenchError as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
