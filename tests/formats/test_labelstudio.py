"""Label Studio JSON: a lossless round trip, percent <-> pixel exactness, rotated boxes, which
annotation is read, image URLs, bad input, one task saved inside the file, and Label Studio's own
converter (``label-studio-converter`` in ``.venv-ref``) as the independent reader and writer."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT, SHARED, TINY_STEMS, copy_voc_subset
from workbench.annotations import Dataset, ImageRecord
from workbench.datasets import index
from workbench.errors import DatasetReadError
from workbench.formats import coco, detect_format, labelme, labelstudio, load_dataset, save_dataset
from workbench.labelling import edits, saving

CONVERTER = PROJECT / ".venv-ref" / "bin" / "label-studio-converter"
needs_ref = pytest.mark.skipif(not CONVERTER.is_file(), reason=f"{CONVERTER} missing: run scripts/setup.sh --test")
YOLO = SHARED / "macwinwin-yolo"


def box_item(x, y, w, h, label="cat", *, rotation=0, size=(640, 480), **more) -> dict:
    return {
        "id": more.pop("id", f"r{x}-{y}"),
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": size[0],
        "original_height": size[1],
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
        **more,
    }


def write_tasks(root: Path, tasks: list, name: str = "tasks.json") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps(tasks, indent=2))
    return root


def rich_tasks() -> list[dict]:
    """Two tasks with what Label Studio's export holds besides boxes."""
    return [
        {
            "id": 17,
            "data": {"image": "/data/upload/3/1a2b3c4d-a.jpg", "meta": "kept"},
            "annotations": [
                {"id": 5, "was_cancelled": True, "updated_at": "2024-05-03T00:00:00Z", "result": []},
                {"id": 6, "updated_at": "2024-05-01T00:00:00Z", "result": [box_item(1, 1, 5, 5, "dog")]},
                {
                    "id": 7,
                    "updated_at": "2024-05-02T00:00:00Z",
                    "lead_time": 3.5,
                    "result": [
                        box_item(10, 20, 30, 40, "cat", id="abc"),
                        {
                            "id": "c1",
                            "type": "choices",
                            "from_name": "q",
                            "to_name": "image",
                            "value": {"choices": ["x"]},
                        },
                        box_item(50, 50, 10, 10, "dog", id="def", score=None),
                    ],
                },
            ],
            "predictions": [{"model_version": "v1", "result": [box_item(0, 0, 50, 50, "bird")]}],
            "project": 3,
        },
        {"id": 18, "data": {"image": "images/b.jpg"}, "annotations": [], "predictions": [{"result": []}]},
    ]


def test_round_trip_is_lossless_and_reads_the_latest_live_annotation(tmp_path):
    root = write_tasks(tmp_path / "ls", rich_tasks())
    ds = load_dataset(root)
    assert ds.format == "labelstudio" and ds.classes == ["cat", "dog"]  # "bird" is a prediction, "dog"@6 older
    a, b = ds.images
    assert (a.path, b.path) == ("a.jpg", "images/b.jpg")  # the upload's 8-hex prefix dropped, no file: a finding
    assert a.boxes.tolist() == [[64, 96, 256, 288], [320, 240, 384, 288]]
    assert [ds.class_name(int(c)) for c in a.class_ids] == ["cat", "dog"] and len(b) == 0
    assert (a.width, a.height) == (640, 480)
    findings = "\n".join(ds.extra["labelstudio"]["findings"])
    assert "3 annotations, read the latest not cancelled" in findings
    assert "predictions only, not read as ground truth" in findings
    assert "1 result item(s) that are not boxes kept" in findings
    assert "'/data/upload/3/1a2b3c4d-a.jpg' is not a file under the dataset root; read as a.jpg" in findings
    out = tmp_path / "out"
    save_dataset(ds, out)
    assert json.loads((out / "tasks.json").read_text()) == rich_tasks()
    assert load_dataset(out).classes == ["cat", "dog"]  # from the written label_config.xml


