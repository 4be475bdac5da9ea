"""Edits in memory: record operations (relabel, move, add, delete, apply a drawing) and class
operations (usage, add, rename, merge, delete)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import WorkbenchError
from workbench.labelling import edits


def rec(boxes, ids, **kw) -> ImageRecord:
    return ImageRecord(path="a.jpg", width=100, height=80, boxes=boxes, class_ids=ids, **kw)


def test_relabel_move_add_delete():
    r = rec([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1], polygons=[np.array([[0, 0], [10, 0], [10, 10]]), None])
    r.box_extra[0] = {"voc": {"pose": "Left"}}
    edits.relabel_box(r, 1, 0)
    assert r.class_ids.tolist() == [0, 0]
    edits.move_box(r, 0, [1, 2, 11, 12])
    assert r.boxes[0].tolist() == [1, 2, 11, 12]
    assert r.polygons[0] is None  # stale polygon dropped
    assert r.box_extra[0] == {"voc": {"pose": "Left"}}  # other fields kept
    assert edits.add_box(r, [5, 5, 6, 6], 2) == 2
    edits.delete_box(r, 1)
    assert r.boxes.tolist() == [[1, 2, 11, 12], [5, 5, 6, 6]] and r.class_ids.tolist() == [0, 2]


def test_move_drops_coco_segmentation_but_keeps_other_keys():
    r = rec(
        [[0, 0, 10, 10]], [0], box_extra=[{"coco": {"id": 7, "segmentation": [[0, 0, 10, 0, 10, 10]], "iscrowd": 0}}]
    )
    edits.move_box(r, 0, [2, 2, 12, 12])
    assert r.box_extra[0] == {"coco": {"id": 7, "iscrowd": 0}}


@pytest.mark.parametrize("box", [[5, 5, 5, 9], [5, 5, 4, 9], [0, 0, np.nan, 3]])
def test_bad_boxes_are_refused(box):
    r = rec([[0, 0, 10, 10]], [0])
    with pytest.raises(WorkbenchError):
        edits.move_box(r, 0, box)
    with pytest.raises(WorkbenchError):
        edits.add_box(r, box, 0)
    assert r.boxes.tolist() == [[0, 0, 10, 10]]


def test_bad_index_is_refused():
    with pytest.raises(WorkbenchError, match="no box 3"):
        edits.relabel_box(rec([[0, 0, 1, 1]], [0]), 2, 0)


BOXES = [[10, 10, 30, 30], [40, 10, 60, 30], [70, 40, 90, 70]]


@pytest.mark.parametrize(
    ("drawn", "boxes", "ids", "n_changes"),
    [
        # the component hands the list back reordered, with float noise: no change
        ([([70, 40, 90.0000001, 70], 2), ([10, 10, 30, 30], 0), ([40, 10, 60, 30], 1)], BOXES, [0, 1, 2], 0),
        # relabel the second box
        ([([10, 10, 30, 30], 0), ([40, 10, 60, 30], 2), ([70, 40, 90, 70], 2)], BOXES, [0, 2, 2], 1),
        # move the first box (rounded to whole pixels)
        (
            [([12.4, 13.6, 32.4, 33.6], 0), ([40, 10, 60, 30], 1), ([70, 40, 90, 70], 2)],
            [[12, 14, 32, 34], *BOXES[1:]],
            [0, 1, 2],
            1,
        ),
        # delete the middle box
        ([([10, 10, 30, 30], 0), ([70, 40, 90, 70], 2)], [BOXES[0], BOXES[2]], [0, 2], 1),
        # add a box (clipped to the image)
        (
            [*[(b, i) for b, i in zip(BOXES, [0, 1, 2], strict=True)], ([80, 60, 120, 90], 1)],
            [*BOXES, [80, 60, 100, 80]],
            [0, 1, 2, 1],
            1,
        ),
        # everything deleted
        ([], [], [], 3),
    ],
)
def test_apply_drawn(drawn, boxes, ids, n_changes):
    r = rec(BOXES, [0, 1, 2])
    r.box_extra = [{"voc": {"pose": str(i)}} for i in range(3)]
    changes = edits.apply_drawn(r, drawn, names=["a", "b", "c"])
    assert len(changes) == n_changes, changes
    assert r.boxes.tolist() == boxes
    assert r.class_ids.tolist() == ids


def test_apply_drawn_keeps_fields_of_matched_boxes_and_ignores_clamping():
    r = rec([[-3, 5, 20, 20], [50, 50, 52, 51]], [0, 1])  # out of bounds, and tiny
    r.box_extra = [{"voc": {"pose": "Left"}}, {"voc": {"pose": "Right"}}]
    shown = np.array([[0, 5, 20, 20], [50, 50, 55, 55]])  # what the component gives back untouched
    changes = edits.apply_drawn(r, [([50, 50, 55, 55], 1), ([0, 5, 20, 20], 0)], shown=shown)
    assert changes == []
    assert r.boxes.tolist() == [[-3, 5, 20, 20], [50, 50, 52, 51]]
    changes = edits.apply_drawn(r, [([50, 50, 55, 55], 1), ([10, 5, 30, 20], 0)], shown=shown)
    assert len(changes) == 1 and "moved" in changes[0]
    assert r.boxes[0].tolist() == [10, 5, 30, 20] and r.box_extra[0] == {"voc": {"pose": "Left"}}


def small_dataset() -> Dataset:
    images = [
        rec([[0, 0, 5, 5], [1, 1, 6, 6]], [0, 1]),
        rec([[0, 0, 5, 5]], [2]),
        rec([[0, 0, 5, 5], [2, 2, 7, 7]], [1, 1]),
    ]
    return Dataset(root=Path("/nowhere"), format="voc", classes=["a", "b", "c"], images=images)


def test_class_usage_rename_merge_delete_add():
    d = small_dataset()
    assert edits.class_usage(d, 1) == edits.ClassChange(boxes=3, images=2)
    assert edits.rename_class(d, 1, "bee") == edits.ClassChange(boxes=3, images=2)
    assert d.classes == ["a", "bee", "c"]
    with pytest.raises(WorkbenchError, match="merge"):
        edits.rename_class(d, 0, "c")
    assert edits.merge_classes(d, 0, 2) == edits.ClassChange(boxes=1, images=1)
    assert d.classes == ["bee", "c"]
    assert [r.class_ids.tolist() for r in d.images] == [[1, 0], [1], [0, 0]]
    assert edits.delete_class(d, 0) == edits.ClassChange(boxes=3, images=2)
    assert d.classes == ["c"]
    assert [r.class_ids.tolist() for r in d.images] == [[0], [0], []]
    assert edits.add_class(d, " d ") == 1 and d.classes == ["c", "d"]
    with pytest.raises(WorkbenchError):
        edits.add_class(d, "d")


def test_copy_for_class_edit_leaves_the_original_alone():
    d = small_dataset()
    changed = edits.copy_for_class_edit(d)
    edits.delete_class(changed, 1)
    assert d.classes == ["a", "b", "c"] and [len(r) for r in d.images] == [2, 1, 2]
