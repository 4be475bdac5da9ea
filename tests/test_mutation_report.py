"""benchmarks/mutation_report.py: mutmut's result lines counted per module, and a partial run
(mutmut 3 marks what it did not run "not checked") merged into the last full result."""

from __future__ import annotations

import importlib.util

from tests.conftest import PROJECT

spec = importlib.util.spec_from_file_location("mutation_report", PROJECT / "benchmarks" / "mutation_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

FULL = """\
    workbench.boxes.x_iou__mutmut_1: killed
    workbench.boxes.x_iou__mutmut_2: survived
    workbench.boxes.x_iou__mutmut_3: survived
    workbench.formats.voc.x_parse__mutmut_1: no tests
    workbench.formats.voc.x_parse__mutmut_2: timeout
    workbench.formats.voc.x_parse__mutmut_3: not checked
    workbench.labelling.journal.xǁJournalǁappend__mutmut_1: survived
"""


def test_a_full_run_is_counted_per_module_with_the_equivalents_apart():
    statuses = report.parse(FULL)
    assert len(statuses) == 7 and statuses["workbench.formats.voc.x_parse__mutmut_1"] == "no tests"
    result = report.summarise(statuses, {"workbench.boxes.x_iou__mutmut_3": "same result"}, seconds=61.4)
    assert result["modules"] == {
        "workbench.boxes": {"killed": 1, "survived": 1, "equivalent": 1},
        "workbench.formats.voc": {"killed": 1, "survived": 1, "equivalent": 0},
        "workbench.labelling.journal": {"killed": 0, "survived": 1, "equivalent": 0},
    }
    assert result["kill_rate"] == round(2 / 5, 4) and result["seconds"] == 61
    assert result["survivors"] == [
        "workbench.boxes.x_iou__mutmut_2: survived",
        "workbench.formats.voc.x_parse__mutmut_1: no tests",
        "workbench.labelling.journal.xǁJournalǁappend__mutmut_1: survived",
    ]


def test_a_partial_run_moves_the_survivors_it_killed_and_keeps_the_rest():
    old = report.summarise(report.parse(FULL), {}, seconds=100)
    rerun = report.parse(
        """\
    workbench.boxes.x_iou__mutmut_1: not checked
    workbench.boxes.x_iou__mutmut_2: killed
    workbench.boxes.x_iou__mutmut_3: survived
    workbench.formats.voc.x_parse__mutmut_1: survived
    workbench.labelling.journal.xǁJournalǁappend__mutmut_1: not checked
"""
    )
    merged = report.merge(old, rerun, {"workbench.boxes.x_iou__mutmut_3": "same result"})
    assert merged["modules"]["workbench.boxes"] == {"killed": 2, "survived": 0, "equivalent": 1}
    assert merged["modules"]["workbench.formats.voc"] == {"killed": 1, "survived": 1, "equivalent": 0}
    assert merged["survivors"] == [
        "workbench.formats.voc.x_parse__mutmut_1: survived",
        "workbench.labelling.journal.xǁJournalǁappend__mutmut_1: survived",  # not run again: kept as it was
    ]
    assert merged["kill_rate"] == round(3 / 5, 4) and merged["seconds"] == 100
    assert report.merge(merged, rerun, {"workbench.boxes.x_iou__mutmut_3": "same result"}) == merged  # idempotent
