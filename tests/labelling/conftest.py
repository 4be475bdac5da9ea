"""Fixtures of the labelling tests: the session's tiny model (``voc8``, a copy of 8 shared VOC
images, is in ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TinyModel


@pytest.fixture(scope="session")
def tiny_run(tiny_model: TinyModel) -> Path:
    """The tiny model's run folder itself (the tests only read it and its training data). Its
    workspace, where the training recorded the dataset version, is ``<run>/../../home``."""
    return tiny_model.run
