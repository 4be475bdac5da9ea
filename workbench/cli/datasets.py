"""The dataset commands of ``workbench``: ``convert`` (any format to any) and ``check`` (health).

``add_commands(sub)`` registers them on the main parser (``workbench.cli.main``).
"""

from __future__ import annotations

import argparse
import sys

from workbench.cli.common import print_json, print_more, progress_bars
from workbench.datasets.convert import IMAGE_MODES, ConvertResult, convert
from workbench.datasets.health import KINDS, HealthReport, check_folder
from workbench.errors import DatasetReadError, WorkbenchError
from workbench.formats import FORMATS


def cmd_convert(args: argparse.Namespace) -> int:
    try:
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
    except DatasetReadError as e:
        raise WorkbenchError(f"{e}\n(pass --skip-bad to convert the rest)") from e
    if args.json:
        print_json(convert_summary(result))
    else:
        print_conversion(result)
    return 0


def convert_summary(result: ConvertResult) -> dict:
    """What ``convert --json`` prints: where, which format, how many images and boxes, what was left out."""
    return {
        "out": str(result.out),
        "format": result.to,
        "images": len(result.dataset.images),
        "boxes": result.dataset.num_boxes,
        "images_written": result.images_written,
        "missing_images": result.missing_images,
        "skipped": [str(e) for e in result.skipped],
    }


def print_conversion(result: ConvertResult) -> None:
    print(f"wrote {result.to} to {result.out}: {len(result.dataset.images)} images, {result.dataset.num_boxes} boxes")
    if result.skipped:
        print(f"skipped {len(result.skipped)} bad file(s):", file=sys.stderr)
        for e in result.skipped:
            print(f"  {e}", file=sys.stderr)
    if result.missing_images:
        print(f"{len(result.missing_images)} image(s) not found in the source, not copied:", file=sys.stderr)
        for path in result.missing_images[:20]:
            print(f"  {path}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    with progress_bars(not args.json) as update:
        dataset, report = check_folder(args.src, args.src_format, on_progress=update)
    if args.json:
        print_json(report.to_json())
        return 0
    print(f"{dataset.root} ({dataset.format}): {report.images} images, {report.boxes} boxes")
    print_report(report, limit=args.limit)
    return 0


def print_report(report: HealthReport, *, limit: int) -> None:
    """The health report for a terminal: splits, classes, a box-size histogram, findings by kind."""
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
        for f in findings[:limit]:
            print(f"  {f.file}: {f.detail}")
        print_more(min(limit, len(findings)), len(findings))


def add_commands(sub: argparse._SubParsersAction) -> None:
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
