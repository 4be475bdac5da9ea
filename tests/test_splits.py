"""workbench.splits: the reproducible stratified split, the frozen class list and the class map."""

from __future__ import annotations

import pytest

from workbench.annotations import IGNORE_LABEL, Dataset, ImageRecord
from workbench.errors import WorkbenchError
from workbench.splits import ClassMap, freeze_classes, split_records


def make_dataset(n: int = 20, classes=("a", "b", "rare")) -> Dataset:
    images = []
    for i in range(n):
        ids = [0, 1] if i % 2 else [0]
        if i in (3, 11, 17):
            ids.append(2)
        boxes = [[10 * k, 10, 10 * k + 8, 30] for k in range(len(ids))]
        images.append(ImageRecord(f"img{i:02d}.png", 100, 80, boxes, ids))
    return Dataset("/nonexistent", "voc", list(classes), images)


def test_split_is_reproducible_and_stratified():
    ds = make_dataset()
    train, val, how = split_records(ds, val_fraction=0.2, seed=0)
    again, val_again, _ = split_records(ds, val_fraction=0.2, seed=0)
    assert [r.path for r in val] == [r.path for r in val_again] and [r.path for r in train] == [r.path for r in again]
    assert {r.path for r in train}.isdisjoint(r.path for r in val)
    assert len(train) + len(val) == 20
    assert "stratified" in how
    # the rare class (3 images) is represented on both sides
    has_rare = lambda rs: any(2 in r.class_ids for r in rs)  # noqa: E731
    assert has_rare(train) and has_rare(val)
    other = {r.path for r in split_records(ds, val_fraction=0.2, seed=1)[1]}
    assert other != {r.path for r in val}


def test_split_uses_the_datasets_own_splits():
    ds = make_dataset(6)
    for i, r in enumerate(ds.images):
        r.split = "valid" if i < 2 else "train"
    train, val, how = split_records(ds)
    assert [r.path for r in val] == ["img00.png", "img01.png"] and len(train) == 4
    assert "dataset splits" in how


def test_split_needs_two_images():
    with pytest.raises(WorkbenchError, match="need at least 2"):
        split_records(make_dataset(1))


def test_frozen_classes_map_by_name_and_skip_ignore_regions():
    ds = make_dataset(2, classes=("a", IGNORE_LABEL, "b"))
    assert freeze_classes(ds) == ["a", "b"]
    record = ImageRecord(
        "x.png",
        100,
        100,
        [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [1, 1, 5, 5]],
        [2, 1, 0, 0],
        box_extra=[{}, {}, {}, {"coco": {"iscrowd": 1}}],
    )
    boxes, labels, ignore, skipped = ClassMap.build(ds, ["a", "b"]).targets(ds, record)
    assert labels.tolist() == [2, 1]  # "b" -> label 2, "a" -> label 1 (0 is the background)
    assert boxes.tolist() == [[0, 0, 10, 10], [50, 50, 60, 60]]
    assert ignore.tolist() == [[20, 20, 40, 40], [1, 1, 5, 5]] and skipped == 0
    # a relabelled dataset whose class list is reordered keeps the run's ids
    relabelled = Dataset("/x", "voc", ["b", "a", "new"], [])
    cmap = ClassMap.build(relabelled, ["a", "b"])
    assert cmap.labels == {0: 2, 1: 1}  # "new" is not in the frozen list: left out
