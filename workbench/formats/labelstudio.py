"""Label Studio JSON: its export, one ``.json`` holding a list of tasks (``tasks.json``, or
``<split>.json`` as ``workbench convert`` writes them when the images have splits).

A task is ``{"data": {"image": URL}, "annotations": [{"result": [...]}, ...], "predictions": [...]}``.
Boxes are the ``result`` items of type ``rectanglelabels``: ``value.x``/``y``/``width``/``height``
in percent of the item's ``original_width``/``original_height``, so ``x1 = x * W / 100`` and
``x2 = (x + width) * W / 100``; the pixel values are rounded to 1e-6 px (``common.number``) so that
a box given in whole or decimal pixels reads back exactly. ``value.rotation`` (degrees, clockwise
about the box's top-left corner) other than 0 is read as the axis-aligned enclosing box with a
finding, in strict loads too, as ``cvat`` reads its rotated boxes (lossy input is kept and
reported, never refused); while that box is not moved the rotated box is written back
as it was read. The label is the first of ``value.rectanglelabels``.

Which annotation is read: of a task's ``annotations``, the latest that is not cancelled
(``was_cancelled``), latest by ``updated_at`` (else ``created_at``), then by position. The other
annotations, every ``predictions`` entry (model output, never ground truth), result items that
are not boxes (choices, polygons, keypoints ...) and every unknown key ride along in
``extra["labelstudio"]`` and are written back in their place; ids of tasks, annotations and
result items are kept. Findings (rotated boxes, the annotations and predictions not read, items
kept but not read, images not found) go to ``Dataset.extra["labelstudio"]["findings"]`` and one
logged warning per load.

Images: ``data.image`` may be Label Studio's upload URL (``/data/upload/<project>/<8 hex>-<name>``),
a local-files URL (``/data/local-files/?d=<path>``), a cloud or web URL (``s3://``, ``gs://``,
``https://`` ...) or a plain path. A plain path is tried relative to the JSON's folder, then
to the root; a local-files path relative to the root, then by its trailing folders (Label
Studio's document root is not known here); Label Studio's own URLs and cloud URLs are matched by file name under the root (an
upload's name with its 8-hex prefix or without it); an image that none of that finds is read as
``<the JSON's folder>/<its name>`` with a finding. The URL is written back while the image's
path is unchanged; a task written from another format gets ``/data/local-files/?d=<path>``,
relative to the dataset root (Label Studio's local storage with the root as document root).

The class list: the export holds none (Label Studio keeps it in the project's labelling config),
so it is read from a labelling config in the root when there is one (``label_config.xml``, or
``<name>.label_config.xml`` as ``label-studio-converter import`` writes it beside ``<name>.json``):
the ``<Label value>``s of its first ``<RectangleLabels>``, then any label the boxes use that it
does not list. ``save`` and ``save_class_list`` write that config (``label_config.xml`` when
none was read), which Label Studio takes as the project's labelling interface.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import defusedxml.ElementTree as DefusedET
import numpy as np
from defusedxml import DefusedXmlException

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import first_file, is_image, iter_files, relpath, safe_relpath
from workbench.formats import labelstudio_write as write
from workbench.formats.common import (
    Capabilities,
    ErrorCollector,
    ImageIndex,
    number,
    progress,
    size_from_header,
    split_of,
)
from workbench.formats.labelme import read_json

NAME = write.NAME
LABEL = "Label Studio"
CAPABILITIES = Capabilities(
    per_image_files=False, class_list_file=True, classes_from_labels=False, reread_one_file=False, add_images=False
)
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
_HEAD = re.compile(rb'^\s*\[\s*\{[^\0]*"data"\s*:')
log = logging.getLogger(__name__)


def _is_labelstudio(path: Path) -> bool:
    """A JSON whose top level is a list of objects with ``data`` (and annotations or predictions)."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    return _HEAD.match(head) is not None and (b'"annotations"' in head or b'"predictions"' in head)


def task_files(root: Path) -> list[Path]:
    """Label Studio JSON files under ``root`` (at most two folders deep)."""
    return _json_files(root)[0]


