"""An Ultralytics data.yaml over a copy of the shared YOLO set, in each of the shapes Ultralytics reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.errors import DatasetReadError, ReadError, WorkbenchError
from workbench.formats import detect_format, load_dataset, yolo, yolo_yaml

NAMES = ["without_mask", "with_mask"]  # the shared set's classes.txt


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def ultra(shared: Path, tmp_path: Path) -> Path:
    """Nine shared images in Ultralytics' layout: ``images/{train,val,extra}`` and their labels
    in ``labels/{train,val,extra}`` (the label folders mirror the image folders)."""
    src = shared / "macwinwin-yolo"
    stems = sorted(p.stem for p in (src / "labels").glob("*.txt"))[:9]
    root = tmp_path / "ds"
    for split, part in (("train", stems[:4]), ("val", stems[4:6]), ("extra", stems[6:])):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for stem in part:
            shutil.copy2(next((src / "images").glob(f"{stem}.*")), root / "images" / split)
            shutil.copy2(src / "labels" / f"{stem}.txt", root / "labels" / split)
    return root


def paths(dataset, split: str) -> list[str]:
    return sorted(r.path for r in dataset.images if r.split == split)


def files(root: Path, folder: str) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / folder).iterdir())


def test_folders_give_the_splits_and_the_yolo_boxes(ultra: Path) -> None:
    yml = write_yaml(ultra / "data.yaml", {"path": ".", "train": "images/train", "val": "images/val", "names": NAMES})
    dataset = load_dataset(yml)
    assert dataset.format == "yolo" and dataset.root == ultra.resolve()
    assert dataset.classes == NAMES
    assert paths(dataset, "train") == files(ultra, "images/train")
    assert paths(dataset, "val") == files(ultra, "images/val")
    assert dataset.splits == ["train", "val"]  # images/extra is in no split: not in the dataset
    plain = yolo.load(ultra)  # the folder read as YOLO: the same boxes, by Ultralytics' label rule
    for record in dataset.images:
        assert record.annotation == "labels/" + record.path[len("images/") :].rsplit(".", 1)[0] + ".txt"
        assert record.same_boxes(plain.record(record.path)) and len(record) > 0


def test_list_of_folders_and_a_test_split(ultra: Path) -> None:
    yml = write_yaml(
        ultra / "data.yaml",
        {"train": ["images/train", "images/extra"], "val": "images/val", "test": ["images/val"], "names": NAMES},
    )
    dataset = load_dataset(yml)
    assert paths(dataset, "train") == sorted(files(ultra, "images/train") + files(ultra, "images/extra"))
    # an image listed in two splits is one record in each, so validation sees exactly its list
    assert paths(dataset, "test") == paths(dataset, "val") == files(ultra, "images/val")


def test_txt_lists_relative_to_path_and_to_the_list(ultra: Path, tmp_path: Path) -> None:
    train, val = files(ultra, "images/train"), files(ultra, "images/val")
    lists = ultra / "lists"
    lists.mkdir()
    # './' lines are relative to the list's folder (Ultralytics); others to 'path'; absolute as is
    (lists / "train.txt").write_text("".join(f"./../{p}\n" for p in train[:2]) + f"{train[2]}\n{ultra / train[3]}\n")
    (ultra / "val.txt").write_text("\n".join(val) + "\n\n")
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    yml = write_yaml(
        elsewhere / "data.yml",
        {"path": "../ds", "train": "lists/train.txt", "val": "val.txt", "names": {0: NAMES[0], 1: NAMES[1]}},
    )
    dataset = load_dataset(yml)
    assert dataset.root == ultra.resolve()
    assert paths(dataset, "train") == train and paths(dataset, "val") == val
    assert dataset.classes == NAMES


def test_names_as_dict_list_or_nc(ultra: Path) -> None:
    base = {"train": "images/train", "val": "images/val"}
    by_list = load_dataset(write_yaml(ultra / "a.yaml", {**base, "names": NAMES, "nc": 2}))
    by_dict = load_dataset(write_yaml(ultra / "b.yaml", {**base, "names": {1: NAMES[1], 0: NAMES[0]}}))
    assert by_list.classes == by_dict.classes == NAMES
    assert load_dataset(write_yaml(ultra / "c.yaml", {**base, "nc": 3})).classes == ["class_0", "class_1", "class_2"]
    gaps = load_dataset(write_yaml(ultra / "d.yaml", {**base, "names": {0: "a", 1: "b", 3: "d"}}))
    assert gaps.classes == ["a", "b", "2", "d"]


def test_missing_path_key_is_the_yaml_folder(ultra: Path) -> None:
    yml = write_yaml(ultra / "data.yaml", {"train": "images/train", "val": "images/val", "names": NAMES})
    assert detect_format(yml) == "yolo"
    assert paths(load_dataset(yml), "val") == files(ultra, "images/val")


def test_root_holds_images_outside_path(ultra: Path) -> None:
    """A list may name images outside 'path' (an absolute path): the root is the folder holding all."""
    (ultra / "sub").mkdir()
    (ultra / "sub" / "val.txt").write_text("".join(f"{ultra / p}\n" for p in files(ultra, "images/val")))
    yml = write_yaml(ultra / "sub" / "data.yaml", {"train": "val.txt", "val": "val.txt", "names": NAMES})
    dataset = load_dataset(yml)
    assert dataset.root == ultra.resolve()
    assert paths(dataset, "val") == files(ultra, "images/val")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": "images/nowhere", "val": "images/val", "names": NAMES}, "'train': 'images/nowhere' does not exist"),
        ({"train": "images/train", "val": ["images/val", "x.txt"], "names": NAMES}, "'val': 'x.txt' does not exist"),
        (
            {"train": "images/train", "val": "images/val", "names": NAMES, "nc": 3},
            "'names' has 2 classes but 'nc' is 3",
        ),
        ({"train": "images/train", "names": NAMES}, "has no 'val' key"),
        ({"train": "images/train", "val": "images/val"}, "has neither 'names' nor 'nc'"),
        ({"path": "gone", "train": "images/train", "val": "images/val", "names": NAMES}, "'path' 'gone' is no folder"),
        ({"train": "images/train", "val": "images/val", "names": "a b"}, "'names' must be a list or a dict"),
    ],
)
def test_bad_yaml_is_a_clear_error(ultra: Path, data: dict, message: str) -> None:
    yml = write_yaml(ultra / "data.yaml", data)
    with pytest.raises(ReadError, match=message) as caught:
        load_dataset(yml, strict=False)
    assert caught.value.file == str(yml.resolve())


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="no such file"):
        yolo_yaml.load(tmp_path / "data.yaml")
    with pytest.raises(ReadError, match=r"data\.yaml: no such file"):
        load_dataset(tmp_path / "data.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(WorkbenchError, match=r"no .* annotations found"):
        load_dataset(tmp_path / "folder.yaml")  # a folder is a folder, whatever its name


def test_class_id_beyond_names(ultra: Path) -> None:
    label = sorted((ultra / "labels" / "val").iterdir())[0]
    label.write_text(label.read_text() + "5 0.5 0.5 0.1 0.1\n")
    yml = write_yaml(ultra / "data.yaml", {"train": "images/train", "val": "images/val", "names": NAMES})
    with pytest.raises(DatasetReadError, match=r"labels/val/.*class id 5 beyond the 2 classes"):
        load_dataset(yml)
    lenient = load_dataset(yml, strict=False)
    assert len(lenient.skipped) == 1 and len(paths(lenient, "val")) == 1


def test_listed_image_missing(ultra: Path) -> None:
    (ultra / "val.txt").write_text("images/val/gone.jpg\n")
    yml = write_yaml(ultra / "data.yaml", {"train": "images/train", "val": "val.txt", "names": NAMES})
    with pytest.raises(DatasetReadError, match=r"images/val/gone\.jpg: image listed in the data\.yaml does not exist"):
        load_dataset(yml)


def test_saves_back_as_yolo_keeping_the_yaml(ultra: Path) -> None:
    data = {"path": ".", "train": "images/train", "val": "images/val", "names": {0: "a", 1: "b"}, "extra_key": 7}
    yml = write_yaml(ultra / "data.yaml", data)
    dataset = load_dataset(yml)
    record = dataset.images[0]
    record.boxes = record.boxes + 1.0
    yolo.save_record(dataset, record)
    dataset.classes = ["a", "bee"]
    yolo.save_names(dataset, dataset.root)
    again = load_dataset(yml)
    assert np.allclose(again.record(record.path).boxes, record.boxes, atol=1e-3)
    assert again.classes == ["a", "bee"]
    assert yaml.safe_load(yml.read_text())["extra_key"] == 7
