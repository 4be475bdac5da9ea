"""The dataset health report: what is wrong or suspicious in a dataset, file by file.

Strict about structure, lenient about content: a malformed file is a load error (or, in a
lenient load, a ``bad_file`` finding); a box one pixel outside its image is a finding.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from workbench.annotations import Dataset, ImageRecord
from workbench.datasets.index import OpenDataset
from workbench.fileio import IMAGE_EXTENSIONS, iter_files, leftover_temps, relpath
from workbench.formats import capabilities, embedded_image, load_dataset

TINY_AREA = 36.0  # px²: smaller boxes are listed (a 6 x 6 face is at the limit of what a detector finds)
EPSILON = 0.01  # px: YOLO's 6-decimal normalised numbers land up to ~0.004 px past a 4,000 px edge
SIZE_BINS = (0, 8, 16, 32, 64, 128, 256, 512)  # box side sqrt(w*h), px

# The kinds of finding, in the order the report lists them, with a title for each.
KINDS = {
    "bad_file": "unreadable or malformed annotation file",
    "out_of_bounds": "box outside its image",
    "degenerate": "box with zero or negative size",
    "tiny": f"box smaller than {TINY_AREA:g} px²",
    "missing_image": "image listed but not found",
    "orphan_annotation": "annotation file with no image",
    "no_annotation": "image with no annotation file",
    "duplicate_image": "exact duplicate images",
    "unnamed_class": "class id with no name",
    "size_mismatch": "size in the annotation differs from the image",
    "exif_rotated": "EXIF orientation other than 1",
    "bad_image": "image file that cannot be read",
    "temp_file": "temporary file an interrupted save left",
    "reader_note": "read approximately, or kept but not read as boxes",
}


@dataclass
class Finding:
    kind: str
    file: str  # the file to open to fix it: the annotation file, else the image
    detail: str
    image: str | None = None  # the record's image path, to open it in the workbench
    box: int | None = None  # 0-based box index within the record

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "file": self.file, "detail": self.detail}


@dataclass
class HealthReport:
    images: int
    boxes: int
    classes: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    size_histogram: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)

    def by_kind(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {k: [] for k in KINDS}
        for f in self.findings:
            out.setdefault(f.kind, []).append(f)
        return {k: v for k, v in out.items() if v}

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "boxes": self.boxes,
            "classes": self.classes,
            "findings": [f.to_json() for f in self.findings],
            "size_histogram": self.size_histogram,
            "splits": self.splits,
        }


def size_histogram(dataset: Dataset) -> dict[str, int]:
    """Boxes per size bin, the size being ``sqrt(w * h)`` in pixels."""
    boxes = [r.boxes for r in dataset.images if len(r)]
    if not boxes:
        return {}
    all_boxes = np.concatenate(boxes)
    sides = np.sqrt(
        np.clip(all_boxes[:, 2] - all_boxes[:, 0], 0, None) * np.clip(all_boxes[:, 3] - all_boxes[:, 1], 0, None)
    )
    edges = [*SIZE_BINS, np.inf]
    counts, _ = np.histogram(sides, bins=edges)
    labels = [f"{lo}-{hi}" for lo, hi in itertools.pairwise(SIZE_BINS)] + [f"{SIZE_BINS[-1]}+"]
    return dict(zip(labels, (int(c) for c in counts)))


def _box_findings(dataset: Dataset, record: ImageRecord, tiny_area: float) -> list[Finding]:
    out = []
    file = record.annotation or record.path
    w, h = record.width, record.height
    for i, (box, class_id) in enumerate(zip(record.boxes, record.class_ids)):
        x1, y1, x2, y2 = (float(v) for v in box)
        name = dataset.class_name(int(class_id))
        where = f"box {i + 1} ({name})"
        if class_id >= len(dataset.classes) or class_id < 0:
            out.append(Finding("unnamed_class", file, f"{where}: class id {int(class_id)} has no name", record.path, i))
        if x2 <= x1 or y2 <= y1:
            out.append(Finding("degenerate", file, f"{where}: {x2 - x1:g} x {y2 - y1:g} px", record.path, i))
            continue
        if w > 0 and h > 0:
            problems = [
                text
                for text, bad in (
                    (f"x1 {x1:g} < 0", x1 < -EPSILON),
                    (f"y1 {y1:g} < 0", y1 < -EPSILON),
                    (f"x2 {x2:g} > width {w}", x2 > w + EPSILON),
                    (f"y2 {y2:g} > height {h}", y2 > h + EPSILON),
                )
                if bad
            ]
            if problems:
                out.append(Finding("out_of_bounds", file, f"{where}: {', '.join(problems)}", record.path, i))
        area = (x2 - x1) * (y2 - y1)
        if area < tiny_area:
            out.append(Finding("tiny", file, f"{where}: {x2 - x1:g} x {y2 - y1:g} px = {area:g} px²", record.path, i))
    return out


def _image_findings(dataset: Dataset, record: ImageRecord) -> list[Finding]:
    """Findings that need the image header: missing, unreadable, size, EXIF."""
    path = dataset.root / record.path
    file = record.annotation or record.path
    if not path.is_file():
        if embedded_image(dataset, record) is not None:
            return []  # the image is embedded in its annotation file
        per_image = record.annotation is not None and capabilities(dataset.format).per_image_files
        kind = "orphan_annotation" if per_image else "missing_image"
        return [Finding(kind, file, f"image {record.path} not found", record.path)]
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = int(image.getexif().get(0x0112, 1) or 1)
    except Exception as e:  # any decoder failure is a finding, never a crash
        return [Finding("bad_image", record.path, f"cannot read image: {e}", record.path)]
    out = []
    if record.width and record.height and size != (record.width, record.height):
        out.append(
            Finding(
                "size_mismatch",
                file,
                f"annotation says {record.width} x {record.height}, image is {size[0]} x {size[1]}",
                record.path,
            )
        )
    if orientation != 1:
        out.append(Finding("exif_rotated", record.path, f"EXIF orientation {orientation}", record.path))
    return out


def check_record(dataset: Dataset, record: ImageRecord, *, tiny_area: float = TINY_AREA) -> list[Finding]:
    """The findings of one record, its boxes and its image header; no other file is read."""
    return _box_findings(dataset, record, tiny_area) + _image_findings(dataset, record)


def _duplicates(root: Path, paths: list[str]) -> list[Finding]:
    """Exact duplicate image files: grouped by size first, then by SHA-256 of the bytes."""
    by_size: dict[int, list[str]] = defaultdict(list)
    for rel in paths:
        try:
            by_size[(root / rel).stat().st_size].append(rel)
        except OSError:
            continue
    out = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[str]] = defaultdict(list)
        for rel in same_size:
            by_hash[hashlib.sha256((root / rel).read_bytes()).hexdigest()].append(rel)
        for group in by_hash.values():
            for rel in group[1:]:
                out.append(Finding("duplicate_image", rel, f"same bytes as {group[0]}", rel))
    return out


def reader_notes(dataset: Dataset) -> list[Finding]:
    """What the format's reader noted while loading (``Dataset.extra[format]["findings"]``: a
    rotated box read as its enclosing box, shapes kept but not read), one finding each. A note
    reads ``"<file>: <where>: <what>"``; the file is the one to open."""
    kept = dataset.extra.get(dataset.format)
    notes = kept.get("findings") if isinstance(kept, dict) else None
    out = []
    for note in notes if isinstance(notes, list) else []:
        file, sep, detail = str(note).partition(": ")
        out.append(Finding("reader_note", file, detail) if sep else Finding("reader_note", "", file))
    return out


def check(
    dataset: Dataset,
    *,
    tiny_area: float = TINY_AREA,
    on_progress: Callable[[int, int], None] | None = None,
) -> HealthReport:
    """Run every check on ``dataset`` (reads image headers, and the bytes of same-size images)."""
    findings: list[Finding] = [
        Finding("bad_file", e.file, e.reason if not e.record else f"{e.record}: {e.reason}") for e in dataset.skipped
    ]
    per_image_format = capabilities(dataset.format).per_image_files
    total = len(dataset.images)
    for n, record in enumerate(dataset.images, 1):
        if per_image_format and record.annotation is None:
            findings.append(Finding("no_annotation", record.path, "no annotation file", record.path))
        findings.extend(check_record(dataset, record, tiny_area=tiny_area))
        if on_progress:
            on_progress(n, total)
    listed = {r.path for r in dataset.images}
    on_disk = [relpath(p, dataset.root) for p in iter_files(dataset.root, IMAGE_EXTENSIONS)]
    findings.extend(
        Finding("no_annotation", rel, "image is not listed in any annotation file", rel)
        for rel in on_disk
        if rel not in listed
    )
    findings.extend(_duplicates(dataset.root, on_disk))
    findings.extend(reader_notes(dataset))
    findings.extend(
        Finding(
            "temp_file",
            relpath(tmp, dataset.root),
            "a save was killed before its rename: the file beside it is intact; the next save of it "
            "removes this one (or delete it)",
        )
        for tmp in leftover_temps(dataset.root)
    )
    order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(key=lambda f: order.get(f.kind, len(order)))
    splits = Counter(r.split for r in dataset.images if r.split is not None)
    return HealthReport(
        images=len(dataset.images),
        boxes=dataset.num_boxes,
        classes=dataset.class_counts(),
        findings=findings,
        size_histogram=size_histogram(dataset),
        splits=dict(splits),
    )


def check_folder(
    root: Path | str,
    fmt: str | None = None,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Dataset, HealthReport]:
    """Load the dataset in ``root`` leniently (bad files become findings) and check it; what
    ``workbench check`` runs. ``on_progress(stage, done, total)`` reports ``read`` then ``check``."""

    def stage(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: on_progress(name, done, total)) if on_progress else None

    dataset = load_dataset(root, fmt, strict=False, on_progress=stage("read"))
    return dataset, check(dataset, on_progress=stage("check"))


def report(opened: OpenDataset) -> HealthReport:
    """The health report of ``opened`` at its current revision (computed once per revision)."""
    with opened.lock:
        cached = getattr(opened, "_health", None)
        if cached is not None and cached[0] == opened.revision:
            return cached[1]
        result = check(opened.dataset)
        opened._health = (opened.revision, result)
        return result


def record_findings(dataset: Dataset, record: ImageRecord, classes: list[str] | None = None) -> list[Finding]:
    """The health findings of one record (its boxes and its image header), for the record as it
    is being edited (``classes``: the class list being edited). Cheap: no other file is read."""
    shell = Dataset(root=dataset.root, format=dataset.format, classes=list(classes or dataset.classes))
    return check_record(shell, record)
