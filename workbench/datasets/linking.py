"""Hard links for every image of a conversion, made while the annotations are written.

A hard link is one system call, but 10,000 of them are as much time as the rest of a cached
conversion, and a thread would not overlap them with the writing: it needs the GIL back after
every call and waits for it behind the writer. So, for many images, a small child process
(``python -I -S``, nothing imported) makes the links while the parent writes, and reports the
positions it could not link; those, and every image of a small dataset, are then placed by
``convert.bring_images`` itself (a copy across file systems, an existing file, a missing or
embedded image).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from workbench.annotations import Dataset

CHILD_FROM = 2000  # images: below this the child's start-up (~20 ms) is not worth it
# Paths relative to the two roots opened once: the kernel then walks one folder per name, not the
# whole path twice per link.
_LINKER = """
import os, sys
src, dst = os.open(sys.argv[1], os.O_RDONLY), os.open(sys.argv[2], os.O_RDONLY)
failed = []
for i, rel in enumerate(sys.stdin.buffer.read().split(b"\\0")):
    try:
        os.link(rel, rel, src_dir_fd=src, dst_dir_fd=dst)
    except OSError:
        failed.append(b"%d" % i)
sys.stdout.buffer.write(b" ".join(failed))
"""


def make_folders(dataset: Dataset, out: Path) -> None:
    """Every folder the images of ``dataset`` go to under ``out``."""
    for folder in {r.path.rpartition("/")[0] for r in dataset.images}:
        (out / folder).mkdir(parents=True, exist_ok=True)


class Links:
    """The links of ``start_links`` under way; ``wait()`` gives the positions linked."""

    def __init__(self, process: subprocess.Popen | None, result, count: int) -> None:
        self._process, self._result, self._count = process, result, count

    def wait(self) -> set[int]:
        if self._process is None:
            return set()
        try:
            code = self._process.wait()
            self._result.seek(0)
            text = self._result.read()
        finally:
            self._result.close()
        if code != 0:
            return set()  # the child failed: the caller places every image itself, links included
        failed = {int(i) for i in text.split()}
        return set(range(self._count)) - failed


def start_links(dataset: Dataset, out: Path) -> Links:
    """Start hard-linking the images of ``dataset`` under ``out`` in a child process, when there
    are enough of them and the platform spawns one cheaply; else a ``Links`` that linked none."""
    paths = [r.path for r in dataset.images]
    if len(paths) < CHILD_FROM or os.name != "posix" or not sys.executable or os.link not in os.supports_dir_fd:
        return Links(None, None, 0)
    make_folders(dataset, out)
    with tempfile.TemporaryFile() as names:
        names.write(os.fsencode("\0".join(paths)))
        names.seek(0)
        result = tempfile.TemporaryFile()
        try:
            cmd = [sys.executable, "-I", "-S", "-c", _LINKER, str(dataset.root), str(out)]
            process = subprocess.Popen(cmd, stdin=names, stdout=result, stderr=subprocess.DEVNULL)
        except OSError:
            result.close()
            return Links(None, None, 0)
    return Links(process, result, len(paths))
