from __future__ import annotations

import os
import time
from unittest import mock

import pytest
from PIL import Image

from tests.conftest import write_image
from workbench.errors import ReadError, WriteError
from workbench.fileio import atomic_write, image_size, load_image, safe_relpath


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jpg", "a.jpg"), ("./x/../b.jpg", "b.jpg"), ("img\\sub\\c.png", "img/sub/c.png"), ("x//y.jpg", "x/y.jpg")],
)
def test_safe_relpath_normalises(name, expected):
    assert safe_relpath(name, file="f") == expected


@pytest.mark.parametrize("name", ["../a.jpg", "x/../../a.jpg", "/etc/passwd", "C:/x.jpg", "c:\\x.jpg", "", "."])
def test_safe_relpath_refuses_escapes(name):
    with pytest.raises(ReadError, match="f: record: path"):
        safe_relpath(name, file="f", record="record")


def test_atomic_write_replaces_and_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_text() == "two"
    with mock.patch("os.replace", side_effect=OSError("disk full")), pytest.raises(WriteError, match="disk full"):
        atomic_write(path, "three")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def test_truncated_image_is_a_clear_error(tmp_path):
    path = write_image(tmp_path / "a.jpg", 200, 200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (200, 200)  # the header is intact
    with pytest.raises(ReadError, match="truncated or corrupt"):
        load_image(path, "a.jpg")


def test_decompression_bomb_is_refused_quickly(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", 300, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    start = time.perf_counter()
    with pytest.raises(ReadError, match="decompression bomb"):
        load_image(path, "big.png")
    with pytest.raises(ReadError, match="decompression bomb"):
        image_size(path, "big.png")
    assert time.perf_counter() - start < 5


def test_not_an_image(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"hello")
    with pytest.raises(ReadError, match=r"a\.jpg: not a readable image"):
        load_image(tmp_path / "a.jpg", "a.jpg")
