"""workbench/demo/server.py: --auth parsing and the state file of a running demo (fast), then the
demo as a real server (``workbench demo`` on a free port) called through gradio_client (slow)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.conftest import SHARED, listening_addresses
from tests.demo.conftest import AUTH, free_port, read_json, session_env, start_server, workbench
from workbench.demo import server
from workbench.errors import WorkbenchError
from workbench.inference.onnx_predictor import OnnxPredictor
from workbench.inference.predict import load_predictor
from workbench.inference.video import probe, read_frames

# 301 x 400 px: not square and not the model's 160 px, so a box left in model coordinates shows.
IMAGE = SHARED / "andrewmvd-voc" / "images" / "maksssksksss200.png"
SCORE, IOU = 0.1, 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("ann:pw", ("ann", "pw")), ("ann:p:w", ("ann", "p:w"))],
)
def test_parse_auth(text, expected):
    assert server.parse_auth(text) == expected


@pytest.mark.parametrize("text", ["ann", ":pw", "ann:"])
def test_parse_auth_rejects(text):
    with pytest.raises(WorkbenchError, match="USER:PASS"):
        server.parse_auth(text)


def test_state_of_a_dead_process_is_stale():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    server.state_path().write_text(json.dumps({"pid": process.pid, "local_url": "http://127.0.0.1:1/"}))
    assert server.read_state() is None
    assert not server.state_path().exists()
    assert server.status() is None
    assert server.stop() is False


def test_stop_a_running_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server._write_state({"pid": process.pid, "local_url": "http://127.0.0.1:1/"})
        state = server.status()
        assert state["pid"] == process.pid and state["responding"] is False
        assert server.stop() is True
        assert process.wait(10) != 0
        assert server.read_state() is None
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_image_matches_workbench_predict(demo_setup):
    client = Client(demo_setup.server.url, verbose=False)
    annotated, table, png, json_file, status = client.predict(
        handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image"
    )
    record = read_json(json_file)
    width, height = Image.open(IMAGE).size
    assert (record["width"], record["height"]) == (width, height) == (301, 400)
    assert record["model"] == demo_setup.run_dir.name == "tiny"
    dets = record["detections"]
    assert dets, f"the tiny model found nothing at score {SCORE}: {status}"
    boxes = np.array([d["box"] for d in dets])
    # image coordinates: inside the 301 x 400 image, and spread over it (not squeezed into 160 px)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes[:, 3].max() > 160

    cli = json.loads(
        workbench(
            "predict",
            "--model",
            "latest",
            "--score",
            str(SCORE),
            "--iou",
            str(IOU),
            "--json",
            str(IMAGE),
            env=demo_setup.model_env,
        ).stdout
    )
    expected = cli["images"][0]
    assert (expected["width"], expected["height"]) == (width, height)
    assert [d["class"] for d in dets] == [d["class"] for d in expected["detections"]]
    np.testing.assert_allclose(boxes, [d["box"] for d in expected["detections"]], atol=0.05)
    np.testing.assert_allclose([d["score"] for d in dets], [d["score"] for d in expected["detections"]], atol=1e-3)

    # the table and the downloads say the same thing
    assert table["headers"] == ["#", "class", "score", "x1", "y1", "x2", "y2"]
    assert [row[3:] for row in table["data"]] == [d["box"] for d in dets]
    assert f"**{len(dets)}** detection(s)" in status
    for path in (annotated, png):
        picture = np.asarray(Image.open(path).convert("RGB"))
        assert picture.shape == (height, width, 3)
        assert not np.array_equal(picture, np.asarray(Image.open(IMAGE).convert("RGB"))), "no box drawn"


@pytest.mark.slow
def test_every_event_has_an_api_name(demo_setup):
    client = Client(demo_setup.server.url, verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/detect_image", "/detect_webcam", "/detect_video", "/model_card"} <= names


@pytest.mark.slow
def test_video(demo_setup, clip):
    client = Client(demo_setup.server.url, verbose=False)
    job = client.submit(handle_file(str(clip)), SCORE, IOU, 1, api_name="/detect_video")
    video, status = job.result(timeout=120)
    assert Path(video).suffix == ".webm"
    info = probe(video)
    assert (info.width, info.height) == (320, 240)
    frames = list(read_frames(video))
    assert len(frames) == 4
    originals = list(read_frames(clip))
    assert any(np.abs(a.astype(int) - b.astype(int)).mean() > 1 for a, b in zip(frames, originals)), "no box drawn"
    assert status.startswith("**4** frame(s)")


@pytest.mark.slow
def test_no_model_auth_share_and_hot_reload(demo_setup):
    server = demo_setup.empty
    output = server.output()
    # --share offline: says why, keeps serving locally
    assert "--share: no public link" in output and "Still serving locally" in output, output[-2000:]
    with pytest.raises(Exception):  # noqa: B017 (gradio_client raises a bare ValueError/HTTP error on a login wall)
        Client(server.url, verbose=False)
    client = Client(server.url, auth=AUTH, verbose=False)
    banner, card_md, card = client.predict(api_name="/model_card")
    assert card["model"] is None
    assert "No trained model yet" in banner and "workbench train" in banner
    assert "workbench train" in card_md
    with pytest.raises(Exception, match="workbench train"):
        client.predict(handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image")

    # a model appears: the same server serves it on the next request, no restart
    latest = Path(server.env["WORKBENCH_MODELS"]) / "latest"
    os.symlink(demo_setup.run_dir, latest)
    try:
        banner, _card_md, card = client.predict(api_name="/model_card")
        assert card["run"] == "tiny" and "tiny" in banner
        assert card["classes"] == ["without_mask", "with_mask", "mask_weared_incorrect"]
        *_, json_file, _status = client.predict(handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image")
        assert read_json(json_file)["model"] == "tiny"
    finally:
        latest.unlink()
    assert server.process.poll() is None


@pytest.mark.slow
def test_the_demo_listens_on_127_0_0_1_only_by_default(demo_setup):
    """Both servers were started without ``--host``: the kernel's socket table, not the printed
    URL, says where they can be reached."""
    for running in (demo_setup.server, demo_setup.empty):
        assert listening_addresses(running.port) == {"127.0.0.1"}


@pytest.mark.slow
def test_the_demo_listens_on_the_host_asked_for(tmp_path):
    server = start_server(tmp_path, session_env(tmp_path), "--host", "0.0.0.0")
    try:
        server.wait()
        assert listening_addresses(server.port) == {"0.0.0.0"}
    finally:
        server.stop()


@pytest.mark.slow
def test_load_20_concurrent_requests(demo_setup, record_property):
    n = 20
    clients = [Client(demo_setup.server.url, verbose=False) for _ in range(n)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def call(client: Client) -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            *_, json_file, _status = client.predict(handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image")
            assert read_json(json_file)["width"] == 301
            latencies.append(time.perf_counter() - start)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    wall = time.perf_counter() - wall
    assert not errors, errors[:3]
    assert len(latencies) == n
    median, worst = statistics.median(latencies), max(latencies)
    record_property("median_s", median)
    record_property("worst_s", worst)
    print(f"\n20 concurrent /detect_image: median {median:.2f} s, worst {worst:.2f} s, all done in {wall:.2f} s")


@pytest.mark.slow
def test_background_start_status_stop():
    """What the Streamlit Demo page does: start a demo, see it answer, stop it."""
    port = free_port()
    state = server.start(port=port, timeout=120)
    try:
        assert state["port"] == port and state["local_url"] == f"http://127.0.0.1:{port}/"
        assert listening_addresses(port) == {"127.0.0.1"}
        assert server.start(port=port)["pid"] == state["pid"], "a second start returns the running demo"
        status = server.status()
        assert status["responding"] is True
        assert "No trained model yet" in Client(state["local_url"], verbose=False).predict(api_name="/model_card")[0]
    finally:
        assert server.stop() is True
    assert server.status() is None
    assert not server.responds(state["local_url"], timeout=1)


@pytest.mark.slow
def test_a_demo_of_an_onnx_file_serves_it_and_offers_it_for_download(demo_setup, tmp_path):
    onnx = tmp_path / "exported" / "tiny.onnx"
    workbench("export", "--model", str(demo_setup.run_dir), "--out", str(onnx), "--dynamic", env=demo_setup.model_env)
    server = start_server(tmp_path, demo_setup.model_env, "--model", str(onnx))
    try:
        client = Client(server.wait().url, verbose=False)
        banner, _, card = client.predict(api_name="/model_card")
        assert "with onnxruntime" in banner and card["onnx"] == str(onnx) and card["run"] == "tiny"
        _, _, _, json_file, _ = client.predict(handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image")
        by_torch = Client(demo_setup.server.url, verbose=False).predict(
            handle_file(str(IMAGE)), SCORE, IOU, api_name="/detect_image"
        )[3]
        dets, expected = read_json(json_file)["detections"], read_json(by_torch)["detections"]
        assert dets and [d["class"] for d in dets] == [d["class"] for d in expected]
        # the JSON keeps 2 decimals: a 1e-4 px difference may round the other way
        np.testing.assert_allclose([d["box"] for d in dets], [d["box"] for d in expected], atol=0.0101)
        downloaded = client.predict(api_name="/onnx_file")
        assert Path(downloaded).read_bytes() == onnx.read_bytes()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_demo_of_a_run_exports_it_on_demand(demo_setup):
    client = Client(demo_setup.server.url, verbose=False)
    downloaded = Path(client.predict(api_name="/onnx_file"))
    exported = demo_setup.run_dir / "model.onnx"
    assert exported.is_file() and downloaded.read_bytes() == exported.read_bytes()
    mtime = exported.stat().st_mtime_ns
    client.predict(api_name="/onnx_file")
    assert exported.stat().st_mtime_ns == mtime, "exported again although the weights did not change"
    predictor = load_predictor(downloaded)
    assert isinstance(predictor, OnnxPredictor) and predictor.info["run"] == "tiny"
