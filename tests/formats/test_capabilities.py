"""What each format declares it can do, that each declaration holds, and that nothing outside
``workbench/formats`` tests a format's name instead of asking it."""

from __future__ import annotations

import ast
import dataclasses
import shutil
from pathlib import Path

import pytest

from tests.conftest import PROJECT, SHARED, TINY_STEMS, copy_voc_subset
from workbench.annotations import Dataset
from workbench.datasets import catalog, index
from workbench.errors import ReadError, WorkbenchError
from workbench.formats import FORMATS, capabilities, embedded_image, label, labelme_file, load_dataset, save_dataset
from workbench.formats.common import Capabilities

EXPECTED = {
    "voc": Capabilities(
        per_image_files=True, class_list_file=False, classes_from_labels=True, reread_one_file=True, add_images=True
    ),
    "labelstudio": Capabilities(
        per_image_files=False, class_list_file=True, classes_from_labels=False, reread_one_file=False, add_images=False
    ),
    "labelme": Capabilities(
        per_image_files=True,
        class_list_file=False,
        classes_from_labels=True,
        reread_one_file=True,
        add_images=True,
        embedded_images=True,
    ),
    "yolo": Capabilities(
        per_image_files=True, class_list_file=True, classes_from_labels=False, reread_one_file=True, add_images=True
    ),
    "coco": Capabilities(
        per_image_files=False, class_list_file=False, classes_from_labels=False, reread_one_file=False, add_images=False
    ),
    "cvat": Capabilities(
        per_image_files=False, class_list_file=False, classes_from_labels=False, reread_one_file=False, add_images=False
    ),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """The same 8 shared VOC images saved in every format (images brought along)."""
    base = tmp_path_factory.mktemp("capabilities")
    voc = copy_voc_subset(SHARED, base / "voc", TINY_STEMS)
    source = load_dataset(voc)
    out = {"voc": voc}
    for name in FORMATS:
        if name != "voc":
            save_dataset(source, base / name, name)
            shutil.copytree(voc / "images", base / name / "images", dirs_exist_ok=True)
            out[name] = base / name
    return out


def copy_of(datasets: dict[str, Path], name: str, tmp_path: Path) -> Path:
    shutil.copytree(datasets[name], tmp_path / name)
    return tmp_path / name


def test_every_format_declares_its_capabilities_and_a_label():
    assert set(EXPECTED) == set(FORMATS)
    for name, module in FORMATS.items():
        assert capabilities(name) == EXPECTED[name], name
        assert dataclasses.is_dataclass(module.CAPABILITIES) and module.CAPABILITIES.__dataclass_params__.frozen
        assert label(name) and label(name) == module.LABEL
        assert callable(module.annotation_files) and callable(module.save_class_list)
        assert hasattr(module, "reread") == module.CAPABILITIES.reread_one_file, name
        assert hasattr(module, "embedded_image") == module.CAPABILITIES.embedded_images, name


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_per_image_files(datasets, name):
    dataset = load_dataset(datasets[name])
    files = {f for r in dataset.images for f in FORMATS[name].annotation_files(dataset, r)}
    if capabilities(name).per_image_files:
        assert len(files) == len(dataset.images)  # one file each
    else:
        assert len(files) < len(dataset.images)  # one file lists many images


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_class_list_file_and_classes_from_labels(datasets, name, tmp_path):
    dataset = load_dataset(datasets[name])
    FORMATS[name].save_class_list(dataset, tmp_path)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    able = capabilities(name)
    if able.classes_from_labels:
        assert written == set()  # the records alone hold the names
    else:
        assert written  # a names file, or every file that lists the categories
    annotation = {f for r in dataset.images for f in FORMATS[name].annotation_files(dataset, r)}
    assert bool(written - annotation) == able.class_list_file  # a file apart from the records


@pytest.mark.parametrize("name", [n for n in sorted(FORMATS) if EXPECTED[n].reread_one_file])
def test_reread_one_file_gives_what_a_full_load_gives(datasets, name, tmp_path):
    root = copy_of(datasets, name, tmp_path)
    dataset = load_dataset(root)
    position = next(i for i, r in enumerate(dataset.images) if len(r) >= 2)
    record = dataset.images[position].copy()
    record.remove_box(0)
    FORMATS[name].save_record(dataset, record)
    again = FORMATS[name].reread(dataset, {position: record.annotation}, scanned=index.scan(root))
    full = load_dataset(root)
    loaded = next(r for r in full.images if r.path == record.path)
    assert list(again) == [position]
    assert again[position].boxes.tolist() == loaded.boxes.tolist() == record.boxes.tolist()
    names = [dataset.class_name(int(c)) for c in again[position].class_ids]
    assert names == [full.class_name(int(c)) for c in loaded.class_ids]  # ids of the class list it was given
    assert again[position].extra == loaded.extra and again[position].box_extra == loaded.box_extra


@pytest.mark.parametrize("name", [n for n in sorted(FORMATS) if EXPECTED[n].classes_from_labels])
def test_reread_refuses_a_class_the_dataset_does_not_have(datasets, name, tmp_path):
    root = copy_of(datasets, name, tmp_path)
    dataset = load_dataset(root)
    position = next(i for i, r in enumerate(dataset.images) if len(r))
    renamed = Dataset(root=root, format=name, classes=["someone else", *dataset.classes[1:]], images=dataset.images)
    record = dataset.images[position]
    record.class_ids[:] = 0
    FORMATS[name].save_record(renamed, record)
    with pytest.raises(ReadError, match="someone else"):
        FORMATS[name].reread(dataset, {position: record.annotation}, scanned=index.scan(root))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_add_images(datasets, name, tmp_path):
    root = copy_of(datasets, name, tmp_path)
    dataset = load_dataset(root)
    before = len(dataset.images)
    data = (root / dataset.images[0].path).read_bytes()
    if not capabilities(name).add_images:
        with pytest.raises(WorkbenchError, match=label(name)):
            catalog.add_images(dataset, {"new.png": data})
        return
    (written,) = catalog.add_images(dataset, {"new.png": data})
    after = load_dataset(root)
    assert len(after.images) == before + 1
    new = next(r for r in after.images if r.path == written)
    assert new.annotation is None and not len(new)


def test_embedded_images_and_what_labelme_opens(tmp_path):
    src = SHARED / "labelme-examples" / "bbox_detection"
    shutil.copytree(src, tmp_path / "lm")
    dataset = load_dataset(tmp_path / "lm", "labelme")
    record = dataset.images[0]
    assert labelme_file(dataset, record) == record.annotation
    record.extra["labelme"]["imageData"] = "aGVsbG8="  # base64 of b"hello"
    assert embedded_image(dataset, record) == b"hello"
    as_voc = Dataset(root=dataset.root, format="voc", classes=dataset.classes, images=dataset.images)
    assert embedded_image(as_voc, record) is None  # VOC cannot embed an image
    assert labelme_file(as_voc, record) == record.path


FORMAT_NAMES = set(FORMATS)
FORMAT_WORDS = ("format", "fmt")


def _names_a_format(node: ast.AST) -> bool:
    """A string constant that is a format's name, or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.lower() in FORMAT_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_format(e) for e in node.elts)
    return False


def _is_a_format(node: ast.AST) -> bool:
    """``x.format``, ``x.NAME``, ``fmt``, ``src_format``, ``fmt.lower()`` ..."""
    if isinstance(node, ast.Call):
        return _is_a_format(node.func.value) if isinstance(node.func, ast.Attribute) else False
    if isinstance(node, ast.Attribute):
        return node.attr == "NAME" or any(w in node.attr.lower() for w in FORMAT_WORDS)
    if isinstance(node, ast.Name):
        return any(w in node.id.lower() for w in FORMAT_WORDS)
    return False


def format_name_tests(source: str) -> list[int]:
    """Lines of ``source`` that compare a format attribute or variable with a format's name."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_a_format(s) for s in sides) and any(_names_a_format(s) for s in sides):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "code",
    [
        'dataset.format == "coco"',
        'fmt in ("yolo", "coco")',
        'module.NAME != "voc"',
        '"labelme" == opened.dataset.format',
        'src_format.lower() == "YOLO"',
    ],
)
def test_the_scan_finds_a_format_name_test(code):
    assert format_name_tests(code) == [1]


def test_the_scan_leaves_other_comparisons_alone():
    assert format_name_tests('weights == "coco"\nx.format == name\nkind in ("coco", "imagenet")') == []


def test_nothing_outside_formats_tests_a_formats_name():
    files = [p for p in (PROJECT / "workbench").rglob("*.py") if "formats" not in p.relative_to(PROJECT).parts]
    files += [*(PROJECT / "pages").rglob("*.py"), PROJECT / "app.py"]
    assert len(files) > 40
    found = [
        f"{p.relative_to(PROJECT)}:{line}" for p in files for line in format_name_tests(p.read_text(encoding="utf-8"))
    ]
    assert found == [], "ask the format (formats.capabilities, CAPABILITIES) instead of testing its name"
