"""Tests written against the mutants mutmut left alive in workbench.labelling (docs/mutation.md):
``edits.apply_drawn``'s three matching passes and its messages, the class edits' errors, and the
journal's ids, tail reading, pending entries and ``describe``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import WorkbenchError
from workbench.labelling import edits, journal
from workbench.labelling.journal import Journal

N = ["a", "b", "c"]


def rec(boxes, ids, *, width=100, height=80) -> ImageRecord:
    return ImageRecord(path="a.jpg", width=width, height=height, boxes=boxes, class_ids=ids)


def test_exact_copies_pair_up_by_class_first():
    r = rec([[10, 10, 50, 50], [10, 10, 50, 50]], [0, 1])
    assert edits.apply_drawn(r, [([10, 10, 50, 50], 1), ([10, 10, 50, 50], 0)], names=N) == []
    assert r.class_ids.tolist() == [0, 1]


def test_overlap_pass_pairs_the_most_overlapping_box():
    r = rec([[0, 0, 40, 40], [60, 0, 100, 40]], [0, 1])
    assert edits.apply_drawn(r, [([5, 0, 45, 40], 0), ([60, 0, 100, 40], 1)], names=N) == [
        "box 1 (a): moved to (5, 0)-(45, 40)"
    ]
    r = rec([[0, 0, 40, 40]], [0])
    assert edits.apply_drawn(r, [([20, 0, 60, 40], 0), ([4, 0, 44, 40], 0)], names=N) == [
        "box 1 (a): moved to (4, 0)-(44, 40)",
        "new box 2 (a) at (20, 0)-(60, 40)",
    ]
    assert r.boxes.tolist() == [[4, 0, 44, 40], [20, 0, 60, 40]]


def test_distance_pass_pairs_the_nearest_centres():
    r = rec([[0, 0, 10, 10], [90, 0, 100, 10]], [0, 1])
    r.box_extra = [{"k": "first"}, {"k": "second"}]
    changes = edits.apply_drawn(r, [([60, 0, 70, 10], 1), ([30, 0, 40, 10], 0)], names=N)
    assert changes == ["box 1 (a): moved to (30, 0)-(40, 10)", "box 2 (b): moved to (60, 0)-(70, 10)"]
    assert r.box_extra == [{"k": "first"}, {"k": "second"}]


def greedy_by_centre(old: list, new: list) -> dict[int, int]:
    """The distance pass written out: nearest centres first, each box paired once."""
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    pairs, used = {}, set()
    for _, n, o in sorted(
        (float(np.linalg.norm(centre(b) - centre(a))), n, o) for n, b in enumerate(new) for o, a in enumerate(old)
    ):
        if n not in pairs and o not in used:
            pairs[n] = o
            used.add(o)
    return pairs


def test_distance_pass_on_scattered_boxes():
    """Boxes of many sizes far apart (no overlap, no box within ``tol``): each drawn box takes the
    place of the box whose centre is nearest, as the pass written out here pairs them."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        cells = rng.permutation(36)[:6]  # a 6 x 6 grid of 100 px cells, one box a cell
        boxes = []
        for cell in cells:
            x, y = 100 * (cell % 6) + rng.integers(0, 40), 100 * (cell // 6) + rng.integers(0, 40)
            boxes.append([float(x), float(y), float(x + rng.integers(5, 60)), float(y + rng.integers(5, 60))])
        old, new = boxes[:3], boxes[3:]
        r = rec(old, [0, 1, 2], width=0, height=0)
        r.box_extra = [{"k": i} for i in range(3)]
        edits.apply_drawn(r, [(b, 0) for b in new])
        pairs = greedy_by_centre(old, new)
        assert [e["k"] for e in r.box_extra] == [0, 1, 2]
        assert r.boxes.tolist() == [new[n] for n in sorted(pairs, key=pairs.get)]


def test_tol_matches_before_overlap_and_overlap_before_distance():
    # within tol of A (exactly 1 px) but overlapping C more: the tol pass pairs it with A
    r = rec([[0, 0, 10, 10], [1, -1.5, 11, 10]], [0, 1])
    assert edits.apply_drawn(r, [([1, 0, 11, 10], 0)], names=N) == ["box 2 (b): deleted"]
    assert r.boxes.tolist() == [[0, 0, 10, 10]]
    # one drawn box within tol of two: it takes one, the other is deleted
    r = rec([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0, 0])
    assert edits.apply_drawn(r, [([0, 0, 10, 10], 0)], names=N) == ["box 2 (a): deleted"]
    # overlapping A a little, its centre nearer B: the overlap pass pairs it with A
    r = rec([[0, 0, 100, 100], [150, 0, 160, 10]], [0, 1], width=200)
    assert edits.apply_drawn(r, [([95, 0, 140, 10], 0)], names=N) == [
        "box 1 (a): moved to (95, 0)-(140, 10)",
        "box 2 (b): deleted",
    ]


def test_boxes_flattened_by_rounding_are_not_moved_or_added():
    r = rec([[0, 0, 10, 10]], [0])
    assert edits.apply_drawn(r, [([0, 0, 10, 0.3], 0)], names=N) == []
    assert r.boxes.tolist() == [[0, 0, 10, 10]]
    r = rec([], [])
    assert edits.apply_drawn(r, [([10.2, 0, 10.4, 10], 0), ([0, 5, 10, 5.2], 0)], names=N) == [] and len(r) == 0


def test_new_boxes_are_rounded_clipped_and_dropped_when_empty():
    r = rec([], [])
    changes = edits.apply_drawn(r, [([-5.4, 10.6, 120, 90], 2), ([10.2, 10, 10.4, 20], 0)], names=N)
    assert changes == ["new box 1 (c) at (0, 11)-(100, 80)"]
    assert r.boxes.tolist() == [[0.0, 11.0, 100.0, 80.0]]
    r = rec([], [], width=0, height=0)  # size unknown: no clipping
    assert edits.apply_drawn(r, [([5, 5, 500.4, 700.6], 0)]) == ["new box 1 (0) at (5, 5)-(500, 701)"]
    r = rec([], [])
    assert edits.apply_drawn(r, [([10, 10, 20, 10.4], 0)]) == [] and len(r) == 0


def test_deletes_are_numbered_as_the_boxes_were_and_names_fall_back_to_ids():
    r = rec([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 1, 2])
    assert edits.apply_drawn(r, [([20, 0, 30, 10], 1)], names=["a", "b"]) == [
        "box 3 (2): deleted",
        "box 1 (a): deleted",
    ]
    assert r.boxes.tolist() == [[20, 0, 30, 10]]


def test_relabel_and_move_messages_and_tolerance():
    r = rec([[0, 0, 10, 10]], [0])
    assert edits.apply_drawn(r, [([0, 0, 10.4, 10.4], 5)], names=N) == ["box 1: a → 5"]
    r = rec([[0, 0, 10, 10]], [0])
    assert edits.apply_drawn(r, [([30.3, 0, 30.4, 10], 1)], names=N) == ["box 1: a → b"]
    assert r.boxes.tolist() == [[0, 0, 10, 10]]  # a move to nothing is not made
    r = rec([[0, 0, 10, 10]], [0])
    assert edits.apply_drawn(r, [([0, 0, 11, 10], 0)], names=N) == []  # 1 px: within tol
    assert edits.apply_drawn(r, [([0, 0, 11.5, 10], 0)], names=N) == ["box 1 (a): moved to (0, 0)-(12, 10)"]
    r = rec([[0, 0, 10, 10]], [0])
    assert edits.apply_drawn(r, [([0, 0, 12.5, 10], 0)], names=N, tol=2.5) == []
    r = rec([[0, 0, 10, 10]], [1])
    assert edits.apply_drawn(r, [([0, 0, 20, 10], 0)], names=N) == [
        "box 1: b → a",
        "box 1 (a): moved to (0, 0)-(20, 10)",
    ]
    assert edits.box_text([0.5, 1, 12345, 2.25]) == "(0.5, 1)-(1.234e+04, 2.25)"


def test_box_checks_name_the_record_and_box():
    r = rec([[0, 0, 10, 10]], [0])
    for box, why in [([5, 5, 5, 9], "has zero or negative size"), ([5, 5, 9, 5], "has zero or negative size")]:
        with pytest.raises(WorkbenchError) as e:
            edits.add_box(r, box, 0)
        shown = "[" + ", ".join(f"{float(v)}" for v in box) + "]"  # plain floats, not np.float64(...)
        assert str(e.value) == f"a.jpg: box {shown} {why}"
        with pytest.raises(WorkbenchError, match=why):
            edits.move_box(r, 0, box)
    with pytest.raises(WorkbenchError) as e:
        edits.add_box(r, [0, 0, np.inf, 3], 0)
    assert str(e.value) == "a.jpg: box [0.0, 0.0, inf, 3.0] is not finite"
    for index in (-1, 1):
        with pytest.raises(WorkbenchError) as e:
            edits.delete_box(r, index)
        assert str(e.value) == f"a.jpg: no box {index + 1} (it has 1)"
    edits.move_box(r, 0, [0, 0, 1, 1])
    assert edits.add_box(r, (1, 1, 2, 2), 3) == 1 and r.class_ids.tolist() == [0, 3]


def test_move_keeps_non_coco_extras_and_coco_without_segmentation():
    r = rec([[0, 0, 10, 10], [0, 0, 5, 5]], [0, 0])
    r.box_extra = [{"coco": "not a dict"}, {"coco": {"id": 3}}]
    edits.move_box(r, 0, [1, 1, 9, 9])
    edits.move_box(r, 1, [1, 1, 4, 4])
    assert r.box_extra == [{"coco": "not a dict"}, {"coco": {"id": 3}}]


def dataset() -> Dataset:
    images = [rec([[0, 0, 5, 5], [1, 1, 6, 6]], [0, 2]), rec([], []), rec([[0, 0, 5, 5]], [1])]
    return Dataset(root=Path("/nowhere"), format="voc", classes=["a", "b", "c"], images=images)


def test_class_edit_errors():
    d = dataset()
    for bad in (-1, 3):
        with pytest.raises(WorkbenchError) as e:
            edits.rename_class(d, bad, "x")
        assert str(e.value) == f"/nowhere: no class {bad} (there are 3)"
    with pytest.raises(WorkbenchError) as e:
        edits.rename_class(d, 0, "  ")
    assert str(e.value) == "a class name cannot be empty"
    with pytest.raises(WorkbenchError) as e:
        edits.rename_class(d, 0, "b")
    assert str(e.value) == "class 'b' already exists: merge the two classes instead"
    assert edits.rename_class(d, 0, " a ") == edits.ClassChange(boxes=1, images=1) and d.classes[0] == "a"
    with pytest.raises(WorkbenchError) as e:
        edits.merge_classes(d, 1, 1)
    assert str(e.value) == "cannot merge a class into itself"
    with pytest.raises(WorkbenchError) as e:
        edits.merge_classes(d, 0, 3)
    assert str(e.value) == "/nowhere: no class 3 (there are 3)"
    with pytest.raises(WorkbenchError) as e:
        edits.add_class(d, " ")
    assert str(e.value) == "a class name cannot be empty"
    with pytest.raises(WorkbenchError) as e:
        edits.add_class(d, "c ")
    assert str(e.value) == "class 'c' already exists"
    names = ["x"]
    assert edits.add_class(names, "y") == 1 and names == ["x", "y"]


def test_merge_and_delete_move_higher_ids_down():
    d = dataset()
    assert edits.merge_classes(d, 1, 0) == edits.ClassChange(boxes=1, images=1)
    assert d.classes == ["a", "c"] and [r.class_ids.tolist() for r in d.images] == [[0, 1], [], [0]]
    d = dataset()
    assert edits.delete_class(d, 0) == edits.ClassChange(boxes=1, images=1)
    assert d.classes == ["b", "c"] and [r.class_ids.tolist() for r in d.images] == [[1], [], [0]]
    assert d.images[0].boxes.tolist() == [[1, 1, 6, 6]]
    d = dataset()
    edits.delete_class(d, 2)
    assert [r.class_ids.tolist() for r in d.images] == [[0], [], [1]]


def test_copy_for_class_edit_copies_each_list():
    d = dataset()
    d.extra["k"] = 1
    c = edits.copy_for_class_edit(d)
    c.images[0].polygons[0] = "p"
    c.images[0].box_extra[0] = {"x": 1}
    c.images[0].boxes[0, 0] = 99
    c.classes.append("z")
    assert d.images[0].polygons[0] is None and d.images[0].box_extra[0] == {}
    assert d.images[0].boxes[0, 0] == 0 and d.classes == ["a", "b", "c"]
    assert (c.root, c.format, c.extra, c.skipped) == (d.root, d.format, d.extra, d.skipped)
    assert c.images[2].path == "a.jpg" and c.images[0].width == 100


def test_journal_ids_follow_the_last_entry_line(tmp_path):
    j = Journal(tmp_path / "j" / "journal.jsonl", author="ann")
    assert journal._last_id(j.path) == 0
    assert j.append({"root": "/r", "files": []}) == 1
    assert j.append({"root": "/r", "files": []}, pending=True) == 2
    j.done(2)
    assert [e["id"] for e in j.entries()] == [1, 2] and "pending" not in j.entries()[1]
    with open(j.path, "a") as f:
        f.write('{"id": 9}\n["not a dict"]\n{"id": "x", "root": "/r"}\n{"id": 4, "ro')  # not entries, cut short
    assert journal._last_id(j.path) == 2
    lines = [json.loads(x) for x in j.path.read_text().splitlines()[:3]]
    assert lines[2] == {"done": 2}
    first = lines[0]
    assert set(first) == {"id", "time", "author", "process", "root", "files"}
    assert first["author"] == "ann" and first["process"] == {"pid": os.getpid(), "host": socket.gethostname()}
    assert "pending" not in first and lines[1]["pending"] is True
    assert [e["id"] for e in j.entries("/r")] == [1, 2, "x"] and j.entries("/other") == []
    assert len(j.entries(Path("/r"))) == 3 and len(j.entries()) == 4


def test_last_id_reads_back_past_long_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "_TAIL", 16)
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps({"id": 7, "root": "/r", "message": "x" * 200}) + "\n" + "garbage " * 10 + "\n")
    assert journal._last_id(path) == 7
    path.write_text("x" * 100 + "\n")
    assert journal._last_id(path) == 0
    path.write_text('{"id": 3, "root": "/r"}')
    assert journal._last_id(path) == 3


