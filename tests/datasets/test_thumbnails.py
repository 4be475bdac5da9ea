"""Gallery thumbnails and tiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.app.conftest import copy_voc
from workbench import paths
from workbench.datasets import index, thumbnails


@pytest.fixture
def voc_copy(tmp_path) -> Path:
    return copy_voc(tmp_path / "voc", 6, must_have="mask_weared_incorrect")


def test_thumbnail_is_cached_by_path_size_and_mtime(voc_copy):
    image = sorted((voc_copy / "images").glob("*.png"))[0]
    thumb, scale = thumbnails.thumbnail(image, 64)
    assert max(thumb.size) == 64 and 0 < scale < 1
    cached = list((paths.home() / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    again, scale2 = thumbnails.thumbnail(image, 64)
    assert again.size == thumb.size and scale2 == pytest.approx(scale, rel=1e-6)
    assert len(list((paths.home() / "thumbs").rglob("*.jpg"))) == 1
    st = image.stat()  # a later mtime, whatever the file system's timestamp granularity
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    thumbnails.thumbnail(image, 64)
    assert len(list((paths.home() / "thumbs").rglob("*.jpg"))) == 2  # a changed file gets a new one
    assert thumbnails.thumbnail(voc_copy / "images" / "missing.png") is None


def test_tile_is_a_jpeg_with_boxes(voc_copy):
    opened = index.open_dataset(voc_copy)
    data = thumbnails.tile(opened.dataset, opened.dataset.images[0], 128)
    assert data[:2] == b"\xff\xd8"
