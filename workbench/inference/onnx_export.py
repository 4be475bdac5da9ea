"""Export a trained run as one ONNX file that ``onnx_predictor.OnnxPredictor`` serves on its own.

    from workbench.inference.onnx_export import export_onnx
    path = export_onnx("latest", dynamic=True)      # -> <run>/model.onnx

The graph takes one ``(H, W, 3)`` uint8 RGB image (input ``image``) and returns ``boxes``
``(N, 4)`` float32 pixels of that image (x1 y1 x2 y2, the workbench's convention), ``scores``
``(N,)`` float32, best first, and ``labels`` ``(N,)`` int64 dataset class ids (0-based: the
background label is taken off inside the graph). Everything the torch predictor does is in it:
the ``[0, 1]`` scaling, torchvision's own resize to ``imgsz`` and normalisation, the NMS.

Thresholds are fixed when the graph is traced: NMS at IoU ``IOU_THRESHOLD`` (``predict``'s and the
demo's default), up to ``MAX_DETECTIONS`` boxes scoring at least ``SCORE_FLOOR`` (evaluation's
threshold). A higher score threshold is applied by the predictor afterwards, which gives the same
boxes as torch's: a box under the threshold never suppresses one above it in NMS, and the cut to
``MAX_DETECTIONS`` keeps the best. The file's metadata (``METADATA_KEY``, JSON) holds what the
predictor needs besides the graph: the class names, the input contract, the thresholds, the run
and its model card.

``dynamic=False`` traces the graph at a fixed ``imgsz x imgsz`` input (for runtimes that want
static shapes); the predictor letterboxes other images into it, so its boxes then differ slightly
from torch's. ``dynamic=True`` leaves the height and width free: any image, torch's boxes.

Torchvision detectors export with the TorchScript-based exporter (``dynamo=False``, opset 17):
their data-dependent control flow (the resize, the per-level top-k, NMS) is written for it.

A two-stage run (``face-then-classify``, retinaface detector) exports as one file holding both
graphs side by side (``onnx.compose``, opset 11, the detector's): the face detector as it ships,
or a run's fine-tuned one (``detector.pth``) exported from torch with the same input and outputs
(input ``detector/input``, outputs ``detector/loc``, ``detector/conf``, ``detector/landmarks``)
and the crop classifier (input ``crops``, ``(N, imgsz, imgsz, 3)`` uint8 RGB, scaled and
normalised inside; output ``probs``, ``(N, classes)`` softmax, or ``(N, classes + 1)`` with the
background class last). The numpy steps between them
(upscale, the detector's decoding and NMS, the box correction, crops, gamma) are
``training.facecrops``, with the run's settings in the metadata (``pipeline``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.onnx.operators
from torchvision.ops import poolers

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.inference.predict import load_predictor
from workbench.training.facecrops import CROP_PAD, NMS_THRESHOLD
from workbench.training.models import set_postprocess
from workbench.training.predictor import Predictor
from workbench.training.registry import read_json

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
METADATA_KEY = "workbench"
OPSET = 17
TWO_STAGE_OPSET = 11  # the retinaface graph's
DETECTOR_PREFIX = "detector/"
SCORE_FLOOR = 0.001
IOU_THRESHOLD = 0.5
MAX_DETECTIONS = 300


class _ImageGraph(torch.nn.Module):
    """A torchvision detector as ``uint8 (H, W, 3) image -> (boxes, scores, 0-based labels)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image.permute(2, 0, 1).float() / 255.0])[0]
        return out["boxes"], out["scores"], out["labels"] - 1


def _source_index(in_size: torch.Tensor, out_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear sampling along one axis as torch's CPU kernel does it (``align_corners=False``):
    the lower source index, the upper one (clamped to the edge) and the upper one's weight."""
    scale = in_size.to(torch.float32) / out_size.to(torch.float32)
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0.0)
    low = src.to(torch.int64)
    high = torch.min(low + 1, in_size.to(torch.int64) - 1)
    return low, high, src - low.to(torch.float32)


