from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError
from workbench.formats import yolo


def _dataset(
    root: Path, labels: dict[str, str], names: tuple[str, str] | None = ("classes.txt", "face\nmask\n")
) -> Path:
    """Images 100 x 50 at ``images/<stem>.jpg`` (or the split path given) with their labels."""
    for rel, text in labels.items():
        image_rel = rel.replace("labels", "images").replace(".txt", ".jpg")
        write_image(root / image_rel, 100, 50)
        if text is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
    if names:
        (root / names[0]).write_text(names[1])
    return root


@pytest.mark.parametrize(
    ("text", "boxes", "class_ids"),
    [
        ("", np.zeros((0, 4)), []),
        ("0 0.5 0.5 1 1\n", [[0, 0, 100, 50]], [0]),
        ("1 0.25 0.5 0.1 0.2\n0 0.75 0.5 0.5 1.0\n", [[20, 20, 30, 30], [50, 0, 100, 50]], [1, 0]),
        ("\n1 0.5 0.5 0.2 0.2\n\n", [[40, 20, 60, 30]], [1]),
        # an Ultralytics segment: box = the polygon's min/max
        ("0 0.1 0.2 0.5 0.2 0.3 0.8\n", [[10, 10, 50, 40]], [0]),
    ],
)
def test_load_denormalises_centre_size(tmp_path, text, boxes, class_ids):
    ds = yolo.load(_dataset(tmp_path, {"labels/a.txt": text}))
    (record,) = ds.images
    assert ds.classes == ["face", "mask"] and record.annotation == "labels/a.txt"
    np.testing.assert_allclose(record.boxes, np.asarray(boxes, dtype=float).reshape(-1, 4), atol=1e-9)
    assert record.class_ids.tolist() == class_ids


def test_segment_polygon_is_kept_and_written_back(tmp_path):
    root = _dataset(tmp_path / "src", {"labels/a.txt": "0 0.1 0.2 0.5 0.2 0.3 0.8\n"})
    ds = yolo.load(root)
    np.testing.assert_allclose(ds.images[0].polygons[0], [[10, 10], [50, 10], [30, 40]])
    assert yolo.to_text(ds.images[0]) == "0 0.100000 0.200000 0.500000 0.200000 0.300000 0.800000\n"


@pytest.mark.parametrize(
    ("names_file", "content", "classes"),
    [
        ("classes.txt", "a\nb\n", ["a", "b"]),
        ("obj.names", "a\n\nb\n", ["a", "b"]),
        ("data.yaml", yaml.safe_dump({"names": ["a", "b"], "nc": 2}), ["a", "b"]),
        ("data.yaml", yaml.safe_dump({"names": {0: "a", 1: "b"}}), ["a", "b"]),
        ("data.yaml", yaml.safe_dump({"names": {0: "a", 2: "c"}}), ["a", "1", "c"]),
    ],
)
def test_names_sources(tmp_path, names_file, content, classes):
    ds = yolo.load(_dataset(tmp_path, {"labels/a.txt": "1 0.5 0.5 0.2 0.2\n"}, (names_file, content)))
    assert ds.classes == classes


def test_split_layouts_and_missing_label_means_no_objects(tmp_path):
    a = _dataset(
        tmp_path / "a",
        {
            "labels/train/x.txt": "0 0.5 0.5 0.2 0.2\n",
            "labels/val/y.txt": "1 0.5 0.5 0.2 0.2\n",
            "labels/val/z.txt": None,
        },
    )
    ds = yolo.load(a)
    assert {r.path: (r.split, len(r), r.annotation) for r in ds.images} == {
        "images/train/x.jpg": ("train", 1, "labels/train/x.txt"),
        "images/val/y.jpg": ("val", 1, "labels/val/y.txt"),
        "images/val/z.jpg": ("val", 0, None),
    }
    b = _dataset(tmp_path / "b", {"train/labels/x.txt": "0 0.5 0.5 0.2 0.2\n", "valid/labels/y.txt": ""})
    assert {r.path: r.split for r in yolo.load(b).images} == {
        "train/images/x.jpg": "train",
        "valid/images/y.jpg": "valid",
    }


def test_read_record_reads_one_file_as_load_does(tmp_path):
    root = _dataset(tmp_path, {"labels/val/x.txt": "1 0.5 0.5 0.2 0.2\n0 0.1 0.2 0.1 0.2\n"})
    (root / "labels" / "ghost.txt").write_text("1 0.1 0.1 0.1 0.1\n")
    loaded = yolo.load(root)
    record = yolo.read_record(root, image_rel="images/val/x.jpg", label_rel="labels/val/x.txt")
    expected = loaded.record("images/val/x.jpg")
    assert record.same_boxes(expected) and record.class_ids.tolist() == [1, 0]
    assert (record.split, record.annotation, record.width, record.height) == ("val", "labels/val/x.txt", 100, 50)
    ghost = yolo.read_record(root, image_rel=None, label_rel="labels/ghost.txt")
    assert ghost.path == "images/ghost.jpg" and ghost.extra == loaded.record("images/ghost.jpg").extra
    unlabelled = yolo.read_record(root, image_rel="images/val/x.jpg", label_rel=None)
    assert unlabelled.annotation is None and len(unlabelled) == 0 and unlabelled.width == 100


