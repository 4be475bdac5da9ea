"""Against the VOC mutants mutmut left alive (docs/mutation.md): attributes and text of kept
elements written back, where ``save`` puts each XML (its own file, else ``annotations/...``),
which images it skips, its progress, and ``read_record`` resolving an image as ``load`` does."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from tests.conftest import SHARED, copy_voc_subset, write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.formats import coco, voc

STEMS = ["maksssksksss0", "maksssksksss1", "maksssksksss2"]


def _xml_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.xml"))


def test_attributes_and_text_of_kept_elements_are_written_back(tmp_path):
    write_image(tmp_path / "images" / "a.png", 40, 30)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text(
        '<annotation><filename>a.png</filename><source><database lang="en">Kaggle</database></source>'
        '<size><width>40</width><height>30</height></size><object><name>face</name><pose kind="cam">Left</pose>'
        '<attributes kind="cvat"><attribute>x</attribute></attributes>'
        "<bndbox><xmin>2</xmin><ymin>3</ymin><xmax>9</xmax><ymax>8</ymax></bndbox></object></annotation>"
    )
    out = tmp_path / "out"
    voc.save(voc.load(tmp_path), out)
    root = ET.parse(out / "annotations" / "a.xml").getroot()
    database = root.find("source/database")
    assert (database.attrib, database.text) == ({"lang": "en"}, "Kaggle")
    pose = root.find("object/pose")
    assert (pose.attrib, pose.text) == ({"kind": "cam"}, "Left")
    attributes = root.find("object/attributes")
    assert attributes.attrib == {"kind": "cvat"} and attributes.find("attribute").text == "x"


def test_a_voc_dataset_is_saved_to_its_own_xml_files(tmp_path):
    """PASCAL's layout (``Annotations/``, ``JPEGImages/``): no ``annotations/`` copy appears."""
    src = copy_voc_subset(SHARED, tmp_path / "copy", STEMS)
    root = tmp_path / "pascal"
    shutil.copytree(src / "annotations", root / "Annotations")
    shutil.copytree(src / "images", root / "JPEGImages")
    before = {rel: (root / rel).read_bytes() for rel in _xml_files(root)}
    dataset = voc.load(root)
    assert [r.annotation for r in dataset.images] == [f"Annotations/{s}.xml" for s in STEMS]
    voc.save(dataset, root)
    assert _xml_files(root) == sorted(before)
    again = voc.load(root)
    assert [(r.path, r.boxes.tolist()) for r in again.images] == [(r.path, r.boxes.tolist()) for r in dataset.images]


def test_another_formats_dataset_is_saved_under_annotations(tmp_path):
    """The shared COCO split, converted: one ``annotations/<folders>/<stem>.xml`` per image."""
    root = tmp_path / "coco"
    shutil.copytree(SHARED / "roboflow-coco" / "test", root / "test", copy_function=shutil.copyfile)
    dataset = coco.load(root)
    assert all(r.annotation for r in dataset.images)  # the JSON: not where an XML goes
    out = tmp_path / "out"
    voc.save(dataset, out)
    expected = sorted(f"annotations/test/{r.path.rsplit('/', 1)[1].rsplit('.', 1)[0]}.xml" for r in dataset.images)
    assert _xml_files(out) == expected and len(expected) == len(dataset.images)
    assert [p.name for p in out.iterdir()] == ["annotations"]


def test_save_skips_only_bare_images_of_a_voc_dataset(tmp_path):
    """An image that had no XML and has no box gets no file, wherever it is in the list; an
    image whose boxes were all deleted keeps its XML (its size and fields), without objects."""
    root = copy_voc_subset(SHARED, tmp_path / "voc", STEMS)
    loaded = voc.load(root)
    first, *rest = loaded.images
    emptied = ImageRecord(
        path=first.path, width=first.width, height=first.height, annotation=first.annotation, extra=first.extra
    )
    bare = ImageRecord(path="images/new.png", width=20, height=10)
    dataset = Dataset(root=root, format="voc", classes=loaded.classes, images=[bare, emptied, *rest])
    out = tmp_path / "out"
    voc.save(dataset, out)
    assert _xml_files(out) == [f"annotations/{s}.xml" for s in STEMS]
    written = ET.parse(out / emptied.annotation).getroot()
    assert written.find("object") is None and written.find("size/width").text == str(first.width)
    converted = Dataset(root=root, format="coco", classes=[], images=[bare])
    voc.save(converted, tmp_path / "converted")  # from another format: every image gets its XML
    assert _xml_files(tmp_path / "converted") == ["annotations/new.xml"]


def test_save_reports_progress_over_every_image(tmp_path):
    root = copy_voc_subset(SHARED, tmp_path / "voc", STEMS)
    dataset = voc.load(root)
    calls = []
    voc.save(dataset, tmp_path / "out", on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_read_record_picks_the_image_of_the_xmls_split_as_load_does(tmp_path):
    """``annotations/val/a.xml`` names ``a.png``, found in ``images/val/`` and, as a stray copy,
    in ``annotations/train/``: the folder below ``annotations/`` decides, not ``annotations``."""
    for rel in ("images/val/a.png", "annotations/train/a.png"):
        write_image(tmp_path / rel, 40, 30)
    xml = tmp_path / "annotations" / "val" / "a.xml"
    xml.parent.mkdir()
    xml.write_text(
        "<annotation><filename>a.png</filename><size><width>40</width><height>30</height></size></annotation>"
    )
    loaded = next(r for r in voc.load(tmp_path).images if r.annotation == "annotations/val/a.xml")
    assert loaded.path == "images/val/a.png"
    record = voc.read_record(tmp_path, xml)
    assert (record.path, record.split, record.annotation) == (loaded.path, loaded.split, loaded.annotation)
    np.testing.assert_array_equal(record.boxes, loaded.boxes)
