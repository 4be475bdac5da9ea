"""The four annotation formats, each a module with ``detect``, ``load``, ``save`` and ``save_record``.

``load_dataset``/``save_dataset`` pick the module by name or by detection. Converting is
always ``load -> Dataset -> save``: there is no format-to-format shortcut.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from workbench.annotations import Dataset
from workbench.errors import FormatDetectionError, WorkbenchError
from workbench.formats import coco, labelme, voc, yolo

FORMATS: dict[str, ModuleType] = {"coco": coco, "labelme": labelme, "voc": voc, "yolo": yolo}


def get_format(name: str) -> ModuleType:
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise WorkbenchError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


def detect_format(root: Path | str) -> str:
    """The one format whose files ``root`` holds; an error when none or several match."""
    root = Path(root)
    if not root.is_dir():
        raise FormatDetectionError(f"{root}: not a folder")
    found = [name for name, module in FORMATS.items() if module.detect(root)]
    if not found:
        raise FormatDetectionError(
            f"{root}: no LabelMe, YOLO, Pascal VOC or COCO annotations found; choose the format by hand"
        )
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
    """Load the dataset in ``root`` (format detected unless ``fmt`` is given)."""
    root = Path(root)
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
