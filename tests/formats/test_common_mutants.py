"""Tests written against the mutants mutmut left alive in workbench.formats.common
(docs/mutation.md): the XML parser's limits, image look-up by name, stem and folder, the
annotation path of a new image, class ids of labels, bounded folder walks."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import DatasetReadError, ReadError
from workbench.formats import common
from workbench.formats.common import ImageIndex


def test_xml_drops_comments_and_instructions_and_keeps_libxml2_limits():
    root = common.parse_xml(b"<?xml version='1.0'?><a><!-- c --><?pi x?><b/>t</a>", "f.xml")
    assert [c.tag for c in root] == ["b"] and len(root) == 1
    with pytest.raises(ReadError, match=r"^d\.xml: malformed XML: Excessive depth"):
        common.parse_xml(b"<a>" * 300 + b"</a>" * 300, "d.xml")  # no huge-tree mode
    with pytest.raises(ReadError) as e:
        common.parse_xml(b"<a>&undefined;</a>", "f.xml")
    assert str(e.value).startswith("f.xml: malformed XML: Entity 'undefined' not defined")
    with pytest.raises(ReadError) as e:
        common.parse_xml("<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>".encode("utf-16-le"), "u.xml")
    assert str(e.value) == "u.xml: refused unsafe XML (DTDForbidden)"
    with pytest.raises(ReadError) as e:
        common.parse_xml(b"<!DOCTYPE a><a/>", "f.xml")
    assert str(e.value) == "f.xml: refused unsafe XML (DTDForbidden)"


def test_class_ids_of():
    assert common.class_ids_of(["b", "a", "b"], ["a", "b"], "f") == [1, 0, 1]
    with pytest.raises(ReadError) as e:
        common.class_ids_of(["a", "x", "y"], ["a"], "f.xml")
    assert str(e.value) == "f.xml: label 'x' is not one of the dataset's classes"


@pytest.mark.parametrize(
    ("image", "folder", "suffix", "expected"),
    [
        ("images/train/a.b.jpg", "labels", ".txt", "labels/train/a.b.txt"),
        ("JPEGImages/x.png", "Annotations", ".xml", "Annotations/x.xml"),
        ("IMGS/x.png", "ann", ".json", "ann/x.json"),
        ("images.jpg", "labels", ".txt", "labels/images.txt"),
        ("train/images/a.jpg", "labels", ".txt", "labels/train/images/a.txt"),
        ("photos/a", "labels", ".txt", "labels/photos/a.txt"),
    ],
)
def test_default_annotation_path(image, folder, suffix, expected):
    assert common.default_annotation_path(image, folder, suffix) == expected


def index(*paths: str) -> ImageIndex:
    return ImageIndex(Path("/r"), list(paths))


def test_find_by_name_then_stem_then_folder():
    ix = index("train/a.jpg", "val/a.jpg", "x/val/b.png", "c.jpg", "d/c.png")
    assert ix.find(name="c.jpg") == "c.jpg"
    assert ix.find(name="zz.jpg") is None and ix.find() is None and ix.find(stem="zz") is None
    assert ix.find(name="zz.jpg", stem="b") == "x/val/b.png"  # the name is not there: by stem
    assert ix.find(name="c.jpg", stem="a") == "c.jpg"  # the name wins over the stem
    assert ix.find(stem="c") == "c.jpg" and ix.find(stem="c", near="d") == "d/c.png"
    assert ix.find(name="a.jpg") == "train/a.jpg"  # a tie: the first
    assert ix.find(name="a.jpg", near="val") == "val/a.jpg"
    assert ix.find(name="a.jpg", near="/val/") == "val/a.jpg"
    assert ix.find(name="a.jpg", near="x/train") == "train/a.jpg"
    assert ix.find(stem="a.jpg") is None
    assert index("b/f.jpg", "a/val/f.jpg").find(name="f.jpg", near="val") == "a/val/f.jpg"
    assert "c.jpg" in ix and "c" not in ix
    assert ix.by_name["a.jpg"] == ["train/a.jpg", "val/a.jpg"] and ix.by_stem["b"] == ["x/val/b.png"]


def test_index_from_scan_is_the_walk_order(tmp_path):
    files = ["b/x10.jpg", "b/x2.jpg", "a/z/q.png", "a-b/r.jpg", "a/y.jpg", "notes.txt", "top.JPG", "b/c/1.png"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    walked = ImageIndex(tmp_path)
    scanned = ImageIndex.from_scan(tmp_path, reversed(files))
    assert scanned.paths == walked.paths
    assert walked.paths == ["top.JPG", "a/y.jpg", "a/z/q.png", "a-b/r.jpg", "b/x2.jpg", "b/x10.jpg", "b/c/1.png"]
    assert scanned.root == tmp_path
    # the scan is taken as it is: the folder is not walked again
    assert ImageIndex.from_scan(tmp_path, ["gone/x.jpg", "a/y.jpg"]).paths == ["a/y.jpg", "gone/x.jpg"]


def test_walk_has_stops_at_the_limit_and_skips_hidden(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "yes.txt").write_text("")
    assert not common.walk_has(tmp_path, lambda n: n == "yes.txt")
    for name in ["a", "b", "c"]:
        (tmp_path / name).write_text("")
    assert common.walk_has(tmp_path, lambda n: n == "c")
    assert not common.walk_has(tmp_path, lambda n: False)
    order = []
    found = common.walk_has(tmp_path, lambda n: (order.append(n), len(order) == 3)[1], limit=2)
    assert not found and len(order) == 2


def test_sorted_natural_and_small_helpers():
    assert common.sorted_natural(["a10", "a9", "B1"]) == ["a9", "a10", "B1"]
    assert common.number(2.0) == 2 and common.number(1.0000000001) == 1 and common.number(0.1234567) == 0.123457
    assert common.number_text(3.5) == "3.5" and common.number_text(4.0) == "4"
    with pytest.raises(ValueError, match="coordinate inf is not finite"):
        common.number(float("inf"))
    with pytest.raises(ReadError) as e:
        common.to_int(None, "f", "'width'", "object 2")
    assert str(e.value) == "f: object 2: 'width' is None, not a number"
    assert common.to_int("12.7", "f", "w") == 12
    assert common.split_of("images/VAL/a.jpg") == "VAL" and common.split_of("a/b/train/x.jpg") is None
    assert common.split_of("train") is None


def test_progress_and_error_collection(tmp_path):
    seen = []
    assert list(common.progress(iter("ab"), None, lambda i, n: seen.append((i, n)))) == ["a", "b"]
    assert seen == [(1, 0), (2, 0)]
    assert list(common.progress("ab", 2, None)) == ["a", "b"]
    errors = common.ErrorCollector(tmp_path, strict=False)

    def bad():
        raise ReadError("x.xml", "no")

    assert errors.run(bad) is None and errors.run(lambda: 5) == 5
    assert [str(e) for e in errors.finish()] == ["x.xml: no"]
    strict = common.ErrorCollector(tmp_path, strict=True)
    assert strict.finish() == []
    strict.run(bad)
    with pytest.raises(DatasetReadError) as e:
        strict.finish()
    assert e.value.root == str(tmp_path)
    assert common.size_from_header(tmp_path, "missing.jpg") == (0, 0)


def test_the_parser_itself_is_hardened(tmp_path):
    """``_XML_PARSER`` is built once at import; the options of a fresh ``_xml_parser()`` are
    checked here on documents that ``parse_xml`` would refuse before they mattered."""
    from lxml import etree

    (tmp_path / "a.dtd").write_text('<!ATTLIST a k CDATA "default">')
    parser = common._xml_parser()
    external = etree.fromstring(f'<!DOCTYPE a SYSTEM "{tmp_path}/a.dtd"><a/>'.encode(), parser)
    assert external.get("k") is None  # the DTD was not loaded
    internal = etree.fromstring(b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', parser)
    assert internal.text is None and len(internal) == 1  # the entity was not expanded
    plain = etree.fromstring(b"<a><!--c--><?p x?><b/></a>", parser)  # no DTD: no validation error
    assert [c.tag for c in plain] == ["b"]
    with pytest.raises(etree.XMLSyntaxError, match="Excessive depth"):
        etree.fromstring(b"<a>" * 300 + b"</a>" * 300, parser)
