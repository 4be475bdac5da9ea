"""torchvision detection models by name: their builders, the classifier swap, the frozen structure.

Every model predicts ``num_classes = len(classes) + 1`` labels: torchvision's convention
keeps label 0 for the background, so dataset class id ``i`` is model label ``i + 1``.

Where the starting weights come from is ``workbench.training.weights``.

``fasterrcnn_mobilenet_v2`` is the workbench's own CPU model: Faster R-CNN over
MobileNetV2 features with a three-level FPN. It exists because the MobileNetV2 ImageNet
weights are the only ones available offline, so it is the default CPU recipe whenever
torchvision's COCO weights are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import misc as misc_ops

from workbench.errors import WorkbenchError
from workbench.training import mobilenet_models
from workbench.training.weights import load_state_file, load_weights_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model.

    Attributes:
        name: the name users type (``--model``).
        builder: ``builder(weights=..., weights_backbone=..., num_classes=...)``, torchvision style.
        coco: the COCO weights enum member, or ``None``.
        imagenet: the ImageNet backbone weights enum member, or ``None``.
        imgsz: default longest image side in pixels.
        description: one line for the UI and ``--help``.
    """

    name: str
    builder: Callable[..., nn.Module]
    coco: Any
    imagenet: Any
    imgsz: int
    description: str


def fasterrcnn_mobilenet_v2_fpn(
    *, weights: Any = None, weights_backbone: Any = None, num_classes: int = 91, **kwargs: Any
) -> tvd.FasterRCNN:
    """Faster R-CNN on MobileNetV2 features with an FPN over strides 8, 16 and 32 (+ a pooled level).

    ``weights`` must be ``None`` (no COCO model exists). ``weights_backbone`` is ``None``
    or a path/state dict of torchvision's ImageNet MobileNetV2; with it the batch norms
    are frozen and the blocks up to stride 8 are not trained.
    Small anchors (16-256 px) suit faces and other small objects at 320-640 px images.
    """
    if weights is not None:
        raise WorkbenchError("fasterrcnn_mobilenet_v2 has no COCO weights")
    pretrained = weights_backbone is not None
    norm_layer = misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer)
    if pretrained:
        state = weights_backbone if isinstance(weights_backbone, dict) else load_state_file(Path(weights_backbone))
        load_matching(net, state)
        # freeze the stem and the stride-4 and stride-8 blocks (torchvision trains only the last
        # stages of a pretrained backbone too): generic features, and their backward pass is most
        # of a CPU step at full resolution
        for layer in list(net.features)[:7]:
            for p in layer.parameters():
                p.requires_grad_(False)
    # features[6] ends stride 8 (32 ch), [13] stride 16 (96 ch), [18] stride 32 (1280 ch)
    backbone = torchvision.models.detection.backbone_utils.BackboneWithFPN(
        net.features,
        return_layers={"6": "0", "13": "1", "18": "2"},
        in_channels_list=[32, 96, 1280],
        out_channels=128,
        extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool(),
    )
    anchor_sizes = ((16, 24), (32, 48), (64, 96), (128, 256))
    aspect_ratios = ((0.5, 1.0, 2.0),) * len(anchor_sizes)
    anchors = tvd.anchor_utils.AnchorGenerator(anchor_sizes, aspect_ratios)
    roi_pool = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    box_head = tvd.faster_rcnn.TwoMLPHead(128 * 7 * 7, 512)
    box_predictor = tvd.faster_rcnn.FastRCNNPredictor(512, num_classes)
    defaults: dict[str, Any] = {
        # fewer proposals than torchvision's 2000/2000: a CPU step is dominated by the box head
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 500,
        "rpn_post_nms_top_n_test": 500,
        "rpn_batch_size_per_image": 256,
        "box_batch_size_per_image": 128,
        "rpn_score_thresh": 0.0,
    }
    return tvd.FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        **{**defaults, **kwargs},
    )


class _ResNetC4Trunk(nn.Sequential):
    """ResNet-50 stem + ``layer1``-``layer3``: one stride-16 feature map of 1024 channels."""

    out_channels = 1024


class _Res5Head(nn.Module):
    """detectron2's ``Res5ROIHeads`` box head: ResNet ``layer4`` on the 14x14 RoI features, then average pooling.

    ``(R, 1024, 14, 14)`` -> ``(R, 2048)``.
    """

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layer4(x)), 1)


