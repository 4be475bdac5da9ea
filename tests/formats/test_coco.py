from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from tests.conftest import write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError
from workbench.formats import coco, coco_write


def _doc(images=None, annotations=None, categories=None, **extra) -> dict:
    return {
        "info": {"description": "test"},
        "licenses": [{"id": 1, "name": "CC0"}],
        "categories": categories if categories is not None else [{"id": 1, "name": "face", "supercategory": "none"}],
        "images": images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}],
        "annotations": annotations if annotations is not None else [],
        **extra,
    }


def _ann(id_, image_id, category_id, bbox, **extra) -> dict:
    return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1, "iscrowd": 0, **extra}


def _dataset(root: Path, doc: dict, name: str = "annotations.json") -> Path:
    for image in doc["images"]:
        if isinstance(image, dict) and isinstance(image.get("file_name"), str) and ".." not in image["file_name"]:
            if not image["file_name"].startswith("/"):
                write_image(root / Path(name).parent / image["file_name"], 100, 50)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(doc))
    return root


@pytest.mark.parametrize(
    ("annotations", "boxes", "classes"),
    [
        ([], np.zeros((0, 4)), []),
        ([_ann(1, 1, 1, [10, 5, 20, 10])], [[10, 5, 30, 15]], ["face"]),
        (
            [_ann(7, 1, 1, [0.5, 1.25, 99.5, 48.75]), _ann(3, 1, 1, [0, 0, 1, 1])],
            [[0.5, 1.25, 100, 50], [0, 0, 1, 1]],
            ["face", "face"],
        ),
    ],
)
def test_xywh_to_xyxy(tmp_path, annotations, boxes, classes):
    ds = coco.load(_dataset(tmp_path, _doc(annotations=annotations)))
    np.testing.assert_array_equal(ds.images[0].boxes, np.asarray(boxes, dtype=float).reshape(-1, 4))
    assert [ds.classes[i] for i in ds.images[0].class_ids] == classes


def test_id_gaps_unused_zero_duplicate_names_and_iscrowd_round_trip(tmp_path):
    categories = [
        {"id": 0, "name": "Mask", "supercategory": "none"},
        {"id": 1, "name": "Mask", "supercategory": "Mask"},
        {"id": 5, "name": "No-Mask", "supercategory": "Mask"},
    ]
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 100, "height": 50, "license": 1},
        {"id": 42, "file_name": "b.jpg", "width": 100, "height": 50},
    ]
    annotations = [
        _ann(100, 42, 5, [1, 2, 3, 4]),
        _ann(7, 10, 1, [5, 6, 7, 8], iscrowd=1, segmentation=[[5, 6, 12, 6, 12, 14]]),
    ]
    root = _dataset(tmp_path / "src", _doc(images, annotations, categories))
    ds = coco.load(root)
    assert ds.classes == ["Mask", "Mask", "No-Mask"]
    assert ds.record("b.jpg").class_ids.tolist() == [2] and ds.record("a.jpg").class_ids.tolist() == [1]
    assert ds.class_counts() == {"Mask": 1, "No-Mask": 1}
    assert ds.record("a.jpg").box_extra[0]["coco"]["iscrowd"] == 1
    snapshot = ds.copy()
    coco.save(ds, tmp_path / "out")
    assert (tmp_path / "out" / "annotations.json").read_bytes() == json.dumps(
        json.loads((root / "annotations.json").read_text()), separators=(",", ":")
    ).encode()
    assert all(a.same_boxes(b) and a.extra == b.extra for a, b in zip(ds.images, snapshot.images))


def test_moved_box_gets_new_bbox_and_area(tmp_path):
    ds = coco.load(_dataset(tmp_path, _doc(annotations=[_ann(1, 1, 1, [10, 5, 20, 10])])))
    ds.images[0].boxes[0] = [11.1, 5, 31.2, 15]
    doc = coco.to_dict(ds, ds.images, "annotations.json")
    (ann,) = doc["annotations"]
    assert ann["bbox"] == [11.1, 5, 20.1, 10] and ann["area"] == pytest.approx(201.0) and ann["id"] == 1


