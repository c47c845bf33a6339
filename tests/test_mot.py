"""Tests of edge.mot: the daemon's tracker over MOTChallenge detection files."""

from __future__ import annotations

import configparser
import io
import math
from pathlib import Path

import numpy as np
import pytest

from edge.config.tracker import TrackerConfig
from edge.mot import MotFormatError, frame_size_of, read_detections, track_mot
from edge.tools.eval_tracking import EveryNthFrameTracker, tracker_factory
from edge.track import Tracker

MOT15 = Path(__file__).resolve().parents[1].parent / "shared" / "tracking" / "MOT15" / "train"


def write_dets(path: Path, rows: list[tuple[int, float, float, float, float, float]]) -> Path:
    """A MOTChallenge detection file from (frame, x, y, w, h, score) rows."""
    path.write_text(
        "".join(
            f"{f},-1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.3f},-1,-1,-1\n"
            for f, x, y, w, h, s in rows
        )
    )
    return path


def two_walkers(frames: int = 40) -> list[tuple[int, float, float, float, float, float]]:
    """Two people crossing the picture in opposite directions, plus two short false alarms."""
    rows = []
    for f in range(1, frames + 1):
        rows.append((f, 20.0 + 12 * f, 100.0, 40.0, 100.0, 0.95))
        rows.append((f, 600.0 - 12 * f, 130.0, 45.0, 110.0, 0.9))
    rows.append((7, 300.0, 400.0, 30.0, 70.0, 0.8))  # one frame only
    rows += [(20, 50.0, 380.0, 30.0, 70.0, 0.7), (21, 52.0, 380.0, 30.0, 70.0, 0.7)]
    return sorted(rows)


def parse(text: str) -> np.ndarray:
    """The rows written by track_mot as an array."""
    return np.array([[float(c) for c in line.split(",")] for line in text.splitlines()])


def test_counts_two_people_and_writes_confirmed_rows_only(tmp_path: Path) -> None:
    out = io.StringIO()
    people = track_mot(write_dets(tmp_path / "det.txt", two_walkers()), 25.0, 0.0, out)
    rows = parse(out.getvalue())
    assert people == 2
    assert len(np.unique(rows[:, 1])) == 2
    assert rows.shape[1] == 10
    assert (rows[:, 6] == 1).all() and (rows[:, 7:] == -1).all()
    # Sorted by frame, every frame of both walkers written (held-back rows included).
    assert (np.diff(rows[:, 0]) >= 0).all()
    assert len(rows) == 80
    # No row at the false alarms' places.
    assert not (rows[:, 3] > 300).any()


def test_ids_follow_the_walkers(tmp_path: Path) -> None:
    out = io.StringIO()
    track_mot(write_dets(tmp_path / "det.txt", two_walkers()), 25.0, 0.0, out)
    rows = parse(out.getvalue())
    for track_id in np.unique(rows[:, 1]):
        ys = rows[rows[:, 1] == track_id, 3]
        assert np.ptp(ys) < 1  # each id stays on one walker's line (y 100 or y 130)


def test_min_score_drops_weak_detections(tmp_path: Path) -> None:
    rows = [(f, 100.0 + f, 100.0, 40.0, 100.0, 0.3) for f in range(1, 30)]
    path = write_dets(tmp_path / "det.txt", rows)
    assert read_detections(path, min_score=0.5) == {}
    out = io.StringIO()
    assert track_mot(path, 25.0, 0.5, out) == 0
    assert out.getvalue() == ""


def test_margin_scores_are_read_as_logits(tmp_path: Path) -> None:
    # A detector that gives margins (DPM in MOT16/17): a walker at margins 0.5-1.0, a patch
    # of clutter at -1 in the same frames. Read as logits, the walker's detections are
    # confident (0.62-0.73) and the clutter's weak (0.27): one person, the clutter never a
    # track of its own.
    walker = [(f, 100.0 + 3 * f, 100.0, 40.0, 100.0, 0.5 + 0.5 * (f % 2)) for f in range(1, 40)]
    clutter = [(f, 500.0, 300.0, 40.0, 100.0, -1.0) for f in range(1, 40)]
    path = write_dets(tmp_path / "det.txt", walker + clutter)
    frames = read_detections(path)
    scores = sorted({round(d.score, 3) for dets in frames.values() for d in dets})
    assert scores == [0.269, 0.622, 0.731]
    out = io.StringIO()
    assert track_mot(path, 25.0, -math.inf, out) == 1
    rows = parse(out.getvalue())
    assert np.all(rows[:, 3] == 100.0)  # every row is the walker's
    # The file's scale decides, not what --min-score keeps: margins of 0.5 and 1.0 kept alone
    # are still margins.
    kept = sorted({round(d.score, 3) for dets in read_detections(path, 0.0).values() for d in dets})
    assert kept == [0.622, 0.731]
    # Scores within [0, 1] are probabilities already and stay as they are.
    plain = write_dets(tmp_path / "plain.txt", [(1, 10.0, 10.0, 5.0, 10.0, 0.3)])
    assert read_detections(plain)[1][0].score == 0.3


