"""Suggestions of a tiny trained model: stored in the workspace, never in the dataset's files until
accepted; accept-all above a score writes exactly those boxes; undo gives the file back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from workbench.cli import main as cli
from workbench.datasets import catalog, index, versions
from workbench.formats import voc
from workbench.labelling import edits, review, saving, suggestions


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_training_took_a_version_named_in_the_run(tiny_run, monkeypatch):
    card = json.loads((tiny_run / "model_card.json").read_text())
    named = json.loads((tiny_run / "dataset_version.json").read_text())
    assert named["hash"] == card["dataset_hash"] and named["name"] == card["dataset_version"] == "v1"
    monkeypatch.setenv("WORKBENCH_HOME", str(tiny_run.parent.parent / "home"))
    listed = versions.list_versions(card["dataset"])
    assert [(v["name"], v["hash"], v["runs"]) for v in listed] == [("v1", card["dataset_hash"], ["tiny"])]
    assert versions.run_version(tiny_run)["name"] == "v1"


def test_suggest_accept_reject_undo(tiny_run, voc8, capsys):
    before = hashes(voc8)
    assert cli.main(["suggest", "--model", str(tiny_run), "--data", str(voc8), "--score", "0.01", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 8 and summary["run"] == "tiny"
    assert hashes(voc8) == before  # suggesting wrote nothing into the dataset
    stored = suggestions.pending(voc8)
    assert sum(len(v) for v in stored.values()) == summary["boxes"] > 0
    path = max(stored, key=lambda p: len(stored[p]))
    items = stored[path]
    assert all(s["score"] >= 0.01 for s in items)

    # reject one: only the store changes
    suggestions.reject(voc8, path, [items[-1]["id"]])
    assert hashes(voc8) == before
    items = suggestions.pending(voc8, path)

    # accept all above a score: exactly those boxes are written, through the journal
    scores = sorted(s["score"] for s in items)
    threshold = scores[len(scores) // 2]
    chosen = [s for s in items if s["score"] >= threshold]
    opened = index.open_dataset(voc8)
    old = opened.dataset.record(path).copy()
    xml = voc8 / old.annotation
    xml_before = xml.read_bytes()
    journal = saving.Journal()
    result = suggestions.accept(opened, path, min_score=threshold, journal=journal)
    assert list(result.files) == [old.annotation] and result.entry is not None
    changed = {k for k in before if hashes(voc8).get(k) != before[k]}
    assert changed == {old.annotation}
    reloaded = voc.load(voc8).record(path)
    assert len(reloaded) == len(old) + len(chosen)
    np.testing.assert_allclose(reloaded.boxes[: len(old)], old.boxes)
    added = reloaded.boxes[len(old) :]
    expected = np.array([s["box"] for s in chosen])
    expected = np.clip(expected, 0, [old.width, old.height, old.width, old.height])
    np.testing.assert_allclose(added, np.round(expected), atol=1.0)  # VOC stores whole pixels
    names = [voc.load(voc8).class_name(int(c)) for c in reloaded.class_ids[len(old) :]]
    assert names == [s["label"] for s in chosen]
    assert {s["id"] for s in suggestions.pending(voc8, path)} == {s["id"] for s in items if s["score"] < threshold}
    assert journal.undoable(voc8)[-1]["message"].startswith(f"{path}: accepted suggestion")

    # undo restores the file byte for byte
    saving.undo(voc8, journal=journal)
    assert xml.read_bytes() == xml_before
    assert hashes(voc8) == before


def test_edit_then_accept_and_review_queue(tiny_run, voc8):
    opened = index.open_dataset(voc8)
    unlabelled = opened.dataset.images[-1]
    catalog.add_images(opened.dataset, {"new.png": (voc8 / unlabelled.path).read_bytes()})
    opened = index.open_dataset(voc8)
    assert opened.dataset.record("images/new.png").boxes.shape == (0, 4)
    result = suggestions.suggest(voc8, run=tiny_run, score=0.01, only_unlabelled=True)
    assert result.images == 1 and result.skipped_labelled == 8
    queue = review.build_queue(opened)
    assert queue[0]["path"] == "images/new.png" and queue[0]["tier"] == "unlabelled"
    assert "no labels" in queue[0]["reasons"]
    items = suggestions.pending(voc8, "images/new.png")
    assert items, "the tiny model found nothing at score 0.01"
    # edit, then accept: the edited box and class are written
    first = items[0]
    edited = {first["id"]: {"box": [10, 12, 40, 44], "label": "with_mask"}}
    suggestions.accept(opened, "images/new.png", ids=[first["id"]], edited=edited)
    record = voc.load(voc8).record("images/new.png")
    np.testing.assert_allclose(record.boxes, [[10, 12, 40, 44]])
    assert voc.load(voc8).class_name(int(record.class_ids[0])) == "with_mask"
    assert (voc8 / "annotations" / "new.xml").is_file()
    assert cli.main(["review", str(voc8), "--json"]) == 0
    # disagreement from an evaluation: FP + FN order the labelled images
    queue = review.build_queue(index.open_dataset(voc8), evaluation=("tiny", {opened.dataset.images[0].path: (2, 1)}))
    tiers = [q["tier"] for q in queue]
    assert tiers == sorted(tiers, key=review.TIERS.index)
    assert any("2 false positive(s) + 1 false negative(s)" in r for q in queue for r in q["reasons"])


def test_train_page_counts_edits_since_the_latest_models_version(tiny_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT

    monkeypatch.setenv("WORKBENCH_HOME", str(tiny_run.parent.parent / "home"))
    monkeypatch.setenv("WORKBENCH_MODELS", str(tiny_run.parent))
    data = json.loads((tiny_run / "model_card.json").read_text())["dataset"]
    opened = index.get_open(data)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    edits.add_box(record, [1, 1, 9, 9], 0)
    journal = saving.Journal()
    saving.save_record(opened, 0, record, journal=journal)
    try:
        at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
        assert not at.exception, at.exception
        assert any("2 edit(s) since the latest model's version" in i.value for i in at.info), [i.value for i in at.info]
    finally:
        saving.undo(data, journal=journal)
        index.get_open(data, reload=True)


def test_errors_page_compares_two_runs_with_their_versions(tiny_run, voc8, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT
    from workbench.evaluation.evaluate import evaluate_run

    models = tmp_path / "models"
    for name in ("run-a", "run-b"):
        shutil.copytree(tiny_run, models / name, ignore=shutil.ignore_patterns("eval", "tensorboard"))
    (models / "run-b" / "dataset_version.json").write_text(json.dumps({"name": "v7", "hash": "ab" * 32}))
    monkeypatch.setenv("WORKBENCH_MODELS", str(models))
    for name in ("run-a", "run-b"):
        evaluate_run(models / name, voc8, split="all", device="cpu")
    catalog.add_dataset(voc8)
    at = AppTest.from_file(str(PROJECT / "pages" / "errors.py"), default_timeout=120)
    at.session_state["errors_run"] = "run-a"
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="errors_compare_run").value == "run-b"
    table = next(d.value for d in at.dataframe if "AP run-b" in d.value.columns)
    assert list(table.columns) == ["class", "AP run-a", "AP run-b", "difference"]
    assert table["class"].iloc[-1] == "all (AP)"
    captions = "\n".join(c.value for c in at.caption)
    assert "dataset version v1" in captions and "dataset version v7" in captions
