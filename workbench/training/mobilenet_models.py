"""One-stage detectors on the ImageNet MobileNetV2 that ships offline: SSD FPNLite and RetinaNet FPN.

``models.MODELS`` registers ``SPECS`` (the ``ModelSpec`` fields, in order). Both builders take
torchvision's ``weights``/``weights_backbone``/``num_classes`` and return a torchvision
``RetinaNet``: sigmoid focal loss, anchors on every pyramid level, one head shared by the levels.

- ``ssd_mobilenet_v2_fpnlite`` follows TensorFlow's "SSD MobileNet V2 FPNLite": an FPN whose
  output and extra-level convolutions are depthwise separable (the "lite"), 128 channels from
  stride 8 to 128, and a weight-shared box predictor of depthwise-separable layers trained
  with focal loss. That predictor and loss are RetinaNet's, not torchvision's ``SSD`` class
  (per-level heads, softmax with hard-negative mining, a fixed square input, a
  ``DefaultBoxGenerator`` that expects one feature map per head), so the RetinaNet class
  carries it, with lighter heads.
- ``retinanet_mobilenet_v2_fpn``: RetinaNet with torchvision's FPN (P3-P5 + P6/P7) on the
  same features: the offline build of the retinanet-frozen recipe. ``models.freeze_backbone``
  freezes ``backbone.body``, the MobileNetV2 trunk: the FPN and the heads train.

Anchors start at 16 px (torchvision's RetinaNet starts at 32): many faces here are under 20 px.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models import detection as tvd
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import misc as misc_ops

from workbench.errors import WorkbenchError
from workbench.training.weights import find_weights, load_state_file

IMAGENET = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
# features[6] ends stride 8 (32 channels), [13] stride 16 (96), [18] stride 32 (1280)
RETURN_LAYERS = {"6": "0", "13": "1", "18": "2"}
IN_CHANNELS = [32, 96, 1280]


def mobilenet_v2_trunk(weights_backbone: Any, *, frozen_blocks: int = 7) -> nn.Sequential:
    """``mobilenet_v2().features``: ImageNet-trained when ``weights_backbone`` is given.

    ``weights_backbone``: ``None`` (random), a state dict, a file path, or the torchvision enum
    (read from torch's cache, the offline package or a download: ``weights.find_weights``).
    Pretrained, the batch norms are frozen and the first ``frozen_blocks`` blocks (the stem
    and strides 2-8) do not train, as in ``models.fasterrcnn_mobilenet_v2_fpn``.
    """
    pretrained = weights_backbone is not None
    norm_layer = misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer)
    if pretrained:
        net.load_state_dict(_state_of(weights_backbone))
        for layer in list(net.features)[:frozen_blocks]:
            for p in layer.parameters():
                p.requires_grad_(False)
    return net.features


def _state_of(weights: Any) -> dict[str, torch.Tensor]:
    if isinstance(weights, dict):
        return {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    if isinstance(weights, (str, Path)):
        return load_state_file(Path(weights))
    found = find_weights(weights)
    if found is None:
        raise WorkbenchError(f"{weights}: not in torch's cache, not shipped offline, and no download server")
    source, where = found
    return weights.get_state_dict(progress=False) if source == "download" else load_state_file(Path(where))


def separable(in_ch: int, out_ch: int, *, stride: int = 1, norm: Any = None) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each normalised and followed by ReLU6 (MobileNet's block)."""
    norm = norm or nn.BatchNorm2d
    return nn.Sequential(
        misc_ops.Conv2dNormActivation(
            in_ch, in_ch, 3, stride, groups=in_ch, norm_layer=norm, activation_layer=nn.ReLU6
        ),
        misc_ops.Conv2dNormActivation(in_ch, out_ch, 1, norm_layer=norm, activation_layer=nn.ReLU6),
    )


class FPNLite(nn.Module):
    """TensorFlow's FPNLite: 1x1 laterals, top-down nearest upsampling, depthwise-separable 3x3
    smoothing, and two extra levels by stride-2 separable convolutions from the top one."""

    def __init__(self, in_channels: list[int], out_channels: int, *, extra: int = 2) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(separable(out_channels, out_channels) for _ in in_channels)
        self.extra = nn.ModuleList(separable(out_channels, out_channels, stride=2) for _ in range(extra))

    def forward(self, features: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        xs = list(features.values())
        inner = self.lateral[-1](xs[-1])
        outs = [self.smooth[-1](inner)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.lateral[i](xs[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.smooth[i](inner))
        for block in self.extra:
            outs.append(block(outs[-1]))
        return OrderedDict((str(i), x) for i, x in enumerate(outs))


class MobileNetV2FPNLite(nn.Module):
    """``body`` (the MobileNetV2 trunk, what ``freeze_backbone`` freezes) + ``fpn`` (FPNLite)."""

    def __init__(self, features: nn.Sequential, out_channels: int) -> None:
        super().__init__()
        self.body = IntermediateLayerGetter(features, return_layers=RETURN_LAYERS)
        self.fpn = FPNLite(IN_CHANNELS, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def anchors(first: int = 16, levels: int = 5, per_octave: int = 2) -> tvd.anchor_utils.AnchorGenerator:
    """``per_octave`` sizes per level from ``first`` px, doubling per level; ratios 0.5, 1, 2."""
    sizes = tuple(tuple(first * 2**level * 2 ** (i / per_octave) for i in range(per_octave)) for level in range(levels))
    return tvd.anchor_utils.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)


def lite_head(channels: int, num_anchors: int, num_classes: int, depth: int) -> tvd.retinanet.RetinaNetHead:
    """RetinaNet's shared head with ``depth`` depthwise-separable layers (TF's weight-shared predictor)."""
    head = tvd.retinanet.RetinaNetHead(channels, num_anchors, num_classes, norm_layer=partial(nn.GroupNorm, 16))
    for branch in (head.classification_head, head.regression_head):
        norm = partial(nn.GroupNorm, 16)
        branch.conv = nn.Sequential(*(separable(channels, channels, norm=norm) for _ in range(depth)))
        for m in branch.conv.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01 if m.groups == 1 else 0.1)
    return head


DEFAULTS = {"score_thresh": 0.05, "detections_per_img": 300, "topk_candidates": 300}


def ssd_mobilenet_v2_fpnlite(
    *,
    weights: Any = None,
    weights_backbone: Any = None,
    num_classes: int = 91,
    progress: bool = False,
    **kwargs: Any,
) -> tvd.RetinaNet:
    """SSD MobileNetV2 FPNLite: focal loss, 128-channel FPNLite (strides 8-128), 4 separable head layers."""
    if weights is not None:
        raise WorkbenchError("ssd_mobilenet_v2_fpnlite has no COCO weights")
    backbone = MobileNetV2FPNLite(mobilenet_v2_trunk(weights_backbone), 128)
    generator = anchors()
    head = lite_head(128, generator.num_anchors_per_location()[0], num_classes, depth=4)
    return tvd.RetinaNet(backbone, num_classes, anchor_generator=generator, head=head, **{**DEFAULTS, **kwargs})


def retinanet_mobilenet_v2_fpn(
    *,
    weights: Any = None,
    weights_backbone: Any = None,
    num_classes: int = 91,
    progress: bool = False,
    **kwargs: Any,
) -> tvd.RetinaNet:
    """RetinaNet, torchvision's FPN (128 channels, P3-P7) on MobileNetV2, GroupNorm heads (as v2)."""
    if weights is not None:
        raise WorkbenchError("retinanet_mobilenet_v2_fpn has no COCO weights")
    backbone = torchvision.models.detection.backbone_utils.BackboneWithFPN(
        mobilenet_v2_trunk(weights_backbone),
        return_layers=RETURN_LAYERS,
        in_channels_list=IN_CHANNELS,
        out_channels=128,
        extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelP6P7(128, 128),
    )
    generator = anchors(per_octave=3)
    head = tvd.retinanet.RetinaNetHead(
        128, generator.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32)
    )
    return tvd.RetinaNet(backbone, num_classes, anchor_generator=generator, head=head, **{**DEFAULTS, **kwargs})


SPECS = [  # the fields of models.ModelSpec: name, builder, coco, imagenet, imgsz, description
    (
        "ssd_mobilenet_v2_fpnlite",
        ssd_mobilenet_v2_fpnlite,
        None,
        IMAGENET,
        384,
        "SSD MobileNetV2 FPNLite (focal loss, shared separable head): ImageNet weights ship offline",
    ),
    (
        "retinanet_mobilenet_v2_fpn",
        retinanet_mobilenet_v2_fpn,
        None,
        IMAGENET,
        512,
        "RetinaNet, MobileNetV2 FPN: ImageNet weights ship offline (retinanet-frozen without ResNet-50)",
    ),
]
