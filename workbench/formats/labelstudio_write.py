"""Writing Label Studio JSON (the tasks list Label Studio imports); see ``labelstudio`` for the
format, what is read and what rides along."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import defusedxml.ElementTree as DefusedET
import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.formats.common import progress
from workbench.formats.labelme import read_json
from workbench.locks import locked

NAME = "labelstudio"
BOX_TYPE = "rectanglelabels"
DEFAULT_FILE = "tasks.json"
CONFIG_FILE = "label_config.xml"
LOCAL_FILES = "/data/local-files/?d="


def image_url(path: str) -> str:
    """The URL of an image at ``path`` (relative to the root) for Label Studio's local storage."""
    return LOCAL_FILES + quote(path, safe="/")


def _kept(dataset: Dataset, record: ImageRecord) -> dict[str, Any] | None:
    return record.extra.get("labelstudio") if dataset.format == NAME else None


def _names(dataset: Dataset, record: ImageRecord) -> tuple[str, str]:
    """``(from_name, to_name)`` for a new box: those of the record's other boxes, else the
    control and image names of Label Studio's default config (``label``, ``image``)."""
    for extra in record.box_extra if dataset.format == NAME else []:
        item = extra.get("labelstudio", {}).get("item")
        if item:
            return item.get("from_name", "label"), item.get("to_name", "image")
    return "label", "image"


def _item(dataset: Dataset, record: ImageRecord, i: int, names: tuple[str, str]) -> dict[str, Any]:
    """The ``rectanglelabels`` result item of box ``i``: the one read, while its box, label and
    image size are unchanged; else one in percent of the record's size."""
    box = record.boxes[i]
    label = dataset.class_name(int(record.class_ids[i]))
    width, height = int(record.width), int(record.height)
    extra = record.box_extra[i].get("labelstudio", {}) if dataset.format == NAME else {}
    item = extra.get("item")
    if (
        item is not None
        and extra.get("@size") == [width, height]
        and np.allclose(extra["@box"], box, rtol=0, atol=1e-9)
    ):
        out = copy.deepcopy(item)
        if out["value"]["rectanglelabels"][0] != label:
            out["value"]["rectanglelabels"] = [label]
        return out
    if width <= 0 or height <= 0:
        raise WorkbenchError(f"{record.path}: image size unknown; Label Studio stores boxes in percent of it")
    x1, y1, x2, y2 = (float(v) for v in box)
    value = {
        "x": x1 * 100 / width,
        "y": y1 * 100 / height,
        "width": (x2 - x1) * 100 / width,
        "height": (y2 - y1) * 100 / height,
        "rotation": 0,
        "rectanglelabels": [label],
    }
    if item is not None:  # a moved box: its other fields stay, its rotation is gone
        out = copy.deepcopy(item)
        out["value"] = {**out.get("value", {}), **value}
    else:
        digest = hashlib.sha1(f"{record.path}|{i}|{box.tolist()}".encode()).hexdigest()[:10]
        out = {"id": digest, "type": BOX_TYPE, "from_name": names[0], "to_name": names[1], "value": value}
    out.update(original_width=width, original_height=height)
    out.setdefault("image_rotation", 0)
    return out


def to_task(dataset: Dataset, record: ImageRecord, task_id: int = 1) -> dict[str, Any]:
    """The Label Studio task for ``record``; ``task_id`` is the ``id`` of a task that had none (a
    record from another format): Label Studio's exports and its converter want one, its import
    assigns its own. Does not modify the record."""
    names = _names(dataset, record)
    result = [_item(dataset, record, i, names) for i in range(len(record.boxes))]
    kept = _kept(dataset, record)
    if not kept:
        return {
            "id": task_id,
            "data": {"image": image_url(record.path)},
            "annotations": [{"result": result, "ground_truth": False}],
        }
    task = copy.deepcopy(kept["task"])
    url, loaded = kept["@image"]
    task["data"][kept["key"]] = url if loaded == record.path else image_url(record.path)
    # every item in its place in the result read: boxes by their slot there (new ones last), with
    # the items that are not boxes between them
    slots = [e.get("labelstudio", {}).get("@slot", math.inf) for e in record.box_extra]
    placed = [(slot, 0, i, item) for i, (slot, item) in enumerate(zip(slots, result))]
    placed += [(slot, 1, 0, copy.deepcopy(other)) for slot, other in kept["others"]]
    result = [item for *_, item in sorted(placed, key=lambda row: row[:3])]
    if kept["chosen"] is not None:
        task["annotations"][kept["chosen"]]["result"] = result
    elif result:  # boxes drawn on a task that had no live annotation: a new one
        task.setdefault("annotations", []).append({"result": result, "ground_truth": False, "was_cancelled": False})
    return task


def groups(dataset: Dataset, *, keep_files: bool = True) -> dict[str, list[ImageRecord]]:
    """Which file each record goes to: the one it was read from, else ``tasks.json``, or
    ``<split>.json`` when it has a split."""
    out: dict[str, list[ImageRecord]] = {}
    for record in dataset.images:
        if dataset.format == NAME and keep_files and record.annotation:
            target = record.annotation
        else:
            target = f"{record.split}.json" if record.split else DEFAULT_FILE
        out.setdefault(target, []).append(record)
    return out


