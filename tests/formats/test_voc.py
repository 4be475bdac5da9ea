from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as DefusedET

from tests.conftest import copy_voc_subset, write_image
from workbench.annotations import Dataset, ImageRecord
from workbench.errors import DatasetReadError, ReadError
from workbench.formats import voc


def _xml(objects: str = "", size: str = "<size><width>40</width><height>30</height><depth>3</depth></size>") -> str:
    return f"<annotation><folder>images</folder><filename>a.png</filename>{size}{objects}</annotation>"


def _obj(name: str, box: tuple, extra: str = "") -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{extra}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def _dataset(tmp_path: Path, xml: str, name: str = "a") -> Path:
    write_image(tmp_path / "images" / f"{name}.png", 40, 30)
    (tmp_path / "annotations").mkdir(exist_ok=True)
    (tmp_path / "annotations" / f"{name}.xml").write_text(xml)
    return tmp_path


@pytest.mark.parametrize(
    ("objects", "boxes", "classes"),
    [
        ("", np.zeros((0, 4)), []),
        # 1-based inclusive: the whole 40 x 30 image is xmin=1, xmax=40 -> [0, 0, 40, 30]
        (_obj("face", (1, 1, 40, 30)), [[0, 0, 40, 30]], ["face"]),
        (_obj("a", (11, 6, 20, 15)) + _obj("b", (2, 3, 4, 5)), [[10, 5, 20, 15], [1, 2, 4, 5]], ["a", "b"]),
        (_obj("a", ("10.5", "3.25", "20.75", "9")), [[9.5, 2.25, 20.75, 9]], ["a"]),
    ],
)
def test_load_converts_one_based_inclusive(tmp_path, objects, boxes, classes):
    ds = voc.load(_dataset(tmp_path, _xml(objects)))
    (record,) = ds.images
    assert record.path == "images/a.png"
    assert (record.width, record.height) == (40, 30)
    np.testing.assert_array_equal(record.boxes, np.asarray(boxes, dtype=float).reshape(-1, 4))
    assert [ds.classes[i] for i in record.class_ids] == classes


def test_fields_are_kept_and_written_back(tmp_path):
    objects = _obj(
        "face",
        (5, 6, 7, 8),
        "<pose>Left</pose><truncated>1</truncated><occluded>1</occluded><difficult>1</difficult>"
        "<attributes><attribute><name>x</name><value>1</value></attribute>"
        "<attribute><name>y</name><value>2</value></attribute></attributes>",
    )
    xml = _xml(objects).replace(
        "<folder>images</folder>", "<folder>images</folder><source><database>Mine</database></source><custom>k</custom>"
    )
    root = _dataset(tmp_path / "src", xml)
    ds = voc.load(root)
    fields = ds.images[0].box_extra[0]["voc"]
    assert (fields["pose"], fields["truncated"], fields["occluded"], fields["difficult"]) == ("Left", "1", "1", "1")
    out = tmp_path / "out"
    voc.save(ds, out)
    before = voc._value(DefusedET.parse(root / "annotations" / "a.xml").getroot())
    after = voc._value(DefusedET.parse(out / "annotations" / "a.xml").getroot())
    assert after == before


def test_round_trip_and_save_never_mutates(tmp_path):
    root = _dataset(tmp_path / "src", _xml(_obj("a", (11, 6, 20, 15)) + _obj("b", ("2.5", 3, 4, 5))))
    ds = voc.load(root)
    snapshot = ds.copy()
    voc.save(ds, tmp_path / "out")
    assert ds.images[0].same_boxes(snapshot.images[0]) and ds.images[0].extra == snapshot.images[0].extra
    assert ds.images[0].box_extra == snapshot.images[0].box_extra
    again = voc.load(tmp_path / "out")
    assert again.classes == ds.classes
    assert again.images[0].same_boxes(ds.images[0])  # exact: VOC stores the numbers as written


def test_writes_new_records_with_defaults(tmp_path):
    record = ImageRecord(path="images/x.jpg", width=50, height=40, boxes=[[0, 0, 50, 40]], class_ids=[0])
    ds = Dataset(root=tmp_path, format="coco", classes=["cat"], images=[record])
    text = voc.to_xml(record, ds).decode()
    assert "<xmin>1</xmin>" in text and "<xmax>50</xmax>" in text and "<name>cat</name>" in text
    assert "<difficult>0</difficult>" in text and "<filename>x.jpg</filename>" in text


