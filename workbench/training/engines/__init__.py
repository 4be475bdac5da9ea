"""The table of training engines: ``ENGINES[name]`` says whether the engine can run here
(``check``), prepares a config for a job, trains a run folder and loads a trained run as a
``Predictor`` (after Ultralytics' ``task_map``). Every choice by engine name goes through it.

Each engine module (``engines/torchvision.py``, ``engines/detectron2.py``,
``engines/two_stage.py``) provides ``prepare(config) -> short model name``, ``main(config,
folder, *, should_stop=None) -> model card``, ``load(folder, config, card, device) ->
Predictor`` and ``model_choices() -> {model: description}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError
from workbench.training import optional

if TYPE_CHECKING:
    import torch

    from workbench.training.config import TrainConfig
    from workbench.training.predictor import Predictor

DEFAULT_ENGINE = "torchvision"


@dataclass(frozen=True)
class Engine:
    """One training engine.

    Attributes:
        name: what ``--engine`` and ``config.json``'s ``engine`` say.
        summary: one line for ``--help`` and the Train page.
        module: imports and returns the engine's module. The engine modules are imported
            inside these functions, on first use, so that torch and detectron2 load only when
            an engine is used (listing the engines or building a config stays light).
        needs: the optional packages it cannot run without (``optional``).
        distributed: whether ``gpus > 1`` runs as DDP ranks under torchrun.
        picks_model: whether the Train page offers its models (the two-stage engine comes
            with its recipe only).
    """

    name: str
    summary: str
    module: Callable[[], ModuleType]
    needs: tuple[str, ...] = ()
    distributed: bool = False
    picks_model: bool = True

    def check(self) -> None:
        """Raise a ``WorkbenchError`` saying what to install when the engine cannot run here."""
        for package in self.needs:
            optional.require(package, user=f"the {self.name} engine")

    def available(self) -> bool:
        try:
            self.check()
        except WorkbenchError:
            return False
        return True

    def prepare(self, config: TrainConfig) -> str:
        """Check ``config`` before a job starts and put the engine's own model name into it;
        returns the short model name a run is named after."""
        self.check()
        return self.module().prepare(config)

    def train(
        self, config: TrainConfig | dict[str, Any], folder: Path, *, should_stop: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Train run ``folder`` (created, or resumed from its checkpoint) in this process; return its model card."""
        self.check()
        return self.module().main(config, folder, should_stop=should_stop)

    def load(self, folder: Path, config: dict[str, Any], card: dict[str, Any], device: torch.device) -> Predictor:
        """The ``Predictor`` of trained run ``folder`` (its ``config.json`` and model card given)."""
        self.check()
        return self.module().load(folder, config, card, device)

    def model_choices(self) -> dict[str, str]:
        """``{model name: one line}`` that ``--model`` takes."""
        return self.module().model_choices()


def _torchvision() -> ModuleType:
    from workbench.training.engines import torchvision

    return torchvision


def _detectron2() -> ModuleType:
    from workbench.training.engines import detectron2

    return detectron2


def _two_stage() -> ModuleType:
    from workbench.training.engines import two_stage

    return two_stage


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in [
        Engine("torchvision", "torchvision detection models (always installed)", _torchvision, distributed=True),
        Engine("detectron2", "detectron2 model-zoo configs (when installed)", _detectron2, needs=("detectron2",)),
        Engine(
            "two-stage",
            "a face detector + a crop classifier (the face-then-classify recipe)",
            _two_stage,
            picks_model=False,
        ),
    ]
}


def get_engine(name: str | None) -> Engine:
    """The engine called ``name`` (``None``: the default); an unknown name is a ``WorkbenchError``."""
    try:
        return ENGINES[name or DEFAULT_ENGINE]
    except KeyError:
        raise WorkbenchError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}") from None
