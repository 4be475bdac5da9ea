"""workbench.evaluation.fiftyone_app: the session's tiny model evaluated in FiftyOne (a real
mongod in a temporary folder): the samples and boxes, its evaluation against ours, the ready
views, tags back as a relabel queue, and ``workbench errors`` serving the App on localhost."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import listening_addresses
from workbench.cli.main import main
from workbench.evaluation import fiftyone_app as fa
from workbench.formats import load_dataset, save_dataset


@pytest.mark.parametrize("box", [[0, 0, 400, 300], [10.5, 20, 30.25, 299], [5, 5, 5, 5]])
def test_fiftyone_boxes_are_relative_xywh_and_come_back(box):
    relative = fa.to_fiftyone_box(box, 400, 300)
    x1, y1, x2, y2 = box
    assert relative == pytest.approx([x1 / 400, y1 / 300, (x2 - x1) / 400, (y2 - y1) / 300])
    assert fa.from_fiftyone_box(relative, 400, 300) == pytest.approx(box)


def test_names_are_stable_and_safe(tmp_path):
    assert fa.dataset_name(tmp_path / "my data") == fa.dataset_name(str(tmp_path / "my data") + "/")
    assert fa.dataset_name(tmp_path / "my data").startswith("workbench-my-data-")
    assert fa.dataset_name(tmp_path / "a") != fa.dataset_name(tmp_path / "b")
    assert fa.eval_key("run-2024.1") == "eval_run_2024_1"
    assert fa.pred_field("run-2024.1") == "pred_run_2024_1"


@pytest.fixture(scope="session")
def errors(fiftyone_db, evaluated):
    return fa.errors_from_evaluation(evaluated)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fiftyone_dataset_holds_the_same_samples_and_boxes(errors, evaluated, voc8):
    ds, dataset = errors.dataset, evaluated.dataset
    assert len(ds) == len(dataset.images) == 8
    assert ds.count("ground_truth.detections") == dataset.num_boxes
    by_path = {r.path: r for r in dataset.images}
    worst = 0.0
    for wb_path, gt, split, source in zip(*ds.values(["wb_path", "ground_truth", "split", "source"]), strict=True):
        record = by_path[wb_path]
        w, h = record.width, record.height
        expected = np.array([[x1 / w, y1 / h, (x2 - x1) / w, (y2 - y1) / h] for x1, y1, x2, y2 in record.boxes])
        got = np.array([d.bounding_box for d in gt.detections]).reshape(-1, 4)
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max()) if len(got) else 0.0)
        assert [d.label for d in gt.detections] == [dataset.classes[c] for c in record.class_ids]
        assert source == record.annotation and split == record.split
    assert worst < 1e-6
    # predictions: the detections at the score threshold, the same boxes
    kept = {r.path: d[d.scores >= 0.25] for r, d in zip(evaluated.records, evaluated.detections, strict=True)}
    assert ds.count("pred_tiny.detections") == sum(len(d) for d in kept.values())
    for wb_path, preds in zip(*ds.values(["wb_path", fa.pred_field("tiny")]), strict=True):
        record, det = by_path[wb_path], kept[wb_path]
        got = np.array([p.bounding_box for p in preds.detections]).reshape(-1, 4)
        back = np.array([fa.from_fiftyone_box(b, record.width, record.height) for b in got]).reshape(-1, 4)
        assert np.allclose(back, det.boxes, rtol=0, atol=1e-6 * max(record.width, record.height))


@pytest.mark.slow
def test_fiftyone_evaluation_agrees_with_ours(errors, evaluated):
    ds, key = errors.dataset, errors.eval_key
    assert key == "eval_tiny" and ds.has_evaluation(key) and ds.has_evaluation(key + "_any")
    ours = {t: sum(im[t] for im in evaluated.report.images) for t in ("tp", "fp", "fn")}
    theirs = {t: int(sum(ds.values(f"{key}_{t}"))) for t in ("tp", "fp", "fn")}
    assert theirs == ours


@pytest.mark.slow
def test_ready_views(errors):
    ds, key = errors.dataset, errors.eval_key
    assert set(ds.list_saved_views()) == set(fa.VIEWS)
    fp = ds.load_saved_view("false-positives")
    labels = fp.values(f"pred_tiny.detections.{key}", unwind=True)
    assert set(labels) <= {"fp"} and len(labels) == errors.summary["fp"]
    fn = ds.load_saved_view("false-negatives").values(f"ground_truth.detections.{key}", unwind=True)
    assert set(fn) <= {"fn"} and len(fn) == errors.summary["fn"]
    low = ds.load_saved_view("low-iou").values(f"pred_tiny.detections.{key}_iou", unwind=True)
    assert all(v < fa.LOW_IOU for v in low)
    assert errors.summary["brain"]["mistakenness"].startswith("ran")
    assert errors.summary["brain"]["hardness"].startswith("skipped")
    mistaken = ds.load_saved_view("most-mistaken").values("mistakenness")
    assert mistaken == sorted(mistaken, reverse=True)


@pytest.mark.slow
def test_tags_come_back_as_a_relabel_queue_and_fixes_show_after_refresh(fiftyone_db, voc8, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(voc8, root)
    dataset = load_dataset(root)
    ds = fa.refresh(dataset)
    assert ds.name == fa.dataset_name(root) and len(ds) == 8
    assert fa.relabel_queue(root) == []
    target = dataset.images[0].path
    sample = ds.match({"wb_path": target}).first()
    sample.tags.append(fa.FIX_TAG)
    sample.save()
    ds.match({"wb_path": dataset.images[1].path}).tag_labels(fa.FIX_TAG, label_fields="ground_truth")
    queue = fa.relabel_queue(root)
    assert [q["path"] for q in queue] == sorted([target, dataset.images[1].path])
    assert any("tagged 'fix'" in reason for reason in queue[0]["reasons"] + queue[1]["reasons"])
    # a fix saved in the workbench (one box removed) shows up at the next refresh; the tag stays
    before = len(dataset.images[0])
    fixed = dataset.copy()
    fixed.images[0].remove_box(0)
    save_dataset(fixed, root)
    ds = fa.refresh(load_dataset(root))
    assert len(ds.match({"wb_path": target}).first().ground_truth.detections) == before - 1
    assert fa.FIX_TAG in ds.match({"wb_path": target}).first().tags
    assert ds.count("ground_truth.detections") == dataset.num_boxes - 1
    assert len(fa.relabel_queue(root)) == 2
    assert fa.clear_tag(root, [target, dataset.images[1].path]) == 2
    assert fa.relabel_queue(root) == []


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "bound"), [([], {"127.0.0.1"}), (["--address", "0.0.0.0"], {"0.0.0.0"})])
def test_errors_cli_serves_the_app_on_localhost(fiftyone_db, tiny_run, voc8, monkeypatch, capsys, extra, bound):
    """``workbench errors`` as a user runs it, in this process: it evaluates the run's validation
    images, loads them into FiftyOne, starts the App and prints its link, then waits (here: the
    wait checks that the App answers on localhost and listens on 127.0.0.1 only, or on the address
    asked for, then returns so that the command closes it)."""
    port = free_port()
    answers = []

    def check_then_return(session, *args, **kwargs):
        url = fa.view_url(session, session.dataset)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    answers.append((url, response.status, listening_addresses(port)))
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    import fiftyone.core.session as fos

    monkeypatch.setattr(fos.Session, "wait", check_then_return)
    command = ["errors", "--model", str(tiny_run), "--data", str(voc8), "--port", str(port), "--json", *extra]
    assert main(command) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout holds our JSON only (FiftyOne's messages go to stderr)
    assert [bound_to for *_, bound_to in answers] == [bound]
    host = extra[-1] if extra else "127.0.0.1"
    assert summary["url"] == f"http://{host}:{port}/datasets/{fa.dataset_name(voc8)}"
    assert answers == [(summary["url"], 200, bound)]
    val = json.loads((tiny_run / "split.json").read_text())["val"]
    assert summary["samples"] == len(val) and set(summary["views"]) == set(fa.VIEWS)
