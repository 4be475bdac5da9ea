"""The Annotate page's drawing canvas: a components v2 element the workbench owns
(``canvas_component/``: inline HTML, CSS and JavaScript, no build step, no download).

It draws the image at the page's full width with the boxes as SVG over it (sharp at any zoom),
and sends every change at once as the trigger ``edit``: the whole box list, each box carrying
the index it had in the record the canvas was given (``src``). ``take_edit`` rebuilds the
working copy from that record, so a box keeps its fields (VOC ``pose``, COCO ids) and a
change is never guessed from coordinates. Commands (next, previous, accept, reject, save)
arrive as the trigger ``command`` with the same snapshot; the page acts on them through
``st.session_state["canvas_command"]``.

The working copy's ``rev`` changes when Python changes the record (side panel, save, reload):
the canvas then takes Python's boxes. Its own edits leave ``rev`` alone and count in
``work["seq"]``, so an edit in flight is never overwritten by an older echo."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from pages.common.work import label_list
from workbench.annotations import ImageRecord
from workbench.datasets.index import OpenDataset
from workbench.drawing import colour_map, open_rgb, render
from workbench.errors import WorkbenchError
from workbench.labelling import edits

KEY = "annotate_canvas"
HERE = Path(__file__).parent / "canvas_component"
LARGEST = 2560  # px: a bigger photo is sent downscaled (its boxes stay in full-size pixels)
DIRECT = 3_000_000  # bytes: a PNG, JPEG or WebP up to this size is sent as its own bytes
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

_component = st.components.v2.component(
    "workbench_canvas",
    html=(HERE / "canvas.html").read_text(encoding="utf-8"),
    css=(HERE / "canvas.css").read_text(encoding="utf-8"),
    js=(HERE / "canvas.js").read_text(encoding="utf-8"),
)


@st.cache_resource(max_entries=24, show_spinner=False)  # a resource: a big string is not copied
def image_url(path: str, size: int, mtime_ns: int) -> tuple[str, int, int]:
    """The image as a data URL, with its width and height in pixels. Cached by path, size and
    mtime: every edit reruns the page, and a 12-megapixel photo is decoded once. A small PNG,
    JPEG or WebP goes as its own bytes; anything else (or a bigger photo) as a JPEG no larger
    than ``LARGEST`` px, which the canvas scales back to the image's own pixel grid."""
    file = Path(path)
    with Image.open(file) as header:
        width, height = header.size
    mime = MIME.get(file.suffix.lower())
    if mime and size <= DIRECT and max(width, height) <= LARGEST:
        data = file.read_bytes()
    else:
        image = open_rgb(file)
        image.thumbnail((LARGEST, LARGEST), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        data, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii"), width, height


def image_of(opened: OpenDataset, record: ImageRecord) -> tuple[str, int, int]:
    path = opened.root / record.path
    stat = path.stat()
    return image_url(str(path), stat.st_size, stat.st_mtime_ns)


def warm(opened: OpenDataset, position: int) -> None:
    """Encode the image at ``position`` ahead of time, so that moving to it is quick."""
    if 0 <= position < len(opened.dataset):
        try:
            image_of(opened, opened.dataset.images[position])
        except (OSError, WorkbenchError):
            pass  # shown as an error when it is opened


def base_of(work: dict) -> ImageRecord:
    """The record the canvas was last given by Python (taken again whenever ``rev`` changes)."""
    if work.get("base_rev") != work["rev"]:
        work["base"] = work["record"].copy()
        work["base_changes"] = list(work["changes"])
        work["base_rev"] = work["rev"]
        work["seq"] = 0
    return work["base"]


def rebuild(base: ImageRecord, boxes: list, labels: list, names: list[str]) -> tuple[ImageRecord, list[str], list[int]]:
    """``base`` changed into the canvas's list: each ``[x1, y1, x2, y2, src]`` with ``src`` the
    box's index in ``base`` (``None`` for a new one). Returns the record, one line per change
    (boxes numbered as in ``base``) and, per canvas box, its index in the record."""
    name = lambda c: names[c] if 0 <= c < len(names) else str(c)  # noqa: E731
    record = base.copy()
    lines: list[str] = []
    kept: dict[int, int] = {}  # index in base -> index in the canvas's list
    for k, b in enumerate(boxes):
        if b[4] is not None and 0 <= int(b[4]) < len(base) and int(b[4]) not in kept:
            kept[int(b[4])] = k
    for src, k in sorted(kept.items()):
        box = np.asarray(boxes[k][:4], dtype=np.float64)
        label = int(labels[k])
        if label != int(base.class_ids[src]):
            lines.append(f"box {src + 1}: {name(int(base.class_ids[src]))} → {name(label)}")
            edits.relabel_box(record, src, label)
        if not np.array_equal(box, base.boxes[src]):  # untouched boxes come back bit for bit
            edits.move_box(record, src, box)
            lines.append(f"box {src + 1} ({name(label)}): moved to {edits.box_text(box)}")
    for src in sorted(set(range(len(base))) - set(kept), reverse=True):
        lines.append(f"box {src + 1} ({name(int(base.class_ids[src]))}): deleted")
        edits.delete_box(record, src)
    order = [kept[src] for src in sorted(kept)]
    taken = set(order)
    for k, b in enumerate(boxes):
        if k not in taken:
            edits.add_box(record, b[:4], int(labels[k]))
            lines.append(f"new box {len(record)} ({name(int(labels[k]))}) at {edits.box_text(b[:4])}")
            order.append(k)
    where = [order.index(k) for k in range(len(boxes))]
    return record, lines, where


def take_edit(work: dict, value: dict | None) -> bool:
    """Make the working copy hold the canvas's snapshot ``value`` (an ``edit`` or ``command``
    payload); ``False`` when it is for another image, an older ``rev`` or an older ``seq``."""
    if not value or value.get("path") != work["path"] or value.get("rev") != work["rev"]:
        return False
    base = base_of(work)
    if int(value.get("seq", 0)) <= work["seq"]:
        return False
    try:
        record, lines, where = rebuild(base, value["boxes"], value["labels"], label_list(work))
    except (WorkbenchError, KeyError, TypeError, ValueError) as e:
        st.session_state["canvas_error"] = f"The canvas sent a box that cannot be taken: {e}"
        return False
    work["record"] = record
    work["changes"] = work["base_changes"] + lines
    work["seq"] = int(value["seq"])
    selected = value.get("selected")
    if selected is not None and 0 <= selected < len(where):
        st.session_state["box_index"] = where[selected]
    return True


def on_canvas() -> None:
    """The component's callback, run before the page: take the edit, note a command."""
    work = st.session_state.get("work")
    result = st.session_state.get(KEY) or {}
    if not work:
        return
    edit, cmd = result.get("edit"), result.get("command")
    latest = max((v for v in (edit, cmd) if v), key=lambda v: v.get("seq", 0), default=None)
    take_edit(work, latest)
    if cmd and cmd.get("path") == work["path"] and cmd.get("seq") != work.get("command_seq"):
        work["command_seq"] = cmd.get("seq")
        st.session_state["canvas_command"] = cmd


def canvas(opened: OpenDataset, work: dict, suggestions: list[dict]) -> None:
    """The canvas with the working copy's boxes and the image's pending ``suggestions``."""
    record: ImageRecord = work["record"]
    names = label_list(work)
    if error := st.session_state.pop("canvas_error", None):
        st.error(error)
    if not names:
        st.info("This dataset has no class yet: add one below to draw boxes.")
        st.image(render(opened.root / record.path, record.boxes, record.class_ids, names), width="stretch")
        return
    try:
        url, width, height = image_of(opened, record)
    except (WorkbenchError, OSError) as e:
        st.error(f"{record.path}: {e}")
        return
    base_of(work)
    colours = colour_map(names)
    _component(
        key=KEY,
        data={
            "path": record.path,
            "rev": work["rev"],
            "image": url,
            "width": record.width or width,
            "height": record.height or height,
            "boxes": record.boxes.tolist(),
            "labels": [int(c) for c in record.class_ids],
            "names": names,
            "colours": [colours[n] for n in names],
            "suggestions": [
                {"id": s["id"], "box": [float(v) for v in s["box"]], "label": s["label"], "score": float(s["score"])}
                for s in suggestions
            ],
        },
        on_edit_change=on_canvas,
        on_command_change=on_canvas,
    )