def _exact_resize(transform: torch.nn.Module, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
    """``GeneralizedRCNNTransform.resize`` as eager torch computes it, for the tracer.

    Eager torch takes the scale in double precision, resizes to ``floor(side * scale)`` and
    samples bilinearly from that size; torchvision's traced path keeps a float32 scale factor,
    and onnxruntime's ``Resize`` samples differently on some sizes, so the pixels (then the
    boxes) differ. This one computes the size the eager way (float64 in the graph too) and samples with gathers and weights
    written out, the arithmetic of torch's kernel.
    """
    shape = torch.onnx.operators.shape_as_tensor(image)[-2:]
    if transform.fixed_size is not None:  # SSD: a fixed square
        size = torch.tensor([transform.fixed_size[1], transform.fixed_size[0]], dtype=torch.int64)
    else:
        # 1-element float64 tensors, not Python floats or 0-d tensors: the exporter casts scalars
        # to float32, and floor(side * scale) then lands one pixel short on some sizes
        f = shape.to(torch.float64)
        shortest = torch.tensor([float(transform.min_size[-1])], dtype=torch.float64) / f.amin(0, keepdim=True)
        longest = torch.tensor([float(transform.max_size)], dtype=torch.float64) / f.amax(0, keepdim=True)
        size = torch.floor(f * torch.min(shortest, longest)).to(torch.int64)
    y0, y1, wy = _source_index(shape[0], size[0])
    x0, x1, wx = _source_index(shape[1], size[1])
    top, bottom = image.index_select(1, y0), image.index_select(1, y1)
    rows = top * (1.0 - wy)[None, :, None] + bottom * wy[None, :, None]
    left, right = rows.index_select(2, x0), rows.index_select(2, x1)
    return left * (1.0 - wx)[None, None, :] + right * wx[None, None, :], target


def _merge_levels(levels: torch.Tensor, unmerged_results: list[torch.Tensor]) -> torch.Tensor:
    """``poolers._onnx_merge_levels`` without its scatter: the per-level RoI features concatenated,
    then put back in RoI order with one gather.

    torchvision's version scatters each level into a zero tensor with an index expanded to every
    element (``(N, C, 7, 7)`` int64): a third of a Faster R-CNN MobileNetV2 graph's time on
    onnxruntime. The same values, moved once.
    """
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged_results))])
    position = torch.zeros_like(order).scatter(0, order, torch.arange(order.size(0), dtype=order.dtype))
    return torch.cat(unmerged_results, 0).index_select(0, position)


@contextmanager
def _export_patches() -> Iterator[None]:
    """The graph's replacements of torchvision code while tracing (``_merge_levels``)."""
    saved = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = _merge_levels
    try:
        yield
    finally:
        poolers._onnx_merge_levels = saved


def export_onnx(
    run: str | Path = "latest", *, out: str | Path | None = None, fmt: str = "onnx", dynamic: bool = False
) -> Path:
    """Write run ``run`` (``"latest"``, ``"latest:<dataset>"``, a name or a folder) as an ONNX file.

    ``out`` defaults to ``<run folder>/model.onnx`` (``model-static.onnx`` without ``dynamic``).
    Returns the file written. Raises ``WorkbenchError`` for an unknown format or a run whose
    engine cannot be exported.
    """
    if fmt not in FORMATS:
        raise WorkbenchError(f"unsupported export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    predictor = load_predictor(run, device="cpu")
    config = _exportable(predictor)
    imgsz = int(config["imgsz"])
    if config.get("engine") == "two-stage":
        return _export_two_stage(predictor, config, Path(out) if out else predictor.run_dir / "model.onnx")
    target = Path(out) if out else predictor.run_dir / ("model.onnx" if dynamic else "model-static.onnx")
    model = predictor.model.eval()
    set_postprocess(model, score_threshold=SCORE_FLOOR, iou_threshold=IOU_THRESHOLD, max_detections=MAX_DETECTIONS)
    model.transform.resize = partial(_exact_resize, model.transform)  # a loaded copy: the run is not touched
    example = torch.zeros((imgsz, imgsz, 3), dtype=torch.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.export")
    with warnings.catch_warnings(), _export_patches():  # the tracer warns about torchvision's code
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ImageGraph(model).eval(),
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["boxes", "scores", "labels"],
            dynamic_axes={"image": {0: "height", 1: "width"}, **_outputs_dynamic()} if dynamic else _outputs_dynamic(),
        )
    graph = onnx.load(str(tmp))
    tmp.unlink()
    info = metadata(predictor, config=config, dynamic=dynamic)
    onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(info)})
    graph.producer_name = "workbench"
    atomic_write(target, graph.SerializeToString())
    log.info("exported %s to %s (%s)", predictor.run_dir.name, target, "dynamic" if dynamic else f"{imgsz}x{imgsz}")
    return target


def _outputs_dynamic() -> dict[str, dict[int, str]]:
    return {name: {0: "detections"} for name in ("boxes", "scores", "labels")}


def _exportable(predictor: Predictor) -> dict[str, Any]:
    """The run's ``config.json``, after checking its engine is one whose graph exports."""
    config = read_json(predictor.run_dir / "config.json") or {}
    engine = config.get("engine") or "torchvision"
    if engine == "two-stage" and config.get("detector", "retinaface") != "retinaface":
        raise WorkbenchError(
            f"{predictor.run_dir.name}: cannot export a two-stage run with the {config['detector']} face "
            "detector to ONNX (it runs in torch); retinaface runs export"
        )
    if engine not in ("torchvision", "two-stage"):
        raise WorkbenchError(
            f"{predictor.run_dir.name}: cannot export a {engine} run to ONNX yet (torchvision and two-stage runs)"
        )
    return config


class _CropGraph(torch.nn.Module):
    """The two-stage classifier as ``uint8 (N, S, S, 3) crops -> (N, classes) probabilities``,
    scaled and normalised as ``faces.face_crops`` does."""

    def __init__(self, classifier: torch.nn.Module) -> None:
        super().__init__()
        from workbench.training.faces import MEAN, STD

        self.classifier = classifier
        self.register_buffer("mean", MEAN.view(1, 3, 1, 1).clone())
        self.register_buffer("std", STD.view(1, 3, 1, 1).clone())

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float().div(255.0)
        return torch.softmax(self.classifier((x - self.mean) / self.std), dim=1)