def config_xml(dataset: Dataset) -> tuple[str, str]:
    """``(file, text)`` of the labelling config for ``dataset``'s classes: the one read, as it was
    while its ``<RectangleLabels>`` lists the classes, else with that list's ``<Label>``s made the
    classes (a kept label keeps its attributes, such as ``background``); with none read, the
    config Label Studio's converter writes (``<Image name="image">``, ``<RectangleLabels
    name="label">``)."""
    kept = dataset.extra.get("labelstudio", {}).get("config") if dataset.format == NAME else None
    classes = [dataset.class_name(i) for i in range(len(dataset.classes))]
    if kept:
        top = DefusedET.fromstring(kept["text"], forbid_dtd=True)
        control = next(top.iter("RectangleLabels"), None)
        if control is not None:
            labels = control.findall("Label")
            if [el.get("value") for el in labels] == classes:
                return kept["file"], kept["text"]
            by_value = {el.get("value"): el for el in labels}
            for el in labels:
                control.remove(el)
            control.extend(  # an Element without children is falsy: no "or" here
                by_value[name] if name in by_value else ET.Element("Label", value=name) for name in classes
            )
            ET.indent(top, space="  ")
            return kept["file"], ET.tostring(top, encoding="unicode") + "\n"
    lines = [f"    <Label value={quoteattr(name)}/>" for name in classes]
    body = ["<View>", '  <Image name="image" value="$image"/>', '  <RectangleLabels name="label" toName="image">']
    return kept["file"] if kept else CONFIG_FILE, "\n".join([*body, *lines, "  </RectangleLabels>", "</View>", ""])


def save_class_list(dataset: Dataset, root: Path) -> Path:
    rel, text = config_xml(dataset)
    atomic_write(root / rel, text)
    return root / rel


def _dump(tasks: list[dict[str, Any]]) -> str:
    return json.dumps(tasks, ensure_ascii=False, indent=2) + "\n"


def _tasks(dataset: Dataset, records: list[ImageRecord]) -> list[dict[str, Any]]:
    """The tasks of one file; a record from another format gets the next free integer id."""
    kept = [_kept(dataset, r) for r in records]
    used = [k["task"].get("id") for k in kept if k]
    next_id = max([i for i in used if isinstance(i, int) and not isinstance(i, bool)], default=0) + 1
    out = []
    for record, was in zip(records, kept):
        out.append(to_task(dataset, record, task_id=next_id))
        next_id += not was
    return out


def write_file(dataset: Dataset, root: Path, json_rel: str, records: list[ImageRecord]) -> Path:
    out = root / json_rel
    atomic_write(out, _dump(_tasks(dataset, records)))
    return out


def save(
    dataset: Dataset, root: Path, *, keep_files: bool = True, on_progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    found = groups(dataset, keep_files=keep_files)
    written = [write_file(dataset, root, rel, rows) for rel, rows in progress(found.items(), len(found), on_progress)]
    return [*written, save_class_list(dataset, root)]


def _same_task(on_disk: Any, kept: dict[str, Any] | None) -> bool:
    """Whether a task on disk is the one ``kept`` was read from: the same ``id`` when it has one,
    else the same image URL."""
    if not isinstance(on_disk, dict) or not kept:
        return False
    task = kept["task"]
    if "id" in task:
        return on_disk.get("id") == task["id"]
    data = on_disk.get("data")
    return isinstance(data, dict) and data.get(kept["key"]) == kept["@image"][0]


def _group_of(dataset: Dataset, record: ImageRecord) -> tuple[str, list[ImageRecord]]:
    """The file that holds ``record`` and its records, ``record`` among them in its place: the
    dataset's record that is ``record``, else the one with its image path (a copy being saved)."""
    found = groups(dataset)
    for same in (lambda r: r is record, lambda r: r.path == record.path):
        for rel, records in found.items():
            at = next((i for i, r in enumerate(records) if same(r)), None)
            if at is not None:
                return rel, [*records[:at], record, *records[at + 1 :]]
    raise WorkbenchError(f"{record.path}: not an image of the dataset")


def save_record(dataset: Dataset, record: ImageRecord, root: Path) -> Path:
    target, records = _group_of(dataset, record)
    out = root / target
    with locked(out):
        try:
            tasks = read_json(out, target) if out.is_file() else None
        except WorkbenchError:
            tasks = None
        kept = _kept(dataset, record)
        slot = (
            next((i for i, t in enumerate(tasks or []) if _same_task(t, kept)), None)
            if isinstance(tasks, list)
            else None
        )
        if slot is None:
            atomic_write(out, _dump(_tasks(dataset, records)))
        else:
            tasks[slot] = to_task(dataset, record)
            atomic_write(out, _dump(tasks))
    return out
