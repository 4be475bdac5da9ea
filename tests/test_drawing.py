"""Pictures: one colour per class, boxes drawn where they are, thumbnails."""

from __future__ import annotations

import numpy as np
from PIL import Image

from workbench import drawing as images


def test_one_colour_per_class():
    colours = [images.class_colour(i) for i in range(20)]
    assert len(set(colours)) == 20
    assert images.colour_map(["a", "b", "a"]) == {"a": images.class_colour(0), "b": images.class_colour(1)}


def test_draw_boxes_outlines_each_box_in_its_class_colour():
    base = Image.new("RGB", (60, 40), "white")
    out = images.draw_boxes(
        base,
        np.array([[10, 5, 30, 25], [40, 10, 50, 20]]),
        np.array([0, 3]),
        ["a", "b", "c", "d"],
        width=1,
        labels=False,
    )
    pixels = np.asarray(out)
    red = tuple(int(images.class_colour(3)[k : k + 2], 16) for k in (1, 3, 5))
    blue = tuple(int(images.class_colour(0)[k : k + 2], 16) for k in (1, 3, 5))
    assert tuple(pixels[5, 10]) == blue and tuple(pixels[24, 29]) == blue  # x2/y2 exclusive: last pixel 29, 24
    assert tuple(pixels[25, 30]) == (255, 255, 255)
    assert tuple(pixels[10, 40]) == red
    assert tuple(pixels[15, 20]) == (255, 255, 255)  # outline only
    assert np.asarray(base).min() == 255  # the input is not drawn on


def test_draw_no_boxes_and_unnamed_class():
    base = Image.new("RGB", (20, 20), "white")
    assert np.array_equal(np.asarray(images.draw_boxes(base, np.zeros((0, 4)), np.zeros(0), [])), np.asarray(base))
    images.draw_boxes(base, np.array([[1, 1, 10, 10]]), np.array([7]), ["a"])  # id 7 has no name: drawn as "7"


def test_make_thumbnail(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (800, 400), "red").save(path)
    thumb, width = images.make_thumbnail(path, 100)
    assert thumb.size == (100, 50) and width == 800
    assert images.make_thumbnail(tmp_path / "missing.jpg", 100) is None
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert images.make_thumbnail(tmp_path / "bad.jpg", 100) is None


def test_render_missing_image_is_a_placeholder(tmp_path):
    out = images.render(tmp_path / "missing.png", np.zeros((0, 4)), np.zeros(0), [])
    assert out.size == (512, 512)