def test_label_beside_image_darknet(tmp_path):
    write_image(tmp_path / "data" / "x.jpg", 100, 50)
    (tmp_path / "data" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    (tmp_path / "obj.names").write_text("face\n")
    ds = yolo.load(tmp_path)
    assert ds.images[0].annotation == "data/x.txt" and len(ds.images[0]) == 1


def test_unnamed_class_id_is_kept(tmp_path):
    ds = yolo.load(_dataset(tmp_path, {"labels/a.txt": "7 0.5 0.5 0.2 0.2\n"}))
    assert ds.images[0].class_ids.tolist() == [7] and ds.class_name(7) == "7"


def test_label_without_image_keeps_its_lines(tmp_path):
    root = _dataset(tmp_path, {"labels/a.txt": "0 0.5 0.5 0.2 0.2\n"})
    (root / "labels" / "ghost.txt").write_text("1 0.1 0.1 0.1 0.1\n")
    ds = yolo.load(root)
    ghost = ds.record("images/ghost.jpg")
    assert ghost.annotation == "labels/ghost.txt" and (ghost.width, ghost.height) == (0, 0)
    yolo.save(ds, tmp_path / "out")
    assert (tmp_path / "out" / "labels" / "ghost.txt").read_text() == "1 0.1 0.1 0.1 0.1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.2 0.2\nface 0.5 0.5 0.2 0.2\n", "line 2: expected 'class cx cy w h'"),
        ("0 0.5 0.5 0.2\n", "line 1: expected 4 coordinates or a polygon, got 3 numbers"),
        ("-1 0.5 0.5 0.2 0.2\n", "line 1: negative class id -1"),
        ("0 nan 0.5 0.2 0.2\n", "line 1: coordinates must be finite"),
        (b"\xff\xfe\x00garbage", "cannot read"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    root = _dataset(tmp_path, {"labels/a.txt": ""})
    path = root / "labels" / "a.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DatasetReadError) as info:
        yolo.load(root)
    (error,) = info.value.errors
    assert error.file == "labels/a.txt" and message in str(error)


def test_round_trip_save_never_mutates(tmp_path):
    root = _dataset(tmp_path / "src", {"labels/a.txt": "1 0.123457 0.5 0.2 0.2\n0 0.5 0.5 1.0 1.0\n"})
    ds = yolo.load(root)
    snapshot = ds.copy()
    yolo.save(ds, root)
    assert (
        root / "labels" / "a.txt"
    ).read_text() == "1 0.123457 0.500000 0.200000 0.200000\n0 0.500000 0.500000 1.000000 1.000000\n"
    assert ds.images[0].same_boxes(snapshot.images[0])
    assert yolo.load(root).images[0].same_boxes(ds.images[0], atol=1e-9)


def test_new_dataset_writes_names_and_data_yaml(tmp_path):
    write_image(tmp_path / "images" / "train" / "x.jpg", 40, 40)
    record = ImageRecord(
        path="images/train/x.jpg", width=40, height=40, boxes=[[1.5, 2, 11.5, 12]], class_ids=[1], split="train"
    )
    ds = Dataset(root=tmp_path, format="voc", classes=["a", "b"], images=[record])
    out = tmp_path / "out"
    yolo.save(ds, out)
    assert (out / "classes.txt").read_text() == "a\nb\n"
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == ["a", "b"] and data["nc"] == 2 and data["train"] == "images/train"
    write_image(out / "images" / "train" / "x.jpg", 40, 40)
    again = yolo.load(out)
    assert again.images[0].same_boxes(record, atol=1e-6)


def test_shared_yolo_counts_and_byte_identical_round_trip(shared, tmp_path):
    root = shared / "macwinwin-yolo"
    ds = yolo.load(root)
    # README: 491 images, 1194 boxes: class 0 (without_mask) 584, class 1 (with_mask) 610.
    assert len(ds) == 491 and ds.num_boxes == 1194
    assert ds.class_counts() == {"without_mask": 584, "with_mask": 610}
    assert max(len(r) for r in ds.images) == 14
    assert ds.record("images/1632125Y5-2.jpg").width > 0  # the greyscale one
    assert "images/china-virus-travel-3*750xx5924-3338-0-0.jpg" in {r.path for r in ds.images}
    out = tmp_path / "out"
    yolo.save(ds, out)
    for record in ds.images:
        assert (out / record.annotation).read_bytes() == (root / record.annotation).read_bytes(), record.annotation
    assert (out / "classes.txt").read_bytes() == (root / "classes.txt").read_bytes()


def test_files_a_windows_editor_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    from PIL import Image

    from workbench.formats import yolo

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text("\ufeff1 0.5 0.5 0.25 0.5\n", encoding="utf-8")
    (tmp_path / "classes.txt").write_text("\ufeffwithout_mask\nwith_mask\n", encoding="utf-8")
    dataset = yolo.load(tmp_path)
    assert dataset.classes == ["without_mask", "with_mask"]
    assert dataset.images[0].class_ids.tolist() == [1]
    assert dataset.images[0].boxes.tolist() == [[15.0, 5.0, 25.0, 15.0]]
    (tmp_path / "data.yaml").write_text("\ufeffnames: [bare, masked]\n", encoding="utf-8")
    (tmp_path / "classes.txt").unlink()
    assert yolo.load(tmp_path).classes == ["bare", "masked"]
