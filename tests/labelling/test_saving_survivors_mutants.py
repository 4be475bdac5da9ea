"""Against the saving mutants mutmut left alive (docs/mutation.md): a COCO dataset of two files
(a save merges another tab's save of its file and leaves the other alone, also beside a broken
third file; a merge that would need the other file is refused naming who), the writer named from
the given journal, a failed write put back, and the revision that grows with each save."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.app.conftest import SHARED, copy_voc
from workbench.datasets import index
from workbench.errors import WriteError
from workbench.labelling import edits, files, saving

TEST, VALID = "test/_annotations.coco.json", "valid/_annotations.coco.json"


@pytest.fixture
def two_files(tmp_path) -> Path:
    """The shared COCO test split twice: ``test/`` and ``valid/``, one JSON each."""
    root = tmp_path / "coco"
    for split in ("test", "valid"):
        shutil.copytree(SHARED / "roboflow-coco" / "test", root / split, copy_function=shutil.copyfile)
    return root


def in_test(opened, count: int, *, without: int | None = None) -> list[int]:
    """Positions of images of ``test/`` with two boxes or more (none of class ``without``)."""
    return [
        i
        for i, r in enumerate(opened.dataset.images)
        if r.annotation == TEST and len(r) >= 2 and without not in r.class_ids.tolist()
    ][:count]


def moved(opened, position: int, by: float = 1.0):
    record = opened.dataset.images[position].copy()
    edits.move_box(record, 0, record.boxes[0] + by)
    return record


def test_a_coco_merge_writes_only_the_file_both_saved(two_files):
    """Another tab saved image ``b`` of ``test/``; saving ``a`` of it merges, ``valid/`` is left
    alone, and the records of ``test/`` (only) are those on disk now."""
    mine, theirs = index.open_dataset(two_files, "coco"), index.open_dataset(two_files, "coco", use_cache=False)
    valid = (two_files / VALID).read_bytes()
    a, b = in_test(mine, 2)
    other = moved(theirs, b)
    saving.save_record(theirs, b, other)
    result = saving.save_record(mine, a, moved(mine, a, 2.0))
    assert list(result.files) == [TEST] and (two_files / VALID).read_bytes() == valid
    assert result.positions == [i for i, r in enumerate(mine.dataset.images) if r.annotation == TEST]
    assert mine.dataset.images[b].boxes[0].tolist() == other.boxes[0].tolist()
    assert mine.classes_on_disk == mine.dataset.classes
    again = saving.save_record(mine, a, moved(mine, a, 3.0))  # and this tab saves on
    assert list(again.files) == [TEST]


def test_a_coco_merge_goes_ahead_beside_a_broken_file(two_files):
    """A third JSON that does not parse is skipped at load, and by the merge's re-read."""
    (two_files / "train").mkdir()
    (two_files / "train" / "_annotations.coco.json").write_text('{"images": [{"id": 1')  # cut short
    mine, theirs = index.open_dataset(two_files, "coco"), index.open_dataset(two_files, "coco", use_cache=False)
    assert [e.file for e in mine.dataset.skipped] == ["train/_annotations.coco.json"]
    a, b = in_test(mine, 2)
    saving.save_record(theirs, b, moved(theirs, b))
    result = saving.save_record(mine, a, moved(mine, a, 2.0))
    assert list(result.files) == [TEST]


def test_a_merge_that_needs_the_other_file_is_refused_naming_who(two_files, tmp_path):
    """Another tab renamed a class (both files rewritten); a save of a record without that class
    would put the old name back into every file: refused, naming the writer from its journal."""
    journal = saving.Journal(tmp_path / "j.jsonl", author="bob")
    mine, theirs = index.open_dataset(two_files, "coco"), index.open_dataset(two_files, "coco", use_cache=False)
    target = mine.dataset.classes.index("mask_weared_incorrect")
    (a,) = in_test(mine, 1, without=target)
    changed = edits.copy_for_class_edit(theirs.dataset)
    edits.rename_class(changed, target, "renamed")
    assert sorted(saving.save_class_change(theirs, changed, journal=journal).files) == [TEST, VALID]
    on_disk = {rel: (two_files / rel).read_bytes() for rel in (TEST, VALID)}
    with pytest.raises(saving.ConflictError) as e:
        saving.save_record(mine, a, moved(mine, a), journal=saving.Journal(journal.path, author="ann"))
    assert e.value.files == [TEST] and e.value.root == str(two_files)
    assert e.value.by[TEST].startswith("bob at ")
    assert {rel: (two_files / rel).read_bytes() for rel in (TEST, VALID)} == on_disk


def test_a_voc_conflict_names_the_writer_from_the_given_journal(tmp_path):
    root = copy_voc(tmp_path / "voc", 3)
    journal = saving.Journal(tmp_path / "elsewhere.jsonl", author="bob")
    mine, theirs = index.open_dataset(root), index.open_dataset(root, use_cache=False)
    saving.save_record(theirs, 0, moved(theirs, 0), journal=journal)
    with pytest.raises(saving.ConflictError) as e:
        saving.save_record(mine, 0, moved(mine, 0, 2.0), journal=journal)
    rel = mine.dataset.images[0].annotation
    assert e.value.files == [rel] and e.value.by[rel].startswith("bob at ")


def test_a_write_failing_half_way_puts_back_what_was_written(tmp_path, monkeypatch):
    root = copy_voc(tmp_path / "voc", 6)
    opened = index.open_dataset(root)
    users = [r.annotation for r in opened.dataset.images if (r.class_ids == 0).any()]
    assert len(users) >= 2
    before = {rel: (root / rel).read_bytes() for rel in users}
    changed = edits.copy_for_class_edit(opened.dataset)
    edits.rename_class(changed, 0, "renamed")
    real, written = files.atomic_write, []

    def second_fails(path, data):
        if written and path != written[0]:  # the first file, and putting it back, go through
            raise WriteError(f"{path}: cannot write: disk full")
        written.append(path)
        real(path, data)

    monkeypatch.setattr(files, "atomic_write", second_fails)
    with pytest.raises(WriteError) as e:
        saving.save_class_change(opened, changed)
    assert str(e.value).startswith(f"{root}: save failed, nothing changed: ") and str(e.value).endswith("disk full")
    assert written and {rel: (root / rel).read_bytes() for rel in users} == before


def test_the_revision_grows_by_one_with_each_save_that_writes(tmp_path):
    opened = index.open_dataset(copy_voc(tmp_path / "voc", 3))
    assert opened.revision == 0
    saving.save_record(opened, 0, moved(opened, 0))
    saving.save_record(opened, 1, moved(opened, 1))
    assert opened.revision == 2
    assert saving.save_record(opened, 1, opened.dataset.images[1].copy()).files == {}  # nothing to write
    assert opened.revision == 2
