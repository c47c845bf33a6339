"""The per-person vote: confident frontal looks inside the zone vote, the track end decides.

A look votes +1 (mask) when its mask probability with / (with + without) is above
`mask_above`, -1 (no mask) below `no_mask_below`; looks in between are discarded. Heads seen from
behind (`face_not_visible`), too small, or outside the counting zone keep the track alive but
never vote. With at least `min_votes` votes the sign of the sum decides; a tie or too few votes
is `undecided`.

With `min_travel` set, a confirmed track whose head never moved (by that many head heights, or
toward or away from the camera) is taken for an object that looks like a head (a bollard, a
poster, a lamp) and is not counted: people passing a street camera move. With
`min_median_score` set, a track whose median detection score stayed below it is not counted
either (Frigate's `threshold` on an object's computed score does the same).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

import cv2
import numpy as np

from edge.config.camera import ZoneConfig
from edge.config.decide import DecideConfig
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK, Detection
from edge.events import DecisionName, PersonEvent


@dataclass(slots=True)
class Ballot:
    """The running vote of one track."""

    votes_mask: int = 0
    votes_no_mask: int = 0
    looks: int = 0
    # Where the head was seen first in its current stretch (looks no more than travel_gap_s
    # apart), and how far it has gone or grown within a stretch, for the stillness test.
    first_x: float = 0.0
    first_y: float = 0.0
    max_shift: float = 0.0
    min_height: float = float("inf")
    max_height: float = 0.0
    max_growth: float = 1.0
    sum_height: float = 0.0
    last_time: float | None = None
    # Looks scoring at least min_median_score: the median is above it when they are half.
    strong_looks: int = 0
    # The looks before the head first moved (min_travel), and those scoring min_still_score.
    still_looks: int = 0
    still_strong: int = 0
    departed: bool = False

    def follow(
        self, detection: Detection, config: DecideConfig, timestamp: float | None = None
    ) -> None:
        """Record one matched detection's box and score for the count filters (before the
        vote: heads that cannot vote move, and score, too).

        With config.travel_gap_s and a timestamp, a look that comes more than travel_gap_s
        after the track's previous one starts a new stretch: travel and growth are measured
        within stretches, never across the gap, where the tracker may have handed the track
        over to someone else.
        """
        min_score = config.min_median_score
        travel_gap_s = config.travel_gap_s
        box = detection.box
        x, y, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[3] - box[1], 1e-3)
        gap = (
            travel_gap_s > 0
            and timestamp is not None
            and self.last_time is not None
            and timestamp - self.last_time > travel_gap_s
        )
        if self.looks == 0 or gap:
            self.first_x, self.first_y = x, y
            self.min_height, self.max_height = h, h
        if timestamp is not None:
            self.last_time = timestamp
        self.looks += 1
        self.strong_looks += int(detection.score >= min_score)
        self.max_shift = max(self.max_shift, math.hypot(x - self.first_x, y - self.first_y))
        self.min_height = min(self.min_height, h)
        self.max_height = max(self.max_height, h)
        self.max_growth = max(self.max_growth, self.max_height / self.min_height)
        self.sum_height += h
        if not self.departed:
            self.departed = config.min_travel > 0 and self.moved(config.min_travel)
            if not self.departed:
                self.still_looks += 1
                self.still_strong += int(detection.score >= config.min_still_score)

    def confident(self) -> bool:
        """Whether at least half of the looks scored min_median_score or more."""
        return 2 * self.strong_looks >= self.looks

    def still_confident(self) -> bool:
        """Whether at least half of the looks before the head first moved scored
        min_still_score or more (see DecideConfig.min_still_score)."""
        return 2 * self.still_strong >= self.still_looks

    def moved(self, min_travel: float) -> bool:
        """Whether the head travelled min_travel mean head heights, or its height changed by a
        factor 1 + 2 x min_travel (a person walking straight at the camera hardly shifts but
        grows; twice the share because the box height of a still thing on PETS varied 1.5x),
        within one stretch of looks (see follow)."""
        if min_travel <= 0:
            return True
        if self.looks == 0:
            return False
        mean_height = self.sum_height / self.looks
        return (
            self.max_shift >= min_travel * mean_height
            or self.max_growth >= 1 + 2 * min_travel
        )

    @property
    def balance(self) -> int:
        """+ for mask, - for no mask (shown on annotated video)."""
        return self.votes_mask - self.votes_no_mask


class Zone:
    """Where heads may vote: inside the margins and, when configured, inside the polygon."""

    def __init__(self, config: ZoneConfig, width: int, height: int) -> None:
        """Scale the zone to a frame size."""
        self.box = config.margin_box(width, height)
        poly = config.polygon_px(width, height)
        self.polygon = None if poly is None else np.asarray(poly, np.float32).reshape(-1, 1, 2)

    def contains(self, box: tuple[float, float, float, float]) -> bool:
        """Whether the whole head box lies inside the margins and its centre in the polygon."""
        x1, y1, x2, y2 = self.box
        if box[0] < x1 or box[1] < y1 or box[2] > x2 or box[3] > y2:
            return False
        if self.polygon is None:
            return True
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        return cv2.pointPolygonTest(self.polygon, centre, False) >= 0


def vote_of(detection: Detection, config: DecideConfig) -> int:
    """+1, -1 or 0 for one look, before zone and size are considered."""
    if detection.label == FACE_NOT_VISIBLE:
        return 0
    with_mask = detection.scores[FRONT_WITH_MASK]
    without = detection.scores[FRONT_WITHOUT_MASK]
    if max(with_mask, without) < config.min_front_score:
        return 0
    p_mask = with_mask / max(with_mask + without, 1e-9)
    if p_mask > config.mask_above:
        return 1
    if p_mask < config.no_mask_below:
        return -1
    return 0


def decision_of(ballot: Ballot, config: DecideConfig) -> DecisionName:
    """The one decision for a finished track."""
    if ballot.votes_mask + ballot.votes_no_mask < config.min_votes:
        return "undecided"
    if ballot.balance > 0:
        return "mask"
    if ballot.balance < 0:
        return "no_mask"
    return "undecided"


class Decider:
    """Keeps one ballot per live track of one camera and turns ended tracks into events."""

    def __init__(self, config: DecideConfig, camera: str, zone: ZoneConfig) -> None:
        """Votes for camera, counting only inside zone."""
        self.config = config
        self.camera = camera
        self.zone_config = zone
        self._zone: Zone | None = None
        self._zone_size: tuple[int, int] = (0, 0)
        self.ballots: dict[int, Ballot] = {}

    def zone_for(self, width: int, height: int) -> Zone:
        """The zone scaled to this frame size (rebuilt only when the size changes)."""
        if self._zone is None or self._zone_size != (width, height):
            self._zone = Zone(self.zone_config, width, height)
            self._zone_size = (width, height)
        return self._zone

    def look(
        self,
        track_id: int,
        detection: Detection,
        width: int,
        height: int,
        timestamp: float | None = None,
    ) -> None:
        """Count one matched detection of a track (its vote, if it may vote); timestamp: the
        frame's time in seconds (without it every look continues the last stretch)."""
        ballot = self.ballots.get(track_id)
        if ballot is None:
            ballot = self.ballots[track_id] = Ballot()
        ballot.follow(detection, self.config, timestamp)
        vote = vote_of(detection, self.config)
        if vote == 0:
            return
        x1, y1, x2, y2 = detection.box
        if min(x2 - x1, y2 - y1) < self.config.min_head_px:
            return
        if not self.zone_for(width, height).contains(detection.box):
            return
        if vote > 0:
            ballot.votes_mask += 1
        else:
            ballot.votes_no_mask += 1

    def end(
        self, track_id: int, confirmed: bool, first_seen: datetime, last_seen: datetime
    ) -> PersonEvent | None:
        """Free the track's ballot; a confirmed track that passes the count filters
        (min_travel, min_median_score, min_still_score) becomes one person event."""
        ballot = self.ballots.pop(track_id, None) or Ballot()
        if (
            not confirmed
            or not ballot.moved(self.config.min_travel)
            or not ballot.confident()
            or not ballot.still_confident()
        ):
            return None
        return PersonEvent(
            event_id=uuid.uuid4().hex,
            camera=self.camera,
            track_id=track_id,
            first_seen=first_seen,
            last_seen=last_seen,
            decision=decision_of(ballot, self.config),
            votes_mask=ballot.votes_mask,
            votes_no_mask=ballot.votes_no_mask,
            looks=ballot.looks,
        )
