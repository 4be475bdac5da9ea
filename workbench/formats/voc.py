"""Pascal VOC XML: one ``<annotation>`` file per image.

Coordinates: VOC stores integer pixel indices, 1-based and inclusive, so a box over the
whole ``W x H`` image is ``xmin=1, xmax=W``. The model's boxes are 0-based with an
exclusive end, so ``x1 = xmin - 1`` and ``x2 = xmax`` (and the same for y). This is
detectron2's rule (``data/datasets/pascal_voc.py``); supervision also subtracts 1 from
the max corner, which shrinks every box by a pixel on each save. The round-trip tests
pin the rule: load -> save -> load returns the same numbers.

Layouts: ``annotations/`` or ``Annotations/`` beside ``images/`` or ``JPEGImages/`` (Kaggle,
PASCAL), or the XML next to its image (labelImg). ``ImageSets/Main/<split>.txt`` names
the splits when present; otherwise a ``train``/``val``/``test`` folder does.

Every element the model does not name (``folder``, ``pose``, ``truncated``, ``occluded``,
``difficult``, ``segmented``, ``source``, unknown tags) is kept in
``extra["voc"]`` / ``box_extra[i]["voc"]`` and written back.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import atomic_write, first_file, iter_files, relpath, safe_relpath
from workbench.formats.common import (
    Capabilities,
    ErrorCollector,
    ImageIndex,
    class_ids_of,
    default_annotation_path,
    number_text,
    parse_xml,
    progress,
    size_from_header,
    split_of,
    to_int,
)
from workbench.formats.parallel import read_many

NAME = "voc"
LABEL = "Pascal VOC"
CAPABILITIES = Capabilities(
    per_image_files=True, class_list_file=False, classes_from_labels=True, reread_one_file=True, add_images=True
)
ANNOTATION_DIRS = ("annotations", "Annotations")
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
# The order elements are written in; anything else follows in the order it was read.
_ANNOTATION_ORDER = ("folder", "filename", "path", "source", "owner", "size", "segmented")
_OBJECT_ORDER = ("name", "pose", "truncated", "occluded", "difficult")
DEFAULT_OBJECT = {"pose": "Unspecified", "truncated": "0", "difficult": "0"}
_ROOT_TAG = re.compile(rb"<annotation[\s>/]")  # the tag, then whitespace, ">" or "/>"


def _value(element: ET.Element) -> Any:
    """An element as plain data: text for a leaf, else a dict of children (lists when repeated)."""
    if not len(element) and not element.attrib:  # a leaf: most of a VOC file
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    if element.attrib:
        out["@attrib"] = dict(element.attrib)
    text = (element.text or "").strip()
    if text:
        out["#text"] = text
    for child in element:
        # leaves inline: a VOC file is mostly leaves, and a call per leaf is most of the cost
        value = (child.text or "").strip() if not len(child) and not child.attrib else _value(child)
        if child.tag in out:  # a repeated tag becomes a list, remembered in "@lists"
            lists = out.setdefault("@lists", [])
            if child.tag not in lists:
                out[child.tag] = [out[child.tag]]
                lists.append(child.tag)
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


def _element(tag: str, value: Any, parent: ET.Element) -> None:
    """Append ``value`` (as made by ``_value``) under ``parent`` as ``<tag>``."""
    if isinstance(value, dict):
        lists = value.get("@lists", [])
        element = ET.SubElement(parent, tag, value.get("@attrib", {}))
        if "#text" in value:
            element.text = value["#text"]
        for key, child in value.items():
            if key.startswith(("@", "#")):
                continue
            for item in child if key in lists else [child]:
                _element(key, item, element)
    else:
        ET.SubElement(parent, tag).text = str(value)


def _float(obj: dict[str, Any], tag: str, file: str, record: str) -> float:
    try:
        value = float(obj[tag])
    except KeyError:
        raise ReadError(file, f"<bndbox> has no <{tag}>", record) from None
    except (TypeError, ValueError):
        raise ReadError(file, f"<{tag}> is {obj[tag]!r}, not a number", record) from None
    if not math.isfinite(value):
        raise ReadError(file, f"<{tag}> is {obj[tag]!r}, not a finite number", record)
    return value


def parse(data: bytes, file: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Parse one VOC file: ``(annotation fields, [object fields])``, all as plain data.

    ``parse_xml`` is lxml's C parser hardened: DTDs, entity declarations and external
    references are refused.
    """
    root = parse_xml(data, file)
    if root.tag != "annotation":
        raise ReadError(file, f"root element is <{root.tag}>, expected <annotation>")
    fields: dict[str, Any] = {}
    objects: list[dict[str, Any]] = []
    for child in root:
        if child.tag == "object":
            obj = _value(child)
            objects.append(obj if isinstance(obj, dict) else {})
        elif child.tag in fields:
            raise ReadError(file, f"<{child.tag}> appears twice")
        else:
            fields[child.tag] = _value(child)
    return fields, objects


