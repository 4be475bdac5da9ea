"""Tests written against the mutants mutmut left alive in the floor (docs/mutation.md):
workbench.boxes, workbench.fileio and workbench.metrics, each result checked exactly."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_image
from workbench import fileio
from workbench.annotations import IGNORE_LABEL, Dataset, Detections, ImageRecord
from workbench.boxes import areas, as_boxes, iou, xywh_to_xyxy, xyxy_to_xywh
from workbench.errors import ReadError, WriteError
from workbench.metrics import STAT_NAMES, coco_ground_truth, coco_metrics, coco_results, coco_stats
from workbench.splits import ClassMap


def test_as_boxes_is_float64_even_from_ints():
    boxes = as_boxes([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert boxes.dtype == np.float64 and boxes.shape == (2, 4)
    assert as_boxes([]).shape == (0, 4)
    assert xyxy_to_xywh([[1, 2, 4, 8]]).tolist() == [[1.0, 2.0, 3.0, 6.0]]
    assert xywh_to_xyxy([[1, 2, 3, 6]]).tolist() == [[1.0, 2.0, 4.0, 8.0]]
    assert areas([[0, 0, 2, 3], [5, 5, 4, 9]]).tolist() == [6.0, 0.0]


def test_iou_of_sub_pixel_boxes_and_without_warnings():
    a = [[0.0, 0.0, 0.5, 0.5]]
    b = [[0.0, 0.0, 0.5, 0.25], [2.0, 2.0, 2.0, 2.0]]  # the second has no area: union 0 with itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 division anywhere
        assert iou(a, b).tolist() == [[0.5, 0.0]]
        assert iou([[2.0, 2.0, 2.0, 2.0]], [[2.0, 2.0, 2.0, 2.0]]).tolist() == [[0.0]]
        assert iou(a, b, crowd=True).tolist() == [[0.5, 0.0]]
        assert iou([[0, 0, 0.5, 0.5]], [[0, 0, 1, 1]], crowd=True).tolist() == [[1.0]]
    assert iou([], b).shape == (0, 2) and iou(a, []).shape == (1, 0)


def test_natural_key_and_is_image():
    assert fileio.natural_key("Img10b") == ["img", 10, "b"]
    assert sorted(["a10", "A2", "a1"], key=fileio.natural_key) == ["a1", "A2", "a10"]
    assert fileio.is_image("x/A.JPG") and fileio.is_image(Path("b.webp")) and not fileio.is_image("a.txt")


def test_first_file_skips_hidden_and_checks_the_predicate(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "a.xml").write_text("x")
    (tmp_path / ".b.xml").write_text("x")
    assert fileio.first_file(tmp_path, (".xml",)) is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "C.XML").write_text("x")
    assert fileio.first_file(tmp_path, (".xml",)) == tmp_path / "sub" / "C.XML"
    assert fileio.first_file(tmp_path, (".xml",), predicate=lambda p: p.name != "C.XML") is None
    assert fileio.first_file(tmp_path, (".json",)) is None


def test_iter_files_is_natural_order_without_hidden(tmp_path):
    for name in ["b/x10.txt", "b/x2.txt", "a/y.TXT", ".h/z.txt", "b/.q.txt", "b/w.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    got = [p.relative_to(tmp_path).as_posix() for p in fileio.iter_files(tmp_path, (".txt",))]
    assert got == ["a/y.TXT", "b/x2.txt", "b/x10.txt"]


def test_relpath_fast_and_slow_paths(tmp_path):
    assert fileio.relpath(f"{tmp_path}{os.sep}a{os.sep}b.txt", tmp_path) == "a/b.txt"
    assert fileio.relpath(tmp_path / "x", tmp_path) == "x"
    assert fileio.relpath(f"{tmp_path}x/y", tmp_path) == f"../{tmp_path.name}x/y"
    assert fileio.relpath(tmp_path, tmp_path) == "."
    assert fileio.relpath(f"{tmp_path}{os.sep}", tmp_path) == "."


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/x", "f: r: path '/etc/x' is not relative to the dataset root"),
        ("", "f: r: path '' is not relative to the dataset root"),
        ("C:x", "f: r: path 'C:x' is not relative to the dataset root"),
        ("../x", "f: r: path '../x' escapes the dataset root"),
        ("./.", "f: r: path './.' is empty"),
    ],
)
def test_safe_relpath_messages(name, message):
    with pytest.raises(ReadError) as e:
        fileio.safe_relpath(name, file="f", record="r")
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("a/./b.jpg", "a/b.jpg"),
        ("a/../b.jpg", "b.jpg"),
        ("a/", "a"),
        ("1:", "1:"),
        ("ab:c", "ab:c"),
    ],
)
def test_safe_relpath_normal_forms(name, expected):
    assert fileio.safe_relpath(name, file="f") == expected


def test_temp_names_and_leftovers(tmp_path):
    assert fileio.is_temp_name(".a.xml.abcd_123.tmp")
    assert not fileio.is_temp_name("a.xml.abcd_123.tmp") and not fileio.is_temp_name(".a.xml.abc.tmp")
    assert not fileio.is_temp_name(".a.xml.abcd_1234.tmpx")
    (tmp_path / "s").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ["s/.b.xml.12345678.tmp", ".a.xml.ABCDEFGH.tmp", ".git/.c.xml.12345678.tmp", "s/b.xml"]:
        (tmp_path / name).write_text("x")
    assert fileio.leftover_temps(tmp_path) == [tmp_path / ".a.xml.ABCDEFGH.tmp", tmp_path / "s" / ".b.xml.12345678.tmp"]
    assert fileio.leftover_temps(str(tmp_path / "s")) == [tmp_path / "s" / ".b.xml.12345678.tmp"]


def test_atomic_write_modes_encoding_and_folders(tmp_path):
    path = tmp_path / "new" / "deeper" / "a.txt"
    fileio.atomic_write(path, "é")
    assert path.read_bytes() == "é".encode() and path.stat().st_mode & 0o777 == 0o644
    os.chmod(path, 0o600)
    fileio.atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["a.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot write"):
        fileio.atomic_write(tmp_path / "file" / "a.txt", "x")  # the folder is a file


def test_atomic_write_cleans_up_after_any_exception(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "fsync_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(path, "new")
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_fsync_folder_tolerates_what_cannot_be_opened(tmp_path):
    fileio.fsync_folder(tmp_path / "missing")
    fileio.fsync_folder(tmp_path)


def test_tail_lines(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)) + b"bad \xff end")
    assert fileio.tail_lines(log, 2) == "line 99\nbad \ufffd end"
    assert fileio.tail_lines(log).splitlines()[0] == "line 71"
    assert fileio.tail_lines(log, 5, max_bytes=20) == "98\nline 99\nbad \ufffd end"
    assert fileio.tail_lines(tmp_path / "missing") == ""
    wide = tmp_path / "wide"
    wide.write_text("x" * 25_000 + "\nend")
    assert fileio.tail_lines(wide, 10**6) == "x" * (20_000 - 4) + "\nend"  # the last 20,000 bytes only
    short = tmp_path / "short"
    short.write_text("a\nb")
    assert fileio.tail_lines(short, 30) == "a\nb"


def test_exif_orientation_and_transposed_load(tmp_path):
    upright = write_image(tmp_path / "u.jpg", 40, 20)
    turned = write_image(tmp_path / "t.jpg", 40, 20, exif_orientation=6)
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    assert fileio.exif_orientation(write_image(tmp_path / "z.jpg", 4, 4, exif_orientation=0)) == 1
    assert fileio.exif_orientation(upright) == 1 and fileio.exif_orientation(turned) == 6
    assert fileio.exif_orientation(tmp_path / "bad.jpg") == 1
    assert fileio.load_image(turned).shape == (20, 40, 3)
    assert fileio.load_image(turned, exif_transpose=True).shape == (40, 20, 3)
    assert fileio.image_size(turned) == (40, 20)


def test_load_image_converts_to_rgb_and_names_the_file(tmp_path):
    Image.new("L", (3, 2), 7).save(tmp_path / "g.png")
    Image.new("RGBA", (3, 2), (1, 2, 3, 4)).save(tmp_path / "a.png")
    grey = fileio.load_image(tmp_path / "g.png")
    assert grey.dtype == np.uint8 and grey.shape == (2, 3, 3) and (grey == 7).all()
    assert fileio.load_image(tmp_path / "a.png")[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(ReadError) as e:
        fileio.load_image(tmp_path / "missing.png")
    assert str(e.value) == f"{tmp_path / 'missing.png'}: image file not found"
    with pytest.raises(ReadError) as e:
        fileio.image_size(tmp_path / "missing.png", "shown.png")
    assert str(e.value) == "shown.png: image file not found"
    cut = write_image(tmp_path / "t.jpg", 200, 200)
    cut.write_bytes(cut.read_bytes()[:2000])
    with pytest.raises(ReadError) as e:
        fileio.load_image(cut)
    assert str(e.value).startswith(f"{cut}: image is truncated or corrupt: ")
    (tmp_path / "n.png").write_bytes(b"nothing")
    with pytest.raises(ReadError) as e:
        fileio.image_size(tmp_path / "n.png")
    assert str(e.value).startswith(f"{tmp_path / 'n.png'}: not a readable image: ")


def test_decompression_bomb_message(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", 300, 300)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 90,000 px: a warning, made an error
    with pytest.raises(ReadError) as e:
        fileio.image_size(path)
    assert str(e.value).startswith(
        f"{path}: image too large (decompression bomb guard, over {fileio.MAX_IMAGE_PIXELS} pixels): "
    )


@pytest.fixture
def scene():
    ds = Dataset(
        "/x",
        "voc",
        ["cat", "dog", IGNORE_LABEL, "bird"],
        [
            ImageRecord("a.png", 200.7, 100, [[10, 10, 60, 60], [100, 20, 150, 90]], [0, 1]),
            ImageRecord("b.png", 200, 100, [[20, 20, 80, 70], [120, 10, 190, 90]], [1, 2]),
        ],
    )
    cmap = ClassMap.build(ds, ["cat", "dog", "fox"])
    return ds, cmap


def test_ground_truth_exactly(scene):
    ds, cmap = scene
    gt = coco_ground_truth(ds, ds.images, cmap)
    assert gt["images"] == [
        {"id": 0, "width": 200, "height": 100, "file_name": "a.png"},
        {"id": 1, "width": 200, "height": 100, "file_name": "b.png"},
    ]
    assert gt["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "fox"}]
    boxes = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]]
    assert boxes == [
        (1, 0, 1, [10.0, 10.0, 50.0, 50.0], 2500.0, 0),
        (2, 0, 2, [100.0, 20.0, 50.0, 70.0], 3500.0, 0),
        (3, 1, 2, [20.0, 20.0, 60.0, 50.0], 3000.0, 0),
        (4, 1, 1, [120.0, 10.0, 70.0, 80.0], 5600.0, 1),
        (5, 1, 2, [120.0, 10.0, 70.0, 80.0], 5600.0, 1),
        (6, 1, 3, [120.0, 10.0, 70.0, 80.0], 5600.0, 1),
    ]
    assert all(type(v) is float for a in gt["annotations"] for v in a["bbox"])


def det(image_id, label, box, score):
    x1, y1, x2, y2 = box
    return {"image_id": image_id, "category_id": label, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def test_coco_results_exactly():
    dets = [Detections([[1, 2, 4, 8], [0, 0, 1, 1]], [0.9, 0.25], [0, 4]), Detections()]
    assert coco_results(dets, image_ids=[np.int64(5), 6]) == [
        {"image_id": 5, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.9},
        {"image_id": 5, "category_id": 5, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.25},
    ]
    assert type(coco_results(dets, image_ids=[np.int64(5), 6])[0]["image_id"]) is int


def test_stats_and_metrics_of_a_half_right_run():
    ds = Dataset(
        "/x",
        "voc",
        ["cat", "dog"],
        [
            ImageRecord("a.png", 200, 200, [[10, 10, 110, 110], [120, 120, 190, 190]], [0, 1]),
            ImageRecord("b.png", 200, 200, [[10, 10, 110, 110]], [0]),
        ],
    )
    cmap = ClassMap.build(ds, ["cat", "dog", "fox"])
    gt = coco_ground_truth(ds, ds.images, cmap)
    # cat: one right, one loose (IoU 0.64: a hit at 0.5, a miss at 0.75); dog missed, a dog false positive
    results = [
        det(0, 1, [10, 10, 110, 110], 0.9),
        det(1, 1, [10, 10, 135, 135], 0.8),
        det(1, 2, [0, 150, 40, 190], 0.7),
    ]
    cat_ap = (3 * 1.0 + 7 * 51 / 101) / 10  # both hits at IoU 0.5, 0.55, 0.6; half the recall above
    stats = coco_stats(gt, results)
    assert list(stats)[: len(STAT_NAMES)] == STAT_NAMES
    assert stats["AP50"] == pytest.approx(0.5) and stats["AP/fox"] == -1.0
    assert stats["AP/cat"] == pytest.approx(cat_ap) and stats["AP/dog"] == pytest.approx(0.0)
    assert stats["APs"] == -1.0  # no small boxes
    assert set(stats) == {*STAT_NAMES, "AP/cat", "AP/dog", "AP/fox"}
    metrics, per_class, curves = coco_metrics(gt, results, ["cat", "dog", "fox"])
    assert metrics["APs"] is None and metrics["AP50"] == pytest.approx(0.5)
    assert metrics["AP"] == pytest.approx(stats["AP"]) and metrics["AP"] == pytest.approx(cat_ap / 2)
    assert per_class["cat"] == {"AP": pytest.approx(cat_ap), "AP50": pytest.approx(1.0), "gt": 2}
    assert per_class["dog"] == {"AP": 0.0, "AP50": 0.0, "gt": 1}
    assert per_class["fox"] == {"AP": None, "AP50": None, "gt": 0}
    assert curves["cat"]["recall"] == np.linspace(0, 1, 101).tolist()
    assert curves["cat"]["precision50"] == pytest.approx([1.0] * 101)
    assert curves["cat"]["precision75"] == pytest.approx([1.0] * 51 + [0.0] * 50)
    assert curves["fox"]["precision50"] == [0.0] * 101  # -1 (undefined) is shown as 0
    assert curves["dog"]["precision75"] == [0.0] * 101


def test_metrics_without_detections_or_ground_truth():
    ds = Dataset("/x", "voc", ["cat", "dog"], [ImageRecord("a.png", 200, 200, [[10, 10, 110, 110]], [0])])
    cmap = ClassMap.build(ds, ["cat", "dog"])
    gt = coco_ground_truth(ds, ds.images, cmap)
    metrics, per_class, curves = coco_metrics(gt, [], ["cat", "dog"])
    assert metrics == dict.fromkeys(STAT_NAMES, 0.0)
    assert per_class == {"cat": {"AP": 0.0, "AP50": 0.0, "gt": 1}, "dog": {"AP": None, "AP50": None, "gt": 0}}
    assert curves["dog"] == {
        "recall": np.linspace(0, 1, 101).tolist(),
        "precision50": [0.0] * 101,
        "precision75": [0.0] * 101,
    }
    assert coco_stats(gt, []) == dict.fromkeys(STAT_NAMES, 0.0)
    empty = coco_ground_truth(ds, [ImageRecord("b.png", 10, 10)], cmap)
    metrics, per_class, _ = coco_metrics(empty, [det(0, 1, [0, 0, 5, 5], 0.5)], ["cat", "dog"])
    assert metrics == dict.fromkeys(STAT_NAMES, None)
    assert per_class["cat"] == {"AP": None, "AP50": None, "gt": 0}
    assert coco_stats(empty, [det(0, 1, [0, 0, 5, 5], 0.5)]) == dict.fromkeys(STAT_NAMES, 0.0)


def test_ground_truth_keeps_sub_pixel_sizes_and_flattens_inverted_ignore_regions():
    ds = Dataset(
        "/x",
        "voc",
        ["cat", IGNORE_LABEL],
        [ImageRecord("a.png", 20, 20, [[1, 1, 1.5, 1.25], [5, 5, 3, 2]], [0, 1])],
    )
    gt = coco_ground_truth(ds, ds.images, ClassMap.build(ds, ["cat"]))
    assert [(a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]] == [
        ([1.0, 1.0, 0.5, 0.25], 0.125, 0),
        ([5.0, 5.0, 0.0, 0.0], 0.0, 1),
    ]


def test_cocoeval_prints_nothing(capsys):
    ds = Dataset("/x", "voc", ["cat"], [ImageRecord("a.png", 200, 200, [[10, 10, 110, 110]], [0])])
    gt = coco_ground_truth(ds, ds.images, ClassMap.build(ds, ["cat"]))
    assert coco_stats(gt, [det(0, 1, [10, 10, 110, 110], 0.9)])["AP"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""


def test_per_class_ap_counts_a_hundred_detections_an_image():
    boxes = [[20 * i, 20 * j, 20 * i + 15, 20 * j + 15] for i in range(4) for j in range(4)]  # 16 > 10
    ds = Dataset("/x", "voc", ["cat"], [ImageRecord("a.png", 100, 100, boxes, [0] * 16)])
    gt = coco_ground_truth(ds, ds.images, ClassMap.build(ds, ["cat"]))
    results = [det(0, 1, b, 0.9 - 0.01 * k) for k, b in enumerate(boxes)]
    assert coco_stats(gt, results)["AP/cat"] == pytest.approx(1.0)
    _, per_class, _ = coco_metrics(gt, results, ["cat"])
    assert per_class["cat"]["AP"] == pytest.approx(1.0) and per_class["cat"]["AP50"] == pytest.approx(1.0)


def test_zero_ap_is_zero_and_the_75_curve_is_at_iou_075():
    ds = Dataset(
        "/x",
        "voc",
        ["cat", "dog"],
        [ImageRecord("a.png", 200, 200, [[0, 0, 100, 100], [100, 100, 200, 200]], [0, 0])],
    )
    gt = coco_ground_truth(ds, ds.images, ClassMap.build(ds, ["cat", "dog"]))
    wrong = [det(0, 1, [150, 0, 200, 40], 0.9)]
    metrics, _, curves = coco_metrics(gt, wrong, ["cat", "dog"])
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0 and metrics["APs"] is None
    assert curves["dog"]["precision75"] == [0.0] * 101 and curves["dog"]["precision50"] == [0.0] * 101
    # IoU 0.81 for the first box: a hit at 0.75, a miss at 0.95; the second box is missed
    results = [det(0, 1, [0, 0, 100, 81], 0.9)]
    _, _, curves = coco_metrics(gt, results, ["cat", "dog"])
    assert curves["cat"]["precision75"] == pytest.approx([1.0] * 51 + [0.0] * 50)
