"""The index cache: used while no file changed, re-read one changed file, filters over an open dataset."""

from __future__ import annotations

import json
import os
import pickle
import re
import sqlite3
from collections import namedtuple
from pathlib import Path

import pytest

from tests.app.conftest import copy_voc, copy_yolo
from workbench import locks
from workbench.datasets import health, index
from workbench.formats import voc, yolo


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")


def test_index_cache_is_used_and_invalidated_by_a_changed_file(voc_copy):
    cold = index.open_dataset(voc_copy)
    assert not cold.from_cache
    warm = index.open_dataset(voc_copy)
    assert warm.from_cache
    assert [r.path for r in warm.dataset.images] == [r.path for r in cold.dataset.images]
    assert all(a.same_boxes(b) for a, b in zip(warm.dataset.images, cold.dataset.images, strict=True))
    assert warm.dataset.classes == cold.dataset.classes
    xml = voc_copy / cold.dataset.images[0].annotation
    xml.write_text(xml.read_text().replace("<name>with_mask</name>", "<name>other</name>", 1))
    st = xml.stat()
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = index.open_dataset(voc_copy)
    assert not changed.from_cache
    assert "other" in changed.dataset.classes
    assert index.open_dataset(voc_copy).from_cache


def test_an_added_file_invalidates_the_cache(voc_copy):
    index.open_dataset(voc_copy)
    (voc_copy / "images" / "extra.png").write_bytes((voc_copy / "images").glob("*.png").__next__().read_bytes())
    again = index.open_dataset(voc_copy)
    assert not again.from_cache and any(r.path == "images/extra.png" for r in again.dataset.images)


def test_broken_files_are_listed(voc_copy):
    (voc_copy / "annotations" / "broken.xml").write_text("<annotation><object>")
    opened = index.open_dataset(voc_copy)
    assert [e.file for e in opened.dataset.skipped] == ["annotations/broken.xml"]
    assert [e.file for e in index.open_dataset(voc_copy).dataset.skipped] == ["annotations/broken.xml"]


def test_filters(voc_copy):
    dataset = index.open_dataset(voc_copy).dataset
    everything = index.filter_images(dataset)
    assert everything == list(range(len(dataset)))
    rare = index.filter_images(dataset, classes=["mask_weared_incorrect"])
    assert len(rare) == 1 and "mask_weared_incorrect" in [
        dataset.class_name(int(c)) for c in dataset.images[rare[0]].class_ids
    ]
    name = dataset.images[3].path.rsplit("/", 1)[-1]
    assert index.filter_images(dataset, search=name.upper()) == [3]
    assert index.filter_images(dataset, empty=True) == []
    report = health.report(index.get_open(voc_copy))
    tiny = index.filter_images(dataset, kinds=["tiny"], report=report)
    assert tiny == sorted(
        {[r.path for r in dataset.images].index(f.image) for f in report.findings if f.kind == "tiny"}
    )


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _same(a, b) -> None:
    assert a.classes == b.classes
    assert [r.path for r in a.images] == [r.path for r in b.images]
    for x, y in zip(a.images, b.images, strict=True):
        assert x.same_boxes(y), x.path
        assert x.annotation == y.annotation and x.box_extra == y.box_extra and x.extra == y.extra


def test_a_changed_annotation_file_alone_is_reread(voc_copy):
    index.open_dataset(voc_copy)
    xml = sorted((voc_copy / "annotations").glob("*.xml"))[2]
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>1", 1))
    _bump_mtime(xml)
    again = index.open_dataset(voc_copy)
    assert again.from_cache  # re-read one file, not the dataset
    _same(again.dataset, voc.load(voc_copy))
    assert index.open_dataset(voc_copy).from_cache  # and the cache now holds the new state
    _same(index.open_dataset(voc_copy).dataset, voc.load(voc_copy))


def test_a_file_written_again_while_it_is_reread_is_loaded_afresh(voc_copy, monkeypatch):
    index.open_dataset(voc_copy)
    xml = sorted((voc_copy / "annotations").glob("*.xml"))[2]
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>1", 1))
    _bump_mtime(xml)
    reread = voc.reread

    def written_meanwhile(*args, **kwargs):  # another tool saves it again once it was read
        records = reread(*args, **kwargs)
        xml.write_text(xml.read_text().replace("<xmin>1", "<xmin>2", 1))
        _bump_mtime(xml)
        return records

    monkeypatch.setattr(voc, "reread", written_meanwhile)
    again = index.open_dataset(voc_copy)
    assert not again.from_cache  # the re-read record is already old: the dataset is read again
    assert "<xmin>2" in xml.read_text()
    _same(again.dataset, voc.load(voc_copy))
    assert again.stats == index.scan(voc_copy)


def test_a_changed_yolo_label_alone_is_reread(tmp_path):
    data = copy_yolo(tmp_path / "yolo", 4)
    index.open_dataset(data)
    label = sorted((data / "labels").glob("*.txt"))[1]
    lines = label.read_text().splitlines()
    label.write_text("\n".join(["1" + lines[0][1:], *lines[1:]]) + "\n")
    _bump_mtime(label)
    again = index.open_dataset(data)
    assert again.from_cache
    _same(again.dataset, yolo.load(data))


