from __future__ import annotations

import itertools
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from tests.conftest import copy_voc_subset
from workbench.datasets import convert as convert_module
from workbench.datasets.convert import convert
from workbench.errors import DatasetReadError
from workbench.formats import FORMATS, load_dataset, voc

WORKBENCH = str(Path(sys.executable).parent / "workbench")
STEMS = ["maksssksksss0", "maksssksksss1", "maksssksksss231", "maksssksksss12"]
FLOAT_FORMATS = {"coco", "labelme", "yolo"}  # VOC stores what it is given too, but YOLO rounds


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([WORKBENCH, *args], capture_output=True, text=True, timeout=300, **kwargs)


def _boxes_by_image(ds) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    return {r.path: [(ds.class_name(int(c)), tuple(b)) for b, c in zip(r.boxes, r.class_ids)] for r in ds.images}


def _assert_same(a, b, atol: float) -> None:
    left, right = _boxes_by_image(a), _boxes_by_image(b)
    assert left.keys() == right.keys()
    for path in left:
        assert [n for n, _ in left[path]] == [n for n, _ in right[path]], path
        np.testing.assert_allclose(
            np.array([b for _, b in left[path]]).reshape(-1, 4),
            np.array([b for _, b in right[path]]).reshape(-1, 4),
            atol=atol,
            rtol=0,
        )


@pytest.fixture(scope="module")
def source(shared, tmp_path_factory) -> Path:
    root = copy_voc_subset(shared, tmp_path_factory.mktemp("src"), STEMS)
    # A float box, so that the formats that store floats must keep it.
    xml = root / "annotations" / "maksssksksss0.xml"
    xml.write_text(xml.read_text().replace("<xmin>79</xmin>", "<xmin>79.25</xmin>"))
    return root


@pytest.mark.parametrize(("first", "second"), list(itertools.product(sorted(FORMATS), repeat=2)))
def test_any_to_any(source, tmp_path, first, second):
    original = load_dataset(source)
    convert(source, tmp_path / "a", first)
    convert(tmp_path / "a", tmp_path / "b", second)
    for folder, fmt in ((tmp_path / "a", first), (tmp_path / "b", second)):
        ds = load_dataset(folder)  # detection finds exactly the written format
        assert ds.format == fmt
    exact = not ({first, second} & {"yolo"})
    _assert_same(original, load_dataset(tmp_path / "b"), atol=0.0 if exact else 1e-3)


