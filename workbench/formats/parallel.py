"""Reading many annotation files over the CPU cores: forked children each read a slice.

Parsing 10,000 VOC files is CPU work that one process does at one core's speed. ``read_many``
splits a big list of files into contiguous slices; forked children read all slices but the
last, which this process reads meanwhile, and each child sends its results back through a
pipe (pickled: the bytes come from this process's own fork, never from a file, so nothing
anyone else wrote is unpickled). The results are in the order of the files, exactly what a
loop gives: a child that fails in any way has its slice read again here, so an error other
than a ``ReadError`` is raised as the loop raises it.

Forking is only safe in a process with no other thread (a lock held by another thread stays
locked in the child forever), so a multi-threaded process (the Streamlit app) reads in one
loop, and so does a platform without ``fork`` or with one core.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from workbench.errors import ReadError

T = TypeVar("T")
P = TypeVar("P")
PARALLEL_FROM = 2000  # files: below this a fork and the pickling cost more than they save
MAX_WORKERS = 8


def _read(read: Callable[[P], T], item: P) -> T | ReadError:
    try:
        return read(item)
    except ReadError as e:
        return e


def workers_for(count: int) -> int:
    """How many processes should read ``count`` files (1: this one alone): one per core that
    other processes leave free (the load average), as one more process on a busy core only
    adds the pickling, and at least ``PARALLEL_FROM / 2`` files each."""
    if count < PARALLEL_FROM or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        free = cores - os.getloadavg()[0] + 1  # the load counts this process
    except OSError:
        free = cores
    return max(1, min(cores, MAX_WORKERS, int(free), count // (PARALLEL_FROM // 2)))


def _child(read: Callable[[P], T], items: Sequence[P], fd: int) -> None:
    """In a forked child: read ``items``, write the pickled results to ``fd``, exit."""
    code = 1
    try:
        out = []
        for item in items:
            result = _read(read, item)
            out.append(
                ("error", result.file, result.reason, result.record) if isinstance(result, ReadError) else result
            )
        data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _collect(pid: int, fd: int) -> list | None:
    """A child's results, or ``None`` when it failed."""
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        out = pickle.loads(data)
    except Exception:
        return None
    return [ReadError(r[1], r[2], r[3]) if type(r) is tuple and r and r[0] == "error" else r for r in out]


def _reading(
    read: Callable[[P], T], items: Sequence[P], on_progress: Callable[[int, int], None] | None, every: int, total: int
) -> list[T | ReadError]:
    """``_read`` of each item, reporting ``on_progress(done, total)`` with ``done`` counted
    ``every`` per item (the other readers go as fast as this one)."""
    if on_progress is None:
        return [_read(read, item) for item in items]
    out = []
    for n, item in enumerate(items, 1):
        out.append(_read(read, item))
        on_progress(n if every == 1 else min(n * every, total - 1), total)  # the end is reported at the end
    return out


def read_many(
    read: Callable[[P], T], items: Sequence[P], on_progress: Callable[[int, int], None] | None = None
) -> list[T | ReadError]:
    """``read(item)`` for every item, in order, the ``ReadError`` it raised in place of a result.
    ``on_progress(done, total)`` is called as the items are read (estimated while children read)."""
    workers = workers_for(len(items))
    if workers == 1:
        return _reading(read, items, on_progress, 1, len(items))
    size = -(-len(items) // workers)
    slices = [items[i : i + size] for i in range(0, len(items), size)]
    children: list[tuple[int, int] | None] = []
    for part in slices[:-1]:
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            children.append(None)
            continue
        if pid == 0:
            os.close(r)
            _child(read, part, w)
        os.close(w)
        children.append((pid, r))
    try:
        mine = _reading(read, slices[-1], on_progress, len(slices), len(items))
        out: list[T | ReadError] = []
        for n, part in enumerate(slices[:-1]):
            child, children[n] = children[n], None
            got = _collect(*child) if child else None
            out.extend(got if got is not None and len(got) == len(part) else [_read(read, item) for item in part])
    finally:
        for child in children:  # what an exception left running: ended, never left a zombie
            if child:
                os.close(child[1])
                os.waitpid(child[0], 0)
    if on_progress:
        on_progress(len(items), len(items))
    return out + mine
