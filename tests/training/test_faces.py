"""The face-then-classify model's parts: the box correction and the gamma correction of crops."""

from __future__ import annotations

import numpy as np

from workbench.training import faces


def test_box_correction_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (20, 2))
    size = rng.uniform(10, 80, (20, 2))
    det = np.hstack([xy, xy + size])
    # truth: the same top and width, 20% taller (the chin under a mask)
    truth = det.copy()
    truth[:, 3] += 0.2 * size[:, 1]
    fit = faces.fit_box_correction(det, truth)
    assert fit["pairs"] == 20
    np.testing.assert_allclose(faces.correct_boxes(det, fit), truth, atol=1e-6)
    assert faces.fit_box_correction(det[:2], truth[:2])["x"] == faces.IDENTITY_FIT["x"]


def test_gamma_brightens_dark_crops_only():
    dark = np.full((8, 8, 3), 40, dtype=np.uint8)
    assert faces.gamma_correct(dark).mean() > 100
    bright = np.full((8, 8, 3), 150, dtype=np.uint8)
    assert (faces.gamma_correct(bright) == bright).all()
