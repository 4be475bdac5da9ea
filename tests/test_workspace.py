"""The workspace: the remembered dataset list, the index cache, thumbnails, filters."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.app.conftest import copy_voc
from workbench import paths
from workbench.datasets import catalog as workspace
from workbench.errors import WorkbenchError


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")


def test_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "wb"))
    assert paths.home() == tmp_path / "wb" and (tmp_path / "wb").is_dir()
    monkeypatch.delenv("WORKBENCH_HOME")
    assert paths.home() == paths.PROJECT_ROOT / ".workbench"


def test_datasets_are_remembered_resolved_and_deduplicated(voc_copy, monkeypatch):
    monkeypatch.chdir(voc_copy.parent)
    entry = workspace.add_dataset("./voc/../voc")
    assert entry == workspace.DatasetEntry(name="voc", path=str(voc_copy.resolve()), format="voc")
    workspace.add_dataset(voc_copy, "voc", name="faces")
    assert workspace.list_datasets() == [workspace.DatasetEntry("faces", str(voc_copy.resolve()), "voc")]
    assert workspace.current_dataset().name == "faces"
    workspace.remove_dataset(str(voc_copy.resolve()))
    assert workspace.list_datasets() == [] and workspace.current_dataset() is None


def test_adding_a_bad_folder_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="not a folder"):
        workspace.add_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="choose the format"):
        workspace.add_dataset(tmp_path / "empty")
    assert workspace.list_datasets() == []


def test_first_run_adds_a_copy_of_the_sample():
    entry = workspace.ensure_sample()
    assert entry is not None and entry.name == "facemask-sample" and entry.format == "voc"
    assert Path(entry.path).is_relative_to(paths.home())
    assert len(workspace.open_dataset(entry.path).dataset) == 32
    assert workspace.ensure_sample() is None  # only on the first run


def test_index_cache_is_used_and_invalidated_by_a_changed_file(voc_copy):
    cold = workspace.open_dataset(voc_copy)
    assert not cold.from_cache
    warm = workspace.open_dataset(voc_copy)
    assert warm.from_cache
    assert [r.path for r in warm.dataset.images] == [r.path for r in cold.dataset.images]
    assert all(a.same_boxes(b) for a, b in zip(warm.dataset.images, cold.dataset.images, strict=True))
    assert warm.dataset.classes == cold.dataset.classes
    xml = voc_copy / cold.dataset.images[0].annotation
    xml.write_text(xml.read_text().replace("<name>with_mask</name>", "<name>other</name>", 1))
    st = xml.stat()
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = workspace.open_dataset(voc_copy)
    assert not changed.from_cache
    assert "other" in changed.dataset.classes
    assert workspace.open_dataset(voc_copy).from_cache


def test_an_added_file_invalidates_the_cache(voc_copy):
    workspace.open_dataset(voc_copy)
    (voc_copy / "images" / "extra.png").write_bytes((voc_copy / "images").glob("*.png").__next__().read_bytes())
    again = workspace.open_dataset(voc_copy)
    assert not again.from_cache and any(r.path == "images/extra.png" for r in again.dataset.images)


def test_broken_files_are_listed(voc_copy):
    (voc_copy / "annotations" / "broken.xml").write_text("<annotation><object>")
    opened = workspace.open_dataset(voc_copy)
    assert [e.file for e in opened.dataset.skipped] == ["annotations/broken.xml"]
    assert [e.file for e in workspace.open_dataset(voc_copy).dataset.skipped] == ["annotations/broken.xml"]


def test_thumbnail_is_cached_by_path_size_and_mtime(voc_copy):
    image = sorted((voc_copy / "images").glob("*.png"))[0]
    thumb, scale = workspace.thumbnail(image, 64)
    assert max(thumb.size) == 64 and 0 < scale < 1
    cached = list((paths.home() / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    again, scale2 = workspace.thumbnail(image, 64)
    assert again.size == thumb.size and scale2 == pytest.approx(scale, rel=1e-6)
    assert len(list((paths.home() / "thumbs").rglob("*.jpg"))) == 1
    time.sleep(0.01)
    image.touch()
    workspace.thumbnail(image, 64)
    assert len(list((paths.home() / "thumbs").rglob("*.jpg"))) == 2  # a changed file gets a new one
    assert workspace.thumbnail(voc_copy / "images" / "missing.png") is None


def test_tile_is_a_jpeg_with_boxes(voc_copy):
    opened = workspace.open_dataset(voc_copy)
    data = workspace.tile(opened.dataset, opened.dataset.images[0], 128)
    assert data[:2] == b"\xff\xd8"


def test_filters(voc_copy):
    dataset = workspace.open_dataset(voc_copy).dataset
    everything = workspace.filter_images(dataset)
    assert everything == list(range(len(dataset)))
    rare = workspace.filter_images(dataset, classes=["mask_weared_incorrect"])
    assert len(rare) == 1 and "mask_weared_incorrect" in [
        dataset.class_name(int(c)) for c in dataset.images[rare[0]].class_ids
    ]
    name = dataset.images[3].path.rsplit("/", 1)[-1]
    assert workspace.filter_images(dataset, search=name.upper()) == [3]
    assert workspace.filter_images(dataset, empty=True) == []
    report = workspace.health(workspace.get_open(voc_copy))
    tiny = workspace.filter_images(dataset, kinds=["tiny"], report=report)
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
    from workbench.formats import voc

    workspace.open_dataset(voc_copy)
    xml = sorted((voc_copy / "annotations").glob("*.xml"))[2]
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>1", 1))
    _bump_mtime(xml)
    again = workspace.open_dataset(voc_copy)
    assert again.from_cache  # re-read one file, not the dataset
    _same(again.dataset, voc.load(voc_copy))
    assert workspace.open_dataset(voc_copy).from_cache  # and the cache now holds the new state
    _same(workspace.open_dataset(voc_copy).dataset, voc.load(voc_copy))


def test_a_changed_yolo_label_alone_is_reread(tmp_path):
    from tests.app.conftest import copy_yolo
    from workbench.formats import yolo

    data = copy_yolo(tmp_path / "yolo", 4)
    workspace.open_dataset(data)
    label = sorted((data / "labels").glob("*.txt"))[1]
    lines = label.read_text().splitlines()
    label.write_text("\n".join(["1" + lines[0][1:], *lines[1:]]) + "\n")
    _bump_mtime(label)
    again = workspace.open_dataset(data)
    assert again.from_cache
    _same(again.dataset, yolo.load(data))


def test_a_class_order_change_forces_a_full_reload(voc_copy):
    from workbench.formats import voc

    first = workspace.open_dataset(voc_copy).dataset
    xml = voc_copy / first.images[0].annotation
    last = first.classes[-1]
    xml.write_text(re.sub(r"<name>[^<]*</name>", f"<name>{last}</name>", xml.read_text(), count=1))
    _bump_mtime(xml)
    again = workspace.open_dataset(voc_copy)
    assert not again.from_cache
    assert again.dataset.classes[0] == last
    _same(again.dataset, voc.load(voc_copy))


def test_image_index_from_a_scan_matches_the_formats_own(tmp_path):
    from workbench.formats.common import ImageIndex

    for rel in [
        "b/img10.jpg",
        "b/img2.jpg",
        "a.png",
        "a/x/1.png",
        "a/2.png",
        "B/c.jpg",
        ".hidden/z.jpg",
        "a/notes.txt",
    ]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    ours = workspace._image_index(tmp_path, workspace.scan(tmp_path))
    theirs = ImageIndex(tmp_path)
    assert ours.paths == theirs.paths
    assert ours.by_name == theirs.by_name and ours.by_stem == theirs.by_stem and ours.known == theirs.known


def test_record_findings(voc_copy):
    dataset = workspace.open_dataset(voc_copy).dataset
    record = dataset.images[0].copy()
    assert workspace.record_findings(dataset, record) == []
    record.boxes[0] = [-5, 0, 3, 3]
    kinds = sorted(f.kind for f in workspace.record_findings(dataset, record))
    assert kinds == ["out_of_bounds", "tiny"]
