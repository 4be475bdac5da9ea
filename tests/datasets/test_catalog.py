"""The dataset list: added datasets remembered resolved, the current one, the first-run sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import copy_voc
from workbench import paths
from workbench.datasets import catalog, index
from workbench.errors import WorkbenchError
from workbench.formats import load_dataset, save_dataset


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
    entry = catalog.add_dataset("./voc/../voc")
    assert entry == catalog.DatasetEntry(name="voc", path=str(voc_copy.resolve()), format="voc")
    catalog.add_dataset(voc_copy, "voc", name="faces")
    assert catalog.list_datasets() == [catalog.DatasetEntry("faces", str(voc_copy.resolve()), "voc")]
    assert catalog.current_dataset().name == "faces"
    catalog.remove_dataset(str(voc_copy.resolve()))
    assert catalog.list_datasets() == [] and catalog.current_dataset() is None


def test_adding_a_bad_folder_is_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="not a folder"):
        catalog.add_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="choose the format"):
        catalog.add_dataset(tmp_path / "empty")
    assert catalog.list_datasets() == []


def test_first_run_adds_a_copy_of_the_sample():
    entry = catalog.ensure_sample()
    assert entry is not None and entry.name == "facemask-sample" and entry.format == "voc"
    assert Path(entry.path).is_relative_to(paths.home())
    assert len(index.open_dataset(entry.path).dataset) == 32
    assert catalog.ensure_sample() is None  # only on the first run


def test_resolve_path_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert catalog.resolve_path("~/data") == (tmp_path / "data").resolve()
    assert catalog.resolve_path(' "~/data" ') == (tmp_path / "data").resolve()  # pasted with quotes
    with pytest.raises(WorkbenchError, match="no path"):
        catalog.resolve_path("  ")


def test_a_typed_home_folder_path_is_added(tmp_path, monkeypatch, voc_copy):
    monkeypatch.setenv("HOME", str(voc_copy.parent))
    entry = catalog.add_dataset("~/voc")
    assert entry.path == str(voc_copy.resolve()) and entry.format == "voc"


def test_images_are_added_beside_the_others_without_a_name_clash(voc_copy):
    dataset = index.open_dataset(voc_copy).dataset
    assert catalog.image_folder(dataset) == "images"
    existing = dataset.images[0].path.rsplit("/", 1)[-1]
    data = (voc_copy / dataset.images[0].path).read_bytes()
    written = catalog.add_images(dataset, {existing: data, "notes.txt": b"x", "new.png": data})
    stem, ext = existing.rsplit(".", 1)
    assert written == [f"images/{stem}-2.{ext}", "images/new.png"]  # the text file is skipped
    again = index.open_dataset(voc_copy).dataset
    added = [r for r in again.images if r.path in written]
    assert len(added) == 2 and all(r.annotation is None and not len(r) for r in added)  # unlabelled


def test_images_cannot_be_added_to_a_format_that_lists_them_in_its_annotations(voc_copy, tmp_path):
    dataset = load_dataset(voc_copy)
    out = tmp_path / "as-coco"
    save_dataset(dataset, out, "coco")
    coco = load_dataset(out)
    with pytest.raises(WorkbenchError, match="COCO dataset lists its images") as e:
        catalog.add_images(coco, {"new.png": b"x"})
    assert "Pascal VOC" in str(e.value) and "YOLO" in str(e.value) and "LabelMe" in str(e.value)
    assert not (out / "new.png").exists() and not (out / "images" / "new.png").exists()
