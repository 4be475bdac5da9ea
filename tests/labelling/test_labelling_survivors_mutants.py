"""workbench/labelling/edits.py against the mutant mutmut left alive in it (docs/mutation.md):
a box handed over nested, as ``[[x1, y1, x2, y2]]``, is one box of four numbers."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.annotations import ImageRecord
from workbench.errors import WorkbenchError
from workbench.labelling import edits


def test_a_nested_box_is_added_and_moved_as_one_box():
    record = ImageRecord("images/a.png", 40, 30, [[1, 1, 5, 5]], [0])
    assert edits.add_box(record, [[2, 3, 12, 8]], 1) == 1
    edits.move_box(record, 0, np.array([[0, 0, 4, 4]]))
    assert record.boxes.tolist() == [[0, 0, 4, 4], [2, 3, 12, 8]] and record.class_ids.tolist() == [0, 1]
    with pytest.raises(WorkbenchError) as e:
        edits.add_box(record, [[5, 3, 5, 8]], 1)
    assert str(e.value) == "images/a.png: box [5.0, 3.0, 5.0, 8.0] has zero or negative size"
