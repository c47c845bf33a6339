"""The harder MOT variants: subsampling renumbers frames, noise drops and adds detections,
ground truth fed back as detections, head boxes derived from body boxes, a crowd from a
sequence and its copy played backwards, a camera that sways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.tools.mot_variants import (
    CROWD_SIDESTEP,
    CROWD_SIDESTEPS,
    HEAD_ASPECT,
    HEAD_HEIGHT,
    KINDS,
    as_detections,
    crowd,
    every_nth,
    head_boxes,
    kind_of,
    noisy,
    pan,
    write_variants,
)


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


def _sequence(root: Path, name: str) -> None:
    """A tiny MOTChallenge sequence: 3 people walking for 60 frames at 10 fps."""
    folder = root / name
    (folder / "det").mkdir(parents=True)
    (folder / "gt").mkdir()
    gt = np.array(
        [[f, p, 50.0 + 100 * p + 2 * f, 80.0, 30.0, 75.0, 1, -1, -1, -1]
         for f in range(1, 61) for p in (1, 2, 3)]
    )
    np.savetxt(folder / "gt" / "gt.txt", gt, delimiter=",", fmt="%g")
    det = gt.copy()
    det[:, 1] = -1
    det[:, 2] += 1.5
    det[:, 6] = 0.9
    np.savetxt(folder / "det" / "det.txt", det, delimiter=",", fmt="%g")
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={name}\nframeRate=10\nseqLength=60\n", encoding="utf-8"
    )


def test_ground_truth_as_detections_keeps_every_box_with_score_1() -> None:
    gt = np.array([[2, 7, 10, 20, 30, 60, 1, -1, -1, -1], [1, 8, 5, 5, 10, 20, 1, -1, -1, -1]])
    det = as_detections(gt)
    assert det[:, 0].tolist() == [1, 2]  # frame order
    assert det[:, 1].tolist() == [-1, -1]  # no identity leaks into the detections
    assert det[:, 2:6].tolist() == [[5, 5, 10, 20], [10, 20, 30, 60]]
    assert det[:, 6].tolist() == [1, 1]


def test_crowd_adds_each_person_played_backwards_beside_their_path() -> None:
    # One person walking right over frames 1-3 of a 4-frame, 200 px wide sequence; another
    # whose copy the sidestep takes past the right edge on frame 4 (centre 190 + 0.3 x 40 >
    # 200), where that copy is left out.
    gt = np.array(
        [
            [1, 1, 10, 50, 20, 40, 1, -1, -1, -1],
            [2, 1, 20, 50, 20, 40, 1, -1, -1, -1],
            [3, 1, 30, 50, 20, 40, 1, -1, -1, -1],
            [1, 2, 180, 50, 20, 40, 1, -1, -1, -1],
        ],
        dtype=float,
    )
    both = crowd(gt, 4, 200.0)
    copies = both[both[:, 1] > 2]
    assert len(both) == 7 and both[:, 0].tolist() == sorted(both[:, 0].tolist())
    assert set(copies[:, 1].tolist()) == {4.0}  # a new identity; person 2's copy left out
    by_frame = {int(r[0]): r for r in copies}
    assert sorted(by_frame) == [2, 3, 4]  # frame f is the original's frame 5 - f
    for f, x in ((4, 10), (3, 20), (2, 30)):
        assert by_frame[f][2] == pytest.approx(x + CROWD_SIDESTEP * 40)  # walking left
    np.testing.assert_array_equal(copies[:, [3, 4, 5]], [[50, 20, 40]] * 3)


def test_crowd_kinds_differ_only_in_how_far_beside_the_copy_walks(tmp_path: Path) -> None:
    _sequence(tmp_path / "data", "Walk")
    kinds = list(CROWD_SIDESTEPS)
    assert set(kinds) <= set(KINDS) and CROWD_SIDESTEPS["crowd"] == CROWD_SIDESTEP
    write_variants(tmp_path / "data", tmp_path / "out", kinds)
    gt = np.loadtxt(tmp_path / "data" / "Walk" / "gt" / "gt.txt", delimiter=",", ndmin=2)
    offsets = {}
    for kind in kinds:
        both = np.loadtxt(tmp_path / "out" / f"Walk-{kind}" / "gt" / "gt.txt", delimiter=",")
        assert kind_of(f"Walk-{kind}") == kind
        # Person 1's copy (id 1 + 3 + 1) on frame 10 is person 1 on frame 60 + 1 - 10.
        (copy,) = both[(both[:, 1] == 5) & (both[:, 0] == 10)]
        (orig,) = gt[(gt[:, 1] == 1) & (gt[:, 0] == 51)]
        offsets[kind] = (copy[2] - orig[2]) / orig[5]
    assert offsets == pytest.approx(CROWD_SIDESTEPS, abs=0.01)
    assert offsets["crowd-close"] < offsets["crowd"] < offsets["crowd-apart"]


def test_head_box_sits_centred_at_the_top_of_the_body() -> None:
    body = np.array([[1, 3, 100, 200, 40, 150, 1, -1, -1, -1]], dtype=float)
    (head,) = head_boxes(body)
    x, y, w, h = head[2:6]
    assert h == pytest.approx(150 * HEAD_HEIGHT) and w == pytest.approx(h * HEAD_ASPECT)
    assert y == 200  # top of the body
    assert x + w / 2 == pytest.approx(100 + 40 / 2)  # centred on the body
    assert head[[0, 1, 6]].tolist() == [1, 3, 1]  # frame, id and flag untouched


def test_variants_are_seeded_and_each_kind_independent_of_the_others(tmp_path: Path) -> None:
    _sequence(tmp_path / "data", "Walk")
    names = write_variants(tmp_path / "data", tmp_path / "a", ["clean", "heads"])
    assert names == ["Walk", "Walk-clean", "Walk-heads"]
    write_variants(tmp_path / "data", tmp_path / "b", KINDS)
    for name in names:
        for part in ("det/det.txt", "gt/gt.txt"):
            a = (tmp_path / "a" / name / part).read_bytes()
            assert a == (tmp_path / "b" / name / part).read_bytes(), (name, part)
    clean = np.loadtxt(tmp_path / "a" / "Walk-clean" / "det" / "det.txt", delimiter=",")
    gt = np.loadtxt(tmp_path / "data" / "Walk" / "gt" / "gt.txt", delimiter=",")
    np.testing.assert_allclose(clean[:, 2:6], gt[:, 2:6])
    heads_gt = np.loadtxt(tmp_path / "a" / "Walk-heads" / "gt" / "gt.txt", delimiter=",")
    np.testing.assert_allclose(heads_gt[:, 5], gt[:, 5] * HEAD_HEIGHT, atol=0.01)
    heads = np.loadtxt(tmp_path / "a" / "Walk-heads" / "det" / "det.txt", delimiter=",")
    assert 0 < (heads[:, 6] < 1).sum() == len(gt) // 30  # false alarms, as in -noisy
    assert kind_of("TUD-Campus-clean-noisy") == "clean-noisy"
    assert kind_of("TUD-Campus-noisy") == "noisy" and kind_of("TUD-Campus") == ""


def test_pan_moves_every_box_with_the_view_and_drops_those_it_turned_from() -> None:
    # Two people standing still on a 1000 x 500 frame at 10 fps: one in the middle, one near
    # the left edge, which the view (130 px in from each side) leaves while it swings right.
    rows = np.array(
        [[f, p, x, 200.0, 20.0, 50.0, 1, -1, -1, -1]
         for f in range(1, 81) for p, x in ((1, 490.0), (2, 140.0))]
    )
    out, view = pan(rows, 10.0, (1000.0, 500.0), period_s=8.0)
    assert view == pytest.approx((1000 - 2 * 130, 500 - 0.6 * 130))
    middle = out[out[:, 1] == 1]
    assert len(middle) == 80  # always in view
    # Both axes move by (1 + sin) of their sway: at frame 20 (2 s, a quarter swing) x by 260.
    (at20,) = middle[middle[:, 0] == 20]
    assert at20[2] == pytest.approx(490 - 130 * (1 + np.sin(np.pi / 2)))
    assert at20[3] == pytest.approx(200 - 39 * (1 + np.sin(2 * np.pi * 2 / 5.6)))
    np.testing.assert_array_equal(at20[[4, 5]], [20, 50])  # the size is the camera's own
    edge = out[out[:, 1] == 2]
    assert 0 < len(edge) < 80  # out of view while the view's left side is right of them
    assert np.all(edge[:, 2] + edge[:, 4] / 2 >= 0)


def test_pan_kinds_share_the_view_and_the_sway(tmp_path: Path) -> None:
    _sequence(tmp_path / "data", "Walk")
    names = write_variants(tmp_path / "data", tmp_path / "out", ["pan", "clean-pan"])
    assert names == ["Walk", "Walk-clean-pan", "Walk-pan"]
    assert kind_of("Walk-clean-pan") == "clean-pan" and kind_of("Walk-pan") == "pan"
    gt = np.loadtxt(tmp_path / "data" / "Walk" / "gt" / "gt.txt", delimiter=",")
    for name in ("Walk-pan", "Walk-clean-pan"):
        info = (tmp_path / "out" / name / "seqinfo.ini").read_text()
        assert "imWidth=" in info and "imHeight=" in info  # the view's size, for exits
        panned = np.loadtxt(tmp_path / "out" / name / "gt" / "gt.txt", delimiter=",")
        assert 0 < len(panned) <= len(gt)
    clean = np.loadtxt(tmp_path / "out" / "Walk-clean-pan" / "det" / "det.txt", delimiter=",")
    panned_gt = np.loadtxt(tmp_path / "out" / "Walk-clean-pan" / "gt" / "gt.txt", delimiter=",")
    np.testing.assert_allclose(np.sort(clean[:, 2]), np.sort(panned_gt[:, 2]), atol=0.01)
