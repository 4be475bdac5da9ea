"""Locks shared by every workbench process: one decision for how two processes take turns.

``lock(path)`` is a ``filelock.FileLock`` for any file the workbench updates (a workspace store
such as ``datasets.json``, or an annotation file of a dataset): its lock file lives in the
workspace (``<workspace>/locks/``), keyed by the file's resolved path, so no lock file lands
inside a dataset folder. The same object is returned for the same path in a process, so it is
re-entrant within a thread and exclusive across threads and processes (``fcntl``/``flock``,
which also works across machines on NFS with a lock daemon).

SQLite's WAL mode needs shared memory that a network file system does not give:
``sqlite_journal_mode(path)`` says ``WAL`` on a local disk and ``DELETE`` (the rollback
journal, safe on NFS with working locks) on a network one. ``connect_sqlite`` opens a database
shared by processes that way, and ``transaction`` groups statements with the write lock first.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import psutil

from workbench.errors import WorkbenchError
from workbench.paths import home

NETWORK_FILE_SYSTEMS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smbfs",
    "smb3",
    "fuse.sshfs",
    "9p",
    "ceph",
    "glusterfs",
    "lustre",
)
DEFAULT_TIMEOUT = 60.0  # seconds: a save or a store update holds its lock for milliseconds

_LOCKS: dict[str, filelock.FileLock] = {}
_GUARD = threading.Lock()


class LockTimeout(WorkbenchError):
    """Another workbench process held the lock for longer than the timeout."""


def lock_file(path: Path | str) -> Path:
    """Where the lock of ``path`` lives: ``<workspace>/locks/<sha1 of the resolved path>.lock``."""
    resolved = str(Path(path).expanduser().resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:20]
    folder = home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{Path(resolved).name[:40]}-{digest}.lock"


def lock(path: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> filelock.FileLock:
    """The inter-process lock of ``path`` (use as ``with lock(path): ...``)."""
    where = str(lock_file(path))
    with _GUARD:
        found = _LOCKS.get(where)
        if found is None:
            found = _LOCKS[where] = filelock.FileLock(where, timeout=timeout)
    return found


class locked:
    """``with locked(path):`` holds ``lock(path)``; a timeout is a ``LockTimeout`` naming ``path``."""

    def __init__(self, path: Path | str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path, self.timeout = Path(path), timeout
        self._lock = lock(path, timeout=timeout)

    def __enter__(self) -> locked:
        try:
            self._lock.acquire(timeout=self.timeout)
        except filelock.Timeout as e:
            raise LockTimeout(f"{self.path}: another workbench process kept it locked for {self.timeout:g} s") from e
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def file_system(path: Path | str) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4`` ...), ``""`` when unknown."""
    target = Path(path).expanduser().resolve()
    best, kind = -1, ""
    for part in psutil.disk_partitions(all=True):
        mount = Path(part.mountpoint)
        if (target == mount or mount in target.parents) and len(mount.parts) > best:
            best, kind = len(mount.parts), part.fstype
    return kind


def is_network(path: Path | str) -> bool:
    """True when ``path`` is on a network file system (NFS, SMB, sshfs ...)."""
    kind = file_system(path).lower()
    return any(kind == n or kind.startswith(n) for n in NETWORK_FILE_SYSTEMS)


def sqlite_journal_mode(path: Path | str) -> str:
    """``WAL`` for a database on a local disk, ``DELETE`` on a network file system (no shared memory there)."""
    return "DELETE" if is_network(Path(path).parent) else "WAL"


_MODES_SET: set[str] = set()  # databases whose journal mode this process has already set


def connect_sqlite(path: Path | str, *, busy_timeout: float) -> sqlite3.Connection:
    """An autocommit connection to a database several processes share: statements wait up to
    ``busy_timeout`` seconds for another process's transaction, and the journal mode is
    ``sqlite_journal_mode(path)`` (set once per process and database)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not existed or str(path) not in _MODES_SET:
            _set_journal_mode(con, sqlite_journal_mode(path), timeout=busy_timeout)
            _MODES_SET.add(str(path))
    except BaseException:
        con.close()
        raise
    return con


def _set_journal_mode(con: sqlite3.Connection, mode: str, *, timeout: float) -> None:
    """Switch the database to ``mode`` unless it is in it already.

    The switch needs the database to itself and SQLite does not wait for it (no busy handler),
    so two processes opening a new database at once retry here until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while con.execute("PRAGMA journal_mode").fetchone()[0].upper() != mode:
        try:
            con.execute(f"PRAGMA journal_mode = {mode}")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def transaction(con: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One transaction on an autocommit connection, rolled back on an exception. A write starts
    with ``BEGIN IMMEDIATE``: the write lock is taken first, so what is read inside cannot change
    before the transaction's own writes; a read (``BEGIN``) sees one snapshot."""
    con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
