"""The annotation formats, each a module with ``detect``, ``load``, ``save``, ``save_record``,
``annotation_files`` and ``save_class_list``, a ``LABEL`` to show users and its ``CAPABILITIES``
(``common.Capabilities``): code outside this package asks those, never the format's name.

``load_dataset``/``save_dataset`` pick the module by name or by detection. Converting is
always ``load -> Dataset -> save``: there is no format-to-format shortcut.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from workbench.annotations import Dataset, ImageRecord
from workbench.errors import FormatDetectionError, WorkbenchError
from workbench.formats import coco, cvat, labelme, labelstudio, voc, yolo, yolo_yaml
from workbench.formats.common import Capabilities

FORMATS: dict[str, ModuleType] = {
    "coco": coco,
    "cvat": cvat,
    "labelme": labelme,
    "labelstudio": labelstudio,
    "voc": voc,
    "yolo": yolo,
}


def get_format(name: str) -> ModuleType:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise WorkbenchError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


def capabilities(name: str) -> Capabilities:
    """What the format called ``name`` can do."""
    return get_format(name).CAPABILITIES


def label(name: str) -> str:
    """The format's name as users know it ("Pascal VOC")."""
    return get_format(name).LABEL


def labels(names: list[str]) -> str:
    """``["voc", "yolo", "coco"]`` -> "Pascal VOC, YOLO or COCO"."""
    shown = [label(n) for n in names]
    return " or ".join([", ".join(shown[:-1]), shown[-1]]) if len(shown) > 1 else "".join(shown)


def embedded_image(dataset: Dataset, record: ImageRecord) -> bytes | None:
    """The image bytes ``record``'s annotation file embeds, when its format can embed one."""
    module = get_format(dataset.format)
    return module.embedded_image(record) if module.CAPABILITIES.embedded_images else None


def labelme_file(dataset: Dataset, record: ImageRecord) -> str:
    """What the LabelMe tool should open for ``record``, relative to the root: the record's own
    JSON when the dataset is LabelMe, else its image (LabelMe then writes a JSON beside it)."""
    if dataset.format == labelme.NAME and record.annotation:
        return record.annotation
    return record.path


def detect_format(root: Path | str) -> str:
    """The one format whose files ``root`` holds; an error when none or several match."""
    root = Path(root)
    if yolo_yaml.is_data_yaml(root):
        return yolo.NAME  # an Ultralytics data.yaml names a YOLO dataset
    if not root.is_dir():
        raise FormatDetectionError(f"{root}: not a folder")
    found = [name for name, module in FORMATS.items() if module.detect(root)]
    if not found:
        raise FormatDetectionError(f"{root}: no {labels(list(FORMATS))} annotations found; choose the format by hand")
    if len(found) > 1:
        raise FormatDetectionError(f"{root}: holds {' and '.join(found)} annotations; choose one by hand")
    return found[0]


def load_dataset(
    root: Path | str,
    fmt: str | None = None,
    *,
    strict: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Load the dataset in ``root`` (format detected unless ``fmt`` is given), or the one an
    Ultralytics ``data.yaml`` at ``root`` describes, with its splits (``yolo_yaml``)."""
    root = Path(root)
    if yolo_yaml.is_data_yaml(root):
        if fmt and get_format(fmt) is not yolo:
            raise WorkbenchError(f"{root}: a data.yaml describes a {yolo.LABEL} dataset, not {label(fmt)}")
        return yolo_yaml.load(root, strict=strict, on_progress=on_progress)
    if not root.is_dir():
        raise WorkbenchError(f"{root}: not a folder")
    module = get_format(fmt or detect_format(root))
    return module.load(root, strict=strict, on_progress=on_progress)


def save_dataset(
    dataset: Dataset, root: Path | str, fmt: str | None = None, *, on_progress: Callable[[int, int], None] | None = None
) -> None:
    """Write ``dataset``'s annotations under ``root`` in ``fmt`` (default: its own format).

    Never modifies ``dataset``; every file is written atomically.
    """
    get_format(fmt or dataset.format).save(dataset, Path(root), on_progress=on_progress)
