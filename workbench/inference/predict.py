"""Load a trained run as a predictor: the one API that evaluation, FiftyOne and the demo build on.

    from workbench.inference.predict import load_predictor
    predictor = load_predictor("latest")            # or a run name, a run folder, an exported .onnx file
    det = predictor.predict(image)                  # image: (H, W, 3) uint8 RGB
    det.boxes, det.scores, det.class_ids            # (N, 4) x1 y1 x2 y2 pixels, (N,), (N,)
    predictor.classes[det.class_ids[0]]

Boxes are in the pixel coordinates of the image passed in (the model resizes internally
and maps back), with the workbench's convention (0-based, ``x2``/``y2`` exclusive).
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.inference.onnx_predictor import OnnxPredictor, is_onnx_file
from workbench.training.engines import get_engine
from workbench.training.predictor import Predictor, pick_device
from workbench.training.registry import CARD_JSON, read_json, resolve_run


def load_predictor(run: str | Path = "latest", device: str = "auto") -> Predictor | OnnxPredictor:
    """The predictor of a registered run: ``"latest"``, a run name or a run folder; or of an
    exported ``.onnx`` file (``OnnxPredictor``, onnxruntime on the CPU unless ``device`` is CUDA).

    Uses the best epoch's weights (``model_best.pth``), else the last checkpoint; the run's
    engine (``config.json``'s ``engine``, ``ENGINES``) builds it.
    """
    if is_onnx_file(run):
        return OnnxPredictor(run, device=device)
    folder = resolve_run(run)
    config = read_json(folder / "config.json")
    if not config:
        raise WorkbenchError(f"{folder}: config.json missing or unreadable")
    card = read_json(folder / CARD_JSON) or {
        "run": folder.name,
        "engine": config.get("engine"),
        "model": config.get("model"),
        "classes": config.get("classes"),
        "finished": False,
    }
    return get_engine(config.get("engine")).load(folder, config, card, pick_device(device))
