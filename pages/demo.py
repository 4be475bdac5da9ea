"""Demo: start the Gradio demo of a trained model, stop it, and open it.

The demo is its own process (``workbench demo``, see ``workbench.demo.server``): it keeps serving
when this page or Streamlit closes, and this page finds it again through the workspace's
``demo.json``. Gradio is not imported here. The model offered first is the latest run trained on
the current dataset; a run whose classes differ from the dataset's is refused unless the user ticks
"Use a model whose classes differ".
"""

from __future__ import annotations

import streamlit as st

from pages.common.ui import current_entry
from workbench.datasets.catalog import DatasetEntry
from workbench.demo import server
from workbench.errors import WorkbenchError
from workbench.fileio import tail_lines
from workbench.training import registry

LOG_LINES = 30
ANY_CLASSES = "Use a model whose classes differ from the dataset's"


def run_choices(entry: DatasetEntry | None) -> list[str]:
    """The latest run trained on the current dataset (``latest:<folder>``) first when there is one,
    else ``latest`` first; then every run with weights, newest first."""
    if entry is None:
        return ["latest", *registry.runs_with_weights()]
    own = f"{registry.LATEST_OF}{registry.dataset_key(entry.path)}"
    first = [own, "latest"] if registry.latest_of(entry.path) else ["latest", own]
    return [*first, *registry.runs_with_weights()]


def choice_label(choice: str, entry: DatasetEntry | None) -> str:
    if entry is None or not choice.startswith(registry.LATEST_OF):
        return choice
    run = registry.latest_of(entry.path)
    return f"latest on {entry.name} ({run or 'none yet'})"


def show_running(state: dict) -> None:
    url = state["local_url"]
    if state.get("responding"):
        st.success(f"The demo is running (pid {state['pid']}, model `{state['model']}`) at {url}")
    else:
        st.warning(f"The demo process {state['pid']} runs but does not answer at {url} yet; reload in a moment.")
    cols = st.columns([1, 1, 3])
    cols[0].link_button("Open the demo", url, type="primary", icon=":material/open_in_new:")
    if cols[1].button("Stop", icon=":material/stop:", key="demo_stop"):
        server.stop()
        st.rerun()
    if state.get("share_url"):
        st.info(f"Public link (temporary, anyone with it can use the demo): {state['share_url']}")
    elif state.get("share_error"):
        st.warning(f"No public link: {state['share_error']}. The demo serves on this machine only.")
    if state.get("auth"):
        st.caption("Login required (the user and password given when it started).")
    st.caption(
        f"Bound to {state.get('host', '127.0.0.1')}: the link opens on this machine. "
        "It serves the newest successful model and picks up a new training run without a restart."
    )
    st.markdown("**Call it from Python** (every tab is an API endpoint, see `docs/demo.md`):")
    st.code(
        "from gradio_client import Client, handle_file\n"
        f'client = Client("{url}")\n'
        "annotated, table, png, json_file, status = client.predict(\n"
        '    handle_file("photo.jpg"), 0.25, 0.5, api_name="/detect_image")',
        language="python",
    )
    tail = tail_lines(state["log"], LOG_LINES) if state.get("log") else ""
    if tail:
        with st.expander("Server log"):
            st.code(tail, language="text")


def show_start_form(latest: str | None) -> None:
    st.info("The demo is not running.")
    entry = current_entry()
    if latest is None:
        st.warning(
            "There is no trained model yet: the demo will start and say so. Train one on the **Train** page "
            "(or `workbench train --data datasets/facemask-sample --wait`); the running demo picks it up."
        )
    with st.form("demo_start"):
        model = st.selectbox(
            "Model",
            run_choices(entry),
            format_func=lambda choice: choice_label(choice, entry),
            key="demo_model",
            help="`latest` follows each new successful run; `latest on` each one trained on the current dataset",
        )
        any_classes = st.checkbox(ANY_CLASSES, key="demo_any_classes")
        port = st.number_input("Port", min_value=1024, max_value=65535, value=server.DEFAULT_PORT, step=1)
        share = st.checkbox("Public share link (needs internet; anyone with the link can use the demo)")
        login = st.checkbox("Require a login")
        user = st.text_input("User")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Start the demo", type="primary", icon=":material/play_arrow:")
    if submitted:
        auth = f"{user}:{password}" if login else None
        if login and not (user and password):
            st.error("A login needs a user and a password.")
            return
        try:
            if entry is not None:
                override = f"tick “{ANY_CLASSES}”"
                model = registry.model_for(
                    entry.path, fmt=entry.format, run=model, any_classes=any_classes, override=override
                )
        except WorkbenchError as e:
            st.error(str(e))
            return
        with st.spinner("Starting the demo (loading Gradio and the model)..."):
            try:
                server.start(
                    model=model,
                    port=int(port),
                    share=share,
                    auth=auth,
                    data=entry.path if entry else None,
                    any_classes=any_classes,
                )
            except WorkbenchError as e:
                st.error(str(e))
                return
        st.rerun()


def main() -> None:
    st.title("Demo")
    st.caption("A Gradio app of the trained model: image, webcam and video tabs, the model card, and an API.")
    latest = registry.latest_name()
    st.markdown(f"Newest successful model: **`{latest}`**" if latest else "Newest successful model: none yet")
    state = server.status()
    if state:
        show_running(state)
    else:
        show_start_form(latest)


main()