def test_convert_cli_to_coco_validates_in_pycocotools(source, tmp_path):
    result = run("convert", str(source), "--to", "coco", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "wrote coco" in result.stdout and result.stderr == ""  # no progress bar off a terminal
    doc = json.loads((tmp_path / "out" / "annotations.json").read_text())
    for image in doc["images"]:
        assert (tmp_path / "out" / image["file_name"]).is_file()
    ids = [a["id"] for a in doc["annotations"]]
    assert len(ids) == len(set(ids)) and all({"area", "iscrowd"} <= set(a) for a in doc["annotations"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api = COCO(str(tmp_path / "out" / "annotations.json"))
    assert len(api.getAnnIds()) == load_dataset(source).num_boxes


def test_convert_with_splits_writes_one_file_per_split(shared, tmp_path):
    result = run("convert", str(shared / "roboflow-coco"), "--to", "coco", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 703 and summary["boxes"] == 3215
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["test.json", "train.json", "valid.json"]
    for split, count in (("train", 520), ("valid", 110), ("test", 73)):
        doc = json.loads((tmp_path / f"{split}.json").read_text())
        assert len(doc["images"]) == count
        assert all((tmp_path / i["file_name"]).is_file() for i in doc["images"])


def test_bad_files_fail_the_conversion_and_skip_bad_converts_the_rest(source, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "annotations" / "maksssksksss1.xml").write_text("<annotation><object>")
    (broken / "annotations" / "maksssksksss12.xml").write_text(
        "<annotation><object><name>x</name></object></annotation>"
    )
    result = run("convert", str(broken), "--to", "yolo", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "annotations/maksssksksss1.xml: malformed XML" in result.stderr
    assert "annotations/maksssksksss12.xml: object 1: missing <bndbox>" in result.stderr
    assert "--skip-bad" in result.stderr
    assert not (tmp_path / "out" / "labels").exists()

    result = run("convert", str(broken), "--to", "yolo", "--out", str(tmp_path / "out"), "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 bad file(s)" in result.stderr
    written = sorted(p.name for p in (tmp_path / "out" / "labels").glob("*.txt"))
    assert written == ["maksssksksss0.txt", "maksssksksss231.txt"]


def test_progress_bar_on_a_terminal_only(source, tmp_path):
    """On a terminal the conversion shows a progress bar; with --json it stays quiet."""

    def on_tty(*args: str) -> str:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([WORKBENCH, *args], stdin=follower, stdout=follower, stderr=follower, close_fds=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=120)
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    shown = on_tty("convert", str(source), "--to", "coco", "--out", str(tmp_path / "a"))
    assert "read" in shown and "file/s" in shown  # tqdm's bar
    quiet = on_tty("convert", str(source), "--to", "coco", "--out", str(tmp_path / "b"), "--json")
    assert "file/s" not in quiet and json.loads(quiet)["boxes"] == load_dataset(source).num_boxes


def test_unknown_folder_is_a_clear_error(tmp_path):
    result = run("convert", str(tmp_path), "--to", "coco", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "annotations found; choose the format by hand" in result.stderr
    assert all(
        name in result.stderr.split("annotations found")[0] for name in ("LabelMe", "YOLO", "Pascal VOC", "COCO")
    )
    result = run("check", str(tmp_path / "missing"))
    assert result.returncode == 1 and "not a folder" in result.stderr


def test_a_forced_format_that_finds_no_image_is_refused(shared, tmp_path):
    """``--from voc`` on a COCO export reads bare images (no XML beside them): refused, and no
    output folder is made. A VOC folder whose files hold no object still converts."""
    out = tmp_path / "out"
    result = run("convert", str(shared / "roboflow-coco"), "--from", "voc", "--to", "yolo", "--out", str(out))
    assert result.returncode == 1, result.stdout
    assert "no Pascal VOC annotation found in it (703 image(s), none annotated)" in result.stderr, result.stderr
    assert "nothing written" in result.stderr and not out.exists()
    empty = copy_voc_subset(shared, tmp_path / "negatives", STEMS[:1])
    xml = empty / "annotations" / f"{STEMS[0]}.xml"
    xml.write_text(re.sub(r"<object>.*</object>", "", xml.read_text(), flags=re.S))
    assert convert(empty, tmp_path / "neg-out", "coco", images="none").dataset.images[0].boxes.shape == (0, 4)


def _coco(src: Path, out: Path, **kwargs) -> bytes:
    convert(src, out, "coco", images="none", **kwargs)
    return (out / "annotations.json").read_bytes()


@pytest.fixture
def parsed(monkeypatch) -> list[str]:
    """The VOC files parsed from now on (``voc.parse`` watched, not replaced)."""
    files: list[str] = []
    real = voc.parse
    monkeypatch.setattr(voc, "parse", lambda data, file: files.append(file) or real(data, file))
    return files


def test_a_second_conversion_parses_no_unchanged_file(source, tmp_path, parsed):
    src = shutil.copytree(source, tmp_path / "src")
    first = _coco(src, tmp_path / "a")
    assert len(parsed) == len(STEMS)
    parsed.clear()
    assert _coco(src, tmp_path / "b") == first and parsed == []  # from the index cache
    assert _coco(src, tmp_path / "c", use_index=False) == first and len(parsed) == len(STEMS)


@pytest.mark.parametrize("change", ["same size, new content and mtime", "same mtime, new size"])
def test_a_changed_file_is_read_again(source, tmp_path, parsed, change):
    src = shutil.copytree(source, tmp_path / "src")
    _coco(src, tmp_path / "a")
    xml = src / "annotations" / "maksssksksss1.xml"
    before, stat = xml.read_text(), xml.stat()
    assert "<xmax>" in before
    if change.startswith("same size"):
        after = re.sub(r"<xmax>(\d)", lambda m: f"<xmax>{(int(m.group(1)) + 1) % 10}", before, count=1)
        xml.write_text(after)
        os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert xml.stat().st_size == stat.st_size
    else:
        after = before.replace("<xmax>", "<xmax>1", 1)
        xml.write_text(after)
        os.utime(xml, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert xml.stat().st_mtime_ns == stat.st_mtime_ns and xml.stat().st_size != stat.st_size
    assert after != before
    parsed.clear()
    got = _coco(src, tmp_path / "b")
    assert parsed == ["annotations/maksssksksss1.xml"]  # the changed file alone
    assert got == _coco(src, tmp_path / "c", use_index=False)
    assert got != (tmp_path / "a" / "annotations.json").read_bytes()


def test_bad_files_fail_a_conversion_from_the_index_too(source, tmp_path):
    src = shutil.copytree(source, tmp_path / "src")
    (src / "annotations" / "maksssksksss1.xml").write_text("<annotation><object>")
    errors = []
    for _ in range(2):  # the second read comes from the index cache
        with pytest.raises(DatasetReadError) as info:
            convert(src, tmp_path / "out", "coco")
        errors.append([(e.file, e.reason) for e in info.value.errors])
    assert errors[0] == errors[1] and errors[0][0][0] == "annotations/maksssksksss1.xml"
    assert len(convert(src, tmp_path / "out", "coco", skip_bad=True).skipped) == 1


def test_a_workspace_that_cannot_hold_the_index_falls_back_to_parsing(source, tmp_path, monkeypatch, parsed):
    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(convert_module, "open_dataset", locked)
    got = _coco(source, tmp_path / "a")
    assert len(parsed) == len(STEMS)
    assert got == _coco(source, tmp_path / "b", use_index=False)


@pytest.mark.parametrize("child_from", [1, 10**9], ids=["child process", "this process"])
def test_images_are_hard_linked_by_a_child_process_or_this_one(shared, tmp_path, monkeypatch, child_from):
    """What ``linking`` cannot link is placed as before: an existing file is replaced, a missing
    image is listed; every other image is the source file itself (a hard link)."""
    from workbench.datasets import linking

    monkeypatch.setattr(linking, "CHILD_FROM", child_from)
    src = copy_voc_subset(shared, tmp_path / "src", ["maksssksksss0", "maksssksksss1", "maksssksksss2"])
    (src / "images" / "maksssksksss2.png").unlink()
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "maksssksksss1.png").write_bytes(b"an older file")
    started = []
    real = linking.start_links

    def spy(dataset, where):
        links = real(dataset, where)
        started.append(links._process is not None)
        return links

    monkeypatch.setattr(convert_module, "start_links", spy)
    result = convert(src, out, "coco", use_index=False)
    assert started and started[0] == (child_from == 1)
    assert result.images_written == 2 and result.missing_images == ["images/maksssksksss2.png"]
    for name in ("maksssksksss0.png", "maksssksksss1.png"):
        assert os.path.samefile(src / "images" / name, out / "images" / name)
    assert sorted(i["file_name"] for i in json.loads((out / "annotations.json").read_text())["images"]) == [
        f"images/maksssksksss{i}.png" for i in range(3)
    ]
