"""detectron2 engine (placeholder until implemented)."""

from __future__ import annotations

from workbench.errors import WorkbenchError


def check_available() -> None:
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise WorkbenchError("the detectron2 engine needs detectron2, which is not installed") from e