def fasterrcnn_resnet50_c4(
    *, weights: Any = None, weights_backbone: Any = None, num_classes: int = 91, progress: bool = False, **kwargs: Any
) -> tvd.FasterRCNN:
    """Faster R-CNN R50-C4 (detectron2's ``faster_rcnn_R_50_C4_1x``) built from torchvision parts.

    The torchvision stand-in for the detectron2 recipe where detectron2 is not installed: the
    RPN and the RoI pooling (14x14, RoIAlign) run on the stride-16 ``layer3`` output (C4), and
    the box head is ``layer4`` (res5, stride 2 inside the RoI) + average pooling, as in
    detectron2's ``Res5ROIHeads``. Differences: torchvision's ImageNet ResNet-50 (pytorch
    style) instead of MSRA's caffe R-50, an extra 16 px anchor size for small faces, and no
    COCO weights (``weights`` must be ``None``). With ImageNet weights the batch norms are
    frozen and the stem and ``layer1`` are not trained (detectron2's ``FREEZE_AT=2``).
    """
    if weights is not None:
        raise WorkbenchError("fasterrcnn_resnet50_c4 has no COCO weights")
    pretrained = weights_backbone is not None
    norm_layer = misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    net = torchvision.models.resnet50(weights=weights_backbone, progress=progress, norm_layer=norm_layer)
    trunk = _ResNetC4Trunk(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
    if pretrained:
        for module in (net.conv1, net.bn1, net.layer1):
            for p in module.parameters():
                p.requires_grad_(False)
    anchors = tvd.anchor_utils.AnchorGenerator(((16, 32, 64, 128, 256, 512),), ((0.5, 1.0, 2.0),))
    roi_pool = torchvision.ops.MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=0)
    defaults: dict[str, Any] = {
        "rpn_pre_nms_top_n_train": 1000,  # detectron2 C4: 12000/2000 on the GPU; fewer for the CPU
        "rpn_post_nms_top_n_train": 500,
        "rpn_pre_nms_top_n_test": 600,  # every test proposal runs through res5: the C4 head's cost
        "rpn_post_nms_top_n_test": 300,
        "box_batch_size_per_image": 128,
    }
    return tvd.FasterRCNN(
        trunk,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=_Res5Head(net.layer4),
        box_predictor=tvd.faster_rcnn.FastRCNNPredictor(2048, num_classes),
        **{**defaults, **kwargs},
    )


