"""What the format modules share: their ``Capabilities``, number output, split names, image
look-up, error collection, and the hardened XML parser."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from lxml import etree

from workbench.errors import DatasetReadError, ReadError
from workbench.fileio import IMAGE_EXTENSIONS, image_size, is_image, iter_files, natural_key, relpath

SPLIT_NAMES = ("train", "val", "valid", "validation", "test", "trainval")

T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    """What a format can do. Each format module has a ``CAPABILITIES``; code outside
    ``workbench.formats`` asks it instead of testing the format's name.

    * ``per_image_files``: one annotation file per image (VOC, LabelMe, YOLO), so an image with
      no file is unlabelled; else one file lists many images (COCO), so an image it does not
      list is missing from it.
    * ``class_list_file``: the class list is kept in a file of its own, apart from the records
      (YOLO's ``classes.txt``/``data.yaml``).
    * ``classes_from_labels``: the class list is the boxes' labels in the order they first
      appear (VOC, LabelMe): nothing but the records stores it, and saving them saves it.
    * ``reread_one_file``: the module's ``reread`` re-reads changed annotation files alone and
      gives the records a full load gives.
    * ``add_images``: images copied into the dataset's folder need no annotation file changed;
      the next load lists them unlabelled.
    * ``embedded_images``: an annotation file may hold its image's bytes (LabelMe ``imageData``);
      the module's ``embedded_image(record)`` returns them.
    """

    per_image_files: bool
    class_list_file: bool
    classes_from_labels: bool
    reread_one_file: bool
    add_images: bool
    embedded_images: bool = False


def _xml_parser() -> etree.XMLParser:
    """lxml's C parser with everything that reaches outside the bytes turned off: no entity
    expansion, no DTD loading or validation, no network, no huge-tree mode. Comments and
    processing instructions are dropped, as the stdlib's ``ElementTree`` drops them."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


_XML_PARSER = _xml_parser()
_DOCTYPE_MARKS = tuple("<!DOCTYPE".encode(encoding) for encoding in ("utf-8", "utf-16-le", "utf-16-be"))


def parse_xml(data: bytes, file: str) -> Any:
    """The root element of the XML document ``data`` (an lxml element, read as an
    ``ElementTree`` one: ``tag``, ``attrib``, ``text``, ``len``, iteration).

    Any DOCTYPE is refused, and with it every entity declaration, internal or external (a
    billion-laughs payload, ``SYSTEM "file:///etc/passwd"``): a ``ReadError`` saying "refused
    unsafe XML", as defusedxml's ``forbid_dtd`` says it. Malformed bytes, and references to
    entities never declared, are a ``ReadError`` saying "malformed XML"."""
    try:
        root = etree.fromstring(data, _XML_PARSER)
    except etree.XMLSyntaxError as e:
        # libxml2 stops some payloads itself (entity amplification): say what they are
        if any(mark in data for mark in _DOCTYPE_MARKS):
            raise ReadError(file, "refused unsafe XML (DTDForbidden)") from e
        raise ReadError(file, f"malformed XML: {e}") from e
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ReadError(file, "refused unsafe XML (DTDForbidden)")
    return root


def class_ids_of(names: list[str], classes: list[str], file: str) -> list[int]:
    """The ids in ``classes`` of the box labels ``names`` read from ``file``; a ``ReadError``
    when a label is not in the list (a re-read cannot then give what a full load gives)."""
    try:
        return [classes.index(name) for name in names]
    except ValueError:
        new = next(name for name in names if name not in classes)
        raise ReadError(file, f"label {new!r} is not one of the dataset's classes") from None


def number(value: float) -> int | float:
    """A coordinate as it should be written: an int when integral, else rounded to 1e-6.

    Rounding to 6 decimals removes float noise such as ``23.400000000000006`` that the
    conversions between conventions leave, and keeps every box within 1e-6 px.
    """
    value = float(value)
    if value.is_integer():  # the common case, and a fast one
        return int(value)
    if not math.isfinite(value):
        raise ValueError(f"coordinate {value} is not finite")
    rounded = round(value)
    if abs(value - rounded) < 1e-9:
        return int(rounded)
    return round(value, 6)


def to_int(value: object, file: str, what: str, record: str | None = None) -> int:
    """An integer field (a width, a height), with a ``ReadError`` naming it when it is not one."""
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ReadError(file, f"{what} is {value!r}, not a number", record) from None


def number_text(value: float) -> str:
    return repr(number(value))


def split_of(path: str) -> str | None:
    """The split named by a path's folders (``train/x.jpg``, ``images/val/x.jpg``), else ``None``."""
    parts = path.split("/")[:-1]
    for part in parts[:2]:
        if part.lower() in SPLIT_NAMES:
            return part
    return None


class ImageIndex:
    """Every image file under a dataset root, looked up by relative path, name or stem.

    Built with one ``os.walk`` so that resolving 10,000 annotation files costs no
    further directory listing; or from ``paths``, the images' paths relative to ``root`` in
    ``iter_files`` order, when a walk made before listed them.
    """

    def __init__(self, root: Path, paths: Iterable[str] | None = None) -> None:
        self.root = root
        if paths is None:
            paths = (relpath(p, root) for p in iter_files(root, IMAGE_EXTENSIONS))
        self._paths: list[str] = list(paths)
        self._order: Callable[[str], Any] | None = None  # set while ``_paths`` is not yet in that order
        self.known = set(self._paths)
        self.by_name: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for rel in self._paths:
            name = rel.rsplit("/", 1)[-1]
            self.by_name.setdefault(name, []).append(rel)
            self.by_stem.setdefault(name.rsplit(".", 1)[0], []).append(rel)

    @property
    def paths(self) -> list[str]:
        """Every image's path relative to the root, in ``iter_files`` order."""
        if self._order is not None:
            self._paths.sort(key=self._order)
            self._order = None
        return self._paths

    @classmethod
    def from_scan(cls, root: Path, files: Iterable[str]) -> ImageIndex:
        """The index of ``root`` built from ``files``, every file's path relative to it (a scan
        made before), instead of walking the folder again; look-ups give what ``ImageIndex(root)``
        gives. Only the names and stems found in several folders are put in ``iter_files``
        order (folders in name order, depth first, files in natural order), and ``paths`` when
        asked for: sorting 100,000 paths by their natural keys took longer than re-reading the one
        annotation file that changed."""

        def order(rel: str) -> tuple:
            folders, _, name = rel.rpartition("/")
            return (tuple(folders.split("/")) if folders else (), natural_key(name))

        index = cls(root, (rel for rel in files if is_image(rel)))
        index._order = order
        for found in (index.by_name, index.by_stem):
            for rels in found.values():
                if len(rels) > 1:
                    rels.sort(key=order)
        return index

    def __contains__(self, rel: str) -> bool:
        return rel in self.known

    def find(self, *, name: str | None = None, stem: str | None = None, near: str = "") -> str | None:
        """The image called ``name`` (else with stem ``stem``); among several, the one whose
        folder best matches ``near`` (a relative folder such as ``train``)."""
        candidates = self.by_name.get(name, []) if name else []
        if not candidates and stem:
            candidates = self.by_stem.get(stem, [])
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        near_parts = [p for p in near.split("/") if p]

        def score(rel: str) -> int:
            folders = rel.split("/")[:-1]
            return sum(1 for p in near_parts if p in folders)

        return max(candidates, key=score)


def size_from_header(root: Path, rel: str) -> tuple[int, int]:
    """Image size from the file header, or ``(0, 0)`` when the file is missing or unreadable
    (the health report then lists it)."""
    path = root / rel
    try:
        return image_size(path, rel)
    except ReadError:
        return 0, 0


class ErrorCollector:
    """Collects one ``ReadError`` per bad file so that a load can report every bad file at once.

    ``strict`` loads raise ``DatasetReadError`` listing all of them at the end; lenient
    loads keep going and hand the list to ``Dataset.skipped``.
    """

    def __init__(self, root: Path, *, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.errors: list[ReadError] = []

    def run(self, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except ReadError as e:
            self.errors.append(e)
            return None

    def finish(self) -> list[ReadError]:
        if self.strict and self.errors:
            raise DatasetReadError(str(self.root), self.errors)
        return self.errors


def progress(items: Iterable[T], total: int | None, callback: Callable[[int, int], None] | None) -> Iterator[T]:
    """Yield ``items`` and call ``callback(done, total)`` as they go (no-op without a callback)."""
    if callback is None:
        yield from items
        return
    total = total or 0
    for i, item in enumerate(items, 1):
        yield item
        callback(i, total)


def default_annotation_path(image_rel: str, folder: str, suffix: str) -> str:
    """Where a per-image annotation goes for an image at ``image_rel``: ``folder`` mirrors the
    image's folders (minus a leading ``images``/``JPEGImages``) so splits stay apart."""
    parts = list(PurePosixPath(image_rel).parts)
    if len(parts) > 1 and parts[0].lower() in ("images", "jpegimages", "imgs"):
        parts = parts[1:]
    stem = parts[-1].rsplit(".", 1)[0]
    return "/".join([folder, *parts[:-1], stem + suffix])


def sorted_natural(paths: Iterable[str]) -> list[str]:
    return sorted(paths, key=natural_key)


def walk_has(root: Path, predicate: Callable[[str], bool], limit: int = 20000) -> bool:
    """True when some file under ``root`` matches; stops after ``limit`` files."""
    seen = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if predicate(name):
                return True
            seen += 1
            if seen >= limit:
                return False
    return False