def _json_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The ``.json`` files at most two folders deep: (Label Studio task lists, the others)."""
    tasks, others = [], []
    for p in iter_files(root, (".json",)):
        if len(p.relative_to(root).parts) <= 3:
            (tasks if _is_labelstudio(p) else others).append(p)
    return tasks, others


def detect(root: Path) -> bool:
    """Any Label Studio JSON at most two folders deep; found without listing the folder in order
    (``task_files`` sorts every name under the root: slow on 10,000 images)."""
    return (
        first_file(root, (".json",), lambda p: len(p.relative_to(root).parts) <= 3 and _is_labelstudio(p)) is not None
    )


def _split_name(json_rel: str) -> str | None:
    """``train.json`` -> train; ``tasks.json`` -> None (the image paths may then name splits)."""
    stem = PurePosixPath(json_rel).stem
    return stem if split_of(f"{stem}/x") else None


class _Images:
    """Resolves ``data.image`` URLs to paths under the root (the folder is walked once, when a
    URL needs a look-up by name)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: ImageIndex | None = None

    def by_name(self, names: list[str], near: str) -> str | None:
        if self._index is None:
            self._index = ImageIndex(self.root)
        return next((found for n in names if n and (found := self._index.find(name=n, near=near))), None)

    def resolve(self, url: str, json_dir: str, file: str, where: str) -> tuple[str, str | None]:
        """``(path under the root, finding or None)`` for one ``data.image``."""
        parts = urlsplit(url)
        local_files = "/data/local-files" in parts.path
        if local_files:  # ?d=<path>, %-escaped; parse_qs would also turn a "+" into a space
            query = "&" + parts.query
            text: str | None = unquote(query.split("&d=", 1)[1].split("&", 1)[0]) if "&d=" in query else ""
        elif parts.scheme or parts.path.startswith("/data/upload/"):
            text = None  # Label Studio's upload or a cloud URL: only its file name can be matched
        else:
            text = url
        tried: list[str] = []
        if text is None:
            name = _UPLOAD_PREFIX.sub("", unquote(PurePosixPath(parts.path).name))
            names = [unquote(PurePosixPath(parts.path).name), name]
        else:
            bits = [b for b in text.replace("\\", "/").split("/") if b not in ("", ".")]
            if json_dir and not local_files and not text.startswith("/"):
                tried.append("/".join([json_dir, *bits]))
            tried += ["/".join(bits[k:]) for k in range(len(bits))]
            name = bits[-1] if bits else ""
            names = [name]
        for rel in tried:
            if ".." not in rel.split("/") and (self.root / rel).is_file():
                return rel, None
        found = self.by_name(names, near=json_dir)
        if found is not None:
            return found, None
        fallback = tried[0] if tried else "/".join(p for p in (json_dir, name) if p)
        rel = safe_relpath(fallback, file=file, record=f"{where}: data.image")
        return rel, f"{file}: {where}: image {url!r} is not a file under the dataset root; read as {rel}"


