"""The decision rule on constructed tracks: thresholds, minimum votes, ties, zone, size."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from edge.config.camera import ZoneConfig
from edge.config.decide import DecideConfig
from edge.decide import Decider, vote_of
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK, Detection

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
W, H = 1000, 500
CENTRE = (480.0, 230.0, 520.0, 270.0)  # 40 px head in the middle of the frame


def look(with_mask: float, without: float, hidden: float = 0.0, box=CENTRE) -> Detection:
    """A detection with the given class scores."""
    scores = (with_mask, without, hidden)
    label = max(range(3), key=lambda i: scores[i])
    return Detection(box=box, label=label, score=scores[label], scores=scores)


def decide(looks: list[Detection], config: DecideConfig | None = None, zone=None):
    """Feed looks to one track and end it (the stillness test off: these heads stand still)."""
    config = (config or DecideConfig()).model_copy(update={"min_travel": 0.0})
    decider = Decider(config, "cam", zone or ZoneConfig())
    for d in looks:
        decider.look(7, d, W, H)
    return decider.end(7, True, T0, T0)


@pytest.mark.parametrize(
    ("with_mask", "without", "vote"),
    [(0.9, 0.05, 1), (0.05, 0.9, -1), (0.6, 0.4, 0), (0.81, 0.19, 1), (0.19, 0.81, -1)],
)
def test_vote_thresholds(with_mask: float, without: float, vote: int) -> None:
    assert vote_of(look(with_mask, without), DecideConfig()) == vote


def test_weak_frontal_look_abstains() -> None:
    assert vote_of(look(0.3, 0.01), DecideConfig()) == 0


def test_face_not_visible_never_votes_but_counts_as_a_look() -> None:
    event = decide([look(0.1, 0.2, 0.9)] * 10)
    assert event is not None
    assert event.looks == 10
    assert (event.votes_mask, event.votes_no_mask, event.decision) == (0, 0, "undecided")
    assert look(0.1, 0.2, 0.9).label == FACE_NOT_VISIBLE


def test_three_votes_decide_two_do_not() -> None:
    assert decide([look(0.95, 0.02)] * 3).decision == "mask"
    assert decide([look(0.02, 0.95)] * 3).decision == "no_mask"
    assert decide([look(0.95, 0.02)] * 2).decision == "undecided"


def test_majority_and_tie() -> None:
    assert decide([look(0.95, 0.02)] * 4 + [look(0.02, 0.95)] * 2).decision == "mask"
    tie = decide([look(0.95, 0.02)] * 2 + [look(0.02, 0.95)] * 2)
    assert (tie.votes_mask, tie.votes_no_mask, tie.decision) == (2, 2, "undecided")


def test_discarded_looks_between_thresholds() -> None:
    event = decide([look(0.6, 0.5)] * 10 + [look(0.02, 0.95)] * 3)
    assert (event.votes_mask, event.votes_no_mask, event.decision) == (0, 3, "no_mask")


def test_configurable_thresholds_and_min_votes() -> None:
    cfg = DecideConfig(no_mask_below=0.4, mask_above=0.6, min_votes=5)
    assert decide([look(0.65, 0.35)] * 5, cfg).decision == "mask"
    assert decide([look(0.65, 0.35)] * 4, cfg).decision == "undecided"


def test_small_heads_do_not_vote() -> None:
    small = (500.0, 250.0, 515.0, 265.0)  # 15 px < 16 px default
    event = decide([look(0.02, 0.95, box=small)] * 5)
    assert (event.votes_no_mask, event.looks, event.decision) == (0, 5, "undecided")
    assert decide([look(0.02, 0.95, box=small)] * 5, DecideConfig(min_head_px=10)).decision == (
        "no_mask"
    )


def test_margins_exclude_heads() -> None:
    edge_box = (10.0, 230.0, 50.0, 270.0)  # inside the default 5 % left margin (50 px)
    assert decide([look(0.02, 0.95, box=edge_box)] * 5).decision == "undecided"
    no_margin = ZoneConfig(margin_left_pct=0)
    assert decide([look(0.02, 0.95, box=edge_box)] * 5, zone=no_margin).decision == "no_mask"


def test_polygon_zone() -> None:
    right_half = ZoneConfig(polygon=[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]])
    left = (200.0, 230.0, 240.0, 270.0)
    right = (700.0, 230.0, 740.0, 270.0)
    assert decide([look(0.02, 0.95, box=left)] * 3, zone=right_half).decision == "undecided"
    assert decide([look(0.02, 0.95, box=right)] * 3, zone=right_half).decision == "no_mask"


def test_unconfirmed_track_is_no_person_and_state_is_freed() -> None:
    decider = Decider(DecideConfig(min_travel=0), "cam", ZoneConfig())
    decider.look(1, look(0.95, 0.02), W, H)
    decider.look(2, look(0.95, 0.02), W, H)
    assert decider.end(1, False, T0, T0) is None
    event = decider.end(2, True, T0, T0)
    assert event is not None and event.event_id
    assert decider.ballots == {}


def shifted(dx: float, dy: float = 0.0, grow: float = 1.0) -> tuple[float, ...]:
    """The centre head box moved by (dx, dy) px and scaled by grow about its centre."""
    half = 20.0 * grow
    return (500.0 + dx - half, 250.0 + dy - half, 500.0 + dx + half, 250.0 + dy + half)


def end_after(boxes: list[tuple[float, ...]], config: DecideConfig | None = None):
    """One confirmed track seen at these head boxes, ended with the street config's stillness
    test (min_travel 0.5)."""
    decider = Decider(config or DecideConfig(min_travel=0.5), "cam", ZoneConfig())
    for box in boxes:
        decider.look(3, look(0.02, 0.95, box=box), W, H)
    return decider.end(3, True, T0, T0)


def test_a_head_that_never_moves_is_not_counted() -> None:
    # A bollard read as a head: jitter of a few px around one place for 40 frames.
    steps = [(0, 0, 1.0), (3, -2, 0.8), (-4, 1, 1.2), (2, 5, 0.9), (-1, -3, 1.1)] * 8
    jitter = [shifted(dx, dy, grow) for dx, dy, grow in steps]  # heights 32-48 px
    assert end_after(jitter) is None
    assert end_after(jitter, DecideConfig()) is not None  # off by default


def test_a_head_that_walks_across_or_toward_the_camera_is_counted() -> None:
    across = [shifted(dx) for dx in range(0, 24, 3)]  # 21 px: over half a 40 px head
    toward = [shifted(0, 0, 1 + i / 5) for i in range(6)]  # grows 2x, centre still
    short = [shifted(dx) for dx in range(0, 18, 3)]  # 15 px: under half a head
    assert end_after(across).decision == "no_mask"
    assert end_after(toward) is not None
    assert end_after(short) is None
    assert end_after(short, DecideConfig(min_travel=0.3)) is not None


def test_labels_order() -> None:
    assert (FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE) == (0, 1, 2)


def test_a_track_followed_mostly_on_weak_scores_is_not_counted() -> None:
    boxes = [shifted(dx) for dx in range(0, 60, 3)]  # 20 looks, walking
    config = DecideConfig(min_median_score=0.5)

    def end_with(scores: list[float], cfg: DecideConfig):
        decider = Decider(cfg, "cam", ZoneConfig())
        for box, score in zip(boxes, scores, strict=True):
            decider.look(4, look(0.01, score, box=box), W, H)
        return decider.end(4, True, T0, T0)

    clutter = [0.7] * 4 + [0.4] * 16  # confirmed on 4 strong looks, then weak
    person = [0.7] * 10 + [0.4] * 10  # half of the looks strong: the median is at 0.5+
    assert end_with(clutter, config) is None
    assert end_with(clutter, DecideConfig()) is not None  # off by default
    assert end_with(person, config) is not None


def test_travel_is_measured_within_stretches_of_looks_not_across_gaps() -> None:
    # Four still looks on one head, 2 s unseen, then three still looks 3 heads further on: the
    # tracker handed the track over to someone else; neither head walked.
    still = [shifted(0)] * 4 + [shifted(120)] * 3
    times = [0.1 * i for i in range(4)] + [2.4 + 0.1 * i for i in range(3)]
    walking = [shifted(dx) for dx in range(0, 60, 4)]  # 15 looks, 0.1 s apart

    def end_with(boxes, stamps, cfg: DecideConfig):
        decider = Decider(cfg, "cam", ZoneConfig())
        for box, t in zip(boxes, stamps, strict=True):
            decider.look(5, look(0.02, 0.95, box=box), W, H, t)
        return decider.end(5, True, T0, T0)

    gapped = DecideConfig(min_travel=0.5, travel_gap_s=0.5)
    assert end_with(still, times, gapped) is None
    assert end_with(still, times, DecideConfig(min_travel=0.5)) is not None  # off by default
    assert end_with(walking, [0.1 * i for i in range(15)], gapped) is not None
    # Growth too: a 40 px head, then after the gap a 100 px one, each the same size throughout.
    grown = [shifted(0)] * 4 + [shifted(0, 0, 2.5)] * 3
    assert end_with(grown, times, gapped) is None
    assert end_with(grown, times, DecideConfig(min_travel=0.5)) is not None


def test_a_track_still_on_weak_scores_that_then_moves_with_someone_is_not_counted() -> None:
    # Clutter followed on weak scores for 20 looks, then a passer-by's strong looks carry the
    # track away: it moves, and its median score over all looks is high.
    clutter = [(shifted(0), 0.4)] * 20 + [(shifted(dx), 0.7) for dx in range(4, 100, 4)]
    # A person who waits (scoring like a person) and then walks.
    waiter = [(shifted(0), 0.65)] * 20 + [(shifted(dx), 0.7) for dx in range(4, 100, 4)]

    def end_with(looks, cfg: DecideConfig):
        decider = Decider(cfg, "cam", ZoneConfig())
        for box, score in looks:
            decider.look(6, look(0.01, score, box=box), W, H)
        return decider.end(6, True, T0, T0)

    street = DecideConfig(min_travel=0.5, min_median_score=0.5, min_still_score=0.5)
    assert end_with(clutter, street) is None
    assert end_with(clutter, street.model_copy(update={"min_still_score": 0.0})) is not None
    assert end_with(waiter, street) is not None
