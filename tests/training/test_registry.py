"""The model registry: which weights a run predicts with, which runs have any, the latest run of
each dataset, and the refusal of a run trained on other classes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
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


def trained(name: str, data: Path, classes: list[str]) -> Path:
    """A finished run of ``data`` (config and card name it), with weights, set as latest."""
    folder = registry.run_dir(name)
    folder.mkdir(parents=True)
    registry.write_json(folder / "config.json", {"model": "m", "data": str(data), "classes": classes})
    registry.write_json(folder / registry.CARD_JSON, {"run": name, "dataset": str(data.resolve()), "classes": classes})
    (folder / "model_best.pth").write_bytes(b"")
    registry.set_latest(folder)
    return folder


def test_each_dataset_keeps_its_latest_run_and_latest_is_the_newest(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_one = trained("run-one", one, ["cat"])
    run_two = trained("run-two", two, ["dog"])
    assert registry.latest_of(one) == "run-one" and registry.latest_of(two) == "run-two"
    assert registry.latest_name() == "run-two"
    assert registry.resolve_run(f"latest:{one}") == run_one
    assert registry.resolve_run(f"latest:{two}/.") == run_two  # keyed by the resolved folder
    assert registry.resolve_run("latest") == run_two.resolve()
    trained("run-one-b", one, ["cat"])
    assert (registry.latest_of(one), registry.latest_of(two), registry.latest_name()) == (
        "run-one-b",
        "run-two",
        "run-one-b",
    )
    assert registry.latest_of(tmp_path / "three") is None
    with pytest.raises(WorkbenchError, match="no model trained on"):
        registry.resolve_run(f"latest:{tmp_path / 'three'}")
    assert registry.LATEST_JSON not in [r["run"] for r in registry.list_runs()]


def test_choose_run_prefers_the_datasets_run_and_refuses_other_classes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    trained("run-one", one, ["cat", "dog"])
    trained("run-two", two, ["car"])
    assert registry.choose_run(one, ["dog", "cat"]) == f"latest:{one.resolve()}"  # order does not matter
    assert registry.choose_run(tmp_path, ["car"]) == "latest"  # no run of its own: the newest, same classes
    with pytest.raises(registry.ClassMismatch) as e:
        registry.choose_run(one, ["cat", "dog"], run="run-two")
    message = str(e.value)
    assert "only the model has car" in message and "only the dataset has cat, dog" in message
    assert "--any-classes" in message
    assert registry.choose_run(one, ["cat", "dog"], run="run-two", any_classes=True) == "run-two"
    assert registry.choose_run(one, [], run="run-two") == "run-two"  # a dataset with no class yet takes any


def _set_latest_in_child(name: str, data: str, barrier) -> None:
    barrier.wait(60)
    for k in range(10):
        trained(f"{name}-{k}", Path(data), ["x"])


@pytest.mark.slow
def test_processes_setting_latest_at_once_keep_every_dataset(tmp_path):
    datasets = [tmp_path / f"d{k}" for k in range(4)]
    for d in datasets:
        d.mkdir()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    children = [
        ctx.Process(target=_set_latest_in_child, args=(f"p{k}", str(d), barrier)) for k, d in enumerate(datasets)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert [registry.latest_of(d) for d in datasets] == [f"p{k}-9" for k in range(4)]
    assert registry.latest_name() in {f"p{k}-9" for k in range(4)}
