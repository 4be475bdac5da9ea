"""An Ultralytics ``data.yaml`` read as Ultralytics reads it: a YOLO dataset whose splits the file names.

Keys (as Ultralytics' ``check_det_dataset`` and ``img2label_paths``):

* ``path``: the dataset folder, relative to the yaml's folder when relative; absent means the
  yaml's folder.
* ``train``, ``val`` (or ``validation``), ``test``: each a folder of images (searched
  recursively), a ``.txt`` file of image paths, or a list of those, relative to ``path``. In a
  ``.txt`` file a line starting with ``./`` is relative to the file's folder (Ultralytics' rule),
  an absolute path is kept, any other line is relative to ``path``. ``train`` and ``val`` are
  required; the images the file names, and only those, are the dataset.
* ``names``: a list or an ``{id: name}`` dict; ``nc``, when given, must match it, and alone
  gives the names ``class_0``, ``class_1``, ...

Each image's label file is found by Ultralytics' rule: the last ``images`` folder of its path
becomes ``labels`` and the suffix ``.txt``; an image with no label file has no objects. A label
with a class id beyond ``names`` is an error (Ultralytics refuses it too). The result is the
``Dataset`` the YOLO format gives (format ``yolo``: it saves and re-reads as YOLO), rooted at
the deepest folder holding ``path``, every image and every label, with ``ImageRecord.split``
set to ``train``, ``val`` or ``test``. An image listed in two splits is one record per split, so
that training and validation see exactly the lists the file gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import ReadError
from workbench.fileio import IMAGE_EXTENSIONS, is_image, iter_files, relpath
from workbench.formats import yolo
from workbench.formats.common import ErrorCollector, progress

SUFFIXES = (".yaml", ".yml")
SPLIT_KEYS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


def is_data_yaml(path: Path | str) -> bool:
    """True when ``path`` names a YAML file (what ``load`` reads; it may be missing, which
    ``load`` then says), not a dataset folder."""
    path = Path(path)
    return path.suffix.lower() in SUFFIXES and not path.is_dir()


def read_yaml(path: Path) -> dict[str, Any]:
    """The yaml's keys; a ``ReadError`` naming the file when it is missing, unreadable or no mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ReadError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError(str(path), f"cannot read: {e}") from e
    except yaml.YAMLError as e:
        raise ReadError(str(path), f"malformed YAML: {e}") from e
    if not isinstance(data, dict):
        raise ReadError(str(path), "expected a mapping of keys (path, train, val, names)")
    return data


def class_names(data: dict[str, Any], file: str) -> list[str]:
    """``names`` (list or dict) checked against ``nc``; ``nc`` alone names the classes ``class_<i>``."""
    nc = data.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 0):
        raise ReadError(file, f"'nc' must be a whole number of classes, got {nc!r}")
    if "names" not in data:
        if nc is None:
            raise ReadError(file, "has neither 'names' nor 'nc'")
        return [f"class_{i}" for i in range(nc)]
    names = yolo.names_list(data["names"], file)
    if nc is not None and nc != len(names):
        raise ReadError(file, f"'names' has {len(names)} classes but 'nc' is {nc}; they must match")
    return names


def dataset_folder(yaml_path: Path, data: dict[str, Any]) -> Path:
    """``path`` resolved against the yaml's folder (the yaml's folder when absent)."""
    value = data.get("path")
    folder = yaml_path.parent / os.path.expanduser(str(value)) if value not in (None, "") else yaml_path.parent
    folder = folder.resolve()
    if not folder.is_dir():
        raise ReadError(str(yaml_path), f"'path' {value!r} is no folder: {folder}")
    return folder


def _list_file(txt: Path, folder: Path, file: str) -> list[Path]:
    try:
        lines = txt.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ReadError(file, f"cannot read the image list {txt}: {e}") from e
    out = []
    for line in (line.strip() for line in lines):
        if not line:
            continue
        image = txt.parent / line[2:] if line.startswith("./") else folder / line
        out.append(image.resolve())
    return out