def read_record(
    root: Path, xml_path: Path, *, index: ImageIndex | None = None, splits: dict[str, str] | None = None
) -> ImageRecord:
    """One XML file read as ``load`` reads it. ``class_ids`` are all 0: the class names of the
    boxes are in ``extra["_names"]``, for the caller to turn into ids of its dataset's classes.
    ``index`` (the images under ``root``) and ``splits`` (``image_sets(root)``) are worked out
    from ``root`` unless given: pass them when reading many files. A ``ReadError`` names the
    file (and the object) when it cannot be read or parsed."""
    index = ImageIndex(root) if index is None else index
    splits = image_sets(root) if splits is None else splits
    return _record(root, xml_path, index, _annotation_dir(root), splits)


def reread(dataset: Dataset, files: dict[int, str], *, scanned: Iterable[str]) -> dict[int, ImageRecord]:
    """The records at the positions of ``files`` (``position -> XML path`` relative to the root)
    read again, as a full load reads them, with class ids of ``dataset.classes``. ``scanned``:
    every file under the root (a scan made before), to find the images without walking again.
    A ``ReadError`` when a file cannot be read or names a class the dataset does not have."""
    root = dataset.root
    index, splits = ImageIndex.from_scan(root, scanned), image_sets(root)
    out = {}
    for position, rel in files.items():
        record = read_record(root, root / rel, index=index, splits=splits)
        names = record.extra.pop("_names")
        record.class_ids = np.array(class_ids_of(names, dataset.classes, rel), dtype=np.int64)
        out[position] = record
    return out


def _record(root: Path, xml_path: Path, index: ImageIndex, ann_dir: Path | None, splits: dict[str, str]) -> ImageRecord:
    """``read_record`` with everything about the dataset worked out once (``load``'s loop)."""
    file = relpath(xml_path, root)
    try:
        data = xml_path.read_bytes()
    except OSError as e:
        raise ReadError(file, f"cannot read: {e}") from e
    fields, objects = parse(data, file)

    image_rel = _resolve_image(root, xml_path, fields, index, ann_dir, file)
    size = fields.get("size", {})
    if isinstance(size, str):
        size = {}
    width = to_int(size.get("width", 0), file, "<width>") if isinstance(size, dict) else 0
    height = to_int(size.get("height", 0), file, "<height>") if isinstance(size, dict) else 0
    if width <= 0 or height <= 0:
        width, height = size_from_header(root, image_rel)

    rows: list[tuple[float, float, float, float]] = []
    names: list[str] = []
    box_extra: list[dict[str, Any]] = []
    for i, obj in enumerate(objects, 1):
        record = f"object {i}"
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise ReadError(file, "missing <name>", record)
        bndbox = obj.get("bndbox")
        if not isinstance(bndbox, dict):
            raise ReadError(file, "missing <bndbox>", record)
        rows.append(
            (
                _float(bndbox, "xmin", file, record) - 1.0,
                _float(bndbox, "ymin", file, record) - 1.0,
                _float(bndbox, "xmax", file, record),
                _float(bndbox, "ymax", file, record),
            )
        )
        names.append(name)
        del obj["name"], obj["bndbox"]  # what is left rides along
        if len(bndbox) > 4:
            obj["@bndbox"] = {k: v for k, v in bndbox.items() if k not in _BOX_TAGS}
        box_extra.append({"voc": obj})

    stem = image_rel.rpartition("/")[2].rpartition(".")[0]
    extra = {k: v for k, v in fields.items() if k != "size"}
    if isinstance(size, dict):
        size_rest = {k: v for k, v in size.items() if k not in ("width", "height")}
        if size_rest:
            extra["@size"] = size_rest
    record = ImageRecord(
        path=image_rel,
        width=width,
        height=height,
        boxes=np.array(rows, dtype=np.float64).reshape(-1, 4),
        class_ids=np.zeros(len(names), dtype=np.int64),
        box_extra=box_extra,
        split=splits.get(stem) or split_of(image_rel),
        annotation=file,
        extra={"voc": extra},
    )
    record.extra["_names"] = names  # turned into class ids by load(); never written
    return record


