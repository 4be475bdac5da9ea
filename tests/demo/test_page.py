"""pages/demo.py renders headless (AppTest), stopped and running, and never imports Gradio."""

from __future__ import annotations

import json
import subprocess
import sys

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.demo import server
from workbench.paths import home, models_dir

PAGE = str(PROJECT / "pages" / "demo.py")


def test_page_when_stopped_and_no_model():
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    text = " ".join(e.value for e in at.info) + " ".join(e.value for e in at.warning)
    assert "not running" in text and "no trained model yet" in text
    assert at.selectbox[0].options == ["latest"]


def test_page_when_running_then_stop():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.state_path().write_text(
            json.dumps(
                {
                    "pid": process.pid,
                    "local_url": "http://127.0.0.1:1/",
                    "model": "latest",
                    "host": "127.0.0.1",
                    "share_error": "cannot reach api.gradio.app:443",
                }
            )
        )
        at = AppTest.from_file(PAGE, default_timeout=30).run()
        assert not at.exception
        assert "does not answer" in at.warning[0].value
        assert "No public link" in at.warning[1].value
        at.button(key="demo_stop").click().run()
        assert not at.exception
        assert process.wait(10) != 0
        assert "not running" in at.info[0].value
    finally:
        if process.poll() is None:
            process.kill()


def test_page_lists_runs_with_weights_and_shows_the_log_tail():
    for name, weights in (("with-weights", "model_best.pth"), ("unfinished", None)):
        folder = models_dir() / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        if weights:
            (folder / weights).write_bytes(b"fake")
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception
    assert at.selectbox[0].options == ["latest", "with-weights"]
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.state_path().write_text(
            json.dumps({"pid": process.pid, "local_url": "http://127.0.0.1:1/", "model": "x"})
        )
        (home() / server.LOG_FILE).write_text("".join(f"line {i}\n" for i in range(100)))
        at = AppTest.from_file(PAGE, default_timeout=30).run()
        assert not at.exception
        log = at.code[-1].value
        assert log.splitlines() == [f"line {i}" for i in range(70, 100)]
    finally:
        process.kill()
        process.wait(10)


def test_page_does_not_import_gradio():
    code = (
        "import sys; from streamlit.testing.v1 import AppTest; "
        f"AppTest.from_file({PAGE!r}, default_timeout=30).run(); print('gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert out.stdout.strip().endswith("False"), out.stderr[-2000:]
