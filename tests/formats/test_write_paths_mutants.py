"""Against mutants mutmut left alive (docs/mutation.md): where a VOC record's XML goes, and the
COCO annotation a save writes for a box whose kept annotation lacks ``area`` or ``segmentation``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.annotations import Dataset, ImageRecord
from workbench.formats import coco, voc


@pytest.mark.parametrize(
    ("fmt", "path", "annotation", "expected"),
    [
        ("voc", "images/train/a.png", "ann/x.xml", "ann/x.xml"),  # its own file, wherever it is
        ("voc", "a.png", None, "annotations/a.xml"),  # a new image of a VOC dataset
        ("coco", "images/train/a.png", "ann/x.xml", "annotations/train/a.xml"),  # another format's file: not ours
        ("yolo", "b.jpg", "labels/b.txt", "annotations/b.xml"),
    ],
)
def test_voc_annotation_path(fmt, path, annotation, expected):
    record = ImageRecord(path=path, width=4, height=4, annotation=annotation)
    dataset = Dataset(root=Path("/data"), format=fmt, classes=[], images=[record])
    assert voc.annotation_path(dataset, record) == expected
    assert voc.annotation_files(dataset, record) == [expected]


def test_a_kept_coco_annotation_gains_only_what_it_lacks():
    box = [1.0, 2.0, 11.0, 7.0]  # bbox [1, 2, 10, 5]: area 50
    unmoved = coco._annotation(box, 3, 5, {"id": 9, "bbox": [1, 2, 10, 5]}, None)
    assert unmoved == {"id": 9, "bbox": [1, 2, 10, 5], "image_id": 5, "category_id": 3, "area": 50, "iscrowd": 0}
    assert "segmentation" not in unmoved  # the file had none and the box has no polygon
    polygon = np.array([[1.0, 2.0], [11.0, 2.0], [11.0, 7.0]])
    with_polygon = coco._annotation(box, 3, 5, {"id": 9, "bbox": [1, 2, 10, 5], "area": 7}, polygon)
    assert with_polygon["area"] == 7 and with_polygon["segmentation"] == [[1, 2, 11, 2, 11, 7]]  # its own area kept
    moved = coco._annotation(box, 3, 5, {"id": 9, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 1}, None)
    assert moved == {"id": 9, "bbox": [1, 2, 10, 5], "area": 50, "image_id": 5, "category_id": 3, "iscrowd": 1}
    flat = coco._annotation([4.0, 4.0, 4.0, 9.0], 1, 2, {"id": 1, "bbox": [4, 4, 0, 5]}, None)
    assert flat["area"] == 0  # a zero-width box: no negative or mirrored area
