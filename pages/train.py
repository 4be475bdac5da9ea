"""Train: pick a dataset and a model, click Train, and watch the background job.

The job runs in its own process (``workbench.training.jobs``): closing the tab does not stop
it. The page shows live progress with loss and validation mAP charts and the log's tail,
Cancel and Resume buttons, and a table of every run to compare them with the dataset version
each trained on; "N edits since the latest model's version" says when retraining is worth it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.datasets import catalog, index, versions
from workbench.errors import WorkbenchError
from workbench.fileio import tail_lines
from workbench.paths import SAMPLE_DATASET
from workbench.training import jobs, registry
from workbench.training.config import build_config
from workbench.training.config import default_model as recommended_model
from workbench.training.engines import DEFAULT_ENGINE, ENGINES, get_engine
from workbench.training.executors import DEFAULT_EXECUTOR, EXECUTORS
from workbench.training.recipes import BEST, RECIPES, fallback_note, recipe_config

REFRESH_SECONDS = 2.0
# what docs/recipes.md measured (validation split of the shared VOC set, 30 CPU minutes each)
RECIPE_ADVICE = (
    f"Which recipe? On a CPU, **{BEST['cpu']}** for faces (the best AP in 30 CPU minutes) and "
    f"**faster-rcnn-upload** for other objects; on a GPU, **{BEST['gpu']}** (its GPU settings). "
    "The one for this machine is preselected. Measurements: docs/recipes.md."
)
LOG_LINES = 40
SAMPLE = SAMPLE_DATASET


@st.cache_resource
def hardware() -> dict:
    """The devices this machine offers (torch is imported once per server)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"gpus": gpus, "cpus": torch.get_num_threads()}


@st.cache_data
def model_choices(engine: str) -> dict[str, str]:
    return get_engine(engine).model_choices()


@st.cache_data(ttl=30)
def default_model(device: str) -> str:
    return recommended_model(device)


@st.cache_data(ttl=60)
def engine_choices() -> list[str]:
    """The engines this machine can run whose models the form offers (detectron2 when installed)."""
    return [e.name for e in ENGINES.values() if e.picks_model and e.available()]


def dataset_choices() -> list[str]:
    """The workspace's datasets (the Datasets page adds them), else the bundled sample."""
    paths = [entry.path for entry in catalog.list_datasets()]
    if not paths and SAMPLE.is_dir():
        paths = [str(SAMPLE)]
    current = st.session_state.get("dataset")
    if current in paths:
        paths.remove(current)
        paths.insert(0, current)
    return paths


def executor_options(executor: str, where: str, nodes: int) -> dict:
    """The form's executor options: the Ray address or the Slurm partition (empty: the
    executor's default, ``$WORKBENCH_RAY_ADDRESS``...) and the node count; none for local."""
    target = {"ray": "address", "slurm": "partition"}.get(executor)
    if target is None:
        return {}
    return {target: where.strip() or None, "nodes": int(nodes)}


