"""Tests written against the mutants mutmut left alive in workbench.labelling.saving
(docs/mutation.md): the COCO merge when another tab saved another image of the same file (and
its refusals), the conflict message naming who saved, dataset-wide class edits, the record key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import SHARED, copy_voc, copy_yolo
from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import index
from workbench.errors import WorkbenchError
from workbench.labelling import edits, saving

COCO_FILE = "test/_annotations.coco.json"


@pytest.fixture
def coco_root(tmp_path) -> Path:
    root = tmp_path / "coco"
    shutil.copytree(SHARED / "roboflow-coco" / "test", root / "test", copy_function=shutil.copyfile)
    return root


def boxed(opened, count=2) -> list[int]:
    return [i for i, r in enumerate(opened.dataset.images) if len(r) >= 2][:count]


def test_coco_merges_a_save_of_another_image_of_the_same_file(coco_root):
    mine, theirs = index.open_dataset(coco_root, "coco"), index.open_dataset(coco_root, "coco", use_cache=False)
    a, b = boxed(mine)
    other = theirs.dataset.images[b].copy()
    edits.move_box(other, 0, other.boxes[0] + [1, 1, 1, 1])
    saving.save_record(theirs, b, other, journal=saving.Journal(author="bob"))
    record = mine.dataset.images[a].copy()
    edits.move_box(record, 1, record.boxes[1] + [2, 2, 2, 2])
    result = saving.save_record(
        mine, a, record, classes=[*mine.dataset.classes, "extra"], journal=saving.Journal(author="ann")
    )
    assert list(result.files) == [COCO_FILE] and result.entry is not None
    assert a in result.positions and b in result.positions
    assert result.positions == [i for i, r in enumerate(mine.dataset.images) if r.annotation == COCO_FILE]
    again = index.open_dataset(coco_root, "coco", use_cache=False).dataset
    assert again.images[a].boxes[1].tolist() == record.boxes[1].tolist()
    assert again.images[b].boxes[0].tolist() == other.boxes[0].tolist()  # their save is kept
    assert mine.dataset.images[b].boxes[0].tolist() == other.boxes[0].tolist()  # and now in memory
    assert again.classes[-1] == "extra" and mine.dataset.classes[-1] == "extra"
    assert [again.class_name(int(c)) for c in again.images[a].class_ids] == [
        mine.dataset.class_name(int(c)) for c in record.class_ids
    ]
    doc = json.loads((coco_root / COCO_FILE).read_text())
    assert doc["categories"][-1]["name"] == "extra"


def test_coco_refuses_when_the_same_image_changed_and_names_who(coco_root):
    mine, theirs = index.open_dataset(coco_root, "coco"), index.open_dataset(coco_root, "coco", use_cache=False)
    (a,) = boxed(mine, 1)
    other = theirs.dataset.images[a].copy()
    edits.delete_box(other, 0)
    saving.save_record(theirs, a, other, journal=saving.Journal(author="bob"))
    on_disk = (coco_root / COCO_FILE).read_bytes()
    record = mine.dataset.images[a].copy()
    edits.relabel_box(record, 0, 0)
    with pytest.raises(saving.ConflictError) as e:
        saving.save_record(mine, a, record, journal=saving.Journal(author="ann"))
    assert e.value.files == [COCO_FILE] and e.value.root == str(coco_root)
    assert e.value.by[COCO_FILE].startswith("bob at ")
    assert str(e.value).startswith(f"{COCO_FILE} (saved by bob at ")
    assert str(e.value).endswith(
        " changed on disk since the dataset was loaded (another tab, person or tool saved it); "
        "nothing was saved. Reload the dataset to see the change, then edit again."
    )
    assert (coco_root / COCO_FILE).read_bytes() == on_disk


def test_coco_refuses_a_merge_when_images_were_added(coco_root):
    mine = index.open_dataset(coco_root, "coco")
    (a,) = boxed(mine, 1)
    doc = json.loads((coco_root / COCO_FILE).read_text())
    extra = dict(doc["images"][0], id=max(i["id"] for i in doc["images"]) + 1, file_name="new.jpg")
    doc["images"].append(extra)
    (coco_root / COCO_FILE).write_text(json.dumps(doc))
    record = mine.dataset.images[a].copy()
    edits.delete_box(record, 0)
    with pytest.raises(saving.ConflictError) as e:
        saving.save_record(mine, a, record)
    assert str(e.value).startswith(f"{COCO_FILE} changed on disk")  # no workbench save made it so
    assert e.value.by == {}


def test_conflict_error_lists_every_file():
    e = saving.ConflictError("/r", ["a.xml", "b.xml"], {"b.xml": "bob at T"})
    assert str(e).startswith("a.xml, b.xml (saved by bob at T) changed on disk") and e.by == {"b.xml": "bob at T"}
    assert saving.ConflictError("/r", ["a.xml"]).by == {}


def test_a_refused_position_names_the_image(tmp_path):
    opened = index.open_dataset(copy_voc(tmp_path / "voc", 3))
    record = opened.dataset.images[0].copy()
    for position in (-1, 3, 1):
        with pytest.raises(WorkbenchError) as e:
            saving.save_record(opened, position, record)
        assert str(e.value) == f"{record.path}: the dataset was reloaded since this image was opened; open it again"


def test_voc_class_rename_writes_exactly_the_files_with_that_class(tmp_path):
    root = copy_voc(tmp_path / "voc", 6)
    opened = index.open_dataset(root)
    changed = edits.copy_for_class_edit(opened.dataset)
    target = 0
    users = [i for i, r in enumerate(opened.dataset.images) if (r.class_ids == target).any()]
    assert 0 < len(users) < len(opened.dataset.images)
    edits.rename_class(changed, target, "renamed")
    journal = saving.Journal(author="ann")
    result = saving.save_class_change(opened, changed, journal=journal)
    assert result.positions == users
    assert sorted(result.files) == sorted(opened.dataset.images[i].annotation for i in users)
    assert opened.dataset.classes[target] == "renamed" and opened.classes_on_disk == changed.classes
    (entry,) = journal.entries()
    assert entry["message"] == "class edit" and entry["format"] == "voc" and "undoes" not in entry
    assert saving.save_class_change(opened, edits.copy_for_class_edit(opened.dataset)).files == {}
    short = edits.copy_for_class_edit(opened.dataset)
    short.images.pop()
    with pytest.raises(WorkbenchError) as e:
        saving.save_class_change(opened, short)
    assert str(e.value) == "the edited dataset does not match the opened one; reload it"


def test_voc_class_delete_rewrites_files_whose_boxes_go(tmp_path):
    root = copy_voc(tmp_path / "voc", 6)
    opened = index.open_dataset(root)
    changed = edits.copy_for_class_edit(opened.dataset)
    users = [i for i, r in enumerate(opened.dataset.images) if (r.class_ids == 1).any()]
    edits.delete_class(changed, 1)
    result = saving.save_class_change(opened, changed, message="drop it", journal=saving.Journal())
    assert set(users) <= set(result.positions)
    assert all(1 not in opened.dataset.images[i].class_ids.tolist() or opened.dataset.classes[1] != "x" for i in users)
    assert saving.Journal().entries()[-1]["message"] == "drop it"
    again = index.open_dataset(root, use_cache=False).dataset
    assert [len(r) for r in again.images] == [len(r) for r in changed.images]


def test_yolo_class_rename_writes_only_the_names_file(tmp_path):
    root = copy_yolo(tmp_path / "yolo")
    opened = index.open_dataset(root)
    changed = edits.copy_for_class_edit(opened.dataset)
    users = [i for i, r in enumerate(changed.images) if (r.class_ids == 0).any()]
    edits.rename_class(changed, 0, "renamed")
    result = saving.save_class_change(opened, changed)
    assert result.positions == users and set(result.files) == {"classes.txt"}  # the labels keep their ids
    assert (root / "classes.txt").read_text().splitlines()[0] == "renamed"
    merged = edits.copy_for_class_edit(opened.dataset)
    users = [i for i, r in enumerate(merged.images) if (r.class_ids == 1).any()]
    edits.merge_classes(merged, 1, 0)
    result = saving.save_class_change(opened, merged)
    assert set(users) <= set(result.positions) and "classes.txt" in result.files
    assert all(opened.dataset.images[i].annotation in result.files for i in users)


def test_ranked_and_record_key():
    assert saving._ranked([{"i": 7, "s": "x", "f": 0.5}, {"i": 3}, {"i": "n", "f": 0.25}]) == [
        {"i": 1, "s": "x", "f": 1},
        {"i": 0},
        {"i": "n", "f": 0},
    ]
    extras = [{"i": 7}]
    saving._ranked(extras)
    assert extras == [{"i": 7}]  # a copy is ranked
    ds = Dataset("/r", "coco", ["a", "b"], [])
    r = ImageRecord("x.jpg", 4, 5, [[0, 0, 1, 1]], [1], polygons=[np.array([[0, 0], [1, 0], [1, 1]])], split="s")
    r.box_extra = [{"coco": {"id": 9}, "n": 4}]
    r.extra = {"k": 1}
    assert saving._record_key(ds, r) == (
        "x.jpg",
        4,
        5,
        "s",
        [[0.0, 0.0, 1.0, 1.0]],
        ["b"],
        [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]],
        [{"coco": {"id": 9}, "n": 0}],
        {"k": 1},
    )


def test_conflict_names_the_writer_of_this_dataset_only(tmp_path):
    root, other = tmp_path / "ds", tmp_path / "other"
    root.mkdir()
    (root / "a.xml").write_bytes(b"now")
    j = saving.Journal(tmp_path / "journal.jsonl", author="bob")
    files = [{"path": "a.xml", "before": None, "after": saving._sha(b"now")}]
    j.append({"root": str(root), "files": files})
    saving.Journal(j.path, author="eve").append({"root": str(other), "files": files})  # newer, another dataset
    error = saving._conflict(root, ["a.xml"], j)
    assert error.by["a.xml"].startswith("bob at ")
    assert j.last_writer(root, "a.xml", saving._sha(b"now"))["author"] == "bob"


def test_undo_messages_and_the_entry_it_writes(tmp_path):
    with pytest.raises(saving.NothingToUndo) as e:
        saving.undo(tmp_path)
    assert str(e.value) == f"{tmp_path}: nothing to undo"
    with pytest.raises(saving.NothingToUndo) as e:
        saving.undo(tmp_path, entry=7)
    assert str(e.value) == f"{tmp_path}: nothing to undo (entry 7 is not a save that can be undone)"
    root = copy_voc(tmp_path / "voc", 3)
    opened = index.open_dataset(root)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    journal = saving.Journal(author="ann")
    saving.save_record(opened, 0, record, journal=journal)
    saving.undo(root, journal=journal)
    last = journal.entries()[-1]
    assert last["message"] == f"undo: edit {record.path}" and last["format"] == "voc" and last["undoes"] == 1
    assert [f["path"] for f in last["files"]] == [record.annotation]


def test_undo_removes_a_file_the_save_created(tmp_path):
    root = tmp_path / "lm"
    root.mkdir()
    write_image(root / "a.jpg", 20, 20)
    write_image(root / "b.jpg", 20, 20)
    (root / "a.json").write_text(json.dumps({"shapes": [], "imagePath": "a.jpg", "imageWidth": 20, "imageHeight": 20}))
    opened = index.open_dataset(root, "labelme")
    position = next(i for i, r in enumerate(opened.dataset.images) if r.path == "b.jpg")
    record = opened.dataset.images[position].copy()
    edits.add_box(record, [1, 1, 5, 5], 0)
    result = saving.save_record(opened, position, record, classes=["face"], journal=saving.Journal())
    assert list(result.files) == ["b.json"] and (root / "b.json").is_file()
    saving.undo(root, journal=saving.Journal())
    assert not (root / "b.json").exists()


def test_a_class_edit_is_refused_when_a_file_changed_on_disk(tmp_path):
    root = copy_voc(tmp_path / "voc", 4)
    opened = index.open_dataset(root)
    changed = edits.copy_for_class_edit(opened.dataset)
    edits.rename_class(changed, 0, "renamed")
    user = next(r for r in opened.dataset.images if (r.class_ids == 0).any())
    xml = root / user.annotation
    xml.write_bytes(xml.read_bytes() + b"\n")
    with pytest.raises(saving.ConflictError):
        saving.save_class_change(opened, changed)
    assert b"renamed" not in xml.read_bytes()


def test_yolo_class_delete_rewrites_the_labels_whose_ids_move(tmp_path):
    root = copy_yolo(tmp_path / "yolo")
    first = sorted((root / "labels").glob("*.txt"))[0]
    first.write_text("1 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")  # class 1 only: its ids move down
    opened = index.open_dataset(root)
    names_before = [[opened.dataset.class_name(int(c)) for c in r.class_ids] for r in opened.dataset.images]
    changed = edits.copy_for_class_edit(opened.dataset)
    edits.delete_class(changed, 0)
    saving.save_class_change(opened, changed)
    again = index.open_dataset(root, use_cache=False).dataset
    names_after = [[again.class_name(int(c)) for c in r.class_ids] for r in again.images]
    left = changed.classes
    assert names_after == [[n for n in names if n in left] for names in names_before]
    assert any(len(a) == len(b) and a for a, b in zip(names_after, names_before))  # ids moved, names kept


def test_coco_merge_over_two_files_with_a_new_class(coco_root, tmp_path):
    shutil.copytree(coco_root / "test", coco_root / "valid", copy_function=shutil.copyfile)
    info = json.loads((coco_root / COCO_FILE).read_text())["info"]
    mine, theirs = index.open_dataset(coco_root, "coco"), index.open_dataset(coco_root, "coco", use_cache=False)
    a, b = [i for i in boxed(mine, 10) if mine.dataset.images[i].annotation == COCO_FILE][:2]
    other = theirs.dataset.images[b].copy()
    edits.move_box(other, 0, other.boxes[0] + [1, 1, 1, 1])
    saving.save_record(theirs, b, other, journal=saving.Journal(tmp_path / "j.jsonl", author="bob"))
    record = mine.dataset.images[a].copy()
    edits.add_box(record, [1, 1, 9, 9], len(mine.dataset.classes))
    classes = [*mine.dataset.classes, "extra"]
    result = saving.save_record(mine, a, record, classes=classes, journal=saving.Journal(tmp_path / "j.jsonl"))
    for rel in (COCO_FILE, "valid/_annotations.coco.json"):  # the new class is in both files
        assert json.loads((coco_root / rel).read_text())["categories"][-1]["name"] == "extra", rel
    assert json.loads((coco_root / COCO_FILE).read_text())["info"] == info  # the file's own fields kept
    written = set(result.files)
    assert result.positions == [i for i, r in enumerate(mine.dataset.images) if r.annotation in written or i == a]
    assert mine.classes_on_disk == classes and mine.dataset.classes == classes
    again = index.open_dataset(coco_root, "coco", use_cache=False).dataset
    assert again.images[b].boxes[0].tolist() == other.boxes[0].tolist()


def test_a_refusal_names_the_writer_from_the_given_journal(coco_root, tmp_path):
    journal = saving.Journal(tmp_path / "elsewhere.jsonl", author="bob")
    mine, theirs = index.open_dataset(coco_root, "coco"), index.open_dataset(coco_root, "coco", use_cache=False)
    (a,) = boxed(mine, 1)
    other = theirs.dataset.images[a].copy()
    edits.delete_box(other, 0)
    saving.save_record(theirs, a, other, journal=journal)
    record = mine.dataset.images[a].copy()
    edits.relabel_box(record, 0, 0)
    with pytest.raises(saving.ConflictError) as e:
        saving.save_record(mine, a, record, journal=journal)
    assert e.value.by[COCO_FILE].startswith("bob at ")


def test_voc_save_with_a_new_class_updates_the_classes_on_disk(tmp_path):
    opened = index.open_dataset(copy_voc(tmp_path / "voc", 3))
    record = opened.dataset.images[0].copy()
    edits.relabel_box(record, 0, len(opened.dataset.classes))
    classes = [*opened.dataset.classes, "new"]
    saving.save_record(opened, 0, record, classes=classes)
    assert opened.classes_on_disk == classes


def test_undo_of_a_save_whose_files_already_hold_the_old_bytes(tmp_path):
    root = copy_voc(tmp_path / "voc", 3)
    opened = index.open_dataset(root)
    record = opened.dataset.images[0].copy()
    xml = root / record.annotation
    old = xml.read_bytes()
    edits.delete_box(record, 0)
    journal = saving.Journal(author="ann")
    saving.save_record(opened, 0, record, journal=journal)
    xml.write_bytes(old)  # as if the write never reached the disk
    saving.undo(root, journal=journal)
    last = journal.entries()[-1]
    assert {k: last[k] for k in ("root", "format", "message", "undoes", "files")} == {
        "root": str(root),
        "format": "voc",
        "message": "undo",
        "undoes": 1,
        "files": [],
    }
    assert journal.undoable(root) == []
