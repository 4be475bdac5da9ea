"""Small file helpers shared by every format: atomic writes, safe paths, image headers."""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from workbench.errors import ReadError, WriteError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# Pillow's own bomb guard: above MAX_IMAGE_PIXELS it warns, above twice that it raises.
# Both become a ReadError here (see image_size / load_image).
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[object]:
    """Sort key that puts ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text)]


def is_image(path: Path | str) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def first_file(root: Path, suffixes: tuple[str, ...], predicate=None) -> Path | None:
    """Some file under ``root`` whose name ends in a suffix (and passes ``predicate``), found
    without sorting: format detection needs one example, not the listing."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.lower().endswith(suffixes) and not name.startswith("."):
                path = Path(dirpath) / name
                if predicate is None or predicate(path):
                    return path
    return None


def iter_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Files under ``root`` (recursively, hidden folders skipped) whose name ends in a suffix."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames, key=natural_key):
            if name.lower().endswith(suffixes) and not name.startswith("."):
                yield Path(dirpath) / name


def relpath(path: Path | str, root: Path | str) -> str:
    """``path`` relative to ``root`` with ``/`` separators."""
    text, base = str(path), str(root)
    # Fast path for what os.walk(root) yields: the root's own prefix (a hot loop on 10,000 files).
    if len(text) > len(base) + 1 and text.startswith(base) and text[len(base)] == os.sep:
        return text[len(base) + 1 :].replace(os.sep, "/")
    return Path(os.path.relpath(path, root)).as_posix()


def safe_relpath(name: str, *, file: str, record: str | None = None) -> str:
    """Normalise a relative path read from an annotation and refuse one that escapes the root.

    Absolute paths, drive letters and any ``..`` that climbs above the root are refused:
    a dataset must not make the workbench read or write outside its own folder.
    """
    text = str(name).replace("\\", "/")
    if text and text[0] != "/" and text[1:2] != ":" and "//" not in text:
        parts = text.split("/")
        if "." not in parts and ".." not in parts and "" not in parts:
            return text  # already normal: the common case, checked without building paths
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise ReadError(file, f"path {name!r} is not relative to the dataset root", record)
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ReadError(file, f"path {name!r} escapes the dataset root", record)
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise ReadError(file, f"path {name!r} is empty", record)
    return "/".join(parts)


# atomic_write's temporary files: ``.<name>.<8 random characters>.tmp`` beside the file. Hidden, so
# every dataset tool here (iter_files, first_file, the index scan) skips one a killed write left.
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is the name of one of ``atomic_write``'s temporary files."""
    return _TEMP_NAME.fullmatch(name) is not None


def leftover_temps(root: Path | str) -> list[Path]:
    """The temporary files under ``root`` that an ``atomic_write`` killed before its rename left
    behind (hidden folders are not entered): the health report lists them, and the next save of
    the file beside one removes it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / name for name in sorted(filenames) if is_temp_name(name)]
    return out


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``,
    durably: the file and then its folder are fsynced, so once this returns a power cut loses nothing.

    A failure at any point leaves the previous file as it was; a kill (SIGKILL, a power cut)
    before the rename can leave the hidden temporary file (see ``leftover_temps``), never a
    changed or half-written ``path``.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"{path}: cannot write: {e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_folder(path.parent)  # and the rename itself survives a power cut
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(f"{path}: cannot write: {e}") from e
        raise


def fsync_folder(folder: Path | str) -> None:
    """Flush a folder's entries (a rename, a new file) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the file itself is synced
    finally:
        os.close(fd)


def tail_lines(path: Path | str, lines: int = 30, *, max_bytes: int = 20_000) -> str:
    """The last ``lines`` lines of a text file (a log), read from its last ``max_bytes`` only;
    ``""`` when it cannot be read. Undecodable bytes are replaced, not fatal."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _open_checked(path: Path, shown: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ReadError(
            shown, f"image too large (decompression bomb guard, over {MAX_IMAGE_PIXELS} pixels): {e}"
        ) from e
    except FileNotFoundError as e:
        raise ReadError(shown, "image file not found") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ReadError(shown, f"not a readable image: {e}") from e


def image_size(path: Path, shown: str | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image from its header only; pixels are not decoded."""
    with _open_checked(path, shown or str(path)) as image:
        return image.size


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1 = upright), read from the header; 1 when absent."""
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1) or 1)
    except (OSError, ValueError, SyntaxError):
        return 1


def load_image(path: Path, shown: str | None = None, *, exif_transpose: bool = False) -> np.ndarray:
    """Decode an image to an ``(H, W, 3)`` uint8 RGB array.

    Truncated files and decompression bombs raise ``ReadError`` instead of hanging or
    returning half an image. Annotation tools store boxes in the stored pixel grid, so
    the EXIF rotation is applied only when asked for.
    """
    shown = shown or str(path)
    with _open_checked(path, shown) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise ReadError(shown, f"image is truncated or corrupt: {e}") from e
        if exif_transpose:
            image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB"))
