"""Dataset versions and their diff on a copy of a shared VOC dataset: after a scripted set of edits,
the diff reports exactly those edits, per image and per class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.annotations import Dataset, ImageRecord, content_hash
from workbench.cli import main as cli
from workbench.datasets import index, versions
from workbench.errors import WorkbenchError
from workbench.formats import load_dataset, save_dataset
from workbench.labelling import edits, saving


def save(opened, position, record, classes=None):
    return saving.save_record(opened, position, record, classes=classes, journal=saving.Journal())


def test_a_versions_hash_is_the_hash_of_its_labels_in_any_format(voc8, tmp_path):
    dataset = index.open_dataset(voc8).dataset
    entry = versions.take_version(dataset)
    snap = versions.load_snapshot(voc8, entry)
    rebuilt = Dataset(
        root=voc8,
        format="voc",
        classes=snap["classes"],
        images=[
            ImageRecord(
                path=path,
                width=image["width"],
                height=image["height"],
                split=image["split"],
                boxes=np.asarray(image["boxes"], dtype=np.float64).reshape(-1, 4),
                class_ids=np.array([snap["classes"].index(n) for n in image["labels"]], dtype=np.int64),
            )
            for path, image in snap["images"].items()
        ],
    )
    assert content_hash(rebuilt) == entry["hash"]  # the snapshot holds every label the hash covers
    save_dataset(dataset, tmp_path / "as-coco", "coco")
    assert content_hash(load_dataset(tmp_path / "as-coco")) == entry["hash"]  # the same labels, another format


def test_scripted_edits_are_exactly_the_diff(voc8):
    opened = index.open_dataset(voc8)
    dataset = opened.dataset
    v1 = versions.take_version(dataset)
    assert v1["name"] == "v1" and v1["boxes"] == dataset.num_boxes
    assert versions.take_version(dataset)["name"] == "v1"  # same labels: the same version
    names = dataset.classes
    a, b, c, d = (dataset.images[i] for i in range(4))
    assert min(len(a), len(b), len(c)) >= 1
    # a: relabel box 0
    ra = a.copy()
    new_class = (int(ra.class_ids[0]) + 1) % len(names)
    old_name, new_name = names[int(ra.class_ids[0])], names[new_class]
    edits.relabel_box(ra, 0, new_class)
    save(opened, 0, ra)
    # b: move box 0 by 3 px right
    rb = b.copy()
    moved_name = names[int(rb.class_ids[0])]
    edits.move_box(rb, 0, rb.boxes[0] + [3, 0, 3, 0])
    save(opened, 1, rb)
    # c: delete its last box
    rc = c.copy()
    removed_name = names[int(rc.class_ids[-1])]
    edits.delete_box(rc, len(rc) - 1)
    save(opened, 2, rc)
    # d: add a box of a new class, far from every other box
    rd = d.copy()
    classes = [*names, "helmet"]
    edits.add_box(rd, [1, 1, 6, 6], len(classes) - 1)
    save(opened, 3, rd, classes=classes)

    current = index.open_dataset(voc8).dataset
    v2 = versions.take_version(current, name="after-edits")
    result = versions.diff(voc8, "v1", "after-edits")
    assert result.totals() == {"added": 1, "removed": 1, "moved": 1, "relabelled": 1}
    assert [im.path for im in result.images] == sorted([a.path, b.path, c.path, d.path])
    by_path = {im.path: im for im in result.images}
    assert (by_path[a.path].relabelled, by_path[a.path].total) == (1, 1)
    assert (by_path[b.path].moved, by_path[b.path].total) == (1, 1)
    assert (by_path[c.path].removed, by_path[c.path].total) == (1, 1)
    assert (by_path[d.path].added, by_path[d.path].total) == (1, 1)
    assert by_path[a.path].changes == [f"relabelled {old_name} → {new_name} at " + versions._box(a.boxes[0])]
    expected = {}
    for name, kind in ((old_name, "relabelled"), (moved_name, "moved"), (removed_name, "removed"), ("helmet", "added")):
        expected.setdefault(name, {})
        expected[name][kind] = expected[name].get(kind, 0) + 1
    assert {k: dict(v) for k, v in result.per_class.items()} == expected
    assert result.classes_added == ["helmet"] and not result.images_added and not result.images_removed
    # "current" is the labels on disk; nothing changed since v2
    assert versions.diff(voc8, "after-edits").edits == 0
    assert versions.edits_since(voc8, v1["hash"], current) == 4
    assert versions.edits_since(voc8, v2["hash"], current) == 0
    assert [v["name"] for v in versions.list_versions(voc8)] == ["v1", "after-edits"]
    assert versions.find_version(voc8, v1["hash"][:8])["name"] == "v1"
    with pytest.raises(WorkbenchError, match="no version"):
        versions.find_version(voc8, "v9")


def test_cli_versions_and_diff(voc8, capsys):
    assert cli.main(["version", str(voc8)]) == 0
    opened = index.open_dataset(voc8)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    save(opened, 0, record)
    assert cli.main(["version", str(voc8), "--name", "fixed"]) == 0
    capsys.readouterr()
    assert cli.main(["versions", str(voc8)]) == 0
    listed = capsys.readouterr().out
    assert "v1" in listed and "fixed" in listed
    assert cli.main(["diff", str(voc8), "v1", "fixed", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"] == {"added": 0, "removed": 1, "moved": 0, "relabelled": 0}
    assert list(data["per_image"]) == [record.path]
    assert cli.main(["diff", str(voc8), "v1"]) == 0
    assert "1 removed" in capsys.readouterr().out


def test_diff_of_empty_images_and_image_changes():
    old = {"classes": ["a"], "images": {"x.png": {"boxes": [], "labels": []}, "gone.png": {"boxes": [], "labels": []}}}
    new = {
        "classes": ["a", "b"],
        "images": {
            "x.png": {"boxes": [[0, 0, 10, 10]], "labels": ["b"]},
            "new.png": {"boxes": np.zeros((0, 4)).tolist(), "labels": []},
        },
    }
    result = versions.diff_snapshots(old, new)
    assert (
        result.totals()["added"] == 1 and result.images_added == ["new.png"] and result.images_removed == ["gone.png"]
    )
    assert result.classes_added == ["b"]
