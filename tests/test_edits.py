"""Edits: record and class operations, saving with the conflict check, the journal and undo."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import SHARED, copy_voc, copy_yolo
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import catalog as workspace
from workbench.errors import WorkbenchError
from workbench.formats import get_format, labelme, voc, yolo
from workbench.labelling import edits


def rec(boxes, ids, **kw) -> ImageRecord:
    return ImageRecord(path="a.jpg", width=100, height=80, boxes=boxes, class_ids=ids, **kw)


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


# --- record edits ------------------------------------------------------------------------


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


# --- class edits -----------------------------------------------------------------------------


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


# --- saving, conflicts, journal, undo ------------------------------------------------------


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6)


def test_save_writes_only_the_record_file_and_undo_restores_bytes(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    xml = voc_copy / record.annotation
    before_all = digests(voc_copy)
    original = xml.read_bytes()
    edits.relabel_box(record, 0, 1 - int(record.class_ids[0]))
    journal = edits.Journal()
    result = edits.save_record(opened, 0, record, journal=journal)
    assert list(result.files) == [record.annotation] and result.entry == 1
    after_all = digests(voc_copy)
    assert {k for k in after_all if after_all[k] != before_all[k]} == {record.annotation}
    _, objects0 = voc.parse(original, "x")
    _, objects1 = voc.parse(xml.read_bytes(), "x")
    assert objects1[0]["name"] != objects0[0]["name"]
    assert objects1[1:] == objects0[1:]
    assert {k: v for k, v in objects1[0].items() if k != "name"} == {
        k: v for k, v in objects0[0].items() if k != "name"
    }
    # the journal line holds the old bytes; undo works from a fresh Journal (a restart)
    line = json.loads(journal.path.read_text().splitlines()[-1])
    assert line["files"][0]["path"] == record.annotation
    assert journal.get(line["files"][0]["before"]) == original
    entry = edits.undo(voc_copy, journal=edits.Journal())
    assert entry["id"] == 1
    assert xml.read_bytes() == original
    assert digests(voc_copy) == before_all
    with pytest.raises(edits.NothingToUndo):
        edits.undo(voc_copy)


def test_save_is_refused_when_the_file_changed_on_disk(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    xml = voc_copy / record.annotation
    edits.delete_box(record, 0)
    other_tool = xml.read_bytes().replace(b"<pose>Unspecified</pose>", b"<pose>Frontal</pose>", 1)
    xml.write_bytes(other_tool)
    journal = edits.Journal()
    with pytest.raises(edits.ConflictError, match=record.annotation):
        edits.save_record(opened, 0, record, journal=journal)
    assert xml.read_bytes() == other_tool
    assert journal.entries() == []
    assert len(opened.dataset.images[0]) == len(record) + 1  # the in-memory dataset is unchanged too


def test_expected_state_from_when_editing_started(voc_copy):
    """Two sessions edit the same image: the second save is refused, not merged over the first."""
    opened = workspace.open_dataset(voc_copy)
    files = edits.files_of(opened.dataset, opened.dataset.images[0])
    first, second = opened.dataset.images[0].copy(), opened.dataset.images[0].copy()
    expected = edits.expected_state(opened, files)
    edits.delete_box(first, 0)
    edits.save_record(opened, 0, first, expected=dict(expected))
    edits.relabel_box(second, 1, 0)
    with pytest.raises(edits.ConflictError):
        edits.save_record(opened, 0, second, expected=dict(expected))


def test_undo_is_refused_when_the_file_changed_since(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    record = opened.dataset.images[1].copy()
    edits.delete_box(record, 0)
    journal = edits.Journal()
    edits.save_record(opened, 1, record, journal=journal)
    xml = voc_copy / record.annotation
    xml.write_bytes(xml.read_bytes() + b"\n")
    with pytest.raises(edits.ConflictError):
        edits.undo(voc_copy, journal=journal)


def test_yolo_merge_rewrites_names_and_labels_and_undo_restores_all(tmp_path):
    data = copy_yolo(tmp_path / "yolo", 4)
    before = digests(data)
    opened = workspace.open_dataset(data)
    changed = edits.copy_for_class_edit(opened.dataset)
    usage = edits.merge_classes(changed, 0, 1)
    assert usage.boxes > 0
    journal = edits.Journal()
    result = edits.save_class_change(opened, changed, journal=journal, message="merge")
    assert "classes.txt" in result.files
    assert (data / "classes.txt").read_text() == "with_mask\n"
    fresh = yolo.load(data)
    assert fresh.classes == ["with_mask"] and all((r.class_ids == 0).all() for r in fresh.images)
    assert opened.dataset.classes == ["with_mask"]
    edits.undo(data, journal=journal)
    assert digests(data) == before


def test_yolo_added_class_is_written_with_the_record(tmp_path):
    data = copy_yolo(tmp_path / "yolo", 2)
    opened = workspace.open_dataset(data)
    classes = list(opened.dataset.classes)
    new_id = edits.add_class(classes, "face_shield")
    record = opened.dataset.images[0].copy()
    edits.relabel_box(record, 0, new_id)
    result = edits.save_record(opened, 0, record, classes=classes)
    assert set(result.files) == {"classes.txt", record.annotation}
    assert yolo.load(data).classes == ["without_mask", "with_mask", "face_shield"]


def test_labelme_relabel_keeps_flags_and_other_shapes(tmp_path):
    src = SHARED / "labelme-examples" / "bbox_detection"
    data = tmp_path / "lm"
    data.mkdir()
    for p in sorted(src.iterdir())[:4]:
        shutil.copyfile(p, data / p.name)
    opened = workspace.open_dataset(data, "labelme")
    record = opened.dataset.images[0].copy()
    json_path = data / record.annotation
    doc0 = json.loads(json_path.read_text())
    classes = list(opened.dataset.classes)
    edits.relabel_box(record, 0, edits.add_class(classes, "somebody"))
    edits.save_record(opened, 0, record, classes=classes)
    doc1 = json.loads(json_path.read_text())
    assert doc1["shapes"][0]["label"] != doc0["shapes"][0]["label"]
    assert {k: v for k, v in doc1["shapes"][0].items() if k != "label"} == {
        k: v for k, v in doc0["shapes"][0].items() if k != "label"
    }
    assert doc1["shapes"][1:] == doc0["shapes"][1:]
    assert {k: v for k, v in doc1.items() if k != "shapes"} == {k: v for k, v in doc0.items() if k != "shapes"}
    assert labelme.load(data).images[0].boxes.tolist() == record.boxes.tolist()


def test_coco_save_rewrites_the_split_file_keeping_ids(tmp_path):
    src = SHARED / "roboflow-coco" / "valid"
    data = tmp_path / "coco" / "valid"
    shutil.copytree(src, data, copy_function=shutil.copyfile)
    root = data.parent
    opened = workspace.open_dataset(root, "coco")
    position = next(i for i, r in enumerate(opened.dataset.images) if len(r) >= 2)
    record = opened.dataset.images[position].copy()
    doc0 = json.loads((data / "_annotations.coco.json").read_text())
    edits.move_box(record, 1, record.boxes[1] + [1, 1, 1, 1])
    edits.save_record(opened, position, record, journal=edits.Journal())
    doc1 = json.loads((data / "_annotations.coco.json").read_text())
    assert doc1["categories"] == doc0["categories"] and doc1["images"] == doc0["images"]
    changed = [(a, b) for a, b in zip(doc0["annotations"], doc1["annotations"], strict=True) if a != b]
    assert len(changed) == 1
    a, b = changed[0]
    assert b["id"] == a["id"] and b["bbox"] == [v + 1 for v in a["bbox"][:2]] + a["bbox"][2:]
    before = data / "_annotations.coco.json"
    edits.undo(root)
    assert json.loads(before.read_text()) == doc0


def test_index_cache_follows_saves(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    record = opened.dataset.images[2].copy()
    edits.delete_box(record, 0)
    edits.save_record(opened, 2, record)
    again = workspace.open_dataset(voc_copy)
    assert again.from_cache  # the save updated the cache instead of invalidating it
    assert again.dataset.images[2].boxes.tolist() == record.boxes.tolist()
    assert get_format("voc").load(voc_copy).images[2].boxes.tolist() == record.boxes.tolist()


def test_save_to_a_position_holding_another_image_is_refused(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    with pytest.raises(WorkbenchError, match="reloaded"):
        edits.save_record(opened, 1, record)