def train_form() -> None:
    """The options and the one Train button; starts a job and remembers its run."""
    hw = hardware()
    st.markdown("**New training run**")
    engine = (
        st.segmented_control(
            "Engine",
            engine_choices(),
            default=DEFAULT_ENGINE,
            key="train_engine",
            help="detectron2 appears when it is installed",
        )
        or DEFAULT_ENGINE
    )
    recipe_names = ["(none)", *RECIPES]
    best = BEST["gpu" if hw["gpus"] else "cpu"]
    recipe = st.selectbox(
        "Recipe",
        recipe_names,
        index=recipe_names.index(best),
        key="train_recipe",
        help="a named preset of the classic face-mask pipelines; (none) for your own settings",
    )
    st.caption(RECIPE_ADVICE)
    recipe = None if recipe == "(none)" else recipe
    preset: dict = {}
    if recipe:
        preset = recipe_config(recipe, device="cpu")
        st.caption(f"{RECIPES[recipe].summary}. {RECIPES[recipe].notes}")
        stand_in = fallback_note(recipe, preset.get("engine", DEFAULT_ENGINE), preset["model"])
        if stand_in:
            st.info(stand_in)
        if RECIPES[recipe].gpu:
            gpu = ", ".join(f"{k}={v}" for k, v in RECIPES[recipe].gpu.items() if k != "device" and v is not None)
            st.caption(f"With device `cuda` the recipe's GPU settings apply: {gpu} (and no time limit).")
    with st.form("train_form", border=True):
        datasets = dataset_choices()
        c1, c2 = st.columns([3, 2])
        choice = c1.selectbox("Dataset", [*datasets, "Other folder..."], key="train_dataset")
        other = c1.text_input(
            "Other folder",
            placeholder="/path/to/dataset",
            key="train_other",
            help="a dataset folder, or an Ultralytics data.yaml (its train/val lists are the split)",
        )
        device_options = ["auto", "cpu"] + (["cuda"] if hw["gpus"] else [])
        if recipe:
            model = preset["model"]
            c2.markdown(f"Model (from the recipe): `{model}`")
        else:
            models = model_choices(engine)
            names = list(models)
            default = default_model("auto")
            model = c2.selectbox(
                "Model",
                names,
                index=names.index(default) if default in names else 0,
                format_func=lambda n: f"{n}: {models[n]}",
                key=f"train_model_{engine}",
            )
        c1, c2, c3, c4, c5 = st.columns(5)
        suffix = f"_{recipe}" if recipe else ""  # a recipe's own defaults, not the last recipe's values
        epochs = c1.number_input("Epochs", 1, 1000, preset.get("epochs", 12), key=f"train_epochs{suffix}")
        imgsz = c2.number_input(
            "Image size (px, 0 = model's)", 0, 2048, preset.get("imgsz", 0), step=32, key=f"train_imgsz{suffix}"
        )
        batch = c3.number_input("Batch", 1, 256, preset.get("batch", 4), key=f"train_batch{suffix}")
        minutes = c4.number_input(
            "Time limit (min)",
            0,
            10000,
            int(preset.get("time") or 0),
            key=f"train_time{suffix}",
            help="finish within this many minutes, validation included (0: the epochs decide)",
        )
        device = c5.selectbox("Device", device_options, key="train_device")
        st.caption(
            f"GPU: {', '.join(hw['gpus'])}"
            if hw["gpus"]
            else f"No GPU found: training runs on the CPU ({hw['cpus']} threads)."
        )
        c1, c2, c3 = st.columns([1, 3, 1])
        executor = c1.selectbox(
            "Runs on",
            list(EXECUTORS),
            index=list(EXECUTORS).index(DEFAULT_EXECUTOR),
            key="train_executor",
            help="; ".join(f"{name}: {summary}" for name, (_, summary) in EXECUTORS.items()),
        )
        where = c2.text_input(
            "Ray address or Slurm partition",
            placeholder="http://HEAD:8265 (ray) or a partition (slurm); empty: the default",
            key="train_where",
            help="ray: the dashboard's address (default $WORKBENCH_RAY_ADDRESS); slurm: the partition",
        )
        nodes = c3.number_input("Nodes", 1, 256, 1, key="train_nodes", help="ray and slurm: one DDP group")
        submitted = st.form_submit_button("Train", type="primary")
    if not submitted:
        return
    data = other.strip() if choice == "Other folder..." else choice
    if not data:
        st.error("Choose a dataset folder.")
        return
    form = {
        "model": model,
        "epochs": int(epochs),
        "batch": int(batch),
        "imgsz": int(imgsz) or None,
        "time": float(minutes) or None,
    }
    # with a recipe, the fields the user changed from its CPU preset win over the recipe for the
    # chosen device (its GPU settings on cuda); without one, the form is the whole choice
    overrides = {k: v for k, v in form.items() if v != preset.get(k)} if recipe else {**form, "engine": engine}
    try:
        config = build_config(recipe, device, {**overrides, "data": data})
        run = jobs.start_job(config, executor=executor, executor_options=executor_options(executor, where, nodes))
    except WorkbenchError as e:
        st.error(str(e))
        return
    st.session_state["train_run"] = run
    st.success(f"Started **{run}**. It trains in the background: you can close this tab.")


