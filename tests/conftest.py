"""Shared fixtures: the real datasets in ../shared/datasets and small copies of them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "datasets"

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"{SHARED} is missing: the tests read the real datasets from ../shared/datasets"
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory, monkeypatch):
    """No test writes into the real workspace or model registry."""
    home = tmp_path_factory.mktemp("workspace")
    monkeypatch.setenv("WORKBENCH_HOME", str(home / "home"))
    monkeypatch.setenv("WORKBENCH_MODELS", str(home / "models"))


def copy_voc_subset(shared: Path, dst: Path, stems: list[str]) -> Path:
    """Copy a few images and XMLs of the shared VOC set into ``dst`` (same layout)."""
    for sub in ("images", "annotations"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy2(shared / "andrewmvd-voc" / "images" / f"{stem}.png", dst / "images")
        shutil.copy2(shared / "andrewmvd-voc" / "annotations" / f"{stem}.xml", dst / "annotations")
    return dst


def write_image(path: Path, width: int, height: int, *, exif_orientation: int | None = None) -> Path:
    """A small real image file (JPEG or PNG by suffix) of the given size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif)
    else:
        image.save(path)
    return path
