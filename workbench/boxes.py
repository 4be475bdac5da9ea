"""Box arithmetic, written once: IoU, and the conversions between corner and size forms.

Boxes are ``(N, 4)`` float pixel arrays ``x1, y1, x2, y2`` (0-based, ``x2``/``y2``
exclusive, see ``workbench.annotations``). ``xywh`` is COCO's ``[x, y, w, h]`` with
``x, y`` the top-left corner: ``x2 = x + w``. A box with ``x2 < x1`` has no area.
Torch-free: every part of the workbench uses these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float64 array (``(0, 4)`` when empty)."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def xyxy_to_xywh(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(N, 4)`` ``x1, y1, x2, y2`` -> ``(N, 4)`` ``x, y, w, h`` (a new array)."""
    b = as_boxes(boxes)
    return np.column_stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])


def xywh_to_xyxy(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(N, 4)`` ``x, y, w, h`` -> ``(N, 4)`` ``x1, y1, x2, y2`` (a new array)."""
    b = as_boxes(boxes)
    return np.column_stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]])


def areas(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``(N,)`` areas in px²; a box with a negative side has area 0."""
    b = as_boxes(boxes)
    return (b[:, 2:] - b[:, :2]).clip(0).prod(axis=1)


def iou(
    boxes_a: np.ndarray | Sequence[Sequence[float]],
    boxes_b: np.ndarray | Sequence[Sequence[float]],
    *,
    crowd: bool = False,
) -> np.ndarray:
    """``(len(a), len(b))`` IoU of two box arrays; 0 where the union is empty.

    ``crowd=True`` gives COCO's crowd overlap (what ``pycocotools.mask.iou`` computes for
    ``iscrowd=1``): the intersection over the area of the ``a`` box alone, so a detection
    inside a crowd region overlaps it fully.
    """
    a, b = as_boxes(boxes_a), as_boxes(boxes_b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    area_a = areas(a)[:, None]
    union = np.broadcast_to(area_a, inter.shape) if crowd else area_a + areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


__all__ = ["areas", "as_boxes", "iou", "xywh_to_xyxy", "xyxy_to_xywh"]