@st.fragment(run_every=REFRESH_SECONDS)
def live(all_jobs: list[dict]) -> None:
    """Progress of one run, refreshed every few seconds: state, charts, log, Cancel/Resume."""
    rows = {j["run"]: j for j in jobs.list_jobs()} or {j["run"]: j for j in all_jobs}
    if not rows:
        st.info("No training run yet: choose a dataset and a model above and click Train.")
        return
    names = list(rows)
    wanted = st.session_state.get("train_run")
    run = st.selectbox("Run", names, index=names.index(wanted) if wanted in names else 0, key="train_watch")
    job = rows[run]
    folder = Path(job["folder"])
    p = job["progress"] or {}
    state = job["state"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("State", state)
    c2.metric("Epoch", f"{p.get('epoch', '-')}/{p.get('epochs', job['config'].get('epochs'))}")
    c3.metric("ETA", jobs.eta_text(p.get("eta_seconds")) if state == "running" else "-")
    c4.metric("Best val AP", f"{job['best_ap']:.3f}" if job.get("best_ap") is not None else "-")
    if p.get("phase") == "faces" and p.get("images"):
        done = min(1.0, p.get("images_done", 0) / p["images"])
        st.progress(done, text=f"finding faces: image {p.get('images_done')}/{p['images']}")
    elif p.get("phase") == "detector" and p.get("detector_budget"):
        done = min(1.0, p.get("detector_seconds", 0) / p["detector_budget"])
        st.progress(
            done,
            text=f"fine-tuning the face detector: iteration {p.get('detector_iterations')}, loss {p.get('loss')}, "
            f"{p.get('detector_seconds', 0):.0f} of up to {p['detector_budget']:.0f} s",
        )
    elif p.get("total_iterations"):
        done = min(1.0, p.get("global_iteration", 0) / p["total_iterations"])
        st.progress(done, text=f"{p.get('phase', '')}: iteration {p.get('global_iteration')}/{p['total_iterations']}")
    if job.get("message") and state not in ("running", "finished"):
        st.caption(job["message"])

    b1, b2, _ = st.columns([1, 1, 4])
    if state in jobs.ACTIVE and b1.button("Cancel", key=f"cancel_{run}"):
        with st.spinner("Stopping..."):
            st.toast(f"{run}: {jobs.cancel_job(run, timeout=30)}")
    resumable = state in ("failed", "cancelled", "interrupted")
    if resumable and b2.button("Resume", key=f"resume_{run}", help="continue from the last checkpoint"):
        try:
            jobs.resume_job(run)
            st.toast(f"{run}: resumed")
        except WorkbenchError as e:
            st.error(str(e))

    losses = registry.read_jsonl(folder / "losses.jsonl")
    metrics = registry.read_jsonl(folder / "metrics.jsonl")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Training loss**")
        if losses:
            frame = pd.DataFrame(losses).set_index("iteration")
            st.line_chart(frame[["loss"]], height=220)
        else:
            st.caption("No iteration yet.")
    with c2:
        st.markdown("**Validation mAP (COCO)**")
        if metrics:
            st.line_chart(pd.DataFrame(metrics).set_index("epoch")[["AP", "AP50"]], height=220)
        else:
            st.caption("Measured after each epoch.")
    if metrics and "val_accuracy" in metrics[-1]:  # face-then-classify: the crop classifier's own curves
        frame = pd.DataFrame(metrics).set_index("epoch")
        c1, c2 = st.columns(2)
        with c1:
            st.markdown("**Classifier accuracy (face crops)**")
            st.line_chart(frame[[c for c in ("train_accuracy", "val_accuracy") if c in frame]], height=220)
        with c2:
            st.markdown("**Classifier loss (face crops)**")
            st.line_chart(frame[[c for c in ("train_loss", "val_loss") if c in frame]], height=220)
    with st.expander("Log", expanded=state in ("running", "failed")):
        st.code(tail_lines(folder / "train.log", LOG_LINES) or "(empty)", language=None)


def edits_since_latest() -> None:
    """How many box edits the latest model's dataset has had since the version it trained on."""
    latest = registry.latest_name()
    if not latest:
        return
    try:
        run = versions.run_version(registry.run_dir(latest))
        if not run or not run.get("dataset") or not Path(run["dataset"]).is_dir():
            return
        opened = index.get_open(run["dataset"])
        count = versions.edits_since(run["dataset"], run["hash"], opened.dataset)
    except (WorkbenchError, OSError) as e:
        st.caption(f"Edits since the latest model's version: unknown ({e})")
        return
    name = Path(run["dataset"]).name
    if count is None:
        st.caption(f"The latest model ({latest}) trained on labels of `{name}` that were not recorded as a version.")
    elif count == 0:
        st.info(f"No edit since the latest model's version ({run['name']} of `{name}`, run {latest}).")
    else:
        st.info(
            f"**{count} edit(s) since the latest model's version** ({run['name']} of `{name}`, run {latest}): "
            "boxes added, removed, moved or relabelled. The Datasets page shows them."
        )


def runs_table(all_jobs: list[dict]) -> None:
    if not all_jobs:
        return
    rows = []
    for j in all_jobs:
        c, m = j["config"], j["metrics"]
        rows.append(
            {
                "run": j["run"],
                "state": j["state"],
                "engine": c.get("engine"),
                "model": c.get("model"),
                "epochs": c.get("epochs"),
                "imgsz": c.get("imgsz"),
                "batch": c.get("batch"),
                "best AP": j.get("best_ap"),
                "last AP": m.get("AP"),
                "last AP50": m.get("AP50"),
                "dataset": Path(c.get("data", "")).name,
                "dataset version": (version_of(j.get("folder")) or {}).get("name"),
                "latest": j["run"] == registry.latest_name(),
            }
        )
    st.markdown("**Runs**")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def version_of(folder: str | None) -> dict | None:
    return versions.run_version(folder) if folder else None


st.title("Train")
st.caption("Train a detector on a dataset. Jobs run in the background; models land in the registry (`models/`).")
edits_since_latest()
train_form()
all_jobs = jobs.list_jobs()
live(all_jobs)
runs_table(all_jobs)