def test_gap_rows_are_filled_between_detections(tmp_path: Path) -> None:
    rows = [(f, 100.0 + 4 * f, 100.0, 40.0, 100.0, 0.9) for f in range(1, 41) if not 20 <= f <= 24]
    out = io.StringIO()
    assert track_mot(write_dets(tmp_path / "det.txt", rows), 25.0, 0.0, out) == 1
    written = parse(out.getvalue())
    assert written[:, 0].tolist() == list(range(1, 41))
    gap = written[(written[:, 0] >= 20) & (written[:, 0] <= 24)]
    assert np.allclose(gap[:, 2], 100.0 + 4 * gap[:, 0], atol=1.0)


def test_long_gaps_are_not_filled(tmp_path: Path) -> None:
    # 1.2 s without detection at 25 fps: longer than FILL_GAP_S, so no made-up boxes.
    gap = range(20, 50)
    rows = [(f, 100.0 + 2 * f, 100.0, 40.0, 100.0, 0.9) for f in range(1, 71) if f not in gap]
    path = write_dets(tmp_path / "det.txt", rows)
    out = io.StringIO()
    assert track_mot(path, 25.0, 0.0, out, TrackerConfig(max_age_s=3.0)) == 1
    frames = parse(out.getvalue())[:, 0].tolist()
    assert frames == [f for f in range(1, 71) if f not in gap]
    # The same gap is filled when the limit allows it.
    out = io.StringIO()
    track_mot(path, 25.0, 0.0, out, TrackerConfig(max_age_s=3.0), fill_gap_s=2.0)
    assert parse(out.getvalue())[:, 0].tolist() == list(range(1, 71))


def test_same_defaults_as_the_daemon(tmp_path: Path) -> None:
    path = write_dets(tmp_path / "det.txt", two_walkers())
    a, b = io.StringIO(), io.StringIO()
    track_mot(path, 25.0, 0.0, a)
    track_mot(path, 25.0, 0.0, b, TrackerConfig())
    assert a.getvalue() == b.getvalue()


def test_builds_its_tracker_with_make_tracker(tmp_path: Path) -> None:
    """The tracker comes from make_tracker, called once with the settings given."""
    path = write_dets(tmp_path / "det.txt", two_walkers())
    config = TrackerConfig(max_age_s=3.0)
    built: list[tuple[TrackerConfig, Tracker]] = []

    def make_tracker(settings: TrackerConfig) -> Tracker:
        """A plain Tracker, remembered with the settings it was built from."""
        tracker = Tracker(settings)
        built.append((settings, tracker))
        return tracker

    explicit, default = io.StringIO(), io.StringIO()
    track_mot(path, 25.0, 0.0, explicit, config, make_tracker=make_tracker)
    track_mot(path, 25.0, 0.0, default, config)
    assert [settings for settings, _ in built] == [config]
    # The same Tracker passed explicitly tracks exactly as the default.
    assert explicit.getvalue() == default.getvalue()