def split_images(value: Any, *, folder: Path, file: str, key: str) -> list[Path]:
    """The images of one split key: a folder, a ``.txt`` list or a list of those."""
    entries = value if isinstance(value, list) else [value]
    images: list[Path] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ReadError(file, f"'{key}' must be a folder, a .txt file or a list of those, got {entry!r}")
        target = (folder / os.path.expanduser(entry)).resolve()
        if target.is_dir():
            images += [p.resolve() for p in iter_files(target, IMAGE_EXTENSIONS)]
        elif target.is_file() and target.suffix.lower() == ".txt":
            images += [p for p in _list_file(target, folder, file) if is_image(p)]
        elif target.is_file() and is_image(target):
            images.append(target)
        else:
            raise ReadError(file, f"'{key}': {entry!r} does not exist (looked for {target})")
    return images


def label_file(image: Path) -> Path:
    """Ultralytics' ``img2label_paths``: the last ``/images/`` of the path becomes ``/labels/``."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        head, tail = text.rsplit(sa, 1)
        text = head + sb + tail
    return Path(text).with_suffix(".txt")


def parse(yaml_path: Path) -> tuple[dict[str, Any], list[str], Path, list[tuple[str, Path]]]:
    """``(keys, class names, dataset folder, [(split, image path)])`` of a data.yaml, labels
    unread: what ``load`` reads, and a quick check of the file before a job is queued. A
    ``ReadError`` naming the yaml for each way it can be wrong."""
    file = str(yaml_path)
    data = read_yaml(yaml_path)
    classes = class_names(data, file)
    folder = dataset_folder(yaml_path, data)
    listed: list[tuple[str, Path]] = []
    for split, keys in SPLIT_KEYS.items():
        key = next((k for k in keys if data.get(k)), None)
        if key is None:
            if split != "test":
                raise ReadError(file, f"has no '{split}' key: Ultralytics needs 'train' and 'val'")
            continue
        listed += [(split, image) for image in split_images(data[key], folder=folder, file=file, key=key)]
    return data, classes, folder, listed


def load(
    yaml_path: Path | str, *, strict: bool = True, on_progress: Callable[[int, int], None] | None = None
) -> Dataset:
    """Read the dataset a ``data.yaml`` describes. ``strict`` raises ``DatasetReadError`` naming
    every bad label file or missing image; otherwise they are skipped and listed in
    ``Dataset.skipped``. A bad yaml (missing, no ``train``/``val``, a split path that does not
    exist, ``names``/``nc`` that disagree) is always a ``ReadError`` naming the yaml."""
    yaml_path = Path(yaml_path).expanduser().resolve()
    file = str(yaml_path)
    data, classes, folder, listed = parse(yaml_path)
    labels = {image: label_file(image) for _, image in listed}
    labels = {image: label for image, label in labels.items() if label.is_file()}
    root = Path(os.path.commonpath([folder, *(p for _, p in listed), *labels.values()]))
    if not root.is_dir():
        root = root.parent
    errors = ErrorCollector(root, strict=strict)
    images: list[ImageRecord] = []
    for split, image in progress(listed, len(listed), on_progress):
        record = errors.run(
            lambda s=split, i=image: _record(root, image=i, label=labels.get(i), split=s, classes=len(classes))
        )
        if record is not None:
            images.append(record)
    skipped = errors.finish()
    extra: dict[str, Any] = {"data_yaml": data, "data_yaml_file": file}
    if yaml_path.is_relative_to(root):
        extra["names_file"] = relpath(yaml_path, root)
    return Dataset(root=root, format=yolo.NAME, classes=classes, images=images, extra={"yolo": extra}, skipped=skipped)


def _record(root: Path, *, image: Path, label: Path | None, split: str, classes: int) -> ImageRecord:
    image_rel = relpath(image, root)
    if not image.is_file():
        raise ReadError(image_rel, "image listed in the data.yaml does not exist")
    record = yolo.read_record(root, image_rel=image_rel, label_rel=None if label is None else relpath(label, root))
    beyond = [int(c) for c in record.class_ids if c >= classes]
    if beyond:
        raise ReadError(
            record.annotation or image_rel, f"class id {max(beyond)} beyond the {classes} classes of 'names'"
        )
    record.split = split
    return record
