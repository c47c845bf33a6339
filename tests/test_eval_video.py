"""End-to-end video scoring: which ground-truth person a head box belongs to."""

from __future__ import annotations

import numpy as np

from edge.capture import Frame
from edge.tools.eval_video import VideoScore, _StartingAt, compare_table, head_owner

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


class _Frames:
    """A file's frames from a list, as the pipeline reads them."""

    def __init__(self, count: int) -> None:
        image = np.zeros((4, 4, 3), np.uint8)
        self.frames = [Frame(image, k, k / 7.0, "cam") for k in range(count)]

    def read(self, timeout: float | None = None) -> Frame | None:
        return self.frames.pop(0) if self.frames else None

    @property
    def ended(self) -> bool:
        return not self.frames


def test_a_clip_started_later_shows_its_frames_from_there_with_their_own_index() -> None:
    source = _StartingAt(_Frames(6), 2)
    got = []
    while (frame := source.read()) is not None:
        got.append((frame.index, frame.timestamp))
    assert got == [(2, 2 / 7.0), (3, 3 / 7.0), (4, 4 / 7.0), (5, 5 / 7.0)]
    assert source.ended


def test_runs_from_several_starts_sum_into_one_row() -> None:
    a = VideoScore(795, 19, 30, 17, 9, 4, 10.0, 2800)
    b = VideoScore(794, 19, 33, 17, 16, 0, 10.0, 2800)
    total = a + b
    assert (total.frames, total.people, total.counted, total.matched) == (1589, 38, 63, 34)
    assert (total.duplicates, total.false_counts, total.inferences) == (25, 4, 5600)
    row = compare_table([("regions, sum of 2", total)]).splitlines()[-1]
    assert row == "| regions, sum of 2 | 3.52 | 79.5 | 63 | 34 of 38 | 25 | 4 |"
