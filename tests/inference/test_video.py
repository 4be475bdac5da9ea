"""workbench.inference.video: RGB frames in and out of OpenCV, the browser codec, a detector run over a
video (``annotate_video``), and ``workbench predict`` on a video file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED, TinyModel
from tests.demo.conftest import workbench
from workbench.annotations import Detections
from workbench.errors import ReadError, WorkbenchError
from workbench.inference.video import BROWSER_CODEC, VideoWriter, annotate_video, probe, read_frames, write_video


def frames(n: int = 5, size: tuple[int, int] = (96, 64)) -> list[np.ndarray]:
    width, height = size
    out = []
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, :, 0] = 200  # red: a BGR/RGB mix-up turns it blue
        frame[:, : (i + 1) * 10, 1] = 255
        out.append(frame)
    return out


@pytest.mark.parametrize("codecs", [(BROWSER_CODEC,), ((".mp4", "mp4v"),)])
def test_round_trip(tmp_path, codecs):
    path = write_video(tmp_path / "clip.any", frames(), fps=5, codecs=codecs)
    assert path.suffix == codecs[0][0]
    info = probe(path)
    assert (info.width, info.height, info.frames) == (96, 64, 5)
    assert info.fps == pytest.approx(5, abs=0.01)
    back = list(read_frames(path))
    assert len(back) == 5 and back[0].shape == (64, 96, 3)
    assert back[0][32, 80, 0] > 150 and back[0][32, 80, 2] < 60, "channels swapped"


def test_browser_codec_is_webm_vp8(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", fps=5, size=(64, 48)) as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    assert writer.path.suffix == ".webm" and writer.fourcc == "VP80"


def test_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    with pytest.raises(ReadError, match=r"bad\.mp4"):
        probe(bad)
    with pytest.raises(WorkbenchError, match="no frames"):
        write_video(tmp_path / "empty.webm", [])
    with (
        VideoWriter(tmp_path / "size.webm", fps=5, size=(64, 48)) as writer,
        pytest.raises(WorkbenchError, match="64x48"),
    ):
        writer.write(np.zeros((10, 10, 3), np.uint8))


class FakePredictor:
    """One box per frame, in class 1, somewhere else on every call (so a redraw shows)."""

    def __init__(self, fail_on: int | None = None, classes: tuple[str, ...] = ("cat", "dog")) -> None:
        self.classes = list(classes)
        self.calls = 0
        self.fail_on = fail_on

    def predict(self, frame: np.ndarray, score_threshold: float, iou_threshold: float) -> Detections:
        assert frame.shape == (64, 96, 3) and (score_threshold, iou_threshold) == (0.3, 0.6)
        if self.calls == self.fail_on:
            raise RuntimeError("model failed")
        x = 5 + 10 * self.calls
        self.calls += 1
        return Detections([[x, 10, x + 30, 40]], [0.9], [1])


@pytest.mark.parametrize(
    ("step", "max_frames", "frames_done", "from_frames"),
    [
        (1, None, 5, [0, 1, 2, 3, 4]),
        (2, None, 5, [0, 0, 2, 2, 4]),
        (3, 4, 4, [0, 0, 0, 3]),
        (10, None, 5, [0, 0, 0, 0, 0]),
    ],
)
def test_annotate_video(tmp_path, step, max_frames, frames_done, from_frames):
    clip = write_video(tmp_path / "clip.mp4", frames(), fps=5, codecs=((".mp4", "mp4v"),))
    predictor, progress = FakePredictor(), []
    result = annotate_video(
        predictor,
        clip,
        tmp_path / "out" / "my.clip_detections",  # a dot in the name: the container is added, not substituted
        score_threshold=0.3,
        iou_threshold=0.6,
        frame_step=step,
        max_frames=max_frames,
        detections_path=tmp_path / "out" / "my.clip_detections.jsonl",
        on_frame=lambda done, total: progress.append((done, total)),
    )
    assert result.path == tmp_path / "out" / "my.clip_detections.webm" and result.fourcc == "VP80"
    assert (result.frames, result.predicted, result.detections) == (frames_done, predictor.calls, predictor.calls)
    assert predictor.calls == len(set(from_frames)) and result.predictor is predictor
    assert progress == [(n + 1, frames_done) for n in range(frames_done)]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["my.clip_detections.jsonl", "my.clip_detections.webm"]
    info = probe(result.path)
    assert (info.width, info.height, info.frames) == (96, 64, frames_done)
    lines = [json.loads(line) for line in result.detections_path.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(frames_done))
    assert [line["time"] for line in lines] == pytest.approx([n / 5 for n in range(frames_done)])
    assert [line["from_frame"] for line in lines] == from_frames
    x_of_call = {frame: 5 + 10 * n for n, frame in enumerate(sorted(set(from_frames)))}
    for line in lines:  # the frames between keep the boxes of the last frame the model ran on
        x = x_of_call[line["from_frame"]]
        assert line["detections"] == [{"box": [x, 10.0, x + 30, 40.0], "score": 0.9, "class_id": 1, "class": "dog"}]
    drawn, original = list(read_frames(result.path))[-1], frames()[frames_done - 1]
    x = x_of_call[from_frames[-1]]
    change = np.abs(drawn[12:38, x].astype(int) - original[12:38, x].astype(int)).max(axis=-1)  # VP8 blurs colour
    assert change.mean() > 40, "no box drawn on the box's left edge"


def test_annotate_video_with_a_swapping_model_source(tmp_path):
    """A ``ModelSource.predict``-like function: the boxes are drawn with the classes of the predictor that made them."""
    clip = write_video(tmp_path / "clip.webm", frames(3), fps=5)
    first, second = FakePredictor(), FakePredictor(classes=("a", "b"))
    used = iter([first, second, second])

    def predict(frame, *, score_threshold, iou_threshold):
        predictor = next(used)
        return predictor, predictor.predict(frame, score_threshold, iou_threshold)

    result = annotate_video(predict, clip, tmp_path / "clip.webm", score_threshold=0.3, iou_threshold=0.6)
    assert result.path == tmp_path / "clip.webm"  # a video suffix is replaced (here by the same one)
    assert result.predictor is second and (result.frames, result.predicted) == (3, 3)
    assert result.detections_path is None


def test_annotate_video_failures_leave_nothing(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames(), fps=5, codecs=((".mp4", "mp4v"),))
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_detections.jsonl").write_text("before\n")
    kwargs = {"score_threshold": 0.3, "iou_threshold": 0.6, "detections_path": out / "clip_detections.jsonl"}
    with pytest.raises(RuntimeError, match="model failed"):
        annotate_video(FakePredictor(fail_on=2), clip, out / "clip_detections", **kwargs)
    with pytest.raises(ReadError, match=r"clip\.mp4: no frame could be decoded"):
        annotate_video(FakePredictor(), clip, out / "clip_detections", max_frames=0, **kwargs)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    with pytest.raises(ReadError, match=r"bad\.mp4"):
        annotate_video(FakePredictor(), bad, out / "bad_detections", **kwargs)
    assert [p.name for p in out.iterdir()] == ["clip_detections.jsonl"]  # no partial file, the old one intact
    assert (out / "clip_detections.jsonl").read_text() == "before\n"


SCORE = "0.05"


def detections_per_line(path: Path) -> list[list[dict]]:
    return [json.loads(line)["detections"] for line in path.read_text().splitlines()]


def assert_same_detections(got: list[dict], expected: list[dict]) -> None:
    assert [(d["class"], d["class_id"], d["score"]) for d in got] == [
        (d["class"], d["class_id"], d["score"]) for d in expected
    ]
    np.testing.assert_allclose(np.reshape([d["box"] for d in got], (-1, 4)), [d["box"] for d in expected], atol=1e-3)


@pytest.mark.slow
def test_predict_cli_on_a_video(tiny_model: TinyModel, clip, tmp_path):
    env, run = dict(os.environ), str(tiny_model.run)
    image = SHARED / "andrewmvd-voc" / "images" / "maksssksksss200.png"
    out = tmp_path / "out"
    # a video and an image in one call
    result = workbench(
        "predict",
        "--model",
        run,
        "--device",
        "cpu",
        "--score",
        SCORE,
        "--out",
        str(out),
        str(clip),
        str(image),
        env=env,
    )
    video, jsonl = out / "clip_detections.webm", out / "clip_detections.jsonl"
    assert f"wrote {video} (VP80) and {jsonl}" in result.stdout, result.stdout
    assert "clip.mp4: 4 frame(s), model run on 4," in result.stdout
    assert (out / "maksssksksss200.jpg").is_file() and "wrote 1 annotated image(s)" in result.stdout
    assert len(json.loads((out / "coco_images.json").read_text())["images"]) == 1
    info = probe(video)
    assert (info.width, info.height, info.frames) == (320, 240, 4)
    assert len(list(read_frames(video))) == 4
    per_frame = detections_per_line(jsonl)
    assert len(per_frame) == 4 and sum(map(len, per_frame)) > 0, f"the tiny model found nothing at score {SCORE}"
    assert [json.loads(line)["time"] for line in jsonl.read_text().splitlines()] == [0.0, 0.25, 0.5, 0.75]

    # each frame's detections are what `workbench predict` finds on that frame as an image
    stills = []
    for n, frame in enumerate(read_frames(clip)):
        stills.append(tmp_path / "frames" / f"frame{n}.png")
        stills[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(frame).save(stills[-1])
    result = workbench(
        "predict", "--model", run, "--device", "cpu", "--score", SCORE, "--json", *map(str, stills), env=env
    )
    images = json.loads(result.stdout)["images"]
    assert "videos" not in json.loads(result.stdout)  # images only: the JSON is as it was
    assert [(im["width"], im["height"]) for im in images] == [(320, 240)] * 4
    for got, expected in zip(per_frame, images, strict=True):
        assert_same_detections(got, expected["detections"])

    # --video-step 2: the model runs on frames 0 and 2, frames 1 and 3 keep their boxes
    out2 = tmp_path / "out2"
    step = ["--video-step", "2", "--json", str(clip)]
    result = workbench(
        "predict", "--model", run, "--device", "cpu", "--score", SCORE, "--out", str(out2), *step, env=env
    )
    summary = json.loads(result.stdout)
    assert summary["images"] == [] and not (out2 / "coco_results.json").exists()
    (entry,) = summary["videos"]
    assert (entry["frames"], entry["predicted_frames"]) == (4, 2)
    assert entry["video"] == str(out2 / "clip_detections.webm") and probe(entry["video"]).frames == 4
    lines = [json.loads(line) for line in Path(entry["detections_path"]).read_text().splitlines()]
    assert [line["from_frame"] for line in lines] == [0, 0, 2, 2]
    for line in lines:
        assert_same_detections(line["detections"], per_frame[line["from_frame"]])
    assert entry["detections"] == len(per_frame[0]) + len(per_frame[2])


def test_predict_cli_video_needs_out(clip, tmp_path):
    no_run = str(tmp_path / "no-such-run")  # the error comes before the model is looked for
    result = workbench("predict", "--model", no_run, str(clip), env=dict(os.environ), check=False)
    assert result.returncode == 1
    assert f"workbench: error: {clip}: a video needs --out DIR" in result.stderr
    args = ["--model", no_run, "--out", str(tmp_path / "out"), "--video-step", "0", str(clip)]
    result = workbench("predict", *args, env=dict(os.environ), check=False)
    assert result.returncode == 1 and "--video-step 0" in result.stderr
    assert not (tmp_path / "out").exists()