def test_blobs_and_their_errors(tmp_path):
    j = Journal(tmp_path / "journal.jsonl", author="ann")
    digest = j.put(b"abc")
    assert digest == journal.sha(b"abc") and j.get(digest) == b"abc" and journal.sha(None) is None
    assert (tmp_path / "journal-blobs" / digest).read_bytes() == b"abc"
    assert j.put(b"abc") == digest
    (tmp_path / "journal-blobs" / digest).write_bytes(b"abd")
    with pytest.raises(WorkbenchError) as e:
        j.get(digest)
    assert str(e.value) == f"{tmp_path / 'journal-blobs' / digest}: the journal's copy of the file is damaged"
    with pytest.raises(WorkbenchError) as e:
        j.get("0" * 64)
    assert str(e.value) == f"{tmp_path / 'journal-blobs' / ('0' * 64)}: the journal's copy of the file is missing"


def test_default_path_and_author(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    j = Journal()
    assert j.path.name == "journal.jsonl" and j.blobs == j.path.parent / "journal-blobs"
    assert j.author == journal.os_user() and j.author


def test_os_user_without_a_passwd_entry(monkeypatch):
    def no_user():
        raise KeyError("uid")

    monkeypatch.setattr(journal.getpass, "getuser", no_user)
    assert journal.os_user() == f"uid {os.getuid()}"


def test_undoable_and_pending_saves(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "a.txt").write_bytes(b"new")
    j = Journal(tmp_path / "journal.jsonl", author="ann")
    on_disk = {"path": "a.txt", "before": journal.sha(b"old"), "after": journal.sha(b"new")}
    never = {"path": "a.txt", "before": journal.sha(b"new"), "after": journal.sha(b"other")}
    gone = {"path": "b.txt", "before": journal.sha(b"x"), "after": None}
    j.append({"root": str(root), "files": [on_disk]}, pending=True)  # 1: reached the disk
    j.append({"root": str(root), "files": [never]}, pending=True)  # 2: never happened
    j.append({"root": str(root), "files": [gone]}, pending=True)  # 3: deleted b.txt, which is gone
    Journal(j.path, author="bob").append({"root": str(root), "files": [on_disk]})  # 4
    assert [e["id"] for e in j.undoable(root)] == [1, 3, 4]
    assert [e["id"] for e in j.undoable(root, author="bob")] == [4]
    j.append({"root": str(root), "files": [], "undoes": 4})
    assert [e["id"] for e in j.undoable(str(root))] == [1, 3]
    assert j.last_writer(root, "a.txt", journal.sha(b"new"))["id"] == 4
    assert j.last_writer(root, "b.txt", None)["id"] == 3
    assert j.last_writer(root, "a.txt", journal.sha(b"zzz")) is None
    assert Journal(tmp_path / "none.jsonl").entries() == []


def test_describe():
    entry = {"author": "ann", "time": "T", "process": {"pid": 5, "host": "h"}}
    assert journal.describe(entry) == "ann at T (pid 5 on h)"
    assert journal.describe({}) == "unknown at ?"
    assert journal.describe({"process": {}}) == "unknown at ?"


def test_append_makes_folders_writes_utf8_and_a_local_time(tmp_path):
    import re

    j = Journal(tmp_path / "a" / "b" / "journal.jsonl", author="zoë")
    j.append({"root": "/r", "files": [], "message": "édit"})
    text = j.path.read_text(encoding="utf-8")
    assert '"author": "zoë"' in text and '"message": "édit"' in text
    (entry,) = j.entries()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", entry["time"]), entry["time"]


def test_entries_skip_a_cut_line_and_read_on(tmp_path):
    j = Journal(tmp_path / "journal.jsonl", author="ann")
    j.append({"root": "/r", "files": []})
    with open(j.path, "a", encoding="utf-8") as f:
        f.write('{"id": 2, "root": "/r", "fi\n')  # a crash mid-line
    j.append({"root": "/r", "files": []})
    assert [e["id"] for e in j.entries()] == [1, 2]


def test_undoable_is_per_dataset(tmp_path):
    j = Journal(tmp_path / "journal.jsonl", author="ann")
    j.append({"root": str(tmp_path / "a"), "files": []})
    j.append({"root": str(tmp_path / "b"), "files": []})
    assert [e["id"] for e in j.undoable(tmp_path / "a")] == [1]


def test_copy_for_class_edit_keeps_the_skipped_files():
    d = dataset()
    d.skipped = ["bad.xml"]
    assert edits.copy_for_class_edit(d).skipped == ["bad.xml"]
