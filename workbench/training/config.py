"""What defines a training run (``TrainConfig``), the default model, and ``build_config``: the
one merge of a recipe (or the plain defaults) with the user's overrides, which the
``workbench train`` command and the Train page both call (after Ultralytics' ``get_cfg``).

Torch is imported only by ``default_model``: the CLI's parser and the page's form import this
module without paying for it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench.datasets.catalog import resolve_path
from workbench.errors import WorkbenchError
from workbench.training.recipes import recipe_config

DEFAULTS: dict[str, Any] = {"engine": "torchvision", "model": "default", "weights": "auto"}


@dataclass
class TrainConfig:
    """Everything that defines a run; frozen into ``config.json`` (with ``classes``) at the start.

    ``imgsz`` is the longest image side in pixels (``None``: the model's default). ``batch`` is
    per process. ``lr`` ``None`` means ``0.02 * total batch / 8`` (SGD, momentum 0.9).
    ``max_iters`` caps the iterations per epoch and ``max_val_images`` the validation images
    (tiny runs, tests). ``gpus`` > 1 runs that many DDP processes through torchrun.
    ``freeze_backbone`` leaves the backbone network untrained; ``recipe`` names the preset
    (``workbench train --recipe``) that filled in the rest. ``time`` caps the run's wall time in
    minutes, validation included (``run.TimeBudget``); ``epochs`` stays the upper bound.
    """

    data: str
    format: str | None = None
    engine: str = "torchvision"
    model: str = "default"
    weights: str = "auto"
    epochs: int = 12
    imgsz: int | None = None
    batch: int = 4
    device: str = "auto"
    gpus: int = 1
    workers: int = 2
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    clip_grad: float = 0.0  # max gradient norm; 0 = off (on the CPU clipping costs ~2x an SGD step)
    amp: bool = True
    val_fraction: float = 0.2
    seed: int = 0
    max_iters: int | None = None
    max_val_images: int | None = None
    hflip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    color: float = 0.2
    rotation: float = 0.0
    freeze_backbone: bool = False  # train the FPN and heads only (``models.freeze_backbone``)
    time: float | None = None  # minutes for the whole run (training + validation); None: epochs decide
    # engine "two-stage" (the face-then-classify recipe, ``engines.two_stage``) only:
    detector: str = "retinaface"  # the face detector that ships its weights: retinaface or mtcnn
    upscale: float = 2.0  # the image is enlarged this much before face detection (small faces)
    face_threshold: float = 0.3  # the face detector's own score cut
    gamma: bool = False  # brighten dark face crops before classification
    background: bool = True  # the classifier also learns "not a face" from the detector's false faces
    detector_time: float = 0.0  # minutes fine-tuning retinaface on the training faces first (of ``time``); 0: off
    recipe: str | None = None  # the preset it came from (``workbench.training.recipes``), for the record
    classes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from ``config.json``-style fields; an unknown field is a ``WorkbenchError`` naming it."""
        check_keys(data)
        if "data" not in data:
            raise WorkbenchError("a training config needs 'data', the dataset folder")
        config = cls(**data)
        config.scale = tuple(config.scale)  # JSON gives a list
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def check_keys(data: Mapping[str, Any]) -> None:
    """Refuse a key that is no ``TrainConfig`` field, naming it (and the field it may be a typo of)."""
    unknown = sorted(set(data) - set(FIELDS))
    if not unknown:
        return
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise WorkbenchError(f"unknown training option {', '.join(parts)}; the options are {', '.join(FIELDS)}")


def build_config(recipe: str | None, device: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Every ``TrainConfig`` field of a new run: ``recipe``'s settings for ``device`` (its GPU
    settings on CUDA; ``DEFAULTS`` when ``recipe`` is ``None``), then ``device`` when given, then
    ``overrides``, which win. ``overrides`` must hold ``data``, the dataset folder, which is
    resolved as the Datasets page resolves it (``~`` expanded, made absolute); a value of ``None``
    in them is a value (``time=None``: no limit), so leave out what the user did not choose.
    Raises ``WorkbenchError`` for an unknown key or recipe.
    """
    check_keys(overrides)
    config = dict(DEFAULTS)
    if recipe:
        config.update(recipe_config(recipe, device=device))
    if device:
        config["device"] = device
    config.update(overrides)
    if not config.get("data"):
        raise WorkbenchError("no dataset given: a training config needs 'data', the dataset folder")
    config["data"] = str(resolve_path(config["data"]))
    config["weights"] = weights_value(config.get("weights", "auto"))
    return TrainConfig.from_dict(config).to_dict()


WEIGHT_KINDS = ("auto", "coco", "imagenet", "none")  # weights.WEIGHT_KINDS, here without torch


def weights_value(value: str) -> str:
    """``value`` when it is a weights kind, else the absolute path of the weights file it names
    (``--weights PATH``); a ``WorkbenchError`` when there is no such file."""
    if value in WEIGHT_KINDS:
        return value
    path = resolve_path(value)
    if not path.is_file():
        raise WorkbenchError(
            f"weights file {value!r} not found (weights: {', '.join(WEIGHT_KINDS)}, or the path of a weights file)"
        )
    return str(path)


def default_model(device: str = "auto") -> str:
    """The recommended model: ResNet-50 Faster R-CNN on CUDA; on the CPU MobileNetV3 Faster
    R-CNN when its COCO weights are at hand, else the MobileNetV2 one (ImageNet weights offline)."""
    import torch  # here, not at the top: building a config stays torch-free

    from workbench.training.models import MODELS  # torchvision: as torch above
    from workbench.training.weights import find_weights

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "fasterrcnn_resnet50_fpn_v2"
    if find_weights(MODELS["fasterrcnn_mobilenet"].coco):
        return "fasterrcnn_mobilenet"
    return "fasterrcnn_mobilenet_v2"
