"""CPU latency per image of an exported ``.onnx`` file (onnxruntime) against torch eager, side by side.

    .venv/bin/python benchmarks/export.py [--recipes ssd-mobilenet,...] [--images 6] [--rounds 2]

For each CPU recipe's model (``training.recipes``: its CPU model and image size; the
detectron2 recipe's torchvision stand-in when detectron2 is not installed) a stand-in run is
written in a temporary registry: the network with untrained weights (latency does not depend on
training; a two-stage run gets an untrained classifier and the identity box correction). It is
exported with ``--dynamic`` (the file that gives torch's boxes) and both predictors run
``predict(image, score_threshold=--score)`` on the same images of the shared
``andrewmvd-voc`` set, alternating torch, onnxruntime, torch, onnxruntime image by image after
a warm-up of two images each, so that machine load hits both alike. Both sides run with the
same intra-op threads, ``--threads`` (default ``1,0``: one thread, then each library's default,
torch's and onnxruntime's one per physical core). One thread is the steady number on a shared
machine: torch's OpenMP threads wait on each other when a core is taken by another process.

Prints ms per image (median and best) of each, the ratio onnxruntime / torch of the medians
(target <= 0.6) and the median of the per-image ratios (each image's torch and onnxruntime runs
are back to back: the steadier number on a shared machine); writes ``benchmarks/results/export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
IMAGES = PROJECT.parent / "shared" / "datasets" / "andrewmvd-voc" / "images"
RESULTS = PROJECT / "benchmarks" / "results" / "export.json"
CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect"]
DEFAULT_TORCH_THREADS = 0  # set in main, before any change


def cpu_recipes() -> dict[str, dict]:
    """Recipe name -> the train settings its CPU run uses (the fallback's when detectron2 is missing)."""
    from workbench.training import optional
    from workbench.training.recipes import RECIPES

    out = {}
    for name, recipe in RECIPES.items():
        train = dict(recipe.train)
        if recipe.fallback_needs and not optional.installed(recipe.fallback_needs):
            train.update(recipe.fallback)
        if train.get("engine") in ("torchvision", "two-stage"):
            out[name] = train
    return out


def stand_in_run(root: Path, name: str, train: dict) -> Path:
    """A run folder of ``train``'s model with untrained weights at its image size."""
    import torch

    folder = root / name
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    config = {**train, "classes": CLASSES, "run": name}
    if train["engine"] == "two-stage":
        from workbench.training.facecrops import IDENTITY_FIT
        from workbench.training.faces import build_classifier

        model, _ = build_classifier(len(CLASSES), weights="none")
        state = {"model": model.state_dict(), "classes": CLASSES, "epoch": 0, "box_fit": IDENTITY_FIT}
    else:
        from workbench.training.models import build_model

        model = build_model(train["model"], len(CLASSES) + 1, weights=None, imgsz=int(train["imgsz"]))
        state = {"model": model.state_dict(), "classes": CLASSES, "epoch": 0}
    torch.save(state, folder / "model_best.pth")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def timed(predict, image, score: float) -> float:
    t0 = time.perf_counter()
    predict(image, score_threshold=score)
    return (time.perf_counter() - t0) * 1000.0


def prepare(name: str, train: dict, root: Path) -> tuple:
    """The stand-in run's torch predictor, its exported file and the export's seconds."""
    from workbench.inference.onnx_export import export_onnx
    from workbench.inference.predict import load_predictor

    run = stand_in_run(root, name, train)
    t0 = time.perf_counter()
    path = export_onnx(run, out=root / f"{name}.onnx", dynamic=True)
    return load_predictor(run, device="cpu"), path, time.perf_counter() - t0


def bench(eager, path: Path, images: list, *, threads: int, rounds: int, score: float) -> dict:
    """Median and best ms per image of each side with ``threads`` intra-op threads (0: the defaults)."""
    import onnxruntime
    import torch

    from workbench.inference.predict import load_predictor

    torch.set_num_threads(threads or DEFAULT_TORCH_THREADS)
    onnx = load_predictor(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    onnx.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for image in images[:2]:  # warm-up: first calls allocate and plan
        timed(eager.predict, image, score)
        timed(onnx.predict, image, score)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for _ in range(rounds):
        for image in images:
            times["torch"].append(timed(eager.predict, image, score))
            times["onnxruntime"].append(timed(onnx.predict, image, score))
    row: dict = {"threads": threads or "default", "torch_threads": torch.get_num_threads()}
    for side, values in times.items():
        row[f"{side}_ms_median"] = round(statistics.median(values), 1)
        row[f"{side}_ms_best"] = round(min(values), 1)
    row["ratio"] = round(row["onnxruntime_ms_median"] / row["torch_ms_median"], 3)
    pairs = [o / t for t, o in zip(times["torch"], times["onnxruntime"], strict=True)]
    row["ratio_of_pairs"] = round(statistics.median(pairs), 3)  # each image's two runs back to back
    row["target_met"] = row["ratio"] <= 0.6
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", help="comma-separated recipe names (default: every CPU recipe)")
    parser.add_argument("--images", type=int, default=6, help="images of andrewmvd-voc (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the images (default 2)")
    parser.add_argument(
        "--threads", default="1,0", help="intra-op threads of both sides, comma-separated; 0: each library's default"
    )
    parser.add_argument("--score", type=float, default=0.25, help="score threshold (default 0.25, predict's)")
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(PROJECT)})")
    args = parser.parse_args()

    import torch

    from workbench.fileio import load_image

    global DEFAULT_TORCH_THREADS
    DEFAULT_TORCH_THREADS = torch.get_num_threads()
    recipes = cpu_recipes()
    if args.recipes:
        recipes = {name: recipes[name] for name in args.recipes.split(",")}
    images = [load_image(p)[:, :, :3] for p in sorted(IMAGES.iterdir())[: args.images]]
    root = Path(tempfile.mkdtemp(prefix="export-bench-"))
    os.environ["WORKBENCH_MODELS"] = str(root)
    rows: dict[str, dict] = {}
    print(f"{'recipe':<22} {'model':<34} {'threads':>7} {'torch ms':>9} {'ort ms':>8} {'ratio':>6} {'pairs':>6}")
    for name, train in recipes.items():
        eager, path, export_s = prepare(name, train, root)
        rows[name] = {
            "model": train["model"],
            "imgsz": int(train["imgsz"]),
            "engine": train["engine"],
            "onnx_mb": round(path.stat().st_size / 1e6, 1),
            "export_s": round(export_s, 1),
            "runs": [],
        }
        for threads in [int(t) for t in args.threads.split(",")]:
            row = bench(eager, path, images, threads=threads, rounds=args.rounds, score=args.score)
            rows[name]["runs"].append(row)
            print(
                f"{name:<22} {train['model'] + ' @' + str(train['imgsz']):<34} {row['threads']!s:>7} "
                f"{row['torch_ms_median']:>9.1f} {row['onnxruntime_ms_median']:>8.1f} {row['ratio']:>6.2f} "
                f"{row['ratio_of_pairs']:>6.2f}",
                flush=True,
            )
    import onnxruntime
    import torch

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "images": [p.name for p in sorted(IMAGES.iterdir())[: args.images]],
        "rounds": args.rounds,
        "score_threshold": args.score,
        "target_ratio": 0.6,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "recipes": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
