"""CVAT for images 1.1 XML: one ``annotations.xml`` (``<annotations>``) lists many images.

Coordinates: ``<box xtl ytl xbr ybr>`` are float pixels with the origin at the image's top-left
corner and ``xbr``/``ybr`` the far edges, which is the model's convention: ``x1 = xtl``,
``x2 = xbr`` (datumaro reads them the same way). A box with a ``rotation`` (degrees, clockwise
about its centre) is read as its axis-aligned enclosing box, with a finding; while that box is
not moved the rotated box is written back as it was read.

The file's ``<meta>`` (the task's or project's labels with their attributes) gives the class
list in its order and is written back, with its ``<labels>`` brought in line with the classes.
A box keeps its other attributes (``occluded``, ``z_order``, ``source``, ``group_id`` ...) and
its ``<attribute name>`` children in ``box_extra[i]["cvat"]``; an image keeps its attributes
(``id``, ``subset`` ...) in ``extra["cvat"]``. Shapes that are not boxes (polygon, polyline,
points, mask, ellipse, cuboid, skeleton, tag) and top-level ``<track>``s are not read as boxes:
they are kept as XML, written back in their place, and each is counted in a finding
(``Dataset.extra["cvat"]["findings"]``, and one logged warning per load).

Parsing uses defusedxml, as ``voc`` does: DTDs, entity declarations and external references
are refused.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as DefusedET
import numpy as np
from defusedxml import DefusedXmlException

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import atomic_write, iter_files, relpath, safe_relpath
from workbench.formats import cvat_write
from workbench.formats.common import (
    SPLIT_NAMES,
    Capabilities,
    ErrorCollector,
    progress,
    split_of,
    to_int,
)
from workbench.formats.cvat_write import COORDS, VERSION
from workbench.locks import locked

NAME = "cvat"
LABEL = "CVAT"
CAPABILITIES = Capabilities(
    per_image_files=False, class_list_file=False, classes_from_labels=False, reread_one_file=False, add_images=False
)
DEFAULT_FILE = "annotations.xml"
_TOP_TAGS = ("version", "meta", "image")
_HEAD = re.compile(rb"<annotations[\s>]")
DETECT_PER_FOLDER = 3  # XML files of a folder that detect opens
log = logging.getLogger(__name__)


def parse_xml(data: bytes, file: str) -> ET.Element:
    """The root element of a CVAT file; a ``ReadError`` for malformed or unsafe XML."""
    try:
        root = DefusedET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as e:
        raise ReadError(file, f"refused unsafe XML ({type(e).__name__})") from e
    except ET.ParseError as e:
        raise ReadError(file, f"malformed XML: {e}") from e
    if root.tag != "annotations":
        raise ReadError(file, f"root element is <{root.tag}>, expected <annotations>")
    return root


def _text(element: ET.Element) -> str:
    """An element as XML text, without the whitespace that followed it."""
    element.tail = None
    return ET.tostring(element, encoding="unicode")


def _is_cvat(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return _HEAD.search(f.read(2048)) is not None
    except OSError:
        return False


def cvat_files(root: Path) -> list[Path]:
    """CVAT XML files in ``root`` or one folder below it."""
    return [p for p in iter_files(root, (".xml",)) if len(p.relative_to(root).parts) <= 2 and _is_cvat(p)]


def detect(root: Path) -> bool:
    """A folder holds CVAT when an XML file at most one folder down has an ``<annotations>`` root
    (VOC's root is ``<annotation>``). Cheap on a folder of 10,000 VOC files: only the first
    ``DETECT_PER_FOLDER`` XML names of each folder (``annotations.xml`` first) are opened."""
    try:
        subfolders = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return False
    for folder in [str(root), *subfolders]:
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in entries if e.name.lower().endswith(".xml") and not e.name.startswith(".")]
        except OSError:
            continue
        first = (["annotations.xml"] if "annotations.xml" in names else []) + heapq.nsmallest(DETECT_PER_FOLDER, names)
        if any(_is_cvat(Path(folder, name)) for name in first):
            return True
    return False


def _float(element: ET.Element, key: str, file: str, where: str) -> float:
    raw = element.get(key)
    if raw is None:
        raise ReadError(file, f"<{element.tag}> has no {key}", where)
    try:
        value = float(raw)
    except ValueError:
        raise ReadError(file, f"{key} is {raw!r}, not a number", where) from None
    if not math.isfinite(value):
        raise ReadError(file, f"{key} is {raw!r}, not a finite number", where)
    return value


def enclosing_box(box: tuple[float, float, float, float], degrees: float) -> tuple[float, float, float, float]:
    """The axis-aligned box enclosing ``box`` (x1, y1, x2, y2) turned by ``degrees`` about its centre."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    c, s = abs(math.cos(math.radians(degrees))), abs(math.sin(math.radians(degrees)))
    half_w, half_h = (w * c + h * s) / 2, (w * s + h * c) / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def _box(element: ET.Element, file: str, where: str, notes: list[str]) -> tuple[tuple, str, dict[str, Any]]:
    """One ``<box>``: ``(x1, y1, x2, y2)``, its label and what rides along in ``box_extra["cvat"]``."""
    label = element.get("label")
    if not label:
        raise ReadError(file, "<box> has no label", where)
    x1, y1, x2, y2 = (_float(element, key, file, where) for key in COORDS)
    if x2 < x1 or y2 < y1:
        raise ReadError(file, f"xbr/ybr ({x2:g}, {y2:g}) lie before xtl/ytl ({x1:g}, {y1:g})", where)
    attrib = {k: v for k, v in element.attrib.items() if k != "label" and k not in COORDS}
    kept: dict[str, Any] = {"attrib": attrib, "attributes": [], "children": []}
    for child in element:
        if child.tag == "attribute":
            kept["attributes"].append([child.get("name", ""), child.text or ""])
        else:
            kept["children"].append(_text(child))
    box = (x1, y1, x2, y2)
    if "rotation" in attrib:
        degrees = _float(element, "rotation", file, where)
        if degrees % 360:
            kept["rotated"] = list(box)
            box = enclosing_box(box, degrees)
            kept["enclosing"] = list(box)
            notes.append(f"{file}: {where}: rotated by {degrees:g} degrees, read as its enclosing box")
    return box, label, kept


def _image_base(root: Path, xml_path: Path, names: list[str]) -> Path:
    """The folder image names are relative to: the one where the first few names are files."""
    here = xml_path.parent
    candidates = [here, here / "images", here / "images" / xml_path.stem, root, root / "images"]
    sample = names[:5]
    for base in candidates:
        if sample and all((base / name).is_file() for name in sample):
            return base
    return here / "images" if (here / "images").is_dir() else here


def parse_file(root: Path, xml_path: Path) -> tuple[list[str], list[ImageRecord], dict[str, Any], list[str]]:
    """One CVAT file: ``(its label names, records, what the file keeps, findings)``. Record
    ``class_ids`` are all 0; the labels of the boxes are in ``extra["_names"]``."""
    file = relpath(xml_path, root)
    try:
        data = xml_path.read_bytes()
    except OSError as e:
        raise ReadError(file, f"cannot read: {e}") from e
    top = parse_xml(data, file)
    kept: dict[str, Any] = {"version": VERSION, "meta": None, "rest": []}
    images = []
    for child in top:
        if child.tag == "version":
            kept["version"] = (child.text or "").strip()
        elif child.tag == "meta":
            kept["meta"] = _text(child)
        elif child.tag == "image":
            images.append(child)
        else:
            kept["rest"].append(_text(child))
    meta = next((child for child in top if child.tag == "meta"), None)
    labels = [] if meta is None else list(dict.fromkeys(el.findtext("name") or "" for el in meta.iter("label")))
    notes = [f"{file}: <{el.tag}> kept as it is, not read as boxes" for el in top if el.tag not in _TOP_TAGS]
    base = _image_base(root, xml_path, [i.get("name") or "" for i in images])
    base_rel = relpath(base, root)
    kept["@base"] = base_rel
    records, seen = [], set()
    for n, image in enumerate(images, 1):
        name = image.get("name")
        where = f"image {n}" + (f" ({name})" if name else "")
        if not name:
            raise ReadError(file, "<image> has no name", where)
        if image.get("id") in seen:
            raise ReadError(file, f"duplicate image id {image.get('id')!r}", where)
        seen.add(image.get("id"))
        for key in ("width", "height"):
            if image.get(key) is None:
                raise ReadError(file, f"<image> has no {key}", where)
        width = to_int(image.get("width"), file, "width", where)
        height = to_int(image.get("height"), file, "height", where)
        rel = safe_relpath(f"{base_rel}/{name}" if base_rel != "." else name, file=file, record=where)
        rows, names, box_extra, others, shapes = [], [], [], [], []
        for slot, child in enumerate(image):
            if child.tag == "box":
                box, label, extra = _box(child, file, f"{where}: box {len(rows) + 1}", notes)
                rows.append(box)
                names.append(label)
                box_extra.append({"cvat": extra})
            else:
                shapes.append(child.tag)
                others.append([slot, _text(child)])
        if shapes:
            counts = ", ".join(f"{shapes.count(t)} {t}" for t in dict.fromkeys(shapes))
            notes.append(f"{file}: {where}: {counts} kept as they are, not read as boxes")
        subset = image.get("subset")
        split = subset if subset and subset.lower() in SPLIT_NAMES else split_of(rel)
        record = ImageRecord(
            path=rel,
            width=width,
            height=height,
            boxes=np.array(rows, dtype=np.float64).reshape(-1, 4),
            class_ids=np.zeros(len(rows), dtype=np.int64),
            box_extra=box_extra,
            split=split,
            annotation=file,
            extra={"cvat": {"attrib": dict(image.attrib), "others": others}},
        )
        record.extra["_names"] = names  # turned into class ids by load(); never written
        records.append(record)
    return labels, records, kept, notes


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read every CVAT file under ``root`` into one dataset. The class list is the ``<meta>``
    labels in their order, then any label a box uses that ``<meta>`` does not list.

    ``strict`` raises ``DatasetReadError`` naming every bad file; otherwise bad files are
    skipped and listed in ``Dataset.skipped``.
    """
    root = Path(root)
    errors = ErrorCollector(root, strict=strict)
    files = cvat_files(root)
    classes: list[str] = []
    images: list[ImageRecord] = []
    kept_files: dict[str, dict[str, Any]] = {}
    findings: list[str] = []
    for xml_path in progress(files, len(files), on_progress):
        parsed = errors.run(lambda p=xml_path: parse_file(root, p))
        if parsed is None:
            continue
        labels, records, kept, notes = parsed
        for name in labels + [n for r in records for n in r.extra["_names"]]:
            if name not in classes:
                classes.append(name)
        for record in records:
            record.class_ids = np.array([classes.index(n) for n in record.extra.pop("_names")], dtype=np.int64)
        kept_files[relpath(xml_path, root)] = kept
        images.extend(records)
        findings.extend(notes)
    skipped = errors.finish()
    if findings:
        log.warning(
            "%s: %d CVAT shape(s) or box(es) not read as plain boxes (kept): %s", root, len(findings), findings[0]
        )
    extra = {"cvat": {"files": kept_files, "findings": findings}}
    return Dataset(root=root, format=NAME, classes=classes, images=images, extra=extra, skipped=skipped)


def _groups(dataset: Dataset, keep_files: bool = True) -> dict[str, list[ImageRecord]]:
    """Which file each record goes to: the one it was read from (a record read from another
    format: the dataset's first CVAT file), else ``annotations.xml``."""
    from_cvat = dataset.format == NAME and keep_files
    first = next((r.annotation for r in dataset.images if from_cvat and r.annotation), DEFAULT_FILE)
    groups: dict[str, list[ImageRecord]] = {}
    for record in dataset.images:
        target = record.annotation if from_cvat and record.annotation else first
        groups.setdefault(target, []).append(record)
    return groups


def save(
    dataset: Dataset,
    root: Path,
    *,
    keep_files: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write the CVAT file(s) under ``root`` and return them. ``keep_files=False`` writes one
    ``annotations.xml`` at the top of ``root`` whatever files the records were read from."""
    groups = _groups(dataset, keep_files)
    out = []
    for rel, records in progress(groups.items(), len(groups), on_progress):
        atomic_write(Path(root) / rel, cvat_write.to_xml(dataset, records, rel))
        out.append(Path(root) / rel)
    return out


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Rewrite ``record``'s ``<image>`` inside the file that holds it, under that file's lock:
    the other images stay as they are on disk (and ``<meta>`` gets the dataset's labels). When
    the file is missing or does not hold the image, the whole file is written from ``dataset``."""
    target, records = next((k, v) for k, v in _groups(dataset).items() if any(r is record for r in v))
    out = Path(root or dataset.root) / target
    with locked(out):
        try:
            top = parse_xml(out.read_bytes(), target)
        except (OSError, ReadError):
            top = None
        position = next(i for i, r in enumerate(records) if r is record)
        image_id = cvat_write.image_ids(dataset, records)[position]
        base = cvat_write.name_base(dataset, records, xml_rel=target, kept=cvat_write.kept_of(dataset, target))
        new = cvat_write.image_element(dataset, record, base=base, image_id=image_id)
        images = [el for el in top if el.tag == "image"] if top is not None else []
        old = next((el for el in images if el.get("id") == image_id and el.get("name") == new.get("name")), None)
        if old is None:
            atomic_write(out, cvat_write.to_xml(dataset, records, target))
            return out
        top[list(top).index(old)] = new
        meta = next((el for el in top if el.tag == "meta"), None)
        fresh = cvat_write.meta_element(
            _text(meta) if meta is not None else None, list(dataset.classes), size=len(images)
        )
        if meta is None:
            top.insert(1, fresh)
        else:
            top[list(top).index(meta)] = fresh
        atomic_write(out, cvat_write.document_bytes(top))
    return out


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: the XML that lists it
    (none known for a record that came from another format)."""
    return [record.annotation] if record.annotation else []


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Rewrite every CVAT file of ``dataset`` under ``root``: each one's ``<meta>`` lists the labels."""
    for rel, records in _groups(dataset).items():
        atomic_write(Path(root) / rel, cvat_write.to_xml(dataset, records, rel))
