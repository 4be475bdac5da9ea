"""YOLO txt (darknet / Ultralytics): one ``labels/<stem>.txt`` per image.

Coordinates: each line is ``class cx cy w h``, the box centre and size normalised by the
image width and height (0..1). So ``x1 = (cx - w/2) * W`` and ``x2 = (cx + w/2) * W``. A
line with more than 5 numbers is an Ultralytics segment ``class x1 y1 x2 y2 ...``
(normalised polygon): its box is the polygon's min/max and the polygon is kept.
Labels hold no image size, so it is read from the image header.

Layouts: ``images/`` + ``labels/`` with or without split folders (``images/train``), split
folders first (``train/images``), or each ``.txt`` beside its image. An image with no
label file has no objects. Class names come from ``classes.txt``, ``obj.names`` or
``data.yaml`` (``names`` as a list or a ``{id: name}`` dict), at the root or in ``labels/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import atomic_write, first_file, iter_files, relpath
from workbench.formats.common import Capabilities, ErrorCollector, ImageIndex, progress, size_from_header, split_of

NAME = "yolo"
LABEL = "YOLO"
CAPABILITIES = Capabilities(
    per_image_files=True, class_list_file=True, classes_from_labels=False, reread_one_file=True, add_images=True
)
NAME_FILES = ("classes.txt", "obj.names", "data.yaml", "data.yml", "dataset.yaml")


def label_path(image_rel: str) -> str:
    """The label file of an image: the last ``images`` folder becomes ``labels``; an image in
    no ``images`` folder has its label beside it (darknet)."""
    parts = list(PurePosixPath(image_rel).parts)
    stem = parts[-1].rsplit(".", 1)[0]
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return "/".join([*parts[:-1], stem + ".txt"])


def _names_source(root: Path) -> Path | None:
    for folder in (root, root / "labels"):
        for name in NAME_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def read_names(path: Path, root: Path) -> tuple[list[str], dict[str, Any]]:
    """Class names from a names file, and what else the file held (``data.yaml`` keys). Text files
    here are UTF-8, with or without the byte-order mark Windows editors write first."""
    file = relpath(path, root)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError(file, f"cannot read: {e}") from e
    if path.suffix not in (".yaml", ".yml"):
        return [line.strip() for line in text.splitlines() if line.strip()], {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ReadError(file, f"malformed YAML: {e}") from e
    if not isinstance(data, dict) or "names" not in data:
        raise ReadError(file, "has no 'names' key")
    return names_list(data["names"], file), data


def names_list(names: Any, file: str) -> list[str]:
    """A ``data.yaml``'s ``names`` as a list: a list as it is, a ``{id: name}`` dict by id
    (ids it skips are named by their number). A ``ReadError`` naming ``file`` otherwise."""
    if isinstance(names, dict):
        try:
            ids = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise ReadError(file, f"'names' keys must be class ids: {e}") from e
        out = [str(i) for i in range(max(ids) + 1)] if ids else []
        for i, name in ids.items():
            if i < 0:
                raise ReadError(file, f"negative class id {i} in 'names'")
            out[i] = name
        return out
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ReadError(file, "'names' must be a list or a dict")


MAX_CLASS_ID = 2**31 - 1  # class ids are stored as int64; a larger one is corruption, not a class
MAX_NORMALISED = 1e6  # |coordinate| in image sizes: beyond it a box is garbage (and overflows to inf in pixels)


def parse_lines(text: str, file: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Parse a label file: ``(class_ids (N,), normalised xyxy (N, 4), normalised polygons)``."""
    class_ids: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    polygons: list[np.ndarray | None] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        record = f"line {number}"
        try:
            class_id = int(fields[0])
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise ReadError(file, f"expected 'class cx cy w h', got {line.strip()[:80]!r}", record) from None
        if class_id < 0:
            raise ReadError(file, f"negative class id {class_id}", record)
        if class_id > MAX_CLASS_ID:
            raise ReadError(file, f"class id {class_id} is too large", record)
        if not all(np.isfinite(values)):
            raise ReadError(file, "coordinates must be finite numbers", record)
        if max(map(abs, values), default=0.0) > MAX_NORMALISED:
            raise ReadError(file, f"a coordinate is over {MAX_NORMALISED:g} image sizes: not normalised", record)
        if len(values) == 4:
            cx, cy, w, h = values
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            polygons.append(None)
        elif len(values) >= 6 and len(values) % 2 == 0:
            polygon = np.array(values, dtype=np.float64).reshape(-1, 2)
            boxes.append((*polygon.min(axis=0), *polygon.max(axis=0)))
            polygons.append(polygon)
        else:
            raise ReadError(file, f"expected 4 coordinates or a polygon, got {len(values)} numbers", record)
        class_ids.append(class_id)
    return (
        np.array(class_ids, dtype=np.int64),
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
        polygons,
    )


