"""CVAT for images 1.1 XML: round trip, what rides along, shapes that are not boxes, bad input,
one record saved inside the single file, and datumaro (the reference reader, in ``.venv-ref``)
writing files we read and reading files we write."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PROJECT, SHARED, TINY_STEMS, copy_voc_subset
from workbench.datasets.convert import convert
from workbench.errors import DatasetReadError
from workbench.formats import cvat, detect_format, load_dataset, save_dataset, voc

REF_PYTHON = PROJECT / ".venv-ref" / "bin" / "python"
needs_ref = pytest.mark.skipif(not REF_PYTHON.is_file(), reason=f"{REF_PYTHON} missing: run scripts/setup.sh --test")

SAMPLE = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id><name>faces</name><size>2</size><mode>annotation</mode>
      <labels>
        <label><name>face</name><type>rectangle</type><attributes>
          <attribute><name>mask</name><mutable>False</mutable><input_type>select</input_type>
            <default_value>no</default_value><values>no\nyes</values></attribute>
        </attributes></label>
        <label><name>hand</name><type>any</type><attributes /></label>
        <label><name>unused</name><type>rectangle</type><attributes /></label>
      </labels>
    </task>
  </meta>
  <image id="3" name="a.png" width="400" height="300">
    <box label="face" source="manual" occluded="1" xtl="10.5" ytl="20" xbr="110.25" ybr="140" z_order="2">
      <attribute name="mask">yes</attribute>
    </box>
    <polygon label="hand" source="manual" occluded="0" points="1.0,2.0;30.0,4.0;12.0,40.0" z_order="1" />
    <box label="face" source="auto" occluded="0" xtl="200" ytl="50" xbr="260" ybr="120" z_order="0" group_id="4" />
    <box label="face" source="manual" occluded="0" xtl="300" ytl="100" xbr="340" ybr="160" rotation="90" z_order="0" />
  </image>
  <image id="5" name="b.png" width="64" height="48" subset="train">
    <points label="hand" source="manual" occluded="0" points="5.0,6.0" z_order="0" />
    <tag label="face" source="manual" />
  </image>
</annotations>
"""


