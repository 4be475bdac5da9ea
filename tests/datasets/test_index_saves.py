"""The index cache at scale: a save writes a few rows (not the state of every file), box extras
shared in one table yet never shared between records, records whose boxes are rows of one array."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import copy_voc
from tests.datasets.test_index_rows import assert_same_record
from workbench.annotations import ImageRecord
from workbench.datasets import file_state, index, index_rows
from workbench.formats import voc
from workbench.labelling import edits, saving


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")


def _db() -> sqlite3.Connection:
    return sqlite3.connect(Path(os.environ["WORKBENCH_HOME"]) / "index.sqlite")


def _query(sql: str, *args) -> list[tuple]:
    db = _db()
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _same_as_a_load(opened: index.OpenDataset, root: Path) -> None:
    """The records a fresh load of ``root`` makes (class ids compared by name: a save keeps the
    dataset's class order, a load takes the order the labels give)."""
    loaded = voc.load(root)
    for x, y in zip(opened.dataset.images, loaded.images, strict=True):
        assert [opened.dataset.classes[c] for c in x.class_ids] == [loaded.classes[c] for c in y.class_ids]
        x, y = x.copy(), y.copy()
        x.class_ids = y.class_ids
        assert_same_record(x, y)


def _save_one(opened: index.OpenDataset) -> int:
    """Relabel the first box of the first record with boxes, through the real save; its position."""
    i = next(i for i, r in enumerate(opened.dataset.images) if len(r))
    record = opened.dataset.images[i].copy()
    edits.relabel_box(record, 0, (int(record.class_ids[0]) + 1) % len(opened.dataset.classes))
    saving.save_record(opened, i, record, journal=saving.Journal(), message="test")
    return i


def test_a_save_writes_the_saved_file_s_state_not_every_file_s(voc_copy):
    opened = index.open_dataset(voc_copy)
    files_before = _query("SELECT files FROM meta")
    i = _save_one(opened)
    rel = opened.dataset.images[i].annotation
    assert _query("SELECT files FROM meta") == files_before  # the 12 MB text of 100,000 images: not rewritten
    st = (voc_copy / rel).stat()
    assert _query("SELECT rel, size, mtime FROM saved_files") == [(rel, st.st_size, st.st_mtime_ns)]

    again = index.open_dataset(voc_copy)  # what another process opening it sees
    assert again.from_cache
    assert again.stats == file_state.scan(voc_copy)
    _same_as_a_load(again, voc_copy)
    assert _query("SELECT * FROM saved_files") == []  # folded into the files' state on that open
    assert _query("SELECT files FROM meta") == [(index._files(file_state.scan(voc_copy)),)]
    assert index.open_dataset(voc_copy).from_cache


def test_a_file_changed_after_a_save_is_still_noticed(voc_copy):
    opened = index.open_dataset(voc_copy)
    i = _save_one(opened)
    xml = voc_copy / opened.dataset.images[i].annotation
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>1", 1))  # another tool, after the save
    st = xml.stat()
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = index.open_dataset(voc_copy)
    _same_as_a_load(again, voc_copy)
    assert index.open_dataset(voc_copy).stats == file_state.scan(voc_copy)


def test_a_removed_file_s_saved_state_is_honoured(voc_copy):
    opened = index.open_dataset(voc_copy)
    extra = voc_copy / "notes.txt"
    extra.write_text("x")
    index.store_index(index.OpenDataset(opened.dataset, file_state.scan(voc_copy)))
    extra.unlink()
    index.update_index(opened, [], {"notes.txt": None})  # as a save that removed a file records it
    assert _query("SELECT rel, size, mtime FROM saved_files") == [("notes.txt", None, None)]
    assert index.open_dataset(voc_copy).from_cache


@pytest.mark.parametrize("value", ["garbage", -1])
def test_a_tampered_saved_state_is_never_trusted(voc_copy, value):
    opened = index.open_dataset(voc_copy)
    _save_one(opened)
    db = _db()
    with db:
        db.execute("UPDATE saved_files SET size = ?", (value,))
    db.close()
    again = index.open_dataset(voc_copy)
    _same_as_a_load(again, voc_copy)
    assert again.stats == file_state.scan(voc_copy)


@pytest.mark.parametrize("kind", ["garbage", "not a list", "too short"])
def test_a_tampered_box_extra_table_is_a_cache_miss(voc_copy, kind):
    cold = index.open_dataset(voc_copy)
    value = {"garbage": "\x80[{", "not a list": '{"a":1}', "too short": "[]"}[kind]
    db = _db()
    with db:
        db.execute("UPDATE shared SET box_extra = ?", (value,))
    db.close()
    again = index.open_dataset(voc_copy)
    assert not again.from_cache
    for x, y in zip(again.dataset.images, cold.dataset.images, strict=True):
        assert_same_record(x, y)


def test_box_extras_are_stored_once_and_come_back_as_copies(voc_copy):
    index.open_dataset(voc_copy)
    [(table,)] = _query("SELECT box_extra FROM shared")
    assert index_rows.loads(table)[0] == {
        "voc": {"pose": "Unspecified", "truncated": "0", "occluded": "0", "difficult": "0"}
    }
    rows = [r for (r,) in _query("SELECT record FROM records")]
    assert '"pose"' not in "".join(rows)
    warm = index.open_dataset(voc_copy).dataset
    boxed = [r for r in warm.images if len(r) > 1]
    extras = [e for r in boxed for e in r.box_extra]
    assert len({id(e) for e in extras}) == len(extras)  # never one dict in two boxes
    assert len({id(e["voc"]) for e in extras}) == len(extras)  # nor one inner dict
    extras[0]["voc"]["pose"] = "Left"
    assert extras[1]["voc"]["pose"] == "Unspecified"


def test_records_boxes_are_their_own_rows(voc_copy):
    index.open_dataset(voc_copy)
    images = index.open_dataset(voc_copy).dataset.images
    a, b = [r for r in images if len(r)][:2]
    before = b.boxes.copy()
    a.boxes[:] = -1.0  # an in-place edit of one record ...
    assert np.array_equal(b.boxes, before)  # ... leaves the next one alone
    assert a.boxes.flags.writeable and a.boxes.shape == (len(a), 4)
    copy = a.copy()
    copy.boxes[0, 0] = 7.0
    assert a.boxes[0, 0] == -1.0


def test_odd_box_extras_come_back_exactly():
    records = [
        ImageRecord(
            path=f"{n}.png",
            width=1,
            height=1,
            boxes=[[0, 0, 1, 1]] * 3,
            class_ids=[0, 0, 0],
            box_extra=[{"k": [1, {"n": None}]}, 5, {"t": (1, [2]), "a": np.arange(2)}],
        )
        for n in range(2)
    ] + [ImageRecord(path="x.png", width=1, height=1, boxes=[[0, 0, 1, 1]], class_ids=[0], box_extra=[-3])]
    rows, shared = index_rows.dump_records(records)
    got = index_rows.load_records(rows, shared)
    for want, have in zip(records, got, strict=True):
        assert_same_record(want, have)
    assert got[0].box_extra[2]["t"][1] is not got[1].box_extra[2]["t"][1]
    with pytest.raises(index_rows.Unencodable):  # an int in a row would read as a table position
        index_rows.dump_record(records[2])
    with pytest.raises(ValueError):
        index_rows.load_records(rows, "[]")


def test_scan_is_a_walk_of_the_tree(tmp_path):
    """Every file's (size, mtime_ns), found as ``os.walk`` finds them: hidden names skipped,
    symlinked files followed, symlinked folders not entered, a broken link left out."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.txt").write_text("xy")
    (tmp_path / "é ü.txt").write_text("1")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "g").write_text("y")
    (tmp_path / "a" / ".h").write_text("z")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    os.symlink(tmp_path / "é ü.txt", tmp_path / "a" / "link.txt")
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / "broken")
    want = {}
    for folder, dirs, files in os.walk(tmp_path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            if not name.startswith(".") and os.path.exists(path):
                st = os.stat(path)
                want[os.path.relpath(path, tmp_path).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    want["a/b/loop"] = (os.stat(tmp_path / "a").st_size, os.stat(tmp_path / "a").st_mtime_ns)  # listed, not entered
    assert file_state.scan(tmp_path) == want
    (tmp_path / "a" / "b" / "f.txt").write_text("zz")  # same size, in place: the mtime tells
    os.utime(tmp_path / "a" / "b" / "f.txt", ns=(0, want["a/b/f.txt"][1] + 1))
    assert file_state.scan(tmp_path)["a/b/f.txt"] != want["a/b/f.txt"]
