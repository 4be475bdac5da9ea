"""Fixtures for the page tests: a private workspace and small copies of shared datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
PROJECT = Path(__file__).resolve().parents[2]


def copy_voc(dest: Path, count: int = 10, *, must_have: str | None = None) -> Path:
    """The first ``count`` images of the shared VOC set (plus one holding a box of class
    ``must_have``) with their XML, copied under ``dest``."""
    src = SHARED / "andrewmvd-voc"
    xmls = sorted((src / "annotations").glob("*.xml"))
    chosen = xmls[:count]
    if must_have:
        chosen += [x for x in xmls[count:] if f"<name>{must_have}</name>" in x.read_text()][:1]
    (dest / "annotations").mkdir(parents=True)
    (dest / "images").mkdir()
    for xml in chosen:
        shutil.copyfile(xml, dest / "annotations" / xml.name)
        shutil.copyfile(src / "images" / f"{xml.stem}.png", dest / "images" / f"{xml.stem}.png")
    return dest


def copy_yolo(dest: Path, count: int = 8) -> Path:
    """``count`` images of the shared YOLO set with two or more boxes, their labels and
    ``classes.txt``, copied under ``dest``."""
    src = SHARED / "macwinwin-yolo"
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    shutil.copyfile(src / "classes.txt", dest / "classes.txt")
    taken = 0
    for label in sorted((src / "labels").glob("*.txt")):
        lines = [line for line in label.read_text().splitlines() if line.strip()]
        images = list((src / "images").glob(label.stem + ".*"))
        if len(lines) < 2 or len(lines) > 6 or len(images) != 1 or {line.split()[0] for line in lines} != {"0", "1"}:
            continue
        shutil.copyfile(label, dest / "labels" / label.name)
        shutil.copyfile(images[0], dest / "images" / images[0].name)
        taken += 1
        if taken == count:
            break
    return dest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(path))
    return path


@pytest.fixture
def voc(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", must_have="mask_weared_incorrect")
