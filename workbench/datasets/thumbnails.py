"""Gallery thumbnails, cached on disk under ``<workspace>/thumbs/``, keyed by the image's path,
size and mtime (a changed image gets a new thumbnail), and the tiles the Browse page shows.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from workbench.annotations import Dataset, ImageRecord
from workbench.datasets.index import Stat, file_stat
from workbench.drawing import draw_boxes, make_thumbnail, placeholder
from workbench.fileio import atomic_write
from workbench.paths import home

THUMB_SIZE = 256  # px, the longer side of a gallery thumbnail


def _thumb_path(image: Path, st: Stat, size: int) -> Path:
    digest = hashlib.sha1(f"{image}|{st[0]}|{st[1]}|{size}".encode()).hexdigest()
    return home() / "thumbs" / digest[:2] / f"{digest}.jpg"


def thumbnail(image: Path, size: int = THUMB_SIZE) -> tuple[Image.Image, float] | None:
    """The image scaled so its longer side is at most ``size`` px, and the scale factor
    (thumbnail px per image px). Cached on disk keyed by path, size and mtime. ``None``
    when the image is missing or unreadable."""
    st = file_stat(image)
    if st is None:
        return None
    cache = _thumb_path(image, st, size)
    try:
        with Image.open(cache) as cached:
            thumb = cached.copy()
            full = cached.info.get("comment", b"")
    except (OSError, ValueError):
        thumb, full = None, b""
    if thumb is not None and full:
        width = int(full.decode().split("x")[0])
        return thumb, thumb.width / width
    made = make_thumbnail(image, size)
    if made is None:
        return None
    thumb, width = made
    cache.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=85, comment=f"{width}x".encode())
    atomic_write(cache, buf.getvalue())
    return thumb, thumb.width / width


def tile(dataset: Dataset, record: ImageRecord, size: int = THUMB_SIZE) -> bytes:
    """A gallery tile: the cached thumbnail with the record's boxes drawn, as JPEG bytes."""
    made = thumbnail(dataset.root / record.path, size)
    if made is None:
        image = placeholder(size, "image not found")
    else:
        thumb, scale = made
        image = draw_boxes(thumb, record.boxes * scale, record.class_ids, dataset, width=2, labels=False)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()
