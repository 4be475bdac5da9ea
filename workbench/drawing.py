"""Pictures of a dataset: boxes drawn in one colour per class, thumbnails, placeholders, and a
model's detections drawn with their scores (``annotate``: the demo, ``workbench predict`` on a video).

Boxes are the model's ``(N, 4)`` float ``x1, y1, x2, y2`` pixels (x2/y2 exclusive), already
scaled to the picture they are drawn on. No Streamlit or Gradio here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench.annotations import Dataset
from workbench.errors import ReadError
from workbench.fileio import load_image

if TYPE_CHECKING:
    from workbench.annotations import Detections

# Tableau's 10 colours then 10 lighter ones: distinct for the first 20 classes, then reused.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)


def class_colour(class_id: int) -> str:
    """The ``#rrggbb`` colour of a class id (one per class, stable across pages)."""
    return PALETTE[int(class_id) % len(PALETTE)]


def colour_map(names: list[str]) -> dict[str, str]:
    """``name -> colour`` for a class list (the first id of a repeated name wins)."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        out.setdefault(name, class_colour(i))
    return out


def make_thumbnail(path: Path, size: int) -> tuple[Image.Image, int] | None:
    """``(thumbnail, full image width)``: the image decoded and shrunk so its longer side is at
    most ``size`` px, or ``None`` when it is missing or unreadable. JPEGs are decoded at a
    reduced scale (``draft``), which makes a cold thumbnail several times cheaper."""
    try:
        with Image.open(path) as image:
            width = image.width
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
            image.thumbnail((size, size), Image.Resampling.BILINEAR)
            return image, width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def open_rgb(path: Path) -> Image.Image:
    """The full image as RGB (stored pixel grid, no EXIF rotation: boxes are in that grid)."""
    return Image.fromarray(load_image(path))


def placeholder(size: int, text: str) -> Image.Image:
    """A grey square with ``text``, for an image that cannot be shown."""
    image = Image.new("RGB", (size, size), "#d0d0d0")
    ImageDraw.Draw(image).text((8, size // 2 - 6), text, fill="#444444")
    return image


def draw_boxes(
    image: Image.Image,
    boxes: np.ndarray,
    class_ids: np.ndarray,
    classes: Dataset | list[str],
    *,
    width: int = 2,
    labels: bool = True,
    highlight: int | None = None,
) -> Image.Image:
    """A copy of ``image`` with each box outlined in its class colour, optionally with the class
    name (and box number) above it; ``highlight`` draws that box thicker."""
    name_of = (
        classes.class_name
        if isinstance(classes, Dataset)
        else (lambda i: classes[i] if 0 <= i < len(classes) else str(i))
    )
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i, (box, class_id) in enumerate(
        zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), class_ids, strict=True)
    ):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = class_colour(int(class_id))
        line = width * 2 if highlight == i else width
        # x2/y2 are exclusive: the last pixel inside the box is x2 - 1.
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=line)
        if labels:
            text = f"{i + 1} {name_of(int(class_id))}"
            left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
            ty = y1 - (bottom - top) - 4 if y1 - (bottom - top) - 4 >= 0 else y1
            draw.rectangle([x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 4], fill=colour)
            draw.text((x1 + 2, ty + 1), text, fill="white", font=font)
    return out


def render(path: Path, boxes: np.ndarray, class_ids: np.ndarray, classes: Dataset | list[str], **kwargs) -> Image.Image:
    """The full image at ``path`` with its boxes drawn; a placeholder when it cannot be read."""
    try:
        image = open_rgb(path)
    except ReadError as e:
        return placeholder(512, str(e)[:60])
    return draw_boxes(image, boxes, class_ids, classes, **kwargs)


MAX_LABELS = 60  # more labels than this cover the picture; every box is still drawn, and listed in the table


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


@lru_cache(maxsize=4096)
def _label(text: str, size: int, colour: str) -> Image.Image:
    """``text`` in white on ``colour``, rendered once: FreeType rendering is ~2 ms a label on
    this CPU, a paste of the cached tile ~20 us (scores have two decimals, so tiles repeat)."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGB", (right - left + 4, bottom - top + 4), colour)
    ImageDraw.Draw(tile).text((2 - left, 2 - top), text, fill="white", font=font)
    return tile


def annotate(image: np.ndarray, det: Detections, classes: list[str]) -> np.ndarray:
    """A copy of the ``(H, W, 3)`` uint8 RGB ``image`` with each box in its class colour and
    ``class score`` written above the ``MAX_LABELS`` best ones; text scales with the image."""
    picture = draw_boxes(
        Image.fromarray(image),
        det.boxes,
        det.class_ids,
        classes,
        width=max(2, round(max(image.shape[:2]) / 300)),
        labels=False,
    )
    size = max(11, round(max(image.shape[:2]) / 45))
    order = np.argsort(-det.scores, kind="stable")[:MAX_LABELS]
    for i in order[::-1]:  # the best drawn last, on top
        class_id = int(det.class_ids[i])
        name = classes[class_id] if 0 <= class_id < len(classes) else str(class_id)
        tile = _label(f"{name} {det.scores[i]:.2f}", size, class_colour(class_id))
        x1, y1 = round(float(det.boxes[i, 0])), round(float(det.boxes[i, 1]))
        ty = y1 - tile.height if y1 - tile.height >= 0 else y1
        picture.paste(tile, (x1, ty))
    return np.asarray(picture)