def _resolve_image(
    root: Path, xml_path: Path, fields: dict[str, Any], index: ImageIndex, ann_dir: Path | None, file: str
) -> str:
    """The image an XML file describes, relative to the root (see the module docstring)."""
    filename = fields.get("filename") if isinstance(fields.get("filename"), str) else ""
    folder = fields.get("folder") if isinstance(fields.get("folder"), str) else ""
    xml_dir = file.rpartition("/")[0]
    if filename:
        filename = safe_relpath(filename, file=file, record="<filename>")
        for guess in (f"{folder}/{filename}" if folder else "", f"{xml_dir}/{filename}" if xml_dir else filename):
            if guess:
                try:
                    guess = safe_relpath(guess, file=file, record="<folder>/<filename>")
                except ReadError:
                    continue
                if guess in index:
                    return guess
    near = relpath(xml_path.parent, ann_dir) if ann_dir else xml_dir
    found = index.find(name=PurePosixPath(filename).name if filename else None, stem=xml_path.stem, near=near)
    if found:
        return found
    # Missing image: keep the best guess so the health report can name it.
    if filename and folder:
        try:
            return safe_relpath(f"{folder}/{filename}", file=file)
        except ReadError:
            pass
    return safe_relpath(f"{xml_dir}/{filename or xml_path.stem}" if xml_dir else filename or xml_path.stem, file=file)


def _annotation_dir(root: Path) -> Path | None:
    for name in ANNOTATION_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


def image_sets(root: Path) -> dict[str, str]:
    """``stem -> split`` from ``ImageSets/Main/{train,val,test}.txt`` when present."""
    main = root / "ImageSets" / "Main"
    splits: dict[str, str] = {}
    for split in ("trainval", "train", "val", "test"):  # later names win over trainval
        path = main / f"{split}.txt"
        if path.is_file():
            for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
                if line.strip():
                    splits[line.split()[0]] = split
    return splits


