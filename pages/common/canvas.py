"""The Annotate page's drawing canvas: streamlit-image-annotation's detection component, fed an
image fitted to the canvas, whose returned boxes become the working copy's (``edits.apply_drawn``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image
from streamlit.elements.lib.image_utils import image_to_url
from streamlit.elements.lib.layout_utils import LayoutConfig
from streamlit_image_annotation.Detection import _component_func

from pages.common.work import bump, label_list
from workbench.annotations import ImageRecord
from workbench.boxes import xywh_to_xyxy, xyxy_to_xywh
from workbench.datasets.index import OpenDataset
from workbench.drawing import colour_map, open_rgb, render
from workbench.errors import WorkbenchError
from workbench.labelling import edits

CANVAS = (1024, 768)  # the largest size the drawing component shows an image at (px)


def component_view(boxes: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The boxes as the drawing component gives them back untouched: it clamps them to the
    image and makes any side under 5 display px a 5 x 5 box (Detection/BBoxCanvas.tsx)."""
    out = []
    for x1, y1, x2, y2 in boxes / scale:
        x, y, w, h = x1, y1, x2 - x1, y2 - y1
        if x < 0 or y < 0:
            w, h = w + min(0, x), h + min(0, y)
            x, y = max(0, x), max(0, y)
        if x + w > size[0] or y + h > size[1]:
            w, h = min(w, size[0] - x), min(h, size[1] - y)
        if w < 5 or h < 5:
            w = h = 5
        out.append([x, y, x + w, y + h])
    return np.asarray(out, dtype=np.float64).reshape(-1, 4) * scale


def detection(shown, scale: float, names: list[str], xywh: list[list[float]], labels: list[int], *, key: str):
    """streamlit-image-annotation's ``detection`` (0.8.0), with the workbench's class colours and
    an image already scaled to fit: boxes in and out are ``[x, y, w, h]`` in image pixels."""
    url = image_to_url(
        shown, LayoutConfig(width=shown.width, height=shown.height), True, "RGB", "JPEG", f"detect-{key}"
    )
    colours = colour_map(names)
    info = [
        {"bbox": [v / scale for v in b], "label_id": c, "label": names[c]} for b, c in zip(xywh, labels, strict=True)
    ]
    value = _component_func(
        image_url=url,
        image_size=shown.size,
        label_list=names,
        bbox_info=info,
        color_map=colours,
        line_width=2,
        use_space=False,
        key=key,
    )
    if value is None:
        return None
    return [
        {"bbox": [v * scale for v in item["bbox"]], "label_id": item["label_id"], "label": item["label"]}
        for item in value
    ]


@st.cache_resource(max_entries=16, show_spinner=False)
def fitted(path: str, size: int, mtime_ns: int) -> tuple[Image.Image, float]:
    """The image fitted to the canvas (a small one enlarged: the component never enlarges) and
    its scale (image px per canvas px). Cached by path, size and mtime: every click reruns the
    page, and decoding a 12-megapixel photo each time would make the page sluggish."""
    image = open_rgb(Path(path))
    fit = min(CANVAS[0] / image.width, CANVAS[1] / image.height)
    shown = image.resize(
        (max(1, round(image.width * fit)), max(1, round(image.height * fit))), Image.Resampling.BILINEAR
    )
    return shown, image.width / shown.width


def canvas(opened: OpenDataset, work: dict) -> None:
    """The drawing component; when the user clicks Complete, its boxes become the working copy."""
    record: ImageRecord = work["record"]
    names = label_list(work)
    if not names:
        st.info("This dataset has no class yet: add one on the right to draw boxes.")
        st.image(render(opened.root / record.path, record.boxes, record.class_ids, names), width="stretch")
        return
    path = opened.root / record.path
    try:
        stat = path.stat()
        shown, scale = fitted(str(path), stat.st_size, stat.st_mtime_ns)
    except (WorkbenchError, OSError) as e:
        st.error(f"{record.path}: {e}")
        return
    xywh = xyxy_to_xywh(record.boxes).tolist()
    key = f"detect-{work['rev']}"
    result = detection(shown, scale, names, xywh, [int(c) for c in record.class_ids], key=key)
    st.caption(
        "Click a box to select it, drag to move, pull a corner to resize, drag on the image to draw a new box; "
        "pick its class on the right of the picture. Click **Complete** to take the changes."
    )
    if result is None:
        return
    token = key + json.dumps(result)
    if work["applied"] == token:
        return
    work["applied"] = token
    corners = xywh_to_xyxy([b["bbox"] for b in result])
    drawn = [(box, b["label_id"]) for box, b in zip(corners.tolist(), result, strict=True)]
    view = component_view(record.boxes, scale, shown.size)
    changes = edits.apply_drawn(record, drawn, shown=view, names=names, tol=max(1.0, scale))
    if changes:
        bump(work, changes)
        st.rerun()
    else:
        st.toast("No change to take.")
