"""The ``export`` sub-command (registered by ``workbench.cli.main.build_parser``).

    workbench export --model latest --format onnx [--out FILE] [--dynamic]

Writes one ``.onnx`` file that ``predict``, ``eval``, ``demo`` and ``suggest`` take as ``--model``
(``workbench.inference.onnx_export``). A two-stage run (face-then-classify) exports as one file
holding the face detector's graph and the classifier's; ``--dynamic`` does not apply to it (any
image size).
"""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.inference.onnx_export import export_onnx  # torch and onnx: not for `workbench --help`

    path = export_onnx(args.model, out=args.out, fmt=args.format, dynamic=args.dynamic)
    print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained run as an ONNX file (onnxruntime serves it)")
    p.add_argument("--model", default="latest", help="run name, run folder, 'latest' or 'latest:DATASET'")
    p.add_argument("--format", default="onnx", help="export format: onnx (the default and only one)")
    p.add_argument("--out", help="file to write (default: <run>/model.onnx, or model-static.onnx)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="take any image height and width (default: imgsz x imgsz; two-stage files take any size)",
    )
    p.set_defaults(func=cmd_export)
