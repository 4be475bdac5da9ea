"""Fixtures for the training tests: a tiny VOC copy and an offline environment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import copy_voc_subset

# eight real images of the shared face-mask set (5 and 7 are in the held-out test set)
STEMS = [f"maksssksksss{n}" for n in (0, 1, 2, 3, 4, 6, 8, 9)]

# a tiny run: 2 iterations of 2 images at 160 px, 2 validation images, no loader processes
TINY = ["--imgsz", "160", "--batch", "2", "--max-iters", "2", "--workers", "0", "--max-val-images", "2"]


@pytest.fixture(scope="session")
def tiny_voc(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_voc_subset(shared, tmp_path_factory.mktemp("tiny") / "voc", STEMS)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never probe the network for weights (CI has none; the probe would cost seconds)."""
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    """``predicate()``'s first true value, polled every 0.3 s; an ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