def _number(value: Any, what: str, file: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReadError(file, f"{what} is {value!r}, not a finite number", where)
    return float(value)


def _size(item: dict[str, Any], file: str, where: str) -> tuple[int, int]:
    out = []
    for key in ("original_width", "original_height"):
        if key not in item:
            raise ReadError(file, f"{key} is missing: its percent values cannot be turned into pixels", where)
        value = _number(item[key], key, file, where)
        if value <= 0 or not value.is_integer():
            raise ReadError(file, f"{key} is {item[key]!r}, not a positive whole number of pixels", where)
        out.append(int(value))
    return out[0], out[1]


def enclosing_box(x1: float, y1: float, w: float, h: float, degrees: float) -> tuple[float, float, float, float]:
    """The axis-aligned box enclosing the ``w x h`` box at ``(x1, y1)`` turned ``degrees``
    clockwise about that corner (Label Studio's rotation, in pixels: y points down)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    xs = [x1 + dx * c - dy * s for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y1 + dx * s + dy * c for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs), max(ys)


def read_box(item: dict[str, Any], file: str, where: str, notes: list[str]) -> tuple[tuple, str, int, int]:
    """One ``rectanglelabels`` item: ``(x1, y1, x2, y2)`` in pixels, its label, ``W``, ``H``."""
    width, height = _size(item, file, where)
    value = item.get("value")
    if not isinstance(value, dict):
        raise ReadError(file, f"'value' is {value!r}, not an object", where)
    x, y, w, h = (_number(value.get(k), f"value.{k}", file, where) for k in ("x", "y", "width", "height"))
    if w < 0 or h < 0:
        raise ReadError(file, f"value.width/height ({w:g}, {h:g}) are negative", where)
    labels = value.get("rectanglelabels")
    if not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels):
        raise ReadError(file, f"value.rectanglelabels is {labels!r}, not a list of label names", where)
    if len(labels) > 1:
        notes.append(f"{file}: {where}: {len(labels)} labels, read as its first ({labels[0]!r})")
    px = (x * width / 100, y * height / 100, w * width / 100, h * height / 100)
    degrees = _number(value.get("rotation", 0) or 0, "value.rotation", file, where)
    if degrees % 360:
        box = enclosing_box(*px, degrees)
        notes.append(f"{file}: {where}: rotated by {degrees:g} degrees, read as its enclosing box")
    else:
        box = (px[0], px[1], px[0] + px[2], px[1] + px[3])
    return tuple(float(number(v)) for v in box), labels[0], width, height


def _chosen(annotations: list[Any]) -> int | None:
    """The annotation read: the latest one not cancelled (see the module docstring)."""
    live = [i for i, a in enumerate(annotations) if not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda i: (str(annotations[i].get("updated_at") or annotations[i].get("created_at") or ""), i))


def _image_key(data: dict[str, Any]) -> str | None:
    if isinstance(data.get("image"), str):
        return "image"
    return next((k for k, v in data.items() if isinstance(v, str) and is_image(v)), None)


def parse_task(task: Any, *, file: str, where: str, json_dir: str, images: _Images, notes: list[str]) -> ImageRecord:
    """One task as a record with the box labels in ``extra["_names"]`` (ids set by ``load``)."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise ReadError(file, "needs a 'data' object", where)
    key = _image_key(data)
    if key is None:
        raise ReadError(file, "'data' has no 'image' URL", where)
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ReadError(file, "'annotations' is not a list of objects", where)
    rel, finding = images.resolve(data[key], json_dir, file, where)
    if finding:
        notes.append(finding)
    kept = copy.deepcopy(task)
    chosen = _chosen(annotations)
    if len(annotations) - (chosen is not None) > 0:
        notes.append(f"{file}: {where}: {len(annotations)} annotations, read the latest not cancelled; all kept")
    if task.get("predictions") and chosen is None:
        notes.append(f"{file}: {where}: predictions only, not read as ground truth (kept)")
    boxes, names, box_extra, others, size = [], [], [], [], None
    if chosen is not None:
        result = annotations[chosen].get("result", [])
        if not isinstance(result, list):
            raise ReadError(file, "'result' is not a list", f"{where}: annotation {chosen + 1}")
        for slot, item in enumerate(result):
            at = f"{where}: result {slot + 1}"
            if not isinstance(item, dict):
                raise ReadError(file, "is not an object", at)
            if item.get("type") != write.BOX_TYPE:
                others.append([slot, item])
                continue
            box, label, width, height = read_box(item, file, at, notes)
            size = size or (width, height)
            boxes.append(box)
            names.append(label)
            kept_box = {"item": item, "@box": list(box), "@size": [width, height], "@slot": slot}
            box_extra.append({"labelstudio": kept_box})
        if others:
            notes.append(f"{file}: {where}: {len(others)} result item(s) that are not boxes kept, not read")
        kept["annotations"][chosen]["result"] = []
    width, height = size or size_from_header(images.root, rel)
    extra = {"task": kept, "chosen": chosen, "others": others, "key": key, "@image": [data[key], rel]}
    return ImageRecord(
        path=rel,
        width=width,
        height=height,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        class_ids=np.zeros(len(names), dtype=np.int64),
        box_extra=box_extra,
        split=_split_name(file) or split_of(rel),
        annotation=file,
        extra={"labelstudio": extra, "_names": names},
    )


def parse_file(root: Path, json_path: Path, images: _Images) -> tuple[list[ImageRecord], list[str]]:
    """One Label Studio file: ``(records, findings)``."""
    file = relpath(json_path, root)
    tasks = read_json(json_path, file)
    if not isinstance(tasks, list):
        raise ReadError(file, "top level is not a list of tasks")
    json_dir = str(PurePosixPath(file).parent)
    json_dir = "" if json_dir == "." else json_dir
    notes: list[str] = []
    records = []
    for n, task in enumerate(tasks, 1):
        where = f"task {n}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        records.append(parse_task(task, file=file, where=where, json_dir=json_dir, images=images, notes=notes))
    return records, notes


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read every Label Studio JSON under ``root``; classes in the order labels first appear.

    ``strict`` raises ``DatasetReadError`` naming every bad file; otherwise bad files are
    skipped and listed in ``Dataset.skipped``.
    """
    root = Path(root)
    errors = ErrorCollector(root, strict=strict)
    files, others = _json_files(root)
    images = _Images(root)
    config = errors.run(lambda: read_config(root)) or ([], None)
    classes: list[str] = list(config[0])
    records: list[ImageRecord] = []
    # a JSON that is no task list (another tool's file, an export cut short) is named, not read
    findings = [f"{p.relative_to(root).as_posix()}: not a Label Studio task list; passed over" for p in others]
    for json_path in progress(files, len(files), on_progress):
        parsed = errors.run(lambda p=json_path: parse_file(root, p, images))
        if parsed is None:
            continue
        for record in parsed[0]:
            names = record.extra.pop("_names")
            classes.extend(dict.fromkeys(n for n in names if n not in classes))
            record.class_ids = np.array([classes.index(n) for n in names], dtype=np.int64)
            records.append(record)
        findings.extend(parsed[1])
    skipped = errors.finish()
    if findings:
        log.warning("%s: %d Label Studio finding(s), the first: %s", root, len(findings), findings[0])
    extra = {"labelstudio": {"findings": findings, "config": config[1]}}
    return Dataset(root=root, format=NAME, classes=classes, images=records, extra=extra, skipped=skipped)


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: the JSON that lists it
    (none known for a record that came from another format)."""
    return [record.annotation] if record.annotation else []


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Write the labelling config (see the module docstring) with the dataset's classes."""
    write.save_class_list(dataset, Path(root))


def config_file(root: Path) -> Path | None:
    """The labelling config in ``root``: ``label_config.xml``, else a ``*.label_config.xml``."""
    if (root / write.CONFIG_FILE).is_file():
        return root / write.CONFIG_FILE
    return next(iter(sorted(root.glob("*.label_config.xml"))), None)


def read_config(root: Path) -> tuple[list[str], dict[str, str] | None]:
    """``(labels of its first <RectangleLabels>, {"file", "text"})`` of the labelling config,
    ``([], None)`` when there is none; a ``ReadError`` when it is malformed or unsafe XML."""
    path = config_file(root)
    if path is None:
        return [], None
    file = relpath(path, root)
    try:
        text = path.read_text(encoding="utf-8")
        top = DefusedET.fromstring(text, forbid_dtd=True)
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError(file, f"cannot read: {e}") from e
    except DefusedXmlException as e:
        raise ReadError(file, f"refused unsafe XML ({type(e).__name__})") from e
    except ET.ParseError as e:
        raise ReadError(file, f"malformed XML: {e}") from e
    control = next(top.iter("RectangleLabels"), None)
    labels = [] if control is None else [el.get("value") or "" for el in control.iter("Label")]
    return list(dict.fromkeys(n for n in labels if n)), {"file": file, "text": text}


def save(
    dataset: Dataset,
    root: Path,
    *,
    keep_files: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write the Label Studio file(s) and the labelling config under ``root``; return them. A
    record goes back to the file it was read from (unless ``keep_files=False``, as ``workbench
    convert`` asks), else to ``tasks.json``, or ``<split>.json`` when it has a split."""
    return write.save(dataset, Path(root), keep_files=keep_files, on_progress=on_progress)


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Rewrite ``record``'s task inside the file that holds it, under that file's lock
    (``locks.locked``): the other tasks stay as they are on disk. When the file is missing or no
    longer holds the task, the whole file is written from ``dataset``."""
    return write.save_record(dataset, record, Path(root or dataset.root))
