"""The Errors page renders (AppTest) with and without a run, a worst image opens in Annotate, and
showing a saved report does not import torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from workbench.datasets import catalog
from workbench.evaluation.report import list_reports, load_report

PROJECT = Path(__file__).resolve().parents[2]


def run_page(**state) -> AppTest:
    at = AppTest.from_file(str(PROJECT / "pages" / "errors.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.caption] + [m.value for m in at.info]
    parts += [m.value for m in at.warning] + [m.value for m in at.error] + [m.value for m in at.success]
    return "\n".join(str(p) for p in parts)


def test_without_a_model_the_page_says_so(voc8):
    catalog.add_dataset(voc8)
    at = run_page()
    assert not at.exception
    assert "No trained model yet" in texts(at)


@pytest.mark.slow
def test_page_shows_an_evaluation(evaluated, tiny_run, voc8, monkeypatch):
    import streamlit

    monkeypatch.setenv("WORKBENCH_MODELS", str(tiny_run.parent))
    switched = []  # the page's st.switch_page, recorded (the Annotate page is not run here)
    monkeypatch.setattr(streamlit, "switch_page", switched.append)
    entry = catalog.add_dataset(voc8)
    at = run_page()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Worst images" in shown and "Confusion matrix" in shown and "AP per class" in shown
    assert at.selectbox(key="errors_run").value == "tiny"
    assert len(at.dataframe) >= 2  # the metrics table and the per-class table
    shown_report = load_report(list_reports(tiny_run)[at.selectbox(key="errors_report").value])
    assert Path(shown_report.dataset) == voc8
    worst = shown_report.worst_images(12)
    buttons = [b for b in at.button if str(b.key).startswith("errors-open-")]
    assert len(buttons) == len(worst) > 0
    assert buttons[0].key == f"errors-open-{worst[0]['path']}"
    buttons[0].click().run()
    assert switched == ["pages/annotate.py"]
    assert at.session_state["image"] == worst[0]["path"]
    assert at.session_state["dataset"] == entry.path


SHOW_SAVED_REPORT = """
import sys
from streamlit.testing.v1 import AppTest
from workbench.datasets import catalog

catalog.add_dataset(sys.argv[1])
at = AppTest.from_file(sys.argv[2], default_timeout=120).run()
assert not at.exception, at.exception
shown = "\\n".join(str(m.value) for m in at.markdown)
assert "Worst images" in shown and "Confusion matrix" in shown, shown
assert at.selectbox(key="errors_run").value == "tiny"
print("torch" in sys.modules, sorted(m for m in sys.modules if m.startswith(("torch", "torchvision")))[:5])
"""


@pytest.mark.slow
def test_showing_a_saved_report_does_not_import_torch(evaluated, tiny_run, voc8):
    """A fresh process renders the page on the tiny run's saved evaluation; torch stays unloaded."""
    env = {**os.environ, "WORKBENCH_MODELS": str(tiny_run.parent)}
    page = str(PROJECT / "pages" / "errors.py")
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SAVED_REPORT, str(voc8), page],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "False []", result.stdout