def write(root: Path, text: str = SAMPLE, name: str = "annotations.xml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, encoding="utf-8")
    return root


def test_reads_boxes_labels_and_what_rides_along(tmp_path):
    dataset = load_dataset(write(tmp_path / "c"))
    assert dataset.format == "cvat" and detect_format(dataset.root) == "cvat"
    assert dataset.classes == ["face", "hand", "unused"]  # <meta>'s labels, in their order
    a, b = dataset.images
    assert (a.path, a.width, a.height, b.split) == ("a.png", 400, 300, "train")
    assert a.boxes[:2].tolist() == [[10.5, 20, 110.25, 140], [200, 50, 260, 120]]
    assert [dataset.class_name(int(c)) for c in a.class_ids] == ["face", "face", "face"]
    first = a.box_extra[0]["cvat"]
    assert first["attrib"] == {"source": "manual", "occluded": "1", "z_order": "2"}
    assert first["attributes"] == [["mask", "yes"]]
    assert a.box_extra[1]["cvat"]["attrib"]["group_id"] == "4"
    assert a.extra["cvat"]["attrib"]["id"] == "3" and len(b) == 0
    findings = dataset.extra["cvat"]["findings"]
    assert any("image 1 (a.png): 1 polygon kept" in f for f in findings)
    assert any("image 2 (b.png): 1 points, 1 tag kept" in f for f in findings)
    assert any("box 3: rotated by 90 degrees, read as its enclosing box" in f for f in findings)


def test_rotated_box_is_read_as_its_enclosing_box_and_written_back_rotated(tmp_path):
    dataset = load_dataset(write(tmp_path / "c"))
    # 40 x 60 about (320, 130) turned a quarter: 60 x 40
    np.testing.assert_allclose(dataset.images[0].boxes[2], [290, 110, 350, 150], atol=1e-9)
    save_dataset(dataset, tmp_path / "out")
    (box,) = [b for b in ET.parse(tmp_path / "out" / "annotations.xml").iter("box") if b.get("rotation")]
    assert (box.get("xtl"), box.get("ybr"), box.get("rotation")) == ("300", "160", "90")
    dataset.images[0].boxes[2] = [0, 0, 5, 5]  # moved: written as a plain box
    save_dataset(dataset, tmp_path / "moved")
    assert not [b for b in ET.parse(tmp_path / "moved" / "annotations.xml").iter("box") if b.get("rotation")]


def _image_xml(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [ET.tostring(el, encoding="unicode") for el in root.iter("image")]


def test_round_trip_is_lossless(tmp_path):
    first = load_dataset(write(tmp_path / "c"))
    save_dataset(first, tmp_path / "out")
    again = load_dataset(tmp_path / "out")
    assert again.classes == first.classes
    for a, b in zip(first.images, again.images, strict=True):
        assert (a.path, a.width, a.height, a.split) == (b.path, b.width, b.height, b.split)
        assert a.boxes.tolist() == b.boxes.tolist() and a.class_ids.tolist() == b.class_ids.tolist()
        assert a.box_extra == b.box_extra and a.extra == b.extra
    metas = [d.extra["cvat"]["files"]["annotations.xml"]["meta"] for d in (first, again)]
    assert ET.canonicalize(metas[0], strip_text=True) == ET.canonicalize(metas[1], strip_text=True)
    save_dataset(again, tmp_path / "twice")
    assert (tmp_path / "twice" / "annotations.xml").read_bytes() == (tmp_path / "out" / "annotations.xml").read_bytes()
    # every shape of the source in its place, with its attributes and children
    tags = [[c.tag for c in img] for img in ET.parse(tmp_path / "out" / "annotations.xml").getroot().iter("image")]
    assert tags == [["box", "polygon", "box", "box"], ["points", "tag"]]
    polygon = next(ET.parse(tmp_path / "out" / "annotations.xml").iter("polygon"))
    assert polygon.attrib == {
        "label": "hand",
        "source": "manual",
        "occluded": "0",
        "points": "1.0,2.0;30.0,4.0;12.0,40.0",
        "z_order": "1",
    }


def test_a_new_class_and_a_removed_box_keep_the_other_shapes(tmp_path):
    dataset = load_dataset(write(tmp_path / "c"))
    record = dataset.images[0]
    record.remove_box(0)
    record.add_box([1, 2, 3, 4], dataset.class_id("cat", add=True))
    save_dataset(dataset, tmp_path / "out")
    again = load_dataset(tmp_path / "out")
    assert again.classes == ["face", "hand", "unused", "cat"]
    assert [c.tag for c in next(ET.parse(tmp_path / "out" / "annotations.xml").getroot().iter("image"))] == [
        "box",
        "polygon",
        "box",
        "box",
    ]
    assert again.images[0].boxes[-1].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('width="400" ', ""), r"image 1 \(a.png\): <image> has no width"),
        (('xbr="110.25"', 'xbr="5"'), r"image 1 \(a.png\): box 1: xbr/ybr \(5, 140\) lie before xtl/ytl"),
        (('ytl="20"', 'ytl="twenty"'), "box 1: ytl is 'twenty', not a number"),
        (('xtl="200"', 'xtl="nan"'), "box 2: xtl is 'nan', not a finite number"),
        (('label="face" source="auto"', 'source="auto"'), "box 2: <box> has no label"),
        (('height="48"', 'height="tall"'), "height is 'tall', not a number"),
        (("<annotations>", "<annotations><image "), "malformed XML"),
        (
            ('<?xml version="1.0" encoding="utf-8"?>', '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]>'),
            "refused unsafe XML",
        ),
        (
            ('<?xml version="1.0" encoding="utf-8"?>', '<?xml version="1.0"?><!DOCTYPE annotations SYSTEM "x.dtd">'),
            "refused unsafe XML",
        ),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, change, message):
    root = write(tmp_path / "c", SAMPLE.replace(*change, 1))
    with pytest.raises(DatasetReadError, match=message):
        load_dataset(root, "cvat")
    assert load_dataset(root, "cvat", strict=False).skipped[0].file == "annotations.xml"