class _FaceGraph(torch.nn.Module):
    """A fine-tuned ``retinaface.RetinaFace`` with the shipped graph's outputs: ``loc``, ``conf`` (softmax), ``landmarks``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, logits, landmarks = self.net(x)
        return loc, torch.softmax(logits, dim=-1), landmarks


def _detector_graph(predictor: Predictor, tmp: Path) -> onnx.ModelProto:
    """The run's face detector graph: the shipped one, or its fine-tuned ``RetinaFace`` exported with
    the shipped graph's input and outputs (names, layout, dynamic batch, height and width)."""
    import retinaface

    net = getattr(predictor, "tuned_detector", None)
    if net is None:
        return onnx.load_from_string(retinaface.WEIGHTS)
    outputs = ("loc", "conf", "landmarks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _FaceGraph(net.cpu().eval()).eval(),
            (torch.zeros((1, 3, 320, 320)),),
            str(tmp),
            dynamo=False,
            opset_version=TWO_STAGE_OPSET,
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes={"input": {0: "batch_size", 2: "height", 3: "width"}}
            | {name: {0: "batch_size", 1: "priors"} for name in outputs},
        )
    graph = onnx.load(str(tmp))
    tmp.unlink()
    return graph


def _export_two_stage(predictor: Predictor, config: dict[str, Any], target: Path) -> Path:
    """The detector graph and the classifier's in one file (see the module docstring)."""
    imgsz = int(config["imgsz"])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _CropGraph(predictor.model.eval()).eval(),
            (torch.zeros((1, imgsz, imgsz, 3), dtype=torch.uint8),),
            str(tmp),
            dynamo=False,
            opset_version=TWO_STAGE_OPSET,
            input_names=["crops"],
            output_names=["probs"],
            dynamic_axes={"crops": {0: "faces"}, "probs": {0: "faces"}},
        )
    classifier = onnx.load(str(tmp))
    tmp.unlink()
    detector = onnx.compose.add_prefix(_detector_graph(predictor, tmp), DETECTOR_PREFIX)
    detector.ir_version = classifier.ir_version = max(detector.ir_version, classifier.ir_version)
    graph = onnx.compose.merge_models(detector, classifier, io_map=[], producer_name="workbench")
    info = metadata(predictor, config=config, dynamic=True)
    info["input"] = {
        "detector": f"{DETECTOR_PREFIX}input: (1, 3, H, W) float32, BGR minus (104, 117, 127) (retinaface.preprocess)",
        "crops": f"crops: (N, {imgsz}, {imgsz}, 3) uint8 RGB face crops (training.facecrops.corrected_crops)",
        "size": None,
        "imgsz": imgsz,
    }
    info.update(score_threshold=0.0, iou_threshold=None, max_detections=None)
    info["pipeline"] = {
        "detector": "retinaface",
        "detector_weights": "fine-tuned (detector.pth)" if predictor.tuned_detector is not None else "as it ships",
        "detector_input": f"{DETECTOR_PREFIX}input",
        "detector_outputs": [o.name for o in detector.graph.output],
        "upscale": float(config.get("upscale", 2.0)),
        "face_threshold": float(config.get("face_threshold", 0.3)),
        "nms_threshold": NMS_THRESHOLD,
        "box_fit": predictor.box_fit,
        "gamma": bool(config.get("gamma")),
        "imgsz": imgsz,
        "crop_pad": CROP_PAD,
    }
    onnx.helper.set_model_props(graph, {METADATA_KEY: json.dumps(info)})
    atomic_write(target, graph.SerializeToString())
    log.info("exported two-stage %s to %s (crops %dx%d)", predictor.run_dir.name, target, imgsz, imgsz)
    return target


def metadata(predictor: Predictor, *, config: dict[str, Any], dynamic: bool) -> dict[str, Any]:
    """What ``OnnxPredictor`` reads from the file: classes, input contract, thresholds, the run."""
    imgsz = int(config["imgsz"])
    return {
        "version": 1,
        "run": predictor.run_dir.name,
        "run_dir": str(predictor.run_dir.resolve()),
        "engine": config.get("engine") or "torchvision",
        "model": config.get("model"),
        "classes": list(predictor.classes),
        "input": {
            "name": "image",
            "layout": "HWC",
            "dtype": "uint8",
            "colour": "RGB",
            "size": None if dynamic else [imgsz, imgsz],
            "imgsz": imgsz,
            "normalisation": "inside the graph: x / 255, then torchvision's mean/std and resize",
        },
        "dynamic": dynamic,
        "score_threshold": SCORE_FLOOR,
        "iou_threshold": IOU_THRESHOLD,
        "max_detections": MAX_DETECTIONS,
        "card": predictor.card,
    }
