"""A headless AppTest per page: each renders on a copy of a shared dataset without an exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import PROJECT
from workbench.datasets import catalog, index
from workbench.labelling import edits

TIMEOUT = 60


def run(page: str, **state) -> AppTest:
    at = AppTest.from_file(str(PROJECT / page), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption]
    parts += [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.info]
    parts += [e.value for e in at.success]
    parts += [str(m.value) for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_datasets_page_lists_and_summarises(home, voc):
    entry = catalog.add_dataset(voc)
    at = run("pages/datasets.py")
    assert not at.exception
    assert entry.path in texts(at) or any(entry.path in str(o) for o in at.radio[0].options)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "11"
    assert metrics["Classes"] == "3"


def test_datasets_page_shows_resolved_path_before_adding(home, voc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    at = run("pages/datasets.py")
    at.text_input(key="add_path").input("voc/../voc").run()
    assert not at.exception
    assert str(voc.resolve()) in texts(at)
    assert catalog.list_datasets() == []  # shown, not yet added
    at.button(key="add_confirm").click().run()
    assert [e.path for e in catalog.list_datasets()] == [str(voc.resolve())]


def test_broken_files_are_listed_not_fatal(home, voc):
    (voc / "annotations" / "broken.xml").write_text("<annotation><object><name>x</name></object")
    (voc / "annotations" / "nobox.xml").write_text("<annotation><object><name>x</name></object></annotation>")
    catalog.add_dataset(voc, "voc")
    at = run("pages/datasets.py")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Unreadable files"] == "2"
    shown = texts(at)
    assert "annotations/broken.xml" in shown and "annotations/nobox.xml" in shown


def tiles(at: AppTest) -> list[str]:
    """The images the gallery shows, by their Open buttons."""
    return [b.key for b in at.button if str(b.key).startswith("open-")]


def test_browse_page_renders_and_filters(home, voc):
    catalog.add_dataset(voc)
    at = run("pages/browse.py")
    assert not at.exception
    assert len(tiles(at)) == 11
    at.multiselect(key="filter_classes").select("mask_weared_incorrect").run()
    assert not at.exception
    assert len(tiles(at)) == 1
    at.checkbox(key="filter_empty").check().run()
    assert "No image matches" in texts(at)


def test_annotate_page_edits_and_saves(home, voc):
    catalog.add_dataset(voc)
    opened = index.get_open(voc, "voc", reload=True)
    record = opened.dataset.images[0]
    xml = voc / record.annotation
    before = xml.read_bytes()
    at = run("pages/annotate.py", image=record.path)
    assert not at.exception
    assert record.path in texts(at)
    # relabel box 1 through the side panel, then save
    rev = at.session_state["work"]["rev"]
    new_class = (int(record.class_ids[0]) + 1) % len(opened.dataset.classes)
    at.selectbox(key=f"box_class-{rev}-0").set_value(new_class)
    at.button(key="box_apply").click().run()
    assert not at.exception
    assert "1 unsaved change" in texts(at)
    at.button(key="save").click().run()
    assert not at.exception
    assert "Saved annotations/" in texts(at)
    fresh = index.open_dataset(voc, "voc", use_cache=False).dataset
    reloaded = fresh.record(record.path)
    names = [fresh.class_name(int(c)) for c in reloaded.class_ids]
    expected = [opened.dataset.class_name(int(c)) for c in record.class_ids]
    expected[0] = opened.dataset.classes[new_class]
    assert names == expected
    assert (reloaded.boxes == record.boxes).all()
    at.button(key="undo").click().run()
    assert not at.exception
    assert xml.read_bytes() == before


def test_annotate_page_refuses_save_after_external_change(home, voc):
    catalog.add_dataset(voc)
    opened = index.get_open(voc, "voc", reload=True)
    record = opened.dataset.images[0]
    xml = voc / record.annotation
    at = run("pages/annotate.py", image=record.path)
    at.button(key="box_delete").click().run()
    changed = xml.read_bytes().replace(b"<pose>Unspecified</pose>", b"<pose>Left</pose>", 1)
    xml.write_bytes(changed)
    at.button(key="save").click().run()
    assert not at.exception
    assert "changed on disk" in texts(at)
    assert xml.read_bytes() == changed


@pytest.mark.parametrize("page", ["app.py"])
def test_app_entry_opens_sample_on_first_run(home, page):
    at = run(page)
    assert not at.exception
    entries = catalog.list_datasets()
    assert [e.name for e in entries] == ["facemask-sample"]
    assert Path(entries[0].path).is_relative_to(home)  # a copy: the repository's sample is never edited


def test_annotate_page_merges_a_class_after_showing_the_count(home, voc):
    catalog.add_dataset(voc)
    opened = index.get_open(voc, "voc", reload=True)
    source = opened.dataset.classes.index("mask_weared_incorrect")
    target = opened.dataset.classes.index("with_mask")
    usage = edits.class_usage(opened.dataset, source)
    with_mask_before = opened.dataset.class_counts()["with_mask"]
    at = run("pages/annotate.py")
    at.selectbox(key="cls_pick").set_value(source).run()
    at.selectbox(key="cls_action").set_value("merge into").run()
    at.selectbox(key="cls_into").set_value(target).run()
    assert f"{usage.boxes:,} box(es) in {usage.images:,} image(s) change" in texts(at)
    at.button(key="cls_confirm").click().run()
    assert not at.exception
    fresh = index.open_dataset(voc, "voc", use_cache=False).dataset
    assert "mask_weared_incorrect" not in fresh.classes
    assert fresh.class_counts()["with_mask"] == with_mask_before + usage.boxes
    at.button(key="undo").click().run()
    assert "mask_weared_incorrect" in index.open_dataset(voc, "voc", use_cache=False).dataset.classes


def test_open_in_labelme_only_with_a_display(home, voc, tmp_path, monkeypatch):
    catalog.add_dataset(voc)
    monkeypatch.delenv("DISPLAY", raising=False)
    at = run("pages/annotate.py")
    assert not [b for b in at.button if b.key == "labelme"]
    tool = tmp_path / "bin" / "labelme"
    tool.parent.mkdir()
    log = tmp_path / "labelme.log"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")
    at = run("pages/annotate.py")
    at.button(key="labelme").click().run()
    assert not at.exception
    assert log.read_text().strip().endswith(".png")  # a VOC dataset: the image is opened
