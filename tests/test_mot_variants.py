"""The harder MOT variants: subsampling renumbers frames, noise drops and adds detections."""

from __future__ import annotations

import numpy as np

from edge.tools.mot_variants import every_nth, noisy


def test_every_nth_keeps_frames_1_4_7_and_renumbers_them() -> None:
    rows = np.array([[f, 1, 10, 10, 5, 5, 1] for f in range(1, 9)], dtype=float)
    kept = every_nth(rows, 3)
    assert kept[:, 0].tolist() == [1, 2, 3]
    assert kept[:, 2].tolist() == [10, 10, 10]


def test_noisy_is_seeded_and_drops_and_adds() -> None:
    rng_rows = np.random.default_rng(0)
    det = np.column_stack(
        [
            np.repeat(np.arange(1, 101), 10),
            -np.ones(1000),
            rng_rows.uniform(0, 500, (1000, 2)),
            np.full((1000, 2), 40.0),
            np.ones(1000),
        ]
    )
    a = noisy(det, 100, np.random.default_rng(1))
    b = noisy(det, 100, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    added = int((a[:, 6] < 1).sum())
    assert added == 1000 // 30
    assert 800 < len(a) - added < 900  # about 15 % of 1000 dropped
    assert np.all(np.diff(a[:, 0]) >= 0)  # still in frame order
