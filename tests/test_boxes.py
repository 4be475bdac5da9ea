"""workbench.boxes: the one IoU and the one xyxy <-> xywh conversion."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from workbench.boxes import areas, as_boxes, iou, xywh_to_xyxy, xyxy_to_xywh


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges: x2 is exclusive
        ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty union
        ([5, 5, 3, 3], [0, 0, 10, 10], 0.0),  # inverted box: no area
    ],
)
def test_iou_table(a, b, expected):
    assert iou([a], [b])[0, 0] == pytest.approx(expected)
    assert iou([b], [a])[0, 0] == pytest.approx(expected)


def test_iou_shapes_and_empty_inputs():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=float)
    b = np.array([[0, 0, 10, 10], [25, 25, 35, 35]], dtype=float)
    out = iou(a, b)
    assert out.shape == (3, 2)
    assert out[0, 0] == 1.0 and out[2, 0] == pytest.approx(0.25) and out[1, 1] == pytest.approx(25 / 175)
    assert iou(np.zeros((0, 4)), b).shape == (0, 2)
    assert iou(a, []).shape == (3, 0)


def test_crowd_overlap_is_over_the_first_box():
    inside, crowd = [[2, 2, 4, 4]], [[0, 0, 10, 10]]
    assert iou(inside, crowd, crowd=True)[0, 0] == 1.0
    assert iou(inside, crowd)[0, 0] == pytest.approx(0.04)


@pytest.mark.parametrize("crowd", [False, True])
def test_iou_equals_pycocotools(crowd):
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(60, 2))
    sizes = rng.uniform(1, 40, size=(60, 2))
    boxes = np.hstack([corners, corners + sizes])
    a, b = boxes[:25], boxes[25:]
    theirs = np.asarray(
        mask_utils.iou(xyxy_to_xywh(a).tolist(), xyxy_to_xywh(b).tolist(), [int(crowd)] * len(b)), dtype=float
    )
    np.testing.assert_allclose(iou(a, b, crowd=crowd), theirs, rtol=1e-9, atol=1e-12)


def test_xywh_round_trip_and_inputs_untouched():
    xyxy = np.array([[1.5, 2.0, 11.5, 7.0], [0, 0, 0, 0]])
    kept = xyxy.copy()
    xywh = xyxy_to_xywh(xyxy)
    np.testing.assert_array_equal(xywh, [[1.5, 2.0, 10.0, 5.0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), xyxy)
    np.testing.assert_array_equal(xyxy, kept)
    assert xyxy_to_xywh([]).shape == (0, 4) and xywh_to_xyxy(np.zeros((0, 4))).shape == (0, 4)


def test_areas_and_as_boxes():
    np.testing.assert_array_equal(areas([[0, 0, 2, 3], [5, 5, 4, 9]]), [6.0, 0.0])
    assert as_boxes([1, 2, 3, 4]).shape == (1, 4) and as_boxes([]).shape == (0, 4)
