"""The demo server: ``serve`` it in this process (what ``workbench demo`` runs), or
``start``/``stop``/``status`` it as a background process (what the Demo page calls).

Gradio is imported only when the server starts, so the Streamlit Demo page can use
``start``/``stop``/``status`` below without paying for it.

A running demo (started here or from a terminal) writes ``<workspace>/demo.json``: its pid,
port, local URL, public URL or why there is none, and the model asked for. The file is
removed when the server exits. The file also keeps the process's start time (``pid_started``):
a file whose pid is gone, or now belongs to a process that started at another time (a reused
pid), is stale and removed, and Stop never signals that process (``training.processes``). The
server's output goes to ``<workspace>/demo.log`` when started by ``start``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fileio import atomic_write
from workbench.paths import home
from workbench.training import processes

STATE_FILE = "demo.json"
LOG_FILE = "demo.log"
AUTH_ENV = "WORKBENCH_DEMO_AUTH"  # USER:PASS, so a password need not show in `ps`
DEFAULT_PORT = 7860


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"USER:PASS"`` -> ``("USER", "PASS")``; ``None`` or ``""`` -> no login."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise WorkbenchError("--auth takes USER:PASS (both non-empty)")
    return user, password


def state_path() -> Path:
    return home() / STATE_FILE


def read_state() -> dict[str, Any] | None:
    """The running demo's state, or ``None`` when none runs (a stale file is removed)."""
    path = state_path()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not processes.is_alive(pid, state.get("pid_started")):
        path.unlink(missing_ok=True)
        return None
    return state


def _write_state(state: dict[str, Any]) -> None:
    """Write ``demo.json`` with the start time of ``state["pid"]`` (unless given): its identity."""
    state = {**state}
    state.setdefault("pid_started", processes.token(int(state["pid"])))
    atomic_write(state_path(), json.dumps(state, indent=2) + "\n")


def _clear_state(pid: int) -> None:
    path = state_path()
    try:
        if int(json.loads(path.read_text(encoding="utf-8")).get("pid", -1)) == pid:
            path.unlink(missing_ok=True)
    except (OSError, ValueError):
        pass


def responds(url: str, timeout: float = 2.0) -> bool:
    """Whether a demo answers at ``url`` (a login page counts)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/gradio_api/info", timeout=timeout) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code in (401, 403)
    except (OSError, ValueError):
        return False


def start(
    *,
    model: str = "latest",
    port: int = DEFAULT_PORT,
    share: bool = False,
    auth: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = 90.0,
    data: str | None = None,
    any_classes: bool = False,
) -> dict[str, Any]:
    """Start ``workbench demo`` in the background and wait until it serves; returns its state.

    Raises ``WorkbenchError`` with the end of its log when it exits or does not answer in time.
    A demo already running is returned as is.
    """
    running = read_state()
    if running:
        return running
    log_path = home() / LOG_FILE
    command = [sys.executable, "-m", "workbench.cli", "demo", "--model", model, "--port", str(port), "--host", host]
    if share:
        command.append("--share")
    if data:  # the dataset the model must fit (``registry.model_for``)
        command += ["--data", data]
    if any_classes:  # the user chose a model whose classes differ from the dataset's
        command.append("--any-classes")
    env = dict(os.environ)
    if auth:
        parse_auth(auth)
        env[AUTH_ENV] = auth
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state()
        if state and int(state["pid"]) == process.pid:
            return state
        if process.poll() is not None:
            break
        time.sleep(0.3)
    if process.poll() is None:
        stop_pid(process.pid, processes.token(process.pid))
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise WorkbenchError(f"the demo did not start (log {log_path}):\n{tail}")


def stop_pid(pid: int, started: str | None, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` if it is still the process that started at ``started`` (``processes.token``),
    SIGKILL after ``timeout`` s; True when it is gone. A reused pid is never signalled."""
    return processes.stop(pid, started, timeout=timeout)


def stop() -> bool:
    """Stop the running demo (if any); True when one was stopped."""
    state = read_state()
    if not state:
        return False
    pid = int(state["pid"])
    stop_pid(pid, state.get("pid_started"))
    _clear_state(pid)
    return True


def status() -> dict[str, Any] | None:
    """The running demo's state plus ``responding`` (it answers HTTP), or ``None``."""
    state = read_state()
    if state:
        state["responding"] = responds(state["local_url"])
        state["log"] = str(home() / LOG_FILE)
    return state


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve(
    *,
    model: str = "latest",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    share: bool = False,
    auth: str | None = None,
    device: str = "auto",
    concurrency: int = 2,
    say: Callable[[str], None] = _say,
) -> None:
    """Serve the demo of ``model`` on ``host:port`` until SIGTERM or Ctrl-C, with the state file
    written while it serves. ``auth`` is ``USER:PASS`` (default: ``$WORKBENCH_DEMO_AUTH``);
    ``say`` prints the banner and the URLs (stderr). Raises ``WorkbenchError`` when the port
    cannot be bound."""
    login = parse_auth(auth or os.environ.get(AUTH_ENV))
    # Gradio and torch load only here: the Demo page imports this module for start/stop/status.
    from workbench.demo.detector import DemoLimits, DetectorDemo, ModelSource
    from workbench.demo.gradio_app import build_demo, launch

    limits = DemoLimits(concurrency=concurrency)
    app = DetectorDemo(ModelSource(model, device=device), limits=limits)
    banner, _, _ = app.model_card()  # loads the model now, so the first request is not slow
    say(banner.replace("**", "").replace("`", ""))
    demo = build_demo(app)
    try:
        served = launch(demo, host=host, port=port, share=share, auth=login, limits=limits)
    except OSError as e:
        raise WorkbenchError(f"cannot serve on {host}:{port}: {e} (another demo running? try --port)") from e
    if share and served.share_error:
        say(
            f"workbench demo: --share: no public link: {served.share_error}. Still serving locally at {served.local_url}"
        )
    elif served.share_url:
        say(f"workbench demo: public link {served.share_url}")
    say(f"workbench demo: serving on {served.local_url}")
    pid = os.getpid()
    _write_state(
        {
            "pid": pid,
            "host": host,
            "port": port,
            "local_url": served.local_url,
            "share_url": served.share_url,
            "share_error": served.share_error,
            "model": model,
            "auth": bool(login),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        _clear_state(pid)
        demo.close()