def test_moving_a_box_and_adding_one_changes_only_those_items(tmp_path):
    ds = load_dataset(write_tasks(tmp_path / "ls", rich_tasks()))
    record = ds.images[0]
    record.boxes[1] = [32, 48, 96, 96]
    record.add_box([0, 0, 64, 48], 0)
    labelstudio.save(ds, tmp_path / "out")
    task = json.loads((tmp_path / "out" / "tasks.json").read_text())[0]
    result = task["annotations"][2]["result"]
    assert result[0] == rich_tasks()[0]["annotations"][2]["result"][0]  # untouched
    assert result[1]["type"] == "choices"  # a non-box item stays in its place
    assert result[2]["id"] == "def" and "score" in result[2]  # moved: its other fields stay
    assert result[2]["value"] == {"x": 5, "y": 10, "width": 10, "height": 10, "rotation": 0, "rectanglelabels": ["dog"]}
    assert result[3]["value"]["rectanglelabels"] == ["cat"] and result[3]["from_name"] == "label"
    assert task["annotations"][:2] == rich_tasks()[0]["annotations"][:2] and task["predictions"]


@pytest.mark.parametrize("size", [(640, 480), (1333, 777), (999, 3)])
def test_percent_and_pixels_convert_exactly(tmp_path, size):
    boxes = [[0, 0, size[0], size[1]], [79.25, 1.5, 100, 2.75], [1, 1, 2, 2], [0.1, 0.2, 0.3, 0.4]]
    record = ImageRecord(path="images/x.jpg", width=size[0], height=size[1], boxes=boxes, class_ids=[0, 1, 0, 1])
    labelstudio.save(Dataset(root=tmp_path, format="voc", classes=["a", "b"], images=[record]), tmp_path / "ls")
    (task,) = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert task["data"] == {"image": "/data/local-files/?d=images/x.jpg"}
    value = task["annotations"][0]["result"][1]["value"]
    assert value["x"] == 79.25 * 100 / size[0] and value["height"] == (2.75 - 1.5) * 100 / size[1]
    again = load_dataset(tmp_path / "ls")
    assert again.images[0].boxes.tolist() == boxes  # exactly, not approximately
    assert again.classes == ["a", "b"]


def test_a_rotated_box_is_read_as_its_enclosing_box_and_written_back_while_unmoved(tmp_path):
    # 100 x 50 px at (100, 100), turned 90 degrees clockwise about that corner: x 50..100, y 100..200
    tasks = [
        {
            "id": 1,
            "data": {"image": "a.jpg"},
            "annotations": [{"result": [box_item(25, 25, 25, 12.5, rotation=90, size=(400, 400))]}],
        }
    ]
    root = write_tasks(tmp_path / "ls", tasks)
    ds = load_dataset(root)
    np.testing.assert_allclose(ds.images[0].boxes, [[50, 100, 100, 200]], atol=1e-9, rtol=0)
    assert any("rotated by 90 degrees, read as its enclosing box" in f for f in ds.extra["labelstudio"]["findings"])
    labelstudio.save(ds, tmp_path / "same")
    assert json.loads((tmp_path / "same" / "tasks.json").read_text()) == tasks
    ds.images[0].boxes[0] = [40, 100, 100, 200]
    labelstudio.save(ds, tmp_path / "moved")
    value = json.loads((tmp_path / "moved" / "tasks.json").read_text())[0]["annotations"][0]["result"][0]["value"]
    assert value["rotation"] == 0 and (value["x"], value["width"]) == (10, 15)