def test_labelimg_layout_xml_beside_image_and_image_sets(tmp_path):
    write_image(tmp_path / "JPEGImages" / "001.jpg", 20, 20)
    write_image(tmp_path / "JPEGImages" / "002.jpg", 20, 20)
    (tmp_path / "Annotations").mkdir()
    for stem in ("001", "002"):
        xml = _xml(_obj("a", (1, 1, 5, 5))).replace("a.png", f"{stem}.jpg").replace("images", "VOC2007")
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("001\n")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("002\n")
    ds = voc.load(tmp_path)
    assert {r.path: r.split for r in ds.images} == {"JPEGImages/001.jpg": "train", "JPEGImages/002.jpg": "val"}

    beside = tmp_path / "beside"
    write_image(beside / "photo.jpg", 20, 20)
    (beside / "photo.xml").write_text(_xml(_obj("a", (1, 1, 5, 5))).replace("a.png", "photo.jpg"))
    assert [r.path for r in voc.load(beside).images] == ["photo.jpg"]


def test_read_record_reads_one_file_as_load_does(tmp_path):
    root = _dataset(tmp_path, _xml(_obj("b", (1, 1, 5, 5), "<pose>Left</pose>") + _obj("a", (2, 3, 40, 30))))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("a\n")
    loaded = voc.load(root)
    record = voc.read_record(root, root / "annotations" / "a.xml")
    assert record.extra.pop("_names") == ["b", "a"] and record.class_ids.tolist() == [0, 0]
    record.class_ids = np.array([loaded.classes.index(n) for n in ("b", "a")])
    expected = loaded.images[0]
    assert record.same_boxes(expected) and (record.path, record.split, record.annotation) == (
        "images/a.png",
        "val",
        "annotations/a.xml",
    )
    assert record.box_extra == expected.box_extra and record.extra == expected.extra


def test_image_without_xml_is_an_unannotated_record(tmp_path):
    root = _dataset(tmp_path, _xml(_obj("a", (1, 1, 5, 5))))
    write_image(root / "images" / "b.png", 10, 10)
    ds = voc.load(root)
    extra = ds.record("images/b.png")
    assert extra.annotation is None and len(extra) == 0 and (extra.width, extra.height) == (10, 10)
    voc.save(ds, root)
    assert not (root / "annotations" / "b.xml").exists()  # saving back adds no file


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<annotation><object>", "malformed XML"),
        ("<notvoc/>", "expected <annotation>"),
        (_xml("<object><name>a</name></object>"), "object 1: missing <bndbox>"),
        (_xml(_obj("a", (1, 1, 2, 2)) + "<object><bndbox/></object>"), "object 2: missing <name>"),
        (_xml(_obj("a", (1, "one", 2, 2))), "object 1: <ymin> is 'one', not a number"),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x"><!ENTITY f "&e;&e;">]><annotation>&f;</annotation>',
            "refused unsafe XML",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>',
            "refused unsafe XML",
        ),
        (_xml().replace("a.png", "../../../etc/passwd"), "escapes the dataset root"),
        (_xml().replace("a.png", "/etc/passwd"), "not relative to the dataset root"),
    ],
)
def test_bad_files_name_file_and_record(tmp_path, xml, message):
    root = _dataset(tmp_path, xml)
    with pytest.raises(DatasetReadError) as info:
        voc.load(root)
    (error,) = info.value.errors
    assert error.file == "annotations/a.xml"
    assert message in str(error)
    lenient = voc.load(root, strict=False)
    assert [e.file for e in lenient.skipped] == ["annotations/a.xml"]


def test_every_bad_file_is_listed(tmp_path):
    root = _dataset(tmp_path, "<broken")
    _dataset(tmp_path, _xml(_obj("a", (1, 1, 2, 2))), name="good")
    _dataset(tmp_path, "<annotation><object><name>x</name></object></annotation>", name="bad2")
    with pytest.raises(DatasetReadError) as info:
        voc.load(root)
    assert sorted(e.file for e in info.value.errors) == ["annotations/a.xml", "annotations/bad2.xml"]


