"""Helpers every group of ``workbench`` commands shares: progress bars, error lines, JSON output."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ProgressCallback = Callable[[str, int, int], None]


def print_error(message: str) -> None:
    """Print ``workbench: error: MESSAGE`` on stderr, as argparse does for bad usage."""
    print(f"workbench: error: {message}", file=sys.stderr)


def print_json(value: Any) -> None:
    """Print ``value`` as one indented JSON document on stdout (the ``--json`` output)."""
    print(json.dumps(value, indent=2))


@contextmanager
def progress_bars(enabled: bool) -> Iterator[ProgressCallback | None]:
    """Yield ``on_progress(stage, done, total)`` drawing one tqdm bar per stage on a terminal;
    ``None`` when output is not a terminal or ``enabled`` is false."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # only drawn on a terminal; keeps --json and pipes light

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            # A terminal that reports 0 x 0 (a fresh pty) would get an invisible bar.
            size = shutil.get_terminal_size((100, 24))
            bar = bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit="file",
                leave=False,
                file=sys.stderr,
                ncols=size.columns,
                nrows=size.lines,
            )
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


def stage(update: ProgressCallback | None, name: str) -> Callable[[int, int], None] | None:
    """Bind ``update`` to one stage name: ``on_progress(done, total)`` for a library call."""
    return (lambda done, total: update(name, done, total)) if update else None


def print_more(shown: int, total: int, *, indent: str = "  ", what: str = "more") -> None:
    """Say how many entries a ``--limit`` left out, and how to see them all."""
    if total > shown:
        print(f"{indent}... and {total - shown} {what} (--limit, or --json for all)")