def test_image_urls_resolve_under_the_root(tmp_path):
    root = tmp_path / "ls"
    for rel in ("images/up.jpg", "images/cloud.jpg", "deep/sub/local.jpg", "rel.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    urls = [
        "/data/upload/1/0badcafe-up.jpg",
        "s3://bucket/some/where/cloud.jpg",
        "/data/local-files/?d=home/me/data/deep/sub/local.jpg",
        "rel.jpg",
        "https://example.org/missing.png",
    ]
    tasks = [{"data": {"image": u}, "annotations": [{"result": [box_item(0, 0, 10, 10)]}]} for u in urls]
    ds = load_dataset(write_tasks(root, tasks))
    assert [r.path for r in ds.images] == [
        "images/up.jpg",
        "images/cloud.jpg",
        "deep/sub/local.jpg",
        "rel.jpg",
        "missing.png",
    ]
    (finding,) = ds.extra["labelstudio"]["findings"]
    assert "'https://example.org/missing.png' is not a file under the dataset root" in finding
    labelstudio.save(ds, tmp_path / "out")
    assert [t["data"]["image"] for t in json.loads((tmp_path / "out" / "tasks.json").read_text())] == urls


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda item: item.pop("original_width"), "original_width is missing: its percent values cannot be turned"),
        (lambda item: item.update(original_height=-5), "original_height is -5, not a positive whole number"),
        (lambda item: item["value"].update(width=-1), "value.width/height (-1, 10) are negative"),
        (lambda item: item["value"].update(x="10"), "value.x is '10', not a finite number"),
        (lambda item: item["value"].update(y=True), "value.y is True, not a finite number"),
        (lambda item: item["value"].update(rectanglelabels=[]), "value.rectanglelabels is [], not a list of label"),
        (lambda item: item.update(value=[1, 2]), "'value' is [1, 2], not an object"),
    ],
)
def test_bad_boxes_are_clear_errors(tmp_path, change, message):
    item = box_item(0, 0, 10, 10)
    change(item)
    good = {"id": 2, "data": {"image": "b.jpg"}, "annotations": [{"result": [box_item(0, 0, 5, 5)]}]}
    write_tasks(tmp_path / "ls", [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [item]}]}])
    write_tasks(tmp_path / "ls", [good], "other.json")
    with pytest.raises(DatasetReadError, match="task 1 \\(id 1\\): result 1") as info:
        load_dataset(tmp_path / "ls")
    assert message in str(info.value) and "tasks.json" in str(info.value)
    lenient = load_dataset(tmp_path / "ls", strict=False)
    assert [r.path for r in lenient.images] == ["b.jpg"] and len(lenient.skipped) == 1


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"data": "a.jpg", "annotations": []}, "needs a 'data' object"),
        ({"data": {"text": 1}, "annotations": []}, "'data' has no 'image' URL"),
        ({"data": {"image": "a.jpg"}, "annotations": {"result": []}}, "'annotations' is not a list of objects"),
        ({"data": {"image": "a.jpg"}, "annotations": [{"result": {}}]}, "'result' is not a list"),
        ({"data": {"image": "../../etc/x.jpg"}, "annotations": []}, "escapes the dataset root"),
    ],
)
def test_bad_tasks_are_clear_errors(tmp_path, task, message):
    write_tasks(tmp_path / "ls", [task])
    with pytest.raises(DatasetReadError, match="task 1") as info:
        load_dataset(tmp_path / "ls", "labelstudio")
    assert message in str(info.value)


def test_detection_claims_only_its_own_folders(tmp_path):
    ls = write_tasks(tmp_path / "ls", rich_tasks())
    assert labelstudio.detect(ls) and not coco.detect(ls) and not labelme.detect(ls)
    assert detect_format(ls) == "labelstudio"
    for other in (SHARED / "roboflow-coco", SHARED / "labelme-examples" / "bbox_detection"):
        assert not labelstudio.detect(other), other
    write_tasks(tmp_path / "empty", [])
    assert not labelstudio.detect(tmp_path / "empty")  # an empty list says nothing


