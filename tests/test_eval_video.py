"""End-to-end video scoring: which ground-truth person a head box belongs to."""

from __future__ import annotations

import numpy as np

from edge.tools.eval_video import VideoScore, head_owner

# frame, id, x, y, w, h: two people side by side, 40 x 120 px bodies.
BODIES = np.array([[1, 7, 100, 50, 40, 120], [1, 9, 150, 60, 40, 120]], dtype=float)


def test_a_head_at_the_top_of_a_body_belongs_to_that_person() -> None:
    assert head_owner((112, 52, 128, 68), BODIES) == 7
    assert head_owner((162, 62, 178, 78), BODIES) == 9


def test_a_box_at_the_feet_or_beside_everyone_belongs_to_nobody() -> None:
    assert head_owner((112, 150, 128, 166), BODIES) is None  # a shoe, not a head
    assert head_owner((300, 52, 316, 68), BODIES) is None


def test_the_table_reports_every_figure() -> None:
    row = VideoScore(795, 19, 21, 13, 8, 0, 44.0).table().splitlines()[-1]
    assert row == "| 19 | 21 | 13 | 8 | 0 | 18.1 |"
