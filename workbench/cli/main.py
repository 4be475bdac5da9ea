"""The ``workbench`` command line: every job of the workbench without the UI.

Each group of sub-commands lives in its own module (``datasets``, ``ui``, ``training``,
``evaluation``, ``export``, ``demo``, ``labelling``) as plain functions ``cmd_<name>(args) -> int``,
registered by the module's ``add_commands(sub)``. A command collects its input and calls one
library function. Exit codes: 0 success, 1 the job failed (bad input, bad files, reported as
``workbench: error: ...``), 2 bad usage (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workbench.cli import datasets, demo, evaluation, export, labelling, training, ui
from workbench.cli.common import print_error
from workbench.errors import WorkbenchError

GROUPS = (datasets, ui, training, evaluation, export, demo, labelling)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Object-detection workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as e:
        print_error(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
