"""detectron2 engine (placeholder until implemented)."""

from __future__ import annotations

from workbench.errors import WorkbenchError


def check_available() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise WorkbenchError("the detectron2 engine needs detectron2, which is not installed") from e


ZOO_CONFIGS = [
    "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
]