def test_a_class_order_change_forces_a_full_reload(voc_copy):
    first = index.open_dataset(voc_copy).dataset
    xml = voc_copy / first.images[0].annotation
    last = first.classes[-1]
    xml.write_text(re.sub(r"<name>[^<]*</name>", f"<name>{last}</name>", xml.read_text(), count=1))
    _bump_mtime(xml)
    again = index.open_dataset(voc_copy)
    assert not again.from_cache
    assert again.dataset.classes[0] == last
    _same(again.dataset, voc.load(voc_copy))


class _RunsCode:
    """What an attacker would store: unpickling it calls ``Path.touch`` on the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tamper(column: str, value, *, where: str = "") -> None:
    db = sqlite3.connect(Path(os.environ["WORKBENCH_HOME"]) / "index.sqlite")
    with db:
        db.execute(f"UPDATE {column} {where}", (value,))
    db.close()


def _evil(marker: Path) -> bytes:
    payload = pickle.dumps(_RunsCode(marker))
    pickle.loads(payload)  # the payload is live: unpickling it does create the marker
    assert marker.exists()
    marker.unlink()
    return payload


@pytest.mark.parametrize(
    ("table", "where"),
    [("records SET record = ?", "WHERE pos = 1"), ("meta SET files = ?", ""), ("meta SET dataset = ?", "")],
)
@pytest.mark.parametrize("kind", ["pickle", "garbage", "wrong shape", "empty"])
def test_a_tampered_row_is_a_cache_miss_never_code_that_runs(voc_copy, tmp_path, table, where, kind):
    cold = index.open_dataset(voc_copy)
    marker = tmp_path / "code-ran"
    value = {
        "pickle": _evil(marker),
        "garbage": b"\x80\x04\x95garbage\xff",
        "wrong shape": '["images/x.png",1,1,[1,2,3],[0],[null],[{}],null,null,{}]',
        "empty": "",
    }[kind]
    _tamper(table, value, where=where)
    again = index.open_dataset(voc_copy)
    assert not again.from_cache  # the dataset was read again from its files
    assert not marker.exists()
    _same(again.dataset, cold.dataset)
    assert index.open_dataset(voc_copy).from_cache  # and the cache was rebuilt


def test_old_pickled_rows_are_ignored(voc_copy):
    """Rows of INDEX_VERSION 2 were pickles: they are never read, the dataset is read again."""
    index.open_dataset(voc_copy)
    _tamper("meta SET version = ?", 2)
    assert not index.open_dataset(voc_copy).from_cache
    assert index.open_dataset(voc_copy).from_cache


def test_no_pickle_in_the_index(voc_copy):
    index.open_dataset(voc_copy)
    db = sqlite3.connect(Path(os.environ["WORKBENCH_HOME"]) / "index.sqlite")
    values = [v for row in db.execute("SELECT files, dataset FROM meta") for v in row]
    values += [v for (v,) in db.execute("SELECT record FROM records")]
    db.close()
    assert values and all(isinstance(v, str) for v in values)
    json.loads(values[0])


def test_a_value_the_rows_cannot_hold_leaves_the_dataset_uncached(voc_copy):
    opened = index.open_dataset(voc_copy)
    opened.dataset.images[0].extra["odd"] = {1, 2}  # a set: JSON has none
    index.store_index(opened)
    assert not index.open_dataset(voc_copy).from_cache  # not cached inexactly


@pytest.mark.parametrize(("fstype", "mode"), [("ext4", "wal"), ("nfs4", "delete")])
def test_no_wal_on_a_network_file_system(voc_copy, monkeypatch, fstype, mode):
    Partition = namedtuple("Partition", "device mountpoint fstype opts")
    monkeypatch.setattr(locks.psutil, "disk_partitions", lambda all=True: [Partition("d", "/", fstype, "")])
    monkeypatch.setattr(locks, "_MODES_SET", set())
    index.open_dataset(voc_copy)
    assert index.open_dataset(voc_copy).from_cache
    db = sqlite3.connect(Path(os.environ["WORKBENCH_HOME"]) / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == mode
    db.close()


def test_a_data_yaml_is_read_afresh_and_never_fills_its_folders_rows(tmp_path):
    """The cache is per folder; a data.yaml picks (and splits) images of one, so its records must
    not be cached as, nor written over, the folder's own rows."""
    root = copy_yolo(tmp_path / "yolo")
    folder = index.open_dataset(root)
    train = sorted(r.path for r in folder.dataset.images)[:2]
    configs = tmp_path / "configs"  # outside the folder: the folder's files stay as cached
    configs.mkdir()
    (configs / "train.txt").write_text("".join(f"{p}\n" for p in train))
    yml = configs / "split.yaml"
    yml.write_text(
        f"path: ../yolo\ntrain: ../configs/train.txt\nval: ../configs/train.txt\nnames: {folder.dataset.classes}\n"
    )
    opened = index.open_dataset(yml)
    assert opened.source == yml.resolve() and not opened.from_cache and opened.dataset.splits == ["train", "val"]
    assert opened.dataset.root == folder.dataset.root and len(opened.dataset) == 4
    assert not index.open_dataset(yml).from_cache
    opened.dataset.images[0].boxes = opened.dataset.images[0].boxes + 5.0
    index.update_index(opened, [0], {})  # what a save of record 0 does
    again = index.open_dataset(root)
    assert again.from_cache
    _same(again.dataset, folder.dataset)
