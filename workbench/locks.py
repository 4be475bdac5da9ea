"""Locks shared by every workbench process: one decision for how two processes take turns.

``lock(path)`` is a ``filelock.FileLock`` for any file the workbench updates (a workspace store
such as ``datasets.json``, or an annotation file of a dataset): its lock file lives in the
workspace (``<workspace>/locks/``), keyed by the file's resolved path, so no lock file lands
inside a dataset folder. The same object is returned for the same path in a process, so it is
re-entrant within a thread and exclusive across threads and processes (``fcntl``/``flock``,
which also works across machines on NFS with a lock daemon).

SQLite's WAL mode needs shared memory that a network file system does not give:
``sqlite_journal_mode(path)`` says ``WAL`` on a local disk and ``DELETE`` (the rollback
journal, safe on NFS with working locks) on a network one.
"""

from __future__ import annotations

import hashlib
import threading
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