def read_record(root: Path, *, image_rel: str | None, label_rel: str | None) -> ImageRecord:
    """One image and its label file (paths relative to ``root``) read as ``load`` pairs and reads
    them: ``image_rel`` is ``None`` for a label with no image, ``label_rel`` ``None`` for an image
    with no label. ``class_ids`` are the label's own ids (of the dataset's names file). A
    ``ReadError`` names the label file (and the line) when it cannot be read or parsed."""
    path = image_rel or _image_guess(label_rel or "")
    width, height = size_from_header(root, image_rel) if image_rel else (0, 0)
    record = ImageRecord(path=path, width=width, height=height, split=split_of(path), annotation=label_rel)
    if label_rel is None:
        return record
    try:
        text = (root / label_rel).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError(label_rel, f"cannot read: {e}") from e
    class_ids, boxes, polygons = parse_lines(text, label_rel)
    if width <= 0 or height <= 0:
        # No image to give the size: keep the label's lines verbatim so a save gives them back.
        record.extra["yolo"] = {"lines": text.splitlines()}
        return record
    scale = np.array([width, height, width, height], dtype=np.float64)
    record.boxes = boxes * scale
    record.class_ids = class_ids
    record.polygons = [None if p is None else p * scale[:2] for p in polygons]
    record.box_extra = [{} for _ in polygons]
    return record


def reread(dataset: Dataset, files: dict[int, str], *, scanned: Iterable[str] = ()) -> dict[int, ImageRecord]:
    """The records at the positions of ``files`` (``position -> label path`` relative to the root)
    read again, as a full load reads them (the ids are the names file's, which is not re-read).
    (``scanned`` is not needed: each record keeps its image.) A ``ReadError`` when a file cannot
    be read."""
    return {
        position: read_record(dataset.root, image_rel=dataset.images[position].path, label_rel=rel)
        for position, rel in files.items()
    }


