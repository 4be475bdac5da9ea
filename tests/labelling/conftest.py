"""Fixtures of the labelling tests: a copy of 8 shared VOC images and the session's tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED, TINY_STEMS, TinyModel, copy_voc_subset


@pytest.fixture
def voc8(tmp_path) -> Path:
    """A fresh copy per test: the tests edit it."""
    return copy_voc_subset(SHARED, tmp_path / "voc8", TINY_STEMS)


@pytest.fixture(scope="session")
def tiny_run(tiny_model: TinyModel) -> Path:
    """The tiny model's run folder itself (the tests read it; one edits its training data and
    undoes the edit). Its workspace, where the training recorded the dataset version, is
    ``<run>/../../home``."""
    return tiny_model.run