def test_an_entity_bomb_is_refused(tmp_path):
    bomb = '<?xml version="1.0"?><!DOCTYPE annotations [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
    root = write(tmp_path / "c", SAMPLE.replace('<?xml version="1.0" encoding="utf-8"?>', bomb).replace("faces", "&b;"))
    with pytest.raises(DatasetReadError, match="refused unsafe XML"):
        load_dataset(root, "cvat")


def test_detection_keeps_cvat_and_voc_apart(tmp_path):
    voc = copy_voc_subset(SHARED, tmp_path / "voc", TINY_STEMS[:2])
    assert detect_format(voc) == "voc" and not cvat.detect(voc)
    flat = tmp_path / "flat"  # labelImg's layout: the XML beside its image
    shutil.copytree(voc / "annotations", flat)
    assert detect_format(flat) == "voc"
    assert detect_format(write(tmp_path / "c")) == "cvat"


def test_save_record_rewrites_one_image_inside_the_file(tmp_path):
    root = write(tmp_path / "c")
    dataset = load_dataset(root)
    # another tool changed image b on disk since the load: a save of image a keeps that
    path = root / "annotations.xml"
    path.write_text(path.read_text().replace('points="5.0,6.0"', 'points="7.0,8.0"'))
    record = dataset.images[0]
    record.boxes[0] = [11, 21, 111, 141]
    assert cvat.save_record(dataset, record) == path
    again = load_dataset(root)
    assert again.images[0].boxes[0].tolist() == [11, 21, 111, 141]
    assert again.images[0].box_extra == dataset.images[0].box_extra
    assert 'points="7.0,8.0"' in path.read_text()
    assert cvat.annotation_files(dataset, record) == ["annotations.xml"]


def _ref(tmp_path: Path, script: str, *args: str) -> str:
    (tmp_path / "ref.py").write_text(script)
    result = subprocess.run(
        [str(REF_PYTHON), str(tmp_path / "ref.py"), *args], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _yolo_subset(tmp_path: Path, count: int = 4) -> Path:
    """A few images and labels of the shared YOLO set, in the layout datumaro's importer reads."""
    src, dst = SHARED / "macwinwin-yolo", tmp_path / "yolo"
    (dst / "images").mkdir(parents=True)
    (dst / "labels").mkdir()
    for label in sorted((src / "labels").glob("*.txt"))[:count]:
        shutil.copy2(label, dst / "labels")
        (image,) = (src / "images").glob(f"{label.stem}.*")
        shutil.copy2(image, dst / "images")
    shutil.copy2(src / "classes.txt", dst / "classes.txt")
    shutil.copy2(src / "classes.txt", dst / "obj.names")
    return dst


def _by_stem(dataset) -> dict[str, list[tuple[str, list[float]]]]:
    return {
        Path(r.path).stem: [(dataset.class_name(int(c)), b) for b, c in zip(r.boxes.tolist(), r.class_ids)]
        for r in dataset.images
    }


@needs_ref
def test_we_read_what_datumaro_writes(tmp_path):
    source = _yolo_subset(tmp_path)
    _ref(
        tmp_path,
        "import sys, datumaro as dm\n"
        "dm.Dataset.import_from(sys.argv[1], 'yolo').export(sys.argv[2], 'cvat', save_media=True)\n",
        str(source),
        str(tmp_path / "dm"),
    )
    ours = load_dataset(tmp_path / "dm")
    assert ours.format == "cvat" and ours.skipped == []
    expected, got = _by_stem(load_dataset(source)), _by_stem(ours)
    assert got.keys() == expected.keys() and sum(map(len, got.values())) > 5
    for stem, boxes in expected.items():
        assert [n for n, _ in got[stem]] == [n for n, _ in boxes], stem
        np.testing.assert_allclose([b for _, b in got[stem]], [b for _, b in boxes], atol=0.006)  # datumaro: %.2f


READ = """import json, sys
import datumaro as dm
ds = dm.Dataset.import_from(sys.argv[1], "cvat")
labels = ds.categories()[dm.AnnotationType.label]
print(json.dumps({
    item.id: [
        {"label": labels[a.label].name, "bbox": a.get_bbox(), "attributes": a.attributes, "z_order": a.z_order}
        for a in item.annotations if a.type == dm.AnnotationType.bbox
    ]
    for item in ds
}))
"""


@needs_ref
def test_datumaro_reads_what_we_write(tmp_path):
    source = _yolo_subset(tmp_path)
    convert(source, tmp_path / "ours", "cvat")
    theirs = json.loads(_ref(tmp_path, READ, str(tmp_path / "ours")))
    expected = _by_stem(load_dataset(source))
    assert theirs.keys() == expected.keys()
    for stem, boxes in expected.items():
        assert [a["label"] for a in theirs[stem]] == [n for n, _ in boxes]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in theirs[stem])]
        np.testing.assert_allclose(xyxy, [b for _, b in boxes], atol=0.006)  # datumaro keeps 2 decimals


