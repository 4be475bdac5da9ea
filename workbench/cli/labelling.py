"""The model-assisted labelling sub-commands of ``workbench``: ``suggest``, ``review``,
``version``, ``versions``, ``diff``.

``add_commands(sub)`` registers them on the main parser (``workbench.cli.main``).
"""

from __future__ import annotations

import argparse

from workbench.cli.common import print_json, print_more
from workbench.datasets import versions
from workbench.formats import FORMATS
from workbench.labelling import review, suggestions
from workbench.labelling.suggestions import DEFAULT_SCORE, SuggestResult


def cmd_suggest(args: argparse.Namespace) -> int:
    result = suggestions.suggest(
        args.data,
        run=args.model,
        any_classes=args.any_classes,
        fmt=args.src_format,
        only_unlabelled=args.only_unlabelled,
        score=args.score,
        batch=args.batch,
        device=args.device,
    )
    summary = suggest_summary(result, args.data)
    if args.json:
        print_json(summary)
        return 0
    print(
        f"{result.run}: {result.boxes} suggestion(s) on {result.images} image(s) at score >= {args.score:g} "
        f"({result.predict_seconds:.1f} s predicting, {result.store_seconds * 1000:.1f} ms storing)"
    )
    if result.skipped_labelled:
        print(f"{result.skipped_labelled} labelled image(s) skipped (--only-unlabelled)")
    print(f"stored in {summary['stored_in']}; the dataset's files are unchanged until you accept them in Annotate")
    return 0


def suggest_summary(result: SuggestResult, data: str) -> dict:
    """What ``suggest --json`` prints: the run, counts, timings (s) and where the suggestions are stored."""
    return {
        "run": result.run,
        "images": result.images,
        "boxes": result.boxes,
        "skipped_labelled": result.skipped_labelled,
        "predict_seconds": round(result.predict_seconds, 3),
        "store_seconds": round(result.store_seconds, 4),
        "stored_in": str(suggestions.store_path(data)),
    }


def cmd_review(args: argparse.Namespace) -> int:
    queue = review.queue_of(args.data, args.src_format)
    if args.json:
        print_json(queue)
        return 0
    if not queue:
        print("the review queue is empty")
    for item in queue[: args.limit]:
        print(f"{item['tier']:15s} {item['path']}: " + "; ".join(item["reasons"]))
    print_more(min(args.limit, len(queue)), len(queue), indent="")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    entry = versions.take_version_of(args.data, args.src_format, name=args.name, reason=args.reason)
    print(f"{entry['name']}  {entry['hash'][:12]}  {entry['images']} images, {entry['boxes']} boxes")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    found = versions.list_versions(args.data)
    if args.json:
        print_json(found)
        return 0
    if not found:
        print(f"{args.data}: no version yet (one is taken when training starts, or `workbench version SRC`)")
        return 0
    print(f"{'name':12s} {'hash':12s} {'created':19s} {'images':>6s} {'boxes':>6s}  reason / runs")
    for v in found:
        runs = f" (runs: {', '.join(v['runs'])})" if v.get("runs") else ""
        print(
            f"{v['name']:12s} {v['hash'][:12]} {v['created']:19s} {v['images']:6d} {v['boxes']:6d}  {v['reason']}{runs}"
        )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    result = versions.diff(args.data, args.old, args.new)
    if args.json:
        print_json(result.to_json())
        return 0
    totals = result.totals()
    print(f"{args.old} → {args.new}: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    for label, items in (
        ("images added", result.images_added),
        ("images removed", result.images_removed),
        ("classes added", result.classes_added),
        ("classes removed", result.classes_removed),
    ):
        if items:
            print(f"{label}: {', '.join(items)}")
    if result.per_class:
        print("per class:")
        for name, c in sorted(result.per_class.items()):
            print(f"  {name:24s} " + "  ".join(f"{k} {c.get(k, 0)}" for k in totals))
    if result.images:
        print("per image:")
        for d in result.images[: args.limit]:
            print(f"  {d.path}: " + "; ".join(d.changes))
        print_more(min(args.limit, len(result.images)), len(result.images), what="more images")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    formats = sorted(FORMATS)

    p = sub.add_parser("suggest", help="pre-annotate: store a model's boxes as suggestions to review")
    p.add_argument(
        "--model",
        help="run name, run folder, 'latest' or 'latest:DATASET' (default: the latest run trained on --data, else 'latest')",
    )
    p.add_argument("--any-classes", action="store_true", help="use a model whose classes differ from the dataset's")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--from", dest="src_format", choices=formats, help="format (default: detected)")
    p.add_argument("--only-unlabelled", action="store_true", help="only images with no box yet")
    p.add_argument("--score", type=float, default=DEFAULT_SCORE, help=f"lowest score kept (default {DEFAULT_SCORE})")
    p.add_argument("--batch", type=int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("review", help="the review queue: unlabelled, then disagreement, then low confidence")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--from", dest="src_format", choices=formats, help="format (default: detected)")
    p.add_argument("--limit", type=int, default=30, help="entries shown (default 30)")
    p.add_argument("--json", action="store_true", help="print the whole queue as JSON")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("version", help="take a version of a dataset's labels now")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--name", help="a readable name (default v1, v2, ...)")
    p.add_argument("--reason", default="by hand", help="a note kept with it")
    p.add_argument("--from", dest="src_format", choices=formats, help="format (default: detected)")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("versions", help="list a dataset's versions")
    p.add_argument("data", help="dataset folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("diff", help="boxes added, removed, moved, relabelled between two versions")
    p.add_argument("data", help="dataset folder")
    p.add_argument("old", help="version name or hash prefix")
    p.add_argument("new", nargs="?", default="current", help="version name, hash prefix or 'current' (default)")
    p.add_argument("--limit", type=int, default=50, help="images listed (default 50)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)