def test_new_dataset_gets_ids_area_iscrowd(tmp_path):
    records = [
        ImageRecord(path="images/a.jpg", width=10, height=10, boxes=[[0, 0, 5, 5], [1, 1, 2, 3]], class_ids=[0, 1]),
        ImageRecord(
            path="images/b.jpg",
            width=10,
            height=10,
            boxes=[[2, 2, 4, 4]],
            class_ids=[1],
            polygons=[[[2, 2], [4, 2], [4, 4]]],
        ),
    ]
    ds = Dataset(root=tmp_path, format="voc", classes=["a", "b"], images=records)
    doc = coco.to_dict(ds, ds.images, "annotations.json")
    assert [c["id"] for c in doc["categories"]] == [1, 2]
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3]
    assert all({"area", "iscrowd", "segmentation"} <= set(a) for a in doc["annotations"])
    assert doc["annotations"][2]["segmentation"] == [[2, 2, 4, 2, 4, 4]]


def test_roboflow_layout_splits(tmp_path):
    for split in ("train", "valid", "test"):
        _dataset(tmp_path, _doc(annotations=[_ann(1, 1, 1, [1, 1, 2, 2])]), f"{split}/_annotations.coco.json")
    ds = coco.load(tmp_path)
    assert sorted(ds.splits) == ["test", "train", "valid"]
    assert sorted(r.path for r in ds.images) == ["test/a.jpg", "train/a.jpg", "valid/a.jpg"]


def test_standard_coco_layout(tmp_path):
    doc = _doc(annotations=[_ann(1, 1, 1, [1, 1, 2, 2])])
    write_image(tmp_path / "val2017" / "a.jpg", 100, 50)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))
    ds = coco.load(tmp_path)
    assert [(r.path, r.split) for r in ds.images] == [("val2017/a.jpg", "val2017")]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(annotations=[_ann(1, 99, 1, [1, 1, 2, 2])]), "annotation id 1: image_id 99 is not in 'images'"),
        (_doc(annotations=[_ann(1, 1, 1, [1, 1, 2])]), "annotation id 1: 'bbox' must be 4 numbers"),
        (
            _doc(annotations=[_ann(1, 1, 1, [1, 1, 2, 2]), _ann(1, 1, 1, [1, 1, 2, 2])]),
            "annotation id 1: duplicate annotation id",
        ),
        (_doc(annotations=[_ann(1, 1, 9, [1, 1, 2, 2])]), "category ids [9] not in 'categories'"),
        (
            _doc(images=[{"id": 1, "file_name": "../../etc/passwd"}]),
            "image 1: file_name: path '../../etc/passwd' escapes",
        ),
        (_doc(images=[{"id": 1, "file_name": "/etc/passwd"}]), "not relative to the dataset root"),
        (
            _doc(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "a.jpg"}]),
            "image 2: duplicate image id 1",
        ),
        (_doc(categories=[{"id": "x", "name": "a"}]), "category 1: needs an integer 'id'"),
        (_doc(images={}), "'images' is missing or not a list"),
    ],
)
def test_bad_files_name_file_and_record(tmp_path, doc, message):
    root = _dataset(tmp_path, doc)
    with pytest.raises(DatasetReadError) as info:
        coco.load(root)
    (error,) = info.value.errors
    assert error.file == "annotations.json" and message in str(error)


