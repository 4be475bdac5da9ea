"""Saving edits: only the files that change are written, the conflict check, the journal and undo,
in each format."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.app.conftest import SHARED, copy_voc, copy_yolo
from workbench.datasets import index
from workbench.errors import WorkbenchError
from workbench.formats import get_format, labelme, voc, yolo
from workbench.labelling import edits, saving


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6)


def test_save_writes_only_the_record_file_and_undo_restores_bytes(voc_copy):
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    xml = voc_copy / record.annotation
    before_all = digests(voc_copy)
    original = xml.read_bytes()
    edits.relabel_box(record, 0, 1 - int(record.class_ids[0]))
    journal = saving.Journal()
    result = saving.save_record(opened, 0, record, journal=journal)
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
    # (the entry is written before the file, marked pending, and a "done" line follows the write)
    line, done = (json.loads(text) for text in journal.path.read_text().splitlines())
    assert line["pending"] and done == {"done": line["id"]}
    assert line["author"] and line["process"]["pid"] > 0
    assert line["files"][0]["path"] == record.annotation
    assert journal.get(line["files"][0]["before"]) == original
    entry = saving.undo(voc_copy, journal=saving.Journal())
    assert entry["id"] == 1
    assert xml.read_bytes() == original
    assert digests(voc_copy) == before_all
    with pytest.raises(saving.NothingToUndo):
        saving.undo(voc_copy)


def test_save_is_refused_when_the_file_changed_on_disk(voc_copy):
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    xml = voc_copy / record.annotation
    edits.delete_box(record, 0)
    other_tool = xml.read_bytes().replace(b"<pose>Unspecified</pose>", b"<pose>Frontal</pose>", 1)
    xml.write_bytes(other_tool)
    journal = saving.Journal()
    with pytest.raises(saving.ConflictError, match=record.annotation):
        saving.save_record(opened, 0, record, journal=journal)
    assert xml.read_bytes() == other_tool
    assert journal.entries() == []
    assert len(opened.dataset.images[0]) == len(record) + 1  # the in-memory dataset is unchanged too


def test_a_same_size_edit_by_another_tool_is_refused(voc_copy):
    """The other tool's edit keeps the file's length (``Unspecified`` -> ``UNSPECIFIED``): a check
    of the size alone would overwrite it without a word."""
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    xml = voc_copy / record.annotation
    edits.delete_box(record, 0)
    original = xml.read_bytes()
    other_tool = original.replace(b"Unspecified", b"UNSPECIFIED")
    assert other_tool != original and len(other_tool) == len(original)
    xml.write_bytes(other_tool)
    journal = saving.Journal()
    with pytest.raises(saving.ConflictError, match=record.annotation):
        saving.save_record(opened, 0, record, journal=journal)
    assert xml.read_bytes() == other_tool
    assert journal.entries() == []


def test_expected_state_from_when_editing_started(voc_copy):
    """Two sessions edit the same image: the second save is refused, not merged over the first."""
    opened = index.open_dataset(voc_copy)
    files = saving.files_of(opened.dataset, opened.dataset.images[0])
    first, second = opened.dataset.images[0].copy(), opened.dataset.images[0].copy()
    expected = saving.expected_state(opened, files)
    edits.delete_box(first, 0)
    saving.save_record(opened, 0, first, expected=dict(expected))
    edits.relabel_box(second, 1, 0)
    with pytest.raises(saving.ConflictError):
        saving.save_record(opened, 0, second, expected=dict(expected))


def test_undo_is_refused_when_the_file_changed_since(voc_copy):
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[1].copy()
    edits.delete_box(record, 0)
    journal = saving.Journal()
    saving.save_record(opened, 1, record, journal=journal)
    xml = voc_copy / record.annotation
    xml.write_bytes(xml.read_bytes() + b"\n")
    with pytest.raises(saving.ConflictError):
        saving.undo(voc_copy, journal=journal)


def test_yolo_merge_rewrites_names_and_labels_and_undo_restores_all(tmp_path):
    data = copy_yolo(tmp_path / "yolo", 4)
    before = digests(data)
    opened = index.open_dataset(data)
    changed = edits.copy_for_class_edit(opened.dataset)
    usage = edits.merge_classes(changed, 0, 1)
    assert usage.boxes > 0
    journal = saving.Journal()
    result = saving.save_class_change(opened, changed, journal=journal, message="merge")
    assert "classes.txt" in result.files
    assert (data / "classes.txt").read_text() == "with_mask\n"
    fresh = yolo.load(data)
    assert fresh.classes == ["with_mask"] and all((r.class_ids == 0).all() for r in fresh.images)
    assert opened.dataset.classes == ["with_mask"]
    saving.undo(data, journal=journal)
    assert digests(data) == before


def test_yolo_added_class_is_written_with_the_record(tmp_path):
    data = copy_yolo(tmp_path / "yolo", 2)
    opened = index.open_dataset(data)
    classes = list(opened.dataset.classes)
    new_id = edits.add_class(classes, "face_shield")
    record = opened.dataset.images[0].copy()
    edits.relabel_box(record, 0, new_id)
    result = saving.save_record(opened, 0, record, classes=classes)
    assert set(result.files) == {"classes.txt", record.annotation}
    assert yolo.load(data).classes == ["without_mask", "with_mask", "face_shield"]


def test_labelme_relabel_keeps_flags_and_other_shapes(tmp_path):
    src = SHARED / "labelme-examples" / "bbox_detection"
    data = tmp_path / "lm"
    data.mkdir()
    for p in sorted(src.iterdir())[:4]:
        shutil.copyfile(p, data / p.name)
    opened = index.open_dataset(data, "labelme")
    record = opened.dataset.images[0].copy()
    json_path = data / record.annotation
    doc0 = json.loads(json_path.read_text())
    classes = list(opened.dataset.classes)
    edits.relabel_box(record, 0, edits.add_class(classes, "somebody"))
    saving.save_record(opened, 0, record, classes=classes)
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
    opened = index.open_dataset(root, "coco")
    position = next(i for i, r in enumerate(opened.dataset.images) if len(r) >= 2)
    record = opened.dataset.images[position].copy()
    doc0 = json.loads((data / "_annotations.coco.json").read_text())
    edits.move_box(record, 1, record.boxes[1] + [1, 1, 1, 1])
    saving.save_record(opened, position, record, journal=saving.Journal())
    doc1 = json.loads((data / "_annotations.coco.json").read_text())
    assert doc1["categories"] == doc0["categories"] and doc1["images"] == doc0["images"]
    changed = [(a, b) for a, b in zip(doc0["annotations"], doc1["annotations"], strict=True) if a != b]
    assert len(changed) == 1
    a, b = changed[0]
    assert b["id"] == a["id"] and b["bbox"] == [v + 1 for v in a["bbox"][:2]] + a["bbox"][2:]
    before = data / "_annotations.coco.json"
    saving.undo(root)
    assert json.loads(before.read_text()) == doc0


def test_index_cache_follows_saves(voc_copy):
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[2].copy()
    edits.delete_box(record, 0)
    saving.save_record(opened, 2, record)
    again = index.open_dataset(voc_copy)
    assert again.from_cache  # the save updated the cache instead of invalidating it
    assert again.dataset.images[2].boxes.tolist() == record.boxes.tolist()
    assert get_format("voc").load(voc_copy).images[2].boxes.tolist() == record.boxes.tolist()


def test_save_to_a_position_holding_another_image_is_refused(voc_copy):
    opened = index.open_dataset(voc_copy)
    record = opened.dataset.images[0].copy()
    with pytest.raises(WorkbenchError, match="reloaded"):
        saving.save_record(opened, 1, record)


def test_undo_undoes_exactly_the_entry_it_names_and_by_default_my_last(voc_copy):
    opened = index.open_dataset(voc_copy)
    files = [voc_copy / r.annotation for r in opened.dataset.images[:3]]
    old = [f.read_bytes() for f in files]
    ids = {}
    for position, author in enumerate(("alice", "bob", "alice")):
        record = opened.dataset.images[position].copy()
        edits.delete_box(record, 0)
        ids[position] = saving.save_record(opened, position, record, journal=saving.Journal(author=author)).entry
    bob = saving.Journal(author="bob")
    assert [e["id"] for e in bob.undoable(voc_copy, author="bob")] == [ids[1]]
    assert saving.undo(voc_copy, journal=bob)["id"] == ids[1]  # bob's last, not alice's newer one
    assert [f.read_bytes() == o for f, o in zip(files, old, strict=True)] == [False, True, False]
    assert saving.undo(voc_copy, entry=ids[0], journal=bob)["author"] == "alice"  # named: exactly that one
    assert [f.read_bytes() == o for f, o in zip(files, old, strict=True)] == [True, True, False]
    with pytest.raises(saving.NothingToUndo, match=str(ids[0])):
        saving.undo(voc_copy, entry=ids[0])
    with pytest.raises(saving.NothingToUndo):
        saving.undo(voc_copy, journal=bob)


def test_journal_append_reads_only_the_tail(tmp_path, monkeypatch):
    journal = saving.Journal(tmp_path / "journal.jsonl")
    lines = [{"id": k, "root": "/r", "message": "x" * 500, "files": []} for k in range(1, 3001)]  # 1.5 MB
    journal.path.write_text("".join(json.dumps(line) + "\n" for line in lines) + json.dumps({"done": 2999}) + "\n")
    reads = []
    real_open = open

    def counting_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "b" in mode and Path(path) == journal.path:
            real_read = handle.read
            handle.read = lambda n=-1: reads.append(n) or real_read(n)
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    assert journal.append({"root": "/r", "message": "new", "files": []}) == 3001
    assert 0 < sum(reads) <= 64 * 1024  # the last 64 KB, not the 1.5 MB


def test_a_save_removes_only_the_temp_files_its_own_files_left(tmp_path):
    from workbench.labelling.files import clean_temps

    (tmp_path / "a").mkdir()
    left = [".x.xml.ab12CD34.tmp", ".y.xml.zz99zz99.tmp"]  # killed writes of x.xml and y.xml
    kept = [".z.xml.ab12CD34.tmp", ".x.xml.tmp", "x.xml.ab12CD34.tmp", ".x.xml.ab12CD34.tmp.bak", "x.xml"]
    for name in left + kept:
        (tmp_path / "a" / name).write_text("")
    clean_temps(tmp_path, ["a/x.xml", "a/y.xml", "new/w.xml"])  # new/: a folder the save makes
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(kept)