def freeze_backbone(model: nn.Module) -> int:
    """Stop training a detector's backbone network (``--freeze-backbone``); return the parameters frozen.

    The backbone is ``model.backbone.body`` when there is one (the ResNet or MobileNet under
    an FPN: the FPN and the heads keep training), else ``model.backbone``.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise WorkbenchError(f"{type(model).__name__} has no backbone to freeze")
    body = getattr(backbone, "body", backbone)
    count = 0
    for p in body.parameters():
        if p.requires_grad:
            p.requires_grad_(False)
            count += p.numel()
    return count


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "fasterrcnn_mobilenet_v2",
            fasterrcnn_mobilenet_v2_fpn,
            None,
            torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
            512,
            "Faster R-CNN, MobileNetV2 FPN: the default CPU model (ImageNet weights ship offline)",
        ),
        ModelSpec(
            "fasterrcnn_resnet50_c4",
            fasterrcnn_resnet50_c4,
            None,
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            800,
            "Faster R-CNN, ResNet-50 C4 with a res5 RoI head: torchvision's stand-in for detectron2's R50-C4",
        ),
        ModelSpec(
            "fasterrcnn_mobilenet",
            tvd.fasterrcnn_mobilenet_v3_large_fpn,
            tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
            torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
            512,
            "Faster R-CNN, MobileNetV3-Large FPN: fast on the CPU",
        ),
        ModelSpec(
            "fasterrcnn_resnet50_fpn_v2",
            tvd.fasterrcnn_resnet50_fpn_v2,
            tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            800,
            "Faster R-CNN, ResNet-50 FPN v2: the accurate GPU model",
        ),
        ModelSpec(
            "retinanet_resnet50_fpn_v2",
            tvd.retinanet_resnet50_fpn_v2,
            tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            800,
            "RetinaNet, ResNet-50 FPN v2",
        ),
        ModelSpec(
            "ssdlite320_mobilenet_v3_large",
            tvd.ssdlite320_mobilenet_v3_large,
            tvd.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
            None,  # its ImageNet variant changes the network (no reduced tail): COCO or random only
            320,
            "SSDlite 320, MobileNetV3-Large: the smallest and fastest",
        ),
        ModelSpec(
            "fcos_resnet50_fpn",
            tvd.fcos_resnet50_fpn,
            tvd.FCOS_ResNet50_FPN_Weights.COCO_V1,
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
            800,
            "FCOS, ResNet-50 FPN (anchor-free)",
        ),
    ]
}
MODELS.update({fields[0]: ModelSpec(*fields) for fields in mobilenet_models.SPECS})  # SSD FPNLite, RetinaNet
ALIASES = {
    "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn_mobilenet",
    "ssdlite": "ssdlite320_mobilenet_v3_large",
    "fcos": "fcos_resnet50_fpn",
    "retinanet": "retinanet_resnet50_fpn_v2",
    "fasterrcnn": "fasterrcnn_resnet50_fpn_v2",
}


def get_spec(name: str) -> ModelSpec:
    name = ALIASES.get(name, name)
    try:
        return MODELS[name]
    except KeyError:
        raise WorkbenchError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)`` that tolerates only BatchNorm's ``num_batches_tracked``.

    A model trained with frozen batch norms (pretrained) is rebuilt for inference with
    plain ones (same arithmetic in eval mode), which differ by that one buffer.
    """
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: another class count or another model
        raise WorkbenchError(f"checkpoint does not fit the model: {str(e).splitlines()[-1].strip()}") from e
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WorkbenchError(
            f"checkpoint does not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def _replace_classifier(model: nn.Module, name: str, num_classes: int) -> None:
    """Give a COCO-trained detector a fresh classifier for ``num_classes`` labels (background included)."""
    if isinstance(model, tvd.FasterRCNN):
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = tvd.faster_rcnn.FastRCNNPredictor(in_features, num_classes)
    elif isinstance(model, tvd.RetinaNet):
        old = model.head.classification_head
        in_channels = old.cls_logits.in_channels
        norm = partial(nn.GroupNorm, 32) if name.endswith("_v2") else None
        model.head.classification_head = tvd.retinanet.RetinaNetClassificationHead(
            in_channels, old.num_anchors, num_classes, norm_layer=norm
        )
    elif isinstance(model, tvd.FCOS):
        old = model.head.classification_head
        model.head.classification_head = tvd.fcos.FCOSClassificationHead(
            old.cls_logits.in_channels, old.num_anchors, num_classes
        )
    elif isinstance(model, tvd.ssd.SSD):
        in_channels = det_utils.retrieve_out_channels(model.backbone, (320, 320))
        num_anchors = model.anchor_generator.num_anchors_per_location()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        model.head.classification_head = tvd.ssdlite.SSDLiteClassificationHead(
            in_channels, num_anchors, num_classes, norm
        )
    else:  # pragma: no cover - every model in MODELS is handled above
        raise WorkbenchError(f"{name}: cannot replace the classifier of {type(model).__name__}")


def build_model(
    name: str,
    num_classes: int,
    *,
    weights: dict[str, Any] | None = None,
    imgsz: int | None = None,
) -> nn.Module:
    """Build model ``name`` for ``num_classes`` labels (background included).

    Args:
        weights: a ``resolve_weights`` answer; ``None`` builds the bare network (for loading
            a checkpoint: no file is read and nothing is downloaded).
        imgsz: longest image side in pixels that the model resizes its inputs to at
            inference (default: the model's). In training the loader resizes (scale jitter),
            so the model's own resize is skipped.
    """
    spec = get_spec(name)
    kind = (weights or {}).get("kind", "none")
    file = (weights or {}).get("file")
    if spec.name == "fasterrcnn_mobilenet_v2":
        if kind == "imagenet" and file and not str(file).startswith("http"):
            model = spec.builder(weights_backbone=file, num_classes=num_classes)
        elif kind == "imagenet":
            model = spec.builder(weights_backbone=spec.imagenet.get_state_dict(progress=False), num_classes=num_classes)
        else:
            model = spec.builder(num_classes=num_classes)
    elif kind == "coco":
        model = spec.builder(weights=spec.coco, progress=False)
        _replace_classifier(model, spec.name, num_classes)
    elif kind == "imagenet":
        model = spec.builder(weights=None, weights_backbone=spec.imagenet, progress=False, num_classes=num_classes)
    else:
        model = spec.builder(weights=None, weights_backbone=None, num_classes=num_classes)
    if kind == "file":  # --weights PATH: what matches by name and shape, counted for the model card
        weights.update(load_weights_file(model, Path(file)))
    set_image_size(model, imgsz or spec.imgsz)
    return model


def set_image_size(model: nn.Module, imgsz: int) -> None:
    """Make the model's own transform resize so that the longest image side is ``imgsz`` pixels."""
    transform = model.transform
    if getattr(transform, "fixed_size", None):  # SSD: a fixed square input
        transform.fixed_size = (imgsz, imgsz)
    transform.min_size = (imgsz,)
    transform.max_size = imgsz


def set_postprocess(model: nn.Module, *, score_threshold: float, iou_threshold: float, max_detections: int) -> None:
    """Set the score threshold, per-class NMS IoU and detections per image of any torchvision detector."""
    holder = model.roi_heads if hasattr(model, "roi_heads") else model
    holder.score_thresh = score_threshold
    holder.nms_thresh = iou_threshold
    holder.detections_per_img = max_detections


def structure_of(model: nn.Module) -> dict[str, list[str]]:
    """What pretrained weights changed in a model's structure: frozen parameters and frozen batch norms.

    Saved in checkpoints so that a resumed run rebuilds the same network (``apply_structure``)
    without reading the starting weights again.
    """
    return {
        "frozen": [name for name, p in model.named_parameters() if not p.requires_grad],
        "frozen_bn": [name for name, m in model.named_modules() if isinstance(m, misc_ops.FrozenBatchNorm2d)],
    }


def apply_structure(model: nn.Module, structure: dict[str, list[str]]) -> None:
    """Freeze the parameters and turn the batch norms named in ``structure`` into frozen ones."""
    modules = dict(model.named_modules())
    for name in structure.get("frozen_bn", []):
        module = modules[name]
        if isinstance(module, misc_ops.FrozenBatchNorm2d):
            continue
        parent_name, _, child = name.rpartition(".")
        frozen = misc_ops.FrozenBatchNorm2d(module.num_features, eps=module.eps)
        setattr(modules[parent_name] if parent_name else model, child, frozen)
    params = dict(model.named_parameters())
    for name in structure.get("frozen", []):
        params[name].requires_grad_(False)