def detect(root: Path) -> bool:
    """A folder holds VOC when it has XML files whose root element is ``<annotation>`` (the tag
    name ends there: CVAT's root is ``<annotations>``)."""
    xml_path = first_file(_annotation_dir(root) or root, (".xml",))
    if xml_path is None:
        return False
    with open(xml_path, "rb") as f:
        return _ROOT_TAG.search(f.read(512)) is not None


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read a VOC dataset. Class order is the order names first appear, files in natural order.

    ``strict`` raises ``DatasetReadError`` naming every bad file; otherwise bad files are
    skipped and listed in ``Dataset.skipped``.
    """
    root = Path(root)
    ann_dir = _annotation_dir(root)
    xml_files = list(iter_files(ann_dir or root, (".xml",)))
    index = ImageIndex(root)
    splits = image_sets(root)
    errors = ErrorCollector(root, strict=strict)
    classes: list[str] = []
    class_ids: dict[str, int] = {}
    images: list[ImageRecord] = []
    claimed: set[str] = set()
    # many files are read over the cores (``parallel``): the results are those of a loop
    results = read_many(lambda p: _record(root, p, index, ann_dir, splits), xml_files, on_progress)
    for record in results:
        if isinstance(record, ReadError):
            errors.errors.append(record)
            continue
        names = record.extra.pop("_names")
        for name in names:
            if name not in class_ids:
                class_ids[name] = len(classes)
                classes.append(name)
        record.class_ids = np.array([class_ids[n] for n in names], dtype=np.int64)
        images.append(record)
        claimed.add(record.path)
    # Images with no XML: no objects, no annotation file (the health report lists them).
    # The image of a bad XML is left out with it: it is not an image without objects.
    failed = {PurePosixPath(e.file).stem for e in errors.errors}
    for rel in index.paths:
        if rel not in claimed and PurePosixPath(rel).stem not in failed:
            width, height = size_from_header(root, rel)
            images.append(ImageRecord(path=rel, width=width, height=height, split=split_of(rel)))
    skipped = errors.finish()
    return Dataset(root=root, format=NAME, classes=classes, images=images, skipped=skipped)


def to_xml(record: ImageRecord, classes: list[str] | Dataset) -> bytes:
    """The VOC XML for one record. Does not modify ``record``."""
    class_name = classes.class_name if isinstance(classes, Dataset) else (lambda i: classes[i])
    extra = dict(record.extra.get("voc", {}))
    size_rest = extra.pop("@size", {})
    path = PurePosixPath(record.path)
    extra.setdefault("folder", str(path.parent) if str(path.parent) != "." else "")
    extra.setdefault("filename", path.name)
    if not extra["folder"]:
        del extra["folder"]
    root = ET.Element("annotation")
    ordered = [k for k in _ANNOTATION_ORDER if k in extra or k == "size"]
    ordered += [k for k in extra if k not in _ANNOTATION_ORDER]
    for key in ordered:
        if key == "size":
            size = ET.SubElement(root, "size")
            ET.SubElement(size, "width").text = str(int(record.width))
            ET.SubElement(size, "height").text = str(int(record.height))
            for k, v in size_rest.items() if size_rest else [("depth", "3")]:
                _element(k, v, size)
        else:
            _element(key, extra[key], root)
    for i, (box, class_id) in enumerate(zip(record.boxes, record.class_ids)):
        fields = dict(record.box_extra[i].get("voc", DEFAULT_OBJECT))
        bndbox_rest = fields.pop("@bndbox", {})
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_name(int(class_id))
        for key in [k for k in _OBJECT_ORDER[1:] if k in fields] + [k for k in fields if k not in _OBJECT_ORDER]:
            _element(key, fields[key], obj)
        bndbox = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for tag, value in zip(_BOX_TAGS, (x1 + 1.0, y1 + 1.0, x2, y2)):
            ET.SubElement(bndbox, tag).text = number_text(value)
        for k, v in bndbox_rest.items():
            _element(k, v, bndbox)
    ET.indent(root, space="    ")
    return (ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def annotation_path(dataset: Dataset, record: ImageRecord) -> str:
    """Where ``record``'s XML goes: its own file when it came from VOC, else ``annotations/...``."""
    if dataset.format == NAME and record.annotation:
        return record.annotation
    return default_annotation_path(record.path, "annotations", ".xml")


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: its XML."""
    return [annotation_path(dataset, record)]


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Nothing to write: VOC keeps the class names in the boxes' ``<name>``s."""


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Write one record's XML atomically; returns the file written."""
    out = Path(root or dataset.root) / annotation_path(dataset, record)
    atomic_write(out, to_xml(record, dataset))
    return out


def save(dataset: Dataset, root: Path, *, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write one XML per image under ``root``. Images without boxes get an XML too, so that
    the image's size and fields are kept."""
    root = Path(root)
    for record in progress(dataset.images, len(dataset.images), on_progress):
        if dataset.format == NAME and record.annotation is None and not len(record):
            continue  # an image that had no XML and still has no box: add no file
        save_record(dataset, record, root)
