"""pages/demo.py renders headless (AppTest), stopped and running, and never imports Gradio."""

from __future__ import annotations

import json
import subprocess
import sys

from streamlit.testing.v1 import AppTest

from tests.conftest import PROJECT
from workbench.demo import server
from workbench.paths import home, models_dir
from workbench.training import processes

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
                    "pid_started": processes.token(process.pid),  # liveness is pid plus start time
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
            json.dumps(
                {
                    "pid": process.pid,
                    "pid_started": processes.token(process.pid),
                    "local_url": "http://127.0.0.1:1/",
                    "model": "x",
                }
            )
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


def test_page_refuses_a_model_of_other_classes_unless_ticked(tiny_model, voc8, monkeypatch):
    from tests.conftest import copy_run
    from workbench.datasets import catalog

    copy_run(tiny_model, models_dir())
    for xml in (voc8 / "annotations").glob("*.xml"):  # a dataset of other classes than the model's
        xml.write_text(xml.read_text().replace("<name>mask_weared_incorrect</name>", "<name>helmet</name>"))
    catalog.add_dataset(voc8)
    calls = []
    monkeypatch.setattr(server, "start", lambda **kwargs: calls.append(kwargs))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    # the dataset has no run of its own: `latest` first, then the one that follows the dataset's runs
    assert at.selectbox(key="demo_model").options[:2] == ["latest", "latest on voc8 (none yet)"]
    at.button[0].click().run()
    assert not at.exception and not calls
    message = at.error[0].value
    assert "was not trained on the classes" in message and "only the dataset has helmet" in message
    assert "Use a model whose classes differ" in message
    at.checkbox(key="demo_any_classes").check()
    at.button[0].click().run()
    assert not at.exception
    assert [(c["model"], c["data"], c["any_classes"]) for c in calls] == [("latest", str(voc8.resolve()), True)]
