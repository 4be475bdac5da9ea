"""workbench/cli/datasets.py: ``convert`` and ``check`` in-process: their JSON, their text, and a
bad file reported as one error line that names it and suggests --skip-bad."""

from __future__ import annotations

import json

from workbench.cli.main import main


def test_convert_json_summary(voc8, tmp_path, capsys):
    out = tmp_path / "coco"
    assert main(["convert", str(voc8), "--to", "coco", "--out", str(out), "--images", "copy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["format"] == "coco" and summary["images"] == 8
    assert summary["images_written"] == 8 and summary["missing_images"] == [] and summary["skipped"] == []
    assert summary["boxes"] > 0 and (out / "annotations.json").is_file()


def test_convert_text_and_a_bad_file(voc8, tmp_path, capsys):
    assert main(["convert", str(voc8), "--to", "yolo", "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote yolo to {tmp_path / 'a'}: 8 images, ")
    (voc8 / "annotations" / "maksssksksss1.xml").write_text("<annotation><object>")
    assert main(["convert", str(voc8), "--to", "yolo", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and "maksssksksss1.xml" in err and "(pass --skip-bad" in err
    assert main(["convert", str(voc8), "--to", "yolo", "--out", str(tmp_path / "c"), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "7 images" in captured.out and "skipped 1 bad file(s)" in captured.err


def test_check_json_and_text(voc8, capsys):
    (voc8 / "annotations" / "maksssksksss1.xml").write_text("<annotation><object>")
    assert main(["check", str(voc8), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] >= 7 and set(report["classes"]) <= {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert any(f["kind"] == "bad_file" and "maksssksksss1.xml" in f["file"] for f in report["findings"])
    assert main(["check", str(voc8), "--limit", "0"]) == 0
    text = capsys.readouterr().out
    assert f"{voc8} (voc): " in text and "classes:" in text and "box sizes (sqrt(w*h) px):" in text
    assert "(bad_file): 1" in text and "... and 1 more (--limit, or --json for all)" in text
