"""workbench/fileio.py against the mutants mutmut left alive in it (docs/mutation.md): only
Pillow's decompression-bomb warning is made an error; any other warning Pillow gives while
opening an image (here an invalid APNG chunk in a real PNG) leaves the image readable."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import write_image
from workbench import fileio
from workbench.errors import ReadError


def invalid_apng(shared: Path, path: Path) -> Path:
    """A real PNG of the shared VOC set with an ``acTL`` chunk of 0 frames after its header:
    Pillow warns "Invalid APNG" and reads it as the plain PNG it is."""
    raw = (shared / "andrewmvd-voc" / "images" / "maksssksksss0.png").read_bytes()
    assert raw[12:16] == b"IHDR"
    data = struct.pack(">II", 0, 0)
    chunk = struct.pack(">I", len(data)) + b"acTL" + data + struct.pack(">I", zlib.crc32(b"acTL" + data))
    path.write_bytes(raw[:33] + chunk + raw[33:])
    return path


def test_an_image_pillow_warns_about_is_still_read(shared, tmp_path):
    path = invalid_apng(shared, tmp_path / "a.png")
    with Image.open(shared / "andrewmvd-voc" / "images" / "maksssksksss0.png") as plain:
        size = plain.size
    with pytest.warns(UserWarning, match="Invalid APNG"):
        assert fileio.image_size(path, "images/a.png") == size
    with pytest.warns(UserWarning, match="Invalid APNG"):
        assert fileio.load_image(path).shape == (size[1], size[0], 3)


def test_a_decompression_bomb_warning_is_refused_with_its_message(tmp_path, monkeypatch):
    """90,000 pixels over a limit of 50,000: Pillow warns (it raises only above twice the limit),
    and the warning is made a ``ReadError``."""
    path = write_image(tmp_path / "big.png", 300, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(ReadError) as e:
        fileio.image_size(path, "images/big.png")
    assert str(e.value) == (
        f"images/big.png: image too large (decompression bomb guard, over {fileio.MAX_IMAGE_PIXELS} pixels): "
        "Image size (90000 pixels) exceeds limit of 50000 pixels, could be decompression bomb DOS attack."
    )
    assert isinstance(e.value.__cause__, Image.DecompressionBombWarning)
