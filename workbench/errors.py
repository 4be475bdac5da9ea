"""The workbench's one small error hierarchy.

Every message names the file (relative to the dataset root when there is one) and,
where it applies, the record inside it, so that a user can open the file and fix it.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ReadError(WorkbenchError):
    """A file could not be read or does not follow its format.

    ``file`` is the path as the user should see it; ``record`` names the part of the
    file (``object 3``, ``line 12``, ``shape 2``), or is ``None`` for the whole file.
    """

    def __init__(self, file: str, message: str, record: str | None = None) -> None:
        self.file = str(file)
        self.record = record
        self.reason = message
        where = f"{self.file}: {record}" if record else self.file
        super().__init__(f"{where}: {message}")


class DatasetReadError(WorkbenchError):
    """One or more files of a dataset are bad; ``errors`` lists every one of them."""

    def __init__(self, root: str, errors: list[ReadError]) -> None:
        self.root = str(root)
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        noun = "file" if len(self.errors) == 1 else "files"
        super().__init__(f"{self.root}: {len(self.errors)} bad {noun}:\n{lines}")


class WriteError(WorkbenchError):
    """A dataset or file could not be written; the previous file is left intact."""


class FormatDetectionError(WorkbenchError):
    """No known annotation format (or more than one) was found in a folder."""