def test_a_json_that_is_no_task_list_is_named_as_passed_over(tmp_path):
    """Beside the tasks: another tool's JSON, and an export cut short before its first task. Both
    are named in the findings (and so in the health report), neither is read as tasks."""
    root = write_tasks(tmp_path / "ls", rich_tasks())
    (root / "notes.json").write_text(json.dumps({"author": "x", "classes": ["cat"]}))
    (root / "sub").mkdir()
    (root / "sub" / "cut.json").write_text('[{"data"')
    ds = load_dataset(root, "labelstudio")
    passed = [f for f in ds.extra["labelstudio"]["findings"] if f.endswith("passed over")]
    assert passed == [
        "notes.json: not a Label Studio task list; passed over",
        "sub/cut.json: not a Label Studio task list; passed over",
    ]
    assert len(ds.images) == len(load_dataset(write_tasks(tmp_path / "plain", rich_tasks()), "labelstudio").images)


def test_save_record_rewrites_one_task_and_keeps_the_others_on_disk(tmp_path):
    root = write_tasks(tmp_path / "ls", rich_tasks())
    ds = load_dataset(root)
    on_disk = json.loads((root / "tasks.json").read_text())
    on_disk[1]["data"]["note"] = "someone else's edit"
    (root / "tasks.json").write_text(json.dumps(on_disk))
    record = ds.images[0].copy()
    record.remove_box(0)
    assert labelstudio.save_record(ds, record) == root / "tasks.json"
    saved = json.loads((root / "tasks.json").read_text())
    assert saved[1] == on_disk[1]  # the other task as it is on disk
    assert [item["id"] for item in saved[0]["annotations"][2]["result"]] == ["c1", "def"]
    assert labelstudio.annotation_files(ds, record) == ["tasks.json"]
    missing = tmp_path / "scratch"
    labelstudio.save_record(ds, record, missing)  # no file there: the whole file from the dataset
    assert len(json.loads((missing / "tasks.json").read_text())) == 2


def test_the_label_config_gives_the_class_order_and_follows_the_classes(tmp_path):
    root = write_tasks(tmp_path / "ls", rich_tasks())
    (root / "tasks.label_config.xml").write_text(
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
        '<Label value="unused" background="red"/><Label value="dog"/></RectangleLabels></View>'
    )
    ds = load_dataset(root)
    assert ds.classes == ["unused", "dog", "cat"]  # the config's order, then labels it does not list
    labelstudio.save_class_list(ds, tmp_path / "out")
    assert (tmp_path / "out" / "tasks.label_config.xml").read_text() != (root / "tasks.label_config.xml").read_text()
    again = load_dataset(root)
    labelstudio.save(again, tmp_path / "out2")
    text = (tmp_path / "out2" / "tasks.label_config.xml").read_text()
    assert 'value="unused" background="red"' in text and text.index('"dog"') < text.index('"cat"')