def _image_guess(label_rel: str) -> str:
    parts = list(PurePosixPath(label_rel).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "labels":
            parts[i] = "images"
            break
    return "/".join(parts)[: -len(".txt")] + ".jpg"


def detect(root: Path) -> bool:
    """A folder holds YOLO when it has a names file or a ``labels`` folder of ``.txt`` files."""
    if _names_source(root) is not None:
        return True
    return first_file(root, (".txt",), lambda p: _is_label(relpath(p, root))) is not None


def _is_label(rel: str) -> bool:
    return "labels" in rel.split("/")[:-1] and rel.rsplit("/", 1)[-1] not in NAME_FILES


def _label_files(root: Path) -> list[str]:
    """``.txt`` files inside a folder named ``labels``: the files that can only be labels."""
    return [rel for rel in (relpath(p, root) for p in iter_files(root, (".txt",))) if _is_label(rel)]


def load(root: Path, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Read a YOLO dataset. ``strict`` raises ``DatasetReadError`` naming every bad file;
    otherwise bad files are skipped and listed in ``Dataset.skipped``."""
    root = Path(root)
    errors = ErrorCollector(root, strict=strict)
    names_path = _names_source(root)
    classes: list[str] = []
    extra: dict[str, Any] = {}
    if names_path is not None:
        loaded = errors.run(lambda: read_names(names_path, root))
        if loaded is not None:
            classes, data_yaml = loaded
            extra = {"names_file": relpath(names_path, root)}
            if data_yaml:
                extra["data_yaml"] = data_yaml
    index = ImageIndex(root)
    txt_files = {relpath(p, root) for p in iter_files(root, (".txt",))}
    labelled = set(_label_files(root))
    pairs: list[tuple[str | None, str | None]] = []
    for image_rel in index.paths:
        candidates = (label_path(image_rel), image_rel.rsplit(".", 1)[0] + ".txt")
        label_rel = next((c for c in candidates if c in txt_files and PurePosixPath(c).name not in NAME_FILES), None)
        labelled.discard(label_rel)
        pairs.append((image_rel, label_rel))
    pairs += [(None, label_rel) for label_rel in sorted(labelled)]  # labels with no image

    images: list[ImageRecord] = []
    for image_rel, label_rel in progress(pairs, len(pairs), on_progress):
        record = errors.run(lambda i=image_rel, lbl=label_rel: read_record(root, image_rel=i, label_rel=lbl))
        if record is not None:
            images.append(record)
    skipped = errors.finish()
    return Dataset(root=root, format=NAME, classes=classes, images=images, extra={"yolo": extra}, skipped=skipped)


def _norm_text(value: float) -> str:
    """A normalised coordinate with 6 decimals when that is exact (as most tools write them),
    else 10, which keeps a 10,000 px image within 1e-5 px."""
    rounded = round(value, 6)
    return f"{value:.6f}" if abs(rounded - value) < 1e-12 else f"{value:.10f}".rstrip("0")


def to_text(record: ImageRecord) -> str:
    """The label file for one record. Does not modify ``record``."""
    if record.width <= 0 or record.height <= 0:
        lines = record.extra.get("yolo", {}).get("lines")
        if lines is not None and not len(record):
            return "".join(line + "\n" for line in lines)
        raise ValueError(f"{record.path}: image size unknown, cannot normalise YOLO coordinates")
    scale = np.array([record.width, record.height], dtype=np.float64)
    lines = []
    for box, class_id, polygon in zip(record.boxes, record.class_ids, record.polygons):
        if polygon is not None:
            values = (polygon / scale).reshape(-1)
        else:
            x1, y1, x2, y2 = (float(v) for v in box)
            values = np.array(
                [(x1 + x2) / 2 / scale[0], (y1 + y2) / 2 / scale[1], (x2 - x1) / scale[0], (y2 - y1) / scale[1]]
            )
        lines.append(" ".join([str(int(class_id)), *(_norm_text(float(v)) for v in values)]))
    return "".join(line + "\n" for line in lines)


def annotation_path(dataset: Dataset, record: ImageRecord) -> str:
    if dataset.format == NAME and record.annotation:
        return record.annotation
    return label_path(record.path)


def save_record(dataset: Dataset, record: ImageRecord, root: Path | None = None) -> Path:
    """Write one record's label file atomically; returns the file written."""
    out = Path(root or dataset.root) / annotation_path(dataset, record)
    atomic_write(out, to_text(record))
    return out


def annotation_files(dataset: Dataset, record: ImageRecord) -> list[str]:
    """The files a save of ``record`` writes, relative to the root: its label file."""
    return [annotation_path(dataset, record)]


def save_class_list(dataset: Dataset, root: Path) -> None:
    """Write the names file (``save_names``): YOLO keeps the class list apart from the labels."""
    save_names(dataset, root)


def save_names(dataset: Dataset, root: Path) -> None:
    """Write the class names: back to the file they came from, else ``classes.txt`` + ``data.yaml``."""
    extra = dataset.extra.get("yolo", {}) if dataset.format == NAME else {}
    names_file = extra.get("names_file")
    text_names = "".join(name + "\n" for name in dataset.classes)
    if names_file and not names_file.endswith((".yaml", ".yml")):
        atomic_write(root / names_file, text_names)
        return
    data = dict(extra.get("data_yaml") or {})
    if not data:
        data["path"] = "."
        for split in dataset.splits or []:
            folder = next((str(PurePosixPath(r.path).parent) for r in dataset.images if r.split == split), split)
            data["val" if split in ("valid", "validation") else split] = folder
        atomic_write(root / "classes.txt", text_names)
    previous = data.get("names")
    data["names"] = (
        {i: n for i, n in enumerate(dataset.classes)} if isinstance(previous, dict) else list(dataset.classes)
    )
    if "nc" in data or not names_file:
        data["nc"] = len(dataset.classes)
    atomic_write(root / (names_file or "data.yaml"), yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def save(dataset: Dataset, root: Path, *, on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write the names file and one label file per image that has boxes or had a label file."""
    root = Path(root)
    save_names(dataset, root)
    for record in progress(dataset.images, len(dataset.images), on_progress):
        if dataset.format == NAME and record.annotation is None and not len(record):
            continue  # no label file before and still no box: add no file
        save_record(dataset, record, root)
