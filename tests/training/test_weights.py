"""Where the starting weights come from: COCO, ImageNet offline (hash-checked), random."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.training import weights
from workbench.training.models import get_spec
from workbench.training.weights import resolve_weights


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
