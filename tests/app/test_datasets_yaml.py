"""The Datasets page adds an Ultralytics data.yaml as a dataset, with the splits it names."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.app.test_pages import run, texts
from tests.formats.test_yolo_yaml import NAMES, ultra  # noqa: F401 (the fixture: nine shared images)
from workbench.datasets import catalog, index


def test_datasets_page_adds_a_data_yaml(home, ultra: Path) -> None:  # noqa: F811
    yml = ultra / "data.yaml"
    yml.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": NAMES}))
    at = run("pages/datasets.py")
    at.text_input(key="add_path").input(str(yml)).run()
    assert not at.exception
    assert f"Will add `{yml.resolve()}` as **YOLO**" in texts(at)
    at.button(key="add_confirm").click().run()
    assert not at.exception
    assert [e.path for e in catalog.list_datasets()] == [str(yml.resolve())]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "6" and metrics["Classes"] == "2"  # train 4 + val 2; images/extra is not listed
    opened = index.get_open(str(yml.resolve()), "yolo")
    assert opened.dataset.splits == ["train", "val"] and opened.source == yml.resolve()


def test_datasets_page_refuses_a_path_that_is_neither(home, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    at = run("pages/datasets.py")
    at.text_input(key="add_path").input(str(tmp_path / "notes.txt")).run()
    assert "is not a folder or a data.yaml" in texts(at)