def test_shared_voc_counts_and_round_trip(shared, tmp_path):
    ds = voc.load(shared / "andrewmvd-voc")
    # ../shared/datasets/README.md: 689 images, 3179 boxes: with_mask 2482, without_mask 592,
    # mask_weared_incorrect 105; no image and no XML missing.
    assert len(ds) == 689 and ds.num_boxes == 3179
    assert ds.class_counts() == {"without_mask": 592, "with_mask": 2482, "mask_weared_incorrect": 105}
    assert all(r.annotation for r in ds.images) and not ds.skipped
    # 39 boxes under 36 px² as the README measures them, (xmax - xmin) * (ymax - ymin); in our
    # 0-based exclusive boxes that is (w - 1) * (h - 1).
    boxes = np.concatenate([r.boxes for r in ds.images])
    assert int((((boxes[:, 2] - boxes[:, 0] - 1) * (boxes[:, 3] - boxes[:, 1] - 1)) < 36).sum()) == 39
    assert max(len(r) for r in ds.images) == 115 and ds.record("images/maksssksksss603.png").boxes.shape == (115, 4)

    out = tmp_path / "out"
    voc.save(ds, out)
    for record in ds.images:
        before = voc._value(DefusedET.parse(shared / "andrewmvd-voc" / record.annotation).getroot())
        after = voc._value(DefusedET.parse(out / record.annotation).getroot())
        assert after == before, record.annotation
    shutil.copytree(
        shared / "andrewmvd-voc" / "images", out / "images", copy_function=lambda s, d: Path(d).symlink_to(s)
    )
    again = voc.load(out)
    assert [r.path for r in again.images] == [r.path for r in ds.images]
    assert all(a.same_boxes(b) for a, b in zip(again.images, ds.images))


def test_subset_copy_helper_keeps_layout(shared, tmp_path):
    root = copy_voc_subset(shared, tmp_path / "voc", ["maksssksksss0", "maksssksksss1"])
    ds = voc.load(root)
    assert [r.path for r in ds.images] == ["images/maksssksksss0.png", "images/maksssksksss1.png"]


_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]><annotation><folder>&lol9;</folder></annotation>"
)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (_LAUGHS, "refused unsafe XML"),  # billion laughs: nothing is expanded, the DOCTYPE is refused
        ('<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><annotation>&x;</annotation>', "refused unsafe XML"),
        ('<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><annotation/>', "refused unsafe XML"),
        ('<!DOCTYPE annotation SYSTEM "http://127.0.0.1:9/voc.dtd"><annotation/>', "refused unsafe XML"),
        ("<!DOCTYPE annotation><annotation/>", "refused unsafe XML"),  # any DTD, as defusedxml's forbid_dtd
        ("<annotation><folder>&x;</folder></annotation>", "malformed XML"),  # an entity never declared
        ("<annotation><folder>a</folder>", "malformed XML"),
        ("", "malformed XML"),
    ],
)
def test_parse_refuses_dtds_and_entities(xml, message):
    with pytest.raises(ReadError) as info:
        voc.parse(xml.encode(), "a.xml")
    assert info.value.file == "a.xml" and message in str(info.value)


def test_parse_reads_what_the_stdlib_reads(shared):
    """Every field of every shared file, and of a file with comments, processing instructions,
    attributes, CDATA and a non-UTF-8 encoding, as the stdlib (defusedxml) parser reads them."""

    def stdlib(data: bytes) -> tuple:
        root = DefusedET.fromstring(data, forbid_dtd=True)
        fields = {c.tag: voc._value(c) for c in root if c.tag != "object"}
        return fields, [voc._value(c) for c in root if c.tag == "object"]

    odd = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><!-- made by hand --><annotation><?pi x?>'
        '<folder a="1">images<!-- c --></folder><filename><![CDATA[caf\xe9.png]]></filename>'
        "<source><database>d</database><database>e</database></source>"
        + _obj("a", (1, 2, 3, 4), "<part><name>hand</name></part>")
        + "</annotation>"
    ).encode("latin-1")
    files = sorted((shared / "andrewmvd-voc" / "annotations").glob("*.xml"))[:200]
    for data in [odd, *(p.read_bytes() for p in files)]:
        assert voc.parse(data, "a.xml") == stdlib(data)