def _converter(*args: str, cwd: Path) -> None:
    result = subprocess.run([str(CONVERTER), *args], capture_output=True, text=True, timeout=240, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_ref
def test_we_read_what_label_studios_converter_wrote(tmp_path):
    stems = sorted(p.stem for p in (YOLO / "labels").glob("*.txt"))[:6]
    src = tmp_path / "yolo"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    shutil.copy(YOLO / "classes.txt", src)
    for stem in stems:
        shutil.copy(YOLO / "labels" / f"{stem}.txt", src / "labels")
        (image,) = (YOLO / "images").glob(f"{stem}.*")
        shutil.copy(image, src / "images")
    _converter("import", "yolo", "-i", str(src), "-o", str(tmp_path / "tasks.json"), cwd=tmp_path)
    root = tmp_path / "ls"
    shutil.copytree(src / "images", root / "images")
    shutil.copy(tmp_path / "tasks.json", root)
    shutil.copy(tmp_path / "tasks.label_config.xml", root)
    ours, truth = load_dataset(root), load_dataset(src, "yolo")
    assert ours.format == "labelstudio" and ours.classes == truth.classes
    assert ours.extra["labelstudio"]["findings"] == []
    by_path = {r.path: r for r in truth.images}
    assert sorted(by_path) == sorted(r.path for r in ours.images)
    for record in ours.images:
        expected = by_path[record.path]
        assert (record.width, record.height) == (expected.width, expected.height)
        assert record.class_ids.tolist() == expected.class_ids.tolist()
        np.testing.assert_allclose(record.boxes, expected.boxes, rtol=0, atol=1e-6)  # we round to 1e-6 px
    assert sum(len(r) for r in ours.images) > 10


@needs_ref
def test_label_studios_converter_reads_what_we_wrote(tmp_path):
    voc = copy_voc_subset(SHARED, tmp_path / "voc", TINY_STEMS)
    xml = voc / "annotations" / f"{TINY_STEMS[0]}.xml"
    xml.write_text(xml.read_text().replace("<xmin>79</xmin>", "<xmin>79.25</xmin>"))
    source = load_dataset(voc)
    save_dataset(source, tmp_path / "ls", "labelstudio")
    _converter(
        "export",
        "-i",
        "tasks.json",
        "-c",
        "label_config.xml",
        "-o",
        str(tmp_path / "coco"),
        "-f",
        "COCO",
        cwd=tmp_path / "ls",
    )
    doc = json.loads((tmp_path / "coco" / "result.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    theirs: dict[str, list] = {}
    for image in doc["images"]:
        path = image["file_name"].split("?d=", 1)[1]
        theirs[path] = [a for a in doc["annotations"] if a["image_id"] == image["id"]]
        record = next(r for r in source.images if r.path == path)
        assert (image["width"], image["height"]) == (record.width, record.height)
    assert sorted(theirs) == sorted(r.path for r in source.images if len(r))
    for record in source.images:
        anns = theirs.get(record.path, [])
        assert [names[a["category_id"]] for a in anns] == [source.class_name(int(c)) for c in record.class_ids]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        np.testing.assert_allclose(np.reshape(xyxy, (-1, 4)), record.boxes, rtol=1e-9, atol=1e-9)


def test_a_task_with_boxes_and_no_live_annotation_gets_a_new_one(tmp_path):
    tasks = [{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"id": 3, "was_cancelled": True, "result": []}]}]
    ds = load_dataset(write_tasks(tmp_path / "ls", copy.deepcopy(tasks)))
    ds.images[0].width, ds.images[0].height = 200, 100
    ds.classes.append("cat")
    ds.images[0].add_box([10, 10, 20, 20], 0)
    labelstudio.save(ds, tmp_path / "out")
    (task,) = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert task["annotations"][0] == tasks[0]["annotations"][0]
    assert task["annotations"][1]["result"][0]["value"]["x"] == 5


def test_an_edit_saved_from_the_workbench_merges_with_another_tasks_edit_on_disk(tmp_path):
    root = write_tasks(tmp_path / "ls", rich_tasks())
    opened = index.open_dataset(root)
    record = opened.dataset.images[0].copy()
    edits.move_box(record, 0, record.boxes[0] + [1, 1, 1, 1])
    doc0 = json.loads((root / "tasks.json").read_text())
    other = copy.deepcopy(doc0)
    other[1]["data"]["note"] = "saved by Label Studio meanwhile"
    (root / "tasks.json").write_text(json.dumps(other))
    saving.save_record(opened, 0, record, journal=saving.Journal())
    doc1 = json.loads((root / "tasks.json").read_text())
    assert doc1[1] == other[1]  # the other task's edit survives
    item = doc1[0]["annotations"][2]["result"][0]
    assert item["id"] == "abc" and item["value"]["x"] == (64 + 1) * 100 / 640
    assert load_dataset(root).images[0].boxes[0].tolist() == [65, 97, 257, 289]
    saving.undo(root)
    assert json.loads((root / "tasks.json").read_text()) == other