def test_every_nth_frame_tracker_is_passed_not_patched_in(tmp_path: Path) -> None:
    """eval_tracking's detect-every-n variant reaches track_mot as make_tracker."""
    path = write_dets(tmp_path / "det.txt", two_walkers())
    assert tracker_factory(1) is Tracker
    built: list[Tracker] = []

    def make_tracker(settings: TrackerConfig) -> Tracker:
        """tracker_factory(3)'s tracker, remembered."""
        built.append(tracker_factory(3)(settings))
        return built[-1]

    every_third, every_frame = io.StringIO(), io.StringIO()
    assert track_mot(path, 25.0, 0.0, every_third, make_tracker=make_tracker) == 2
    track_mot(path, 25.0, 0.0, every_frame)
    assert len(built) == 1 and isinstance(built[0], EveryNthFrameTracker)
    assert built[0].every == 3
    # Frames between detections are predicted, so the boxes differ from detecting every frame.
    assert every_third.getvalue() != every_frame.getvalue()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,-1,10,20,30\n", "det.txt:2: expected at least 7"),
        ("1,-1,10,abc,30,40,0.9\n", "det.txt:2: field 'y' is not a finite number: 'abc'"),
        ("1,-1,10,20,30,40,nan\n", "det.txt:2: field 'score'"),
        ("0,-1,10,20,30,40,0.9\n", "det.txt:2: field 'frame' must be a whole number >= 1"),
        ("2.5,-1,10,20,30,40,0.9\n", "det.txt:2: field 'frame'"),
        ("1,-1,10,20,-30,40,0.9\n", "det.txt:2: field 'w' must be positive"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9,-1,-1,-1\n" + line)
    with pytest.raises(MotFormatError, match=message.replace("(", r"\(")) as caught:
        track_mot(path, 25.0, 0.0, io.StringIO())
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_fps_must_be_positive(tmp_path: Path) -> None:
    path = write_dets(tmp_path / "det.txt", two_walkers(5))
    with pytest.raises(ValueError, match="fps"):
        track_mot(path, 0.0, 0.0, io.StringIO())


def test_empty_file_counts_nobody(tmp_path: Path) -> None:
    path = tmp_path / "det.txt"
    path.write_text("")
    out = io.StringIO()
    assert track_mot(path, 25.0, 0.0, out) == 0
    assert out.getvalue() == ""


@pytest.mark.skipif(not MOT15.is_dir(), reason=f"MOT15 data not found at {MOT15} (../shared)")
@pytest.mark.parametrize("sequence", ["PETS09-S2L1", "TUD-Campus", "TUD-Stadtmitte"])
def test_counts_people_of_mot15_within_a_quarter(sequence: str) -> None:
    """The public detections' people, counted within 25 % (peers: +12 % to +330 %).

    PETS09-S2L1 counts 23 for 19: three people walking out of the frame no longer hand their
    identity to whoever walks in there, and a walker lost in the middle of the frame no longer
    takes over the newcomer stepping in at its edge (gt 16 into gt 13's track), merges which
    used to make up for as many fragments.
    """
    folder = MOT15 / sequence
    info = configparser.ConfigParser()
    info.read(folder / "seqinfo.ini")
    fps = float(info["Sequence"]["frameRate"])
    people = len(np.unique(np.loadtxt(folder / "gt" / "gt.txt", delimiter=",")[:, 1]))
    counted = track_mot(folder / "det" / "det.txt", fps, 0.0, io.StringIO())
    assert abs(counted - people) <= 0.25 * people, f"{counted} counted for {people} people"


def test_frame_size_comes_from_the_sequences_seqinfo(tmp_path: Path) -> None:
    det = tmp_path / "SEQ" / "det" / "det.txt"
    det.parent.mkdir(parents=True)
    det.write_text("")
    assert frame_size_of(det) is None  # no seqinfo.ini: unknown
    info = tmp_path / "SEQ" / "seqinfo.ini"
    info.write_text("[Sequence]\nframeRate=25\n")
    assert frame_size_of(det) is None  # no size in it
    info.write_text("[Sequence]\nframeRate=25\nimWidth=640\nimHeight=480\n")
    assert frame_size_of(det) == (640.0, 480.0)


def test_a_walker_leaving_the_frame_and_another_coming_in_are_two_people(tmp_path: Path) -> None:
    # Same scene as the tracker's unit test, through the MOT files: the frame size in
    # seqinfo.ini ends the first walker's track where it leaves the frame.
    rows = [(k, 560.0 + 8 * (k - 1), 100.0, 40.0, 40.0, 0.9) for k in range(1, 11)]
    rows += [(k, 620.0 - 8 * (k - 26), 105.0, 40.0, 40.0, 0.9) for k in range(26, 36)]
    (tmp_path / "SEQ" / "det").mkdir(parents=True)
    det = write_dets(tmp_path / "SEQ" / "det" / "det.txt", rows)
    assert track_mot(det, 10.0, 0.0, io.StringIO()) == 1  # the frame unknown: one identity
    (tmp_path / "SEQ" / "seqinfo.ini").write_text(
        "[Sequence]\nframeRate=10\nimWidth=640\nimHeight=480\n"
    )
    assert track_mot(det, 10.0, 0.0, io.StringIO()) == 2


def test_rows_are_sharp_boxes_unless_steady_ones_are_asked_for(tmp_path: Path) -> None:
    # One walker boxed exactly, the box 4 px wider every third frame (as annotations wobble):
    # the rows follow the boxes, --steady-boxes smooths the wobble away.
    rows = []
    for f in range(1, 61):
        wobble = 2.0 if f % 3 == 0 else 0.0
        rows.append((f, 100.0 + 4 * f - wobble, 100.0, 40.0 + 2 * wobble, 100.0, 0.9))
    path = write_dets(tmp_path / "det.txt", rows)
    given = np.array([r[1:5] for r in rows])
    error = {}
    for steady in (False, True):
        out = io.StringIO()
        track_mot(path, 25.0, 0.0, out, steady=steady)
        written = parse(out.getvalue())
        assert written[:, 0].tolist() == list(range(1, 61))
        error[steady] = np.abs(written[30:, 2:6] - given[30:]).max(axis=1).mean()
    assert error[False] < 0.3 * error[True]
