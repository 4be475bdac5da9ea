"""Writing CVAT for images 1.1 XML (see ``cvat`` for what is read and kept): the ``<image>``
and ``<box>`` elements of records, ``<meta>`` with its labels in line with the classes, and
whole documents. Nothing here modifies a record."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import PurePosixPath
from typing import Any

import defusedxml.ElementTree as DefusedET

from workbench.annotations import Dataset, ImageRecord
from workbench.formats.common import number_text

NAME = "cvat"
VERSION = "1.1"
COORDS = ("xtl", "ytl", "xbr", "ybr")
_TOLERANCE = 1e-6  # px: a box this close to its rotated box's enclosing box has not moved


def meta_element(kept: str | None, classes: list[str], *, size: int) -> ET.Element:
    """``<meta>`` as kept (a new ``<task>`` when there is none) with its labels set to ``classes``:
    the ``<label>``s kept for names still there, new ones for new names."""
    meta = DefusedET.fromstring(kept) if kept else ET.Element("meta")
    labels = next(meta.iter("labels"), None)
    if labels is None:
        task = ET.SubElement(meta, "task")
        for tag, text in (("id", "0"), ("name", "workbench"), ("size", str(size)), ("mode", "annotation")):
            ET.SubElement(task, tag).text = text
        labels = ET.SubElement(task, "labels")
    found = {el.findtext("name"): el for el in labels.findall("label")}
    if list(found) != classes:
        for el in list(labels):
            labels.remove(el)
        for name in classes:
            if name in found:
                labels.append(found[name])
            else:
                label = ET.SubElement(labels, "label")
                ET.SubElement(label, "name").text = name
                ET.SubElement(label, "type").text = "rectangle"
                ET.SubElement(label, "attributes")
    return meta


def box_element(box: list[float], label: str, kept: dict[str, Any]) -> ET.Element:
    attrib = dict(kept.get("attrib") or {"occluded": "0", "source": "manual", "z_order": "0"})
    rotated, enclosing = kept.get("rotated"), kept.get("enclosing")
    if rotated and enclosing and all(abs(a - b) <= _TOLERANCE for a, b in zip(box, enclosing)):
        box = rotated  # not moved: the rotated box as it was read
    else:
        attrib.pop("rotation", None)
    element = ET.Element("box", {"label": label, **dict(zip(COORDS, (number_text(v) for v in box))), **attrib})
    for name, value in kept.get("attributes", []):
        ET.SubElement(element, "attribute", {"name": name}).text = value
    for text in kept.get("children", []):
        element.append(DefusedET.fromstring(text))
    return element


def image_element(dataset: Dataset, record: ImageRecord, *, base: str, image_id: str) -> ET.Element:
    kept = record.extra.get("cvat", {}) if dataset.format == NAME else {}
    attrib = dict(kept.get("attrib") or {})
    attrib["id"] = image_id
    attrib["name"] = record.path if base in ("", ".") else PurePosixPath(record.path).relative_to(base).as_posix()
    attrib["width"], attrib["height"] = str(int(record.width)), str(int(record.height))
    if record.split is not None:
        attrib["subset"] = record.split
    order = ["id", "name", "subset", "width", "height"]
    element = ET.Element("image", {k: attrib[k] for k in [*order, *attrib] if k in attrib})
    boxes = [
        box_element(box, dataset.class_name(int(c)), extra.get("cvat", {}) if dataset.format == NAME else {})
        for box, c, extra in zip(record.boxes.tolist(), record.class_ids.tolist(), record.box_extra)
    ]
    boxes.reverse()
    for slot, text in sorted(kept.get("others", [])):  # each kept shape at its place among the boxes
        while len(element) < slot and boxes:
            element.append(boxes.pop())
        element.append(DefusedET.fromstring(text))
    element.extend(reversed(boxes))
    return element


def name_base(dataset: Dataset, records: list[ImageRecord], *, xml_rel: str, kept: dict[str, Any]) -> str:
    """The folder image names are relative to: the file's own, else ``images`` beside the file
    when every image is in it (CVAT's export layout), else the file's folder."""
    folder = str(PurePosixPath(xml_rel).parent)
    if "@base" in kept:
        base = kept["@base"]
    else:
        images = "images" if folder == "." else f"{folder}/images"
        base = images if records and all(r.path.startswith(images + "/") for r in records) else folder
    if base not in ("", ".") and not all(r.path.startswith(base.rstrip("/") + "/") for r in records):
        return "."
    return base


def image_ids(dataset: Dataset, records: list[ImageRecord]) -> list[str]:
    """Each record's image id: the one it was read with, else the next free number."""
    kept = [r.extra.get("cvat", {}).get("attrib", {}).get("id") if dataset.format == NAME else None for r in records]
    used = [int(i) for i in kept if isinstance(i, str) and i.isdigit()]
    next_id = max(used, default=-1) + 1
    out = []
    for value in kept:
        if value is None:
            value, next_id = str(next_id), next_id + 1
        out.append(value)
    return out


def to_xml(dataset: Dataset, records: list[ImageRecord], xml_rel: str) -> bytes:
    """The CVAT document for ``records`` written at ``xml_rel``. Does not modify the records."""
    kept = kept_of(dataset, xml_rel)
    top = ET.Element("annotations")
    ET.SubElement(top, "version").text = kept.get("version") or VERSION
    top.append(meta_element(kept.get("meta"), list(dataset.classes), size=len(records)))
    base = name_base(dataset, records, xml_rel=xml_rel, kept=kept)
    for record, image_id in zip(records, image_ids(dataset, records)):
        top.append(image_element(dataset, record, base=base, image_id=image_id))
    for text in kept.get("rest", []):
        top.append(DefusedET.fromstring(text))
    return document_bytes(top)


def document_bytes(top: ET.Element) -> bytes:
    ET.indent(top, space="  ")
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode") + "\n").encode("utf-8")


def kept_of(dataset: Dataset, xml_rel: str) -> dict[str, Any]:
    if dataset.format != NAME:
        return {}
    return dataset.extra.get("cvat", {}).get("files", {}).get(xml_rel, {})
