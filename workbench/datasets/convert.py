"""Any-to-any conversion: ``load(src) -> Dataset -> save(out)``, with the images brought along.

The output folder is self-contained: every image lands at its relative path under ``out``
so that each COCO ``file_name`` (and each VOC/LabelMe/YOLO reference) resolves inside it.
Images are hard-linked when ``out`` is on the same file system (no extra disk, no copy
time), and copied otherwise.

The source is read through the index cache (``datasets.index``): a folder converted (or
opened in the app) before is not parsed again while every file under it keeps its size and
mtime, and only the annotation files that changed are re-read otherwise.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.annotations import Dataset
from workbench.datasets.index import no_gc, open_dataset
from workbench.datasets.linking import make_folders, start_links
from workbench.errors import DatasetReadError, ReadError, WorkbenchError
from workbench.formats import embedded_image, get_format, load_dataset, yolo_yaml

IMAGE_MODES = ("link", "copy", "symlink", "none")
PROGRESS_EVERY = 100  # images between two progress reports


@dataclass
class ConvertResult:
    dataset: Dataset
    out: Path
    to: str
    images_written: int = 0
    missing_images: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[ReadError]:
        return self.dataset.skipped


def _place_image(src: Path, dst: Path, mode: str) -> None:
    """Put ``src`` at ``dst`` (its folder exists). Tries the link first: one system call per
    image in the common case, which matters on 10,000 images."""
    try:
        if mode == "symlink":
            if not src.is_file():
                raise FileNotFoundError(src)
            os.symlink(src.resolve(), dst)
            return
        if mode == "link":
            try:
                os.link(src, dst)
                return
            except FileExistsError:
                raise
            except OSError:
                pass  # another file system, or links not allowed: copy instead
        if dst.exists():
            raise FileExistsError(dst)
        shutil.copy2(src, dst)
    except FileExistsError:
        if os.path.samefile(src, dst):
            return
        dst.unlink()
        _place_image(src, dst, mode)


def bring_images(
    dataset: Dataset,
    out: Path,
    mode: str = "link",
    on_progress: Callable[[int, int], None] | None = None,
    *,
    linked: set[int] | None = None,
) -> tuple[int, list[str]]:
    """Place every image of ``dataset`` at its relative path under ``out``.

    ``linked``: the positions of the images already hard-linked there (``linking.start_links``).
    Returns ``(images placed, images missing from the source)``.
    """
    if mode not in IMAGE_MODES:
        raise WorkbenchError(f"unknown image mode {mode!r}; choose one of {', '.join(IMAGE_MODES)}")
    if mode == "none" or out.resolve() == dataset.root.resolve():
        return 0, []
    written, missing = 0, []
    total = len(dataset.images)
    make_folders(dataset, out)
    if not linked and mode == "link":
        linked = _link_all(dataset, out)
    for i, record in enumerate(dataset.images):
        if linked and i in linked:
            written += 1
        else:
            src = dataset.root / record.path
            dst = out / record.path
            try:
                _place_image(src, dst, mode)
                written += 1
            except FileNotFoundError:
                if (data := embedded_image(dataset, record)) is not None:
                    dst.write_bytes(data)
                    written += 1
                else:
                    missing.append(record.path)
        if on_progress and (i + 1 == total or not (i + 1) % PROGRESS_EVERY):
            on_progress(i + 1, total)
    return written, missing


def _link_all(dataset: Dataset, out: Path) -> set[int]:
    """Hard-link every image it can, the paths as plain strings (a ``Path`` per image costs half
    as much as the link itself); the positions linked. What a link refuses (an existing file,
    another file system, a missing image) is left to ``_place_image``."""
    if os.sep != "/":
        return set()
    src, dst = f"{dataset.root}/", f"{out}/"
    linked = set()
    link = os.link
    for i, record in enumerate(dataset.images):
        try:
            link(src + record.path, dst + record.path)
        except OSError:
            continue
        linked.add(i)
    return linked


def read_source(
    src: Path | str,
    src_format: str | None = None,
    *,
    strict: bool = True,
    use_index: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """The dataset in ``src``, as ``load_dataset(src, src_format, strict=strict)`` gives it.

    With ``use_index`` a folder is read through the index cache (the records of a folder
    whose files are unchanged come from it; a strict read then raises the same
    ``DatasetReadError`` for the files the cached load skipped). A data.yaml, or a path that
    is not a folder, is read by ``load_dataset`` itself, and so is any folder when the index
    cannot be used (a workspace that cannot be written, a locked or damaged database)."""
    root = Path(src)
    if not use_index or yolo_yaml.is_data_yaml(root) or not root.is_dir():
        return load_dataset(root, src_format, strict=strict, on_progress=on_progress)
    try:
        dataset = open_dataset(root, src_format, on_progress=on_progress).dataset
    except (OSError, sqlite3.Error):
        return load_dataset(root, src_format, strict=strict, on_progress=on_progress)
    if strict and dataset.skipped:
        raise DatasetReadError(str(root), list(dataset.skipped))
    return dataset


def _labelled(dataset: Dataset) -> bool:
    """Whether the reader found any annotation: an image of a one-file format (COCO, Label Studio,
    CVAT: the file lists it), an annotation file or a box (VOC, LabelMe, YOLO: not bare images)."""
    if not get_format(dataset.format).CAPABILITIES.per_image_files:
        return bool(dataset.images)
    return any(r.annotation or len(r.boxes) for r in dataset.images)


def convert(
    src: Path | str,
    out: Path | str,
    to: str,
    *,
    src_format: str | None = None,
    images: str = "link",
    skip_bad: bool = False,
    use_index: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ConvertResult:
    """Convert the dataset in ``src`` to format ``to`` under ``out``.

    A source with no annotation at all (the wrong folder, or the wrong ``src_format``: bare
    images) is refused before ``out`` is made. Without ``skip_bad`` any bad file stops the conversion with a ``DatasetReadError``
    that lists every bad file; with it the rest is converted and ``result.skipped`` says
    what was left out. ``use_index``: read the source through the index cache
    (``read_source``). ``on_progress(stage, done, total)`` reports the load, the write and
    the images.
    """
    module = get_format(to)
    out = Path(out)

    def stage(name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: on_progress(name, done, total)) if on_progress else None

    with no_gc():  # the records are all alive until the end: nothing for the GC to find
        dataset = read_source(src, src_format, strict=not skip_bad, use_index=use_index, on_progress=stage("read"))
        if not _labelled(dataset):
            # a forced --from on the wrong folder reads nothing: an empty output would look like success
            bad = f"; {len(dataset.skipped)} bad file(s), the first: {dataset.skipped[0]}" if dataset.skipped else ""
            label = get_format(dataset.format).LABEL
            raise WorkbenchError(
                f"{src}: no {label} annotation found in it ({len(dataset.images)} image(s), none annotated{bad}); "
                "nothing converted, nothing written"
            )
        out.mkdir(parents=True, exist_ok=True)
        # many images are linked by a child process while the annotations are written
        links = start_links(dataset, out) if images == "link" and out.resolve() != dataset.root.resolve() else None
        try:
            if not module.CAPABILITIES.per_image_files:
                # One file for many images (COCO): annotations.json or <split>.json at the top of
                # ``out``, whatever files the source kept its records in.
                module.save(dataset, out, keep_files=False, on_progress=stage("write"))
            else:
                module.save(dataset, out, on_progress=stage("write"))
        finally:
            linked = links.wait() if links else None
    written, missing = bring_images(dataset, out, images, stage("images"), linked=linked)
    return ConvertResult(dataset=dataset, out=out, to=module.NAME, images_written=written, missing_images=missing)
