"""The model registry: which weights a run predicts with, and which runs have any."""

from __future__ import annotations

from workbench.training import registry


def make(name: str, *files: str) -> None:
    folder = registry.run_dir(name)
    folder.mkdir(parents=True)
    registry.write_json(folder / "config.json", {"model": "m"})
    for file in files:
        (folder / file).write_bytes(b"")


def test_runs_with_weights_and_their_file():
    make("fresh")  # started, no epoch finished
    make("unfinished", "checkpoint.pth")
    make("done", "checkpoint.pth", "model_best.pth")
    assert sorted(registry.runs_with_weights()) == ["done", "unfinished"]
    assert registry.weights_file(registry.run_dir("done")).name == "model_best.pth"
    assert registry.weights_file(registry.run_dir("unfinished")).name == "checkpoint.pth"
    assert not registry.has_weights(registry.run_dir("fresh"))