@needs_ref
def test_datumaro_reads_the_attributes_we_keep(tmp_path):
    dataset = load_dataset(write(tmp_path / "c"))
    out = tmp_path / "out"
    save_dataset(dataset, out)
    (out / "images").mkdir()
    for record in dataset.images:  # datumaro wants the images
        (out / "images" / record.path).write_bytes(b"")
    theirs = json.loads(_ref(tmp_path, READ, str(out)))
    face = theirs["a"][0]
    assert face["label"] == "face" and face["z_order"] == 2
    assert face["attributes"]["occluded"] is True and face["attributes"]["mask"] == "yes"
    assert face["bbox"] == [10.5, 20.0, 99.75, 120.0]
    assert [a["bbox"] for a in theirs["a"][1:2]] == [[200.0, 50.0, 60.0, 70.0]]


def test_voc_detection_matches_the_annotation_tag_only(tmp_path):
    """VOC's ``<annotation>`` root (also ``<annotation verified="yes">``, labelImg's) and never
    CVAT's ``<annotations>``: each folder is one format, with no tie-break in ``detect_format``."""
    cvat_root = write(tmp_path / "c")
    assert not voc.detect(cvat_root) and detect_format(cvat_root) == "cvat"
    labelimg = copy_voc_subset(SHARED, tmp_path / "v", TINY_STEMS[:1])
    xml = next((labelimg / "annotations").glob("*.xml"))
    xml.write_text(xml.read_text().replace("<annotation>", '<annotation verified="yes">', 1))
    assert voc.detect(labelimg) and detect_format(labelimg) == "voc"
    xml.write_text(xml.read_text().replace('<annotation verified="yes">', "<annotation\n>", 1))
    assert voc.detect(labelimg)


def test_cvat_detection_opens_a_few_files_of_a_big_folder(tmp_path, monkeypatch):
    voc_root = copy_voc_subset(SHARED, tmp_path / "voc", TINY_STEMS[:1])
    xml = next((voc_root / "annotations").glob("*.xml"))
    for i in range(200):
        shutil.copy(xml, voc_root / "annotations" / f"copy_{i:03d}.xml")
    opened = []
    real = cvat._is_cvat
    monkeypatch.setattr(cvat, "_is_cvat", lambda path: opened.append(path) or real(path))
    assert not cvat.detect(voc_root) and len(opened) <= cvat.DETECT_PER_FOLDER
    opened.clear()
    write(voc_root / "labels", name="zz_task.xml")  # a CVAT file one folder down is still found
    assert cvat.detect(voc_root)
