"""Suggestion throughput, and what storing the suggestions costs next to the model's prediction.

    .venv/bin/python benchmarks/suggest.py [--model RUN] [--images 32] [--score S] [--rounds 2]

On a temporary copy of ``--images`` images of the shared VOC set (``../shared/datasets/andrewmvd-voc``,
only read), in a temporary workspace:

1. the model: ``--model`` (a run name or folder); by default a run of the default CPU model
   (``training.config.default_model("cpu")``) trained for 2 iterations at its own image size in a
   temporary registry: throughput depends on the architecture and the image size, not on the
   weights. It is loaded and warmed up on one image outside the timing;
2. ``suggestions.suggest`` over every image, timed in its two parts: ``predict`` (decoding the
   images and the model: ``inference.images.predict_records``) and ``store`` (dropping suggestions that
   duplicate a label, writing the workspace's JSON store atomically);
3. prints images per second (of ``predict`` + ``store``) and the ratio ``store / predict``.
   Best of ``--rounds`` rounds (2 cores shared with other jobs: the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
SHARED = PROJECT.parent / "shared" / "datasets" / "andrewmvd-voc"


def copy_images(dest: Path, count: int) -> Path:
    import shutil

    (dest / "images").mkdir(parents=True)
    (dest / "annotations").mkdir()
    for xml in sorted((SHARED / "annotations").glob("*.xml"))[:count]:
        shutil.copyfile(xml, dest / "annotations" / xml.name)
        shutil.copyfile(SHARED / "images" / f"{xml.stem}.png", dest / "images" / f"{xml.stem}.png")
    return dest


def train_default(tmp: Path, data: Path) -> Path:
    from workbench.training.config import default_model

    model = default_model("cpu")
    env = dict(os.environ, WORKBENCH_HOME=str(tmp / "train-home"), WORKBENCH_MODELS=str(tmp / "models"))
    command = [
        sys.executable,
        "-m",
        "workbench.cli",
        "train",
        "--data",
        str(data),
        "--model",
        model,
        "--epochs",
        "1",
        "--batch",
        "2",
        "--max-iters",
        "2",
        "--workers",
        "0",
        "--max-val-images",
        "1",
        "--name",
        "bench",
        "--device",
        "cpu",
        "--wait",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT)
    if result.returncode != 0:
        raise SystemExit(f"training the benchmark model failed:\n{result.stderr[-3000:]}")
    return tmp / "models" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="run name or folder (default: a 2-iteration run of the default model)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument(
        "--score",
        type=float,
        help="lowest score stored (default 0.5 with --model; 0.05 for the 2-iteration model, "
        "whose scores are low, so that storing has boxes to write)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.score is None:
        args.score = 0.5 if args.model else 0.05

    with tempfile.TemporaryDirectory(prefix="wb-bench-suggest-") as name:
        tmp = Path(name)
        data = copy_images(tmp / "data", args.images)
        t0 = time.perf_counter()
        run = Path(args.model) if args.model else train_default(tmp, data)
        trained = time.perf_counter() - t0
        os.environ["WORKBENCH_HOME"] = str(tmp / "home")
        if not args.model:
            os.environ["WORKBENCH_MODELS"] = str(tmp / "models")

        import torch

        from workbench.fileio import load_image
        from workbench.inference.predict import load_predictor
        from workbench.labelling import suggestions

        predictor = load_predictor(run, device="cpu")
        first = sorted((data / "images").iterdir())[0]
        predictor.predict(load_image(first, first.name), score_threshold=args.score)  # warm-up
        rounds = []
        for _ in range(args.rounds):
            result = suggestions.suggest(data, predictor=predictor, score=args.score)
            rounds.append(result)
        best = min(rounds, key=lambda r: r.predict_seconds + r.store_seconds)
        config = json.loads((predictor.run_dir / "config.json").read_text(encoding="utf-8"))
        print(f"model: {config.get('model')} at {config.get('imgsz')} px (run {predictor.run_dir.name})")
        print(f"torch threads: {torch.get_num_threads()}; CPU cores: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}")
        if not args.model:
            print(f"(benchmark model trained in {trained:.1f} s, not counted)")
        print(f"images: {best.images}, suggestions stored: {best.boxes} at score >= {args.score:g}")
        total = best.predict_seconds + best.store_seconds
        print(f"predict: {best.predict_seconds:8.3f} s  ({best.predict_seconds / best.images * 1000:.1f} ms/image)")
        print(f"store:   {best.store_seconds:8.4f} s  ({best.store_seconds / best.images * 1000:.3f} ms/image)")
        print(f"throughput: {best.images / total:.2f} images/s")
        print(f"storing / predicting: {best.store_seconds / best.predict_seconds:.4f}")


if __name__ == "__main__":
    main()
