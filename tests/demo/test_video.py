"""workbench/video.py: RGB frames in and out of OpenCV, the browser codec."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ReadError, WorkbenchError
from workbench.video import BROWSER_CODEC, VideoWriter, probe, read_frames, write_video


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
