"""The edit journal: an append-only JSON Lines file of saves, shared by every workbench process.

Each save is one entry line: ``id`` (an integer, unique across processes), ``time``, ``author``
(the OS user, or the signed-in user the Streamlit page passes), ``process`` (``pid`` and
``host``), ``root``, ``format``, ``message``, ``files`` (``path``, ``before`` and ``after`` as
the SHA-256 of the file's bytes, ``null`` when it did not exist) and, for an undo, ``undoes``.
A save writes its entry *before* touching any file, marked ``"pending": true``, and a short
``{"done": id}`` line once every file is written; see ``labelling.saving`` for why.

Appends hold ``locks.locked(journal)``; the next id is read from the file's tail (the last entry
line), never by re-reading the whole journal, so an append costs the same at 100 entries as at
10,000. The bytes themselves are kept once each in ``journal-blobs/<sha256>`` beside the journal
(a 5 MB COCO file edited 100 times must not make every page load read 500 MB of JSON).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from workbench import locks, paths
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write

_TAIL = 64 * 1024  # bytes read per step when looking for the last entry line


def sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric uid)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _fsync_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _last_id(path: Path) -> int:
    """The id of the last entry line of the journal, read backwards from its end in steps of
    ``_TAIL`` bytes (an entry naming many files may be longer than one step)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        size = _TAIL
        while True:
            start = max(0, end - size)
            f.seek(start)
            lines = f.read(end - start).split(b"\n")
            if start > 0:
                lines = lines[1:]  # the first piece may be the end of a longer line
            for line in reversed(lines):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # empty, or cut short by a crash
                if isinstance(entry, dict) and isinstance(entry.get("id"), int) and "root" in entry:
                    return entry["id"]
            if start == 0:
                return 0
            size *= 4


class Journal:
    """The journal at ``path`` (default ``<workspace>/journal.jsonl``); ``author`` is written on
    every entry this object appends (default: the OS user)."""

    def __init__(self, path: Path | None = None, *, author: str | None = None) -> None:
        self.path = Path(path) if path else paths.home() / "journal.jsonl"
        self.blobs = self.path.parent / "journal-blobs"
        self.author = author or os_user()

    def put(self, data: bytes) -> str:
        """Keep ``data``; returns its SHA-256, the name to ``get`` it back by. Written durably
        (``atomic_write``) before any journal line names it."""
        digest = sha(data)
        target = self.blobs / digest
        if not target.is_file():
            atomic_write(target, data)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            data = (self.blobs / digest).read_bytes()
        except FileNotFoundError:
            raise WorkbenchError(f"{self.blobs / digest}: the journal's copy of the file is missing") from None
        if sha(data) != digest:
            raise WorkbenchError(f"{self.blobs / digest}: the journal's copy of the file is damaged")
        return data

    def append(self, entry: dict[str, Any], *, pending: bool = False) -> int:
        """Add an entry (with a new id, the time, author and process); returns its id.
        ``pending`` marks a save whose files are not written yet (``done`` completes it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locks.locked(self.path):
            line = {
                "id": _last_id(self.path) + 1,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "author": self.author,
                "process": {"pid": os.getpid(), "host": socket.gethostname()},
                **entry,
            }
            if pending:
                line["pending"] = True
            _fsync_append(self.path, json.dumps(line, ensure_ascii=False) + "\n")
            return line["id"]

    def done(self, entry_id: int) -> None:
        """Mark the pending entry ``entry_id`` complete: every file it names holds its ``after``."""
        with locks.locked(self.path):
            _fsync_append(self.path, json.dumps({"done": entry_id}) + "\n")

    def entries(self, root: Path | str | None = None) -> list[dict[str, Any]]:
        """Every entry (of ``root`` when given), oldest first; a pending entry completed by a
        ``done`` line loses its ``pending`` mark."""
        if not self.path.is_file():
            return []
        out, done = [], set()
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: ignore it, keep the rest
                if not isinstance(entry, dict):
                    continue
                if "done" in entry:
                    done.add(entry["done"])
                elif root is None or entry.get("root") == str(root):
                    out.append(entry)
        for entry in out:
            if entry.get("pending") and entry["id"] in done:
                del entry["pending"]
        return out

    def undoable(self, root: Path | str, *, author: str | None = None) -> list[dict[str, Any]]:
        """Saves of ``root`` (by ``author`` when given) not yet undone, newest last. A pending
        save (its process was killed before it finished) counts when one of its files holds
        its new bytes, i.e. it reached the disk; one that wrote nothing never happened."""
        entries = [e for e in self.entries(root) if _happened(Path(root), e)]
        undone = {e["undoes"] for e in entries if "undoes" in e}
        return [
            e
            for e in entries
            if "undoes" not in e and e["id"] not in undone and (author is None or e.get("author") == author)
        ]

    def last_writer(self, root: Path | str, rel: str, digest: str | None) -> dict[str, Any] | None:
        """The newest entry that left ``rel`` holding the bytes ``digest``: who made the file
        what it is now (``None`` when no workbench save did)."""
        for e in reversed(self.entries(root)):
            if any(f["path"] == rel and f["after"] == digest for f in e["files"]):
                return e
        return None


def _happened(root: Path, entry: dict[str, Any]) -> bool:
    """A finished entry, or a pending one that reached the disk (one of its files holds its new bytes)."""
    return not entry.get("pending") or any(_holds(root, f["path"], f["after"]) for f in entry["files"])


def _holds(root: Path, rel: str, digest: str | None) -> bool:
    try:
        return sha((root / rel).read_bytes()) == digest
    except FileNotFoundError:
        return digest is None


def describe(entry: dict[str, Any]) -> str:
    """``"alice at 2026-12-02T18:30:01+0000 (pid 123 on box)"``: who made a journal entry."""
    process = entry.get("process") or {}
    where = f" (pid {process.get('pid')} on {process.get('host')})" if process else ""
    return f"{entry.get('author', 'unknown')} at {entry.get('time', '?')}{where}"
