"""Suggestions of a tiny trained model: stored in the workspace, never in the dataset's files until
accepted; accept-all above a score writes exactly those boxes; undo gives the file back. A model
of other classes is refused unless asked for; processes storing at once lose no update."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_run
from workbench.annotations import Detections
from workbench.cli import main as cli
from workbench.datasets import catalog, index, versions
from workbench.errors import WorkbenchError
from workbench.formats import voc
from workbench.labelling import edits, review, saving, suggestions
from workbench.training import registry


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


def test_train_page_counts_edits_since_the_latest_models_version(tiny_model, voc8):
    """On copies of its own (the run, and ``voc8``: the same images as its training data), so
    that the session's training data, which the evaluation tests read, is never edited."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT
    from workbench.formats import load_dataset

    run = copy_run(tiny_model, registry.models_dir())  # this test's registry: latest is the copy
    assert versions.take_for_training(load_dataset(voc8), run) == "v1"  # as its training took it
    opened = index.get_open(voc8)
    record = opened.dataset.images[0].copy()
    edits.delete_box(record, 0)
    edits.add_box(record, [1, 1, 9, 9], 0)
    saving.save_record(opened, 0, record, journal=saving.Journal())
    at = AppTest.from_file(str(PROJECT / "pages" / "train.py"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert any("2 edit(s) since the latest model's version" in i.value for i in at.info), [i.value for i in at.info]


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


def relabel(root: Path, old: str, new: str) -> None:
    """Rename class ``old`` to ``new`` in every VOC file of ``root``: a dataset of other classes."""
    for xml in (root / "annotations").glob("*.xml"):
        xml.write_text(xml.read_text().replace(f"<name>{old}</name>", f"<name>{new}</name>"))


def test_training_records_the_run_as_its_datasets_latest(tiny_model, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MODELS", str(tiny_model.models))
    assert registry.latest_of(tiny_model.data) == "tiny" and registry.latest_name() == "tiny"


def test_suggest_refuses_a_model_of_other_classes_unless_asked(tiny_model, voc8, tmp_path, capsys):
    copy_run(tiny_model, registry.models_dir())
    relabel(voc8, "mask_weared_incorrect", "helmet")
    before = hashes(voc8)
    assert cli.main(["suggest", "--data", str(voc8), "--score", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "was not trained on the classes" in err
    assert "only the model has mask_weared_incorrect" in err and "only the dataset has helmet" in err
    assert "--any-classes" in err
    assert not suggestions.store_path(voc8).exists() and hashes(voc8) == before

    argv = ["suggest", "--data", str(voc8), "--model", "latest", "--any-classes", "--score", "0.01", "--json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "tiny"
    stored = suggestions.load(voc8)
    assert stored["new_classes"] is True and stored["images"]
    path, items = next(iter(stored["images"].items()))
    first = items[0]
    edited = {first["id"]: {"label": "mask_weared_incorrect"}}  # a class only the model has
    opened = index.open_dataset(voc8)
    with pytest.raises(WorkbenchError, match="not a class of this dataset"):
        suggestions.accept(opened, path, ids=[first["id"]], edited=edited, add_classes=False)
    assert hashes(voc8) == before and suggestions.pending(voc8, path) == items
    suggestions.accept(opened, path, ids=[first["id"]], edited=edited)  # --any-classes asked for it
    assert "mask_weared_incorrect" in voc.load(voc8).classes


def test_a_matching_model_is_used_without_asking(tiny_model, voc8):
    copy_run(tiny_model, registry.models_dir())
    result = suggestions.suggest(voc8, score=0.01, paths=[index.open_dataset(voc8).dataset.images[0].path])
    assert result.run == "tiny" and suggestions.load(voc8)["new_classes"] is False


class ConstantPredictor:
    """One box of the dataset's first class per image: a stand-in model for the store tests."""

    def __init__(self, classes: list[str]) -> None:
        self.run_dir, self.classes, self.card = Path("constant"), classes, {}

    def predict_batch(self, images, **_):
        return [Detections(boxes=[[1, 1, 3, 3]], scores=[0.9], class_ids=[0]) for _ in images]


def _suggest_in_child(root: str, paths: list[str], rounds: int, barrier) -> None:
    opened = index.open_dataset(root)
    predictor = ConstantPredictor(list(opened.dataset.classes))
    barrier.wait(60)
    for _ in range(rounds):
        for path in paths:
            suggestions.suggest(root, paths=[path], predictor=predictor, score=0.5)


@pytest.mark.slow
def test_processes_storing_suggestions_at_once_lose_none(voc8):
    images = [r.path for r in index.open_dataset(voc8).dataset.images]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    rounds = 10
    children = [
        ctx.Process(target=_suggest_in_child, args=(str(voc8), images[k::4], rounds, barrier)) for k in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(180)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    stored = suggestions.load(voc8)
    assert sorted(stored["images"]) == sorted(images)  # every image's suggestion is there, once
    assert all(len(items) == 1 for items in stored["images"].values())
    ids = [s["id"] for items in stored["images"].values() for s in items]
    assert len(set(ids)) == len(ids)
    assert stored["next_id"] == rounds * len(images)  # no read-modify-write was lost