def test_shared_roboflow_counts_and_byte_identical_round_trip(shared, tmp_path):
    root = shared / "roboflow-coco"
    ds = coco.load(root)
    # README: categories 0 Mask (never used), 1 Mask, 2 No-Mask, 3 mask_weared_incorrect, 4 with_mask, 5 without_mask.
    assert ds.classes == ["Mask", "Mask", "No-Mask", "mask_weared_incorrect", "with_mask", "without_mask"]
    expected = {
        "train": (
            520,
            2343,
            {"with_mask": 1774, "without_mask": 456, "mask_weared_incorrect": 75, "Mask": 24, "No-Mask": 14},
        ),
        "valid": (
            110,
            492,
            {"with_mask": 390, "without_mask": 72, "mask_weared_incorrect": 12, "Mask": 15, "No-Mask": 3},
        ),
        "test": (73, 380, {"with_mask": 291, "without_mask": 64, "mask_weared_incorrect": 16, "Mask": 7, "No-Mask": 2}),
    }
    assert len(ds) == 703 and ds.num_boxes == 3215
    for split, (n_images, n_boxes, counts) in expected.items():
        records = [r for r in ds.images if r.split == split]
        assert (len(records), sum(len(r) for r in records)) == (n_images, n_boxes)
        got: dict[str, int] = {}
        for r in records:
            for i in r.class_ids:
                got[ds.classes[i]] = got.get(ds.classes[i], 0) + 1
        assert got == counts, split
    assert not any(0 in r.class_ids for r in ds.images)  # category 0 is never used
    out = tmp_path / "out"
    coco.save(ds, out)
    for split in expected:
        rel = f"{split}/_annotations.coco.json"
        assert (out / rel).read_bytes() == (root / rel).read_bytes()


def test_pycocotools_loads_output_without_warning(shared, tmp_path):
    ds = coco.load(shared / "roboflow-coco")
    coco.save(ds, tmp_path, keep_files=False)
    for split in ("train", "valid", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            api = COCO(str(tmp_path / f"{split}.json"))
        assert len(api.getAnnIds()) == len({a["id"] for a in api.dataset["annotations"]})


def test_fast_text_is_json_dumps_of_to_dict_byte_for_byte():
    """``coco_write.fast_text`` (what a save of a non-COCO dataset writes) is the document
    ``to_dict`` builds, dumped: fractional, noisy, huge and negative numbers, polygons, images
    with no box, odd file names, an out-of-list class id, and files in other folders."""
    polygon = np.array([[1.5, 2.25], [10, 2.0000000001], [4, 9]])
    records = [
        ImageRecord(
            path='images/a "quoted" é.jpg',
            width=640.0,
            height=480,
            boxes=[[0.1 + 0.2, 1, 10.000000000001, 5.5], [-0.0000001, 2, 1e20, 3], [4, 5, 4, 5]],
            class_ids=[0, 2, 1],
            polygons=[None, None, polygon],
        ),
        ImageRecord(path="images/train/b.png", width=3, height=4),
        ImageRecord(path="c.png", width=8, height=8, boxes=[[1, 1, 2, 2]], class_ids=[5], split="train"),
    ]
    for fmt in ("voc", "labelme", "yolo"):
        dataset = Dataset(root=Path("/x"), format=fmt, classes=["a", "b", "c"], images=records)
        for json_rel in ("annotations.json", "train.json", "images/val.json"):
            expected = json.dumps(coco.to_dict(dataset, records, json_rel), ensure_ascii=False, separators=(",", ":"))
            assert coco_write.fast_text(dataset, records, json_rel, coco.categories_of(dataset)) == expected
        assert coco_write.fast_text(dataset, [], "annotations.json", []) == json.dumps(
            coco.to_dict(Dataset(root=Path("/x"), format=fmt), [], "annotations.json"), separators=(",", ":")
        )
    dataset = Dataset(root=Path("/x"), format="coco", classes=["a", "b", "c"], images=records)
    assert coco_write.fast_text(dataset, records, "annotations.json", coco.categories_of(dataset)) is None
    nan = ImageRecord(path="d.png", width=8, height=8, boxes=[[float("nan"), 1, 2, 2]], class_ids=[0])
    with pytest.raises(ValueError, match="not finite"):
        coco_write.fast_text(Dataset(root=Path("/x"), format="voc", images=[nan]), [nan], "a.json", [])
