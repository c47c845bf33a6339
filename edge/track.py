"""Head tracker: links the detector's boxes over time into one track per person.

A constant-velocity Kalman filter predicts every track's box (centre and size). Confident
detections are assigned to tracks by IoU with the Hungarian algorithm, each track paying for
the uncertainty of its predicted position, so a person seen a moment ago keeps their box
against a track lost for a while whose prediction happens to lie on it; tracks and detections
left over are then matched by centre distance, within a radius measured in box heights that
grows with the time a track has been unseen and with its own speed, so a person missed by the
detector or hidden for a while (up to max_age_s) keeps their identity instead of being
counted twice. Weak detections may only extend a track seen on the previous detection frame
(ByteTrack). A detection lying mostly inside a live track's box starts a hidden track: it
takes only detections the other tracks leave (or overlap less, where their own person is gone,
missed on the last detection frame, or walking out of the frame), and it is not confirmed while
it still lies mostly inside an older track, so a double detection of one person is not a second
person, while someone who appears behind or in front of another person keeps their own
detections (and identity) from the first one on and is counted once they part. When the
frame's size is known, a track missed on the last detection frame whose predicted box has wholly
left the frame ends: that person walked out, and whoever walks in where they left gets an
identity of their own. So does a reliable track (one the detector has missed on few of its
recent frames) whose last box reached the frame's edge (or came within half its size of it:
people are lost once most of them is out) while it walked out through it, missed once (on the
next detection frame, before matching, as a track whose box has left): a detector that finds
someone on nearly every frame and then loses them there has seen them leave, and a lingering
track would take over whoever comes in through the same edge next.
When the camera itself moves (a pole in the wind, a pan-tilt head, footage from a moving
camera), every box on the frame moves alike, which no person's own motion predicts: when most
tracks matched on a frame (camera_agreement of them, at least four) were found shifted alike
from their predictions, that shift is taken for the camera's, and every track, lost ones too,
moves with it before its own update (follow_camera). For a second after that no track ends for
leaving the frame: the camera that turned people out of view may turn back to them.
New tracks are tentative until min_hits detections; one that ends tentative is never a
person. Every live track reports the filter's estimate of its box, steadier than the
detector's own box (kept beside it), and a sharp box, which on a frame where the track was
detected trusts the detection the more, the more reliable the track's detections have proven.

The filter's process noise is in person heights (a head box is one 7.5th of a person: the
prediction of a head may bend as much as the person does), and each track learns how noisy its
own detections are, between min_measurement_noise and measurement_noise, so clean boxes are
followed closely and jittery ones smoothed. The sharp box is the same update with that learnt
noise variance shrunk by its own fraction of measurement_noise squared: detections as noisy as
measurement_noise are smoothed as much, detections that agree to min_measurement_noise (a fifth
of it) are trusted 25 times more than the filter trusts them (more still where the filter lags
them, below). For the sharp box the noise is
learnt around the track's lag (the running mean of its centre's innovations, lag_adaptation):
a filter left behind by a swaying camera or a person speeding up misses by the same few pixels
frame after frame, which says nothing about the detector. Exact boxes (annotations) are then
reported nearly as they are, while the steady box, which the daemon plans with, and the filter
itself stay as they were (the daemon skips the sharp box altogether: sharp_boxes=False).

The tracker ignores the class label, but for the box a label comes with: a face the detector
sees is boxed by the face, a head whose face it cannot see by the whole head, so the tracker
follows the head around a face (faces_as_heads) and a person whose label flickers between the
three labels, turning to and from the camera, stays one track. Times are in seconds and
distances in box heights, so the same settings work for heads and whole bodies, at any frame
rate, and with detection on every n-th frame only (predict() in between).

Every axis of the state (centre x, centre y, width, height) is filtered on its own with a
two-state (position, velocity) filter; with diagonal noise that is exactly the usual 8-state
filter. All tracks live in one (N, 12) numpy array updated element-wise, which keeps an
update with 10 tracks under 0.1 ms on a desktop core.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy

from edge.anchors import inside_matrix, iou_matrix
from edge.config.tracker import TrackerConfig
from edge.detection import (
    FACE_NOT_VISIBLE,
    FACE_TO_HEAD_HEIGHT,
    FACE_TO_HEAD_RAISE,
    FACE_TO_HEAD_WIDTH,
    Detection,
)


def _load_linear_sum_assignment() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """scipy's Hungarian solver, loaded from its compiled module alone when possible.

    `import scipy.optimize` loads all of scipy.optimize, scipy.sparse and scipy.linalg (42 MB
    of resident memory measured, a quarter of the daemon's) for this one function; the
    `_lsap` extension it lives in needs none of them. Falls back to the public import.
    """
    for path in sorted((Path(scipy.__file__).parent / "optimize").glob("_lsap*.so")):
        spec = importlib.util.spec_from_file_location("scipy.optimize._lsap", path)
        if spec is None or spec.loader is None:
            continue
        try:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.linear_sum_assignment
        except (ImportError, AttributeError, OSError):
            break
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment


linear_sum_assignment = _load_linear_sum_assignment()

Box = tuple[float, float, float, float]

# A standing adult is 7 to 8 heads tall. People speed up, slow down and start walking in
# proportion to their own height, not their box's: a head box (one less than head_aspect times
# as high as it is wide) walks several of its heights a second where a body box walks one.
HEADS_PER_PERSON = 7.5
# follow_camera: at least this many tracks matched on a frame to tell the camera's motion from
# people's (with three, PETS09-S2L1's fixed street camera moved its tracks twice, by 1.7 and
# 3.2 px, on frames where three tracks happened to agree), and the share of the camera's
# shift that also goes into every track's velocity (a camera that sways keeps moving for a
# while; half, since one frame's shift also holds the detections' noise).
_CAMERA_MIN_TRACKS = 4
_CAMERA_VELOCITY_SHARE = 0.5
# For this long (s) after follow_camera last moved the tracks no track ends for leaving the
# frame: the camera that turned them out of view may turn back (lost, they end by max_age_s,
# or by the exit rules once the camera has not been seen moving for this long).
_CAMERA_MEMORY_S = 1.0
# A detection within this share of its own width (height) of the frame's left or right (top
# or bottom) edge touches it: someone stepping into view there, or standing half cut off.
_EDGE_TOUCH = 0.1
# A track unseen for longer than this (s) while walking out through an edge of the frame is
# someone who left (or at least cannot be told from one): a detection touching that edge is
# someone stepping in. Shorter gaps are a person half cut off there whom the detector missed
# for a few frames (TUD-Campus's public detections: up to 0.5 s).
_GONE_S = 1.0
# Ones to sum the rows of up to this many tracks with one product (more take a fresh vector).
_ONES = np.ones(256)
# Cost of a forbidden pair; anything at or above it is not a match.
_FORBIDDEN = 1e6
# Smallest width or height (pixels) a predicted box may shrink to.
_MIN_SIZE = 1.0
# How often the detector finds a track, learnt as a running average over its detection frames
# (1 found, 0 missed) with this weight per frame (about the last 20 frames), starting from
# RELIABILITY_PRIOR: a new track is taken to be found 4 frames in 5 until it shows otherwise,
# so that a few lucky hits do not make a noisy detector's track look reliable.
RELIABILITY_WEIGHT = 0.05
RELIABILITY_PRIOR = 0.8
# Columns of Tracker._state after the 4 positions and 4 velocities: the covariance terms.
_P00, _P01, _P11 = 8, 9, 10
# The track's own measurement noise variance, relative to its height squared, as the filter
# uses it (_R) and as the sharp box uses it, learnt around the track's lag (_R_SHARP).
_R = 11
_R_SHARP = 12
# The sharp box (centre x, centre y, width, height) of the row's last detection frame.
_SHARP = 13
# The running mean of the centre's innovation (x, y; lag_adaptation), then two zeros, so that
# the four innovations less these four columns are the innovations around the lag.
_LAG = 17
_STATE = 21
# Centre x, centre y, width, height times this matrix is x1, y1, x2, y2 (one small matmul is
# several times cheaper than slicing and concatenating).
_CORNERS = np.array(
    [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [-0.5, 0.0, 0.5, 0.0], [0.0, -0.5, 0.0, 0.5]]
)
# And back: (x1, y1, x2, y2) @ _CENTRES = (cx, cy, w, h), one call instead of four slices.
_CENTRES = np.array(
    [[0.5, 0.0, -1.0, 0.0], [0.0, 0.5, 0.0, -1.0], [0.5, 0.0, 1.0, 0.0], [0.0, 0.5, 0.0, 1.0]]
)


def _face_to_head() -> np.ndarray:
    """(x1, y1, x2, y2) of a face times this is the box of the head around it (see
    edge.detection.FACE_TO_HEAD_WIDTH): centre raised, width and height scaled, as one product."""
    kw, kh, r = FACE_TO_HEAD_WIDTH / 2, FACE_TO_HEAD_HEIGHT / 2, FACE_TO_HEAD_RAISE
    return np.array(
        [
            [0.5 + kw, 0.0, 0.5 - kw, 0.0],
            [0.0, 0.5 + r + kh, 0.0, 0.5 + r - kh],
            [0.5 - kw, 0.0, 0.5 + kw, 0.0],
            [0.0, 0.5 - r - kh, 0.0, 0.5 - r + kh],
        ]
    )


_FACE_TO_HEAD = _face_to_head()
# The head around a face is at most this share of head_aspect as high as it is wide.
_HEAD_ASPECT_MARGIN = 0.95


def _heads_around(faces: np.ndarray, head_aspect: float) -> np.ndarray:
    """The head boxes around face boxes (x1, y1, x2, y2 rows), each widened where needed to
    stay under head_aspect: a tall face box (one in seven of the detector's on face photos is
    1.19 or more times as high as wide) would otherwise make a head box that the tracker takes
    for a whole body, with 7.5 times less process noise and an easier exit test."""
    heads = faces @ _FACE_TO_HEAD
    widths = heads[:, 2] - heads[:, 0]
    short = (heads[:, 3] - heads[:, 1]) / (_HEAD_ASPECT_MARGIN * head_aspect) - widths
    np.maximum(short, 0.0, out=short)
    short *= 0.5
    heads[:, 0] -= short
    heads[:, 2] += short
    return heads


def _at_edges(
    boxes: np.ndarray, size: np.ndarray, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which boxes (x1, y1, x2, y2 rows) lie within `share` of their own width (height) of a
    frame `size`'s left (top) edge, and which of its right (bottom) edge: two (N, 2) masks."""
    slack = boxes[:, 2:] - boxes[:, :2]
    slack *= share
    return boxes[:, :2] <= slack, boxes[:, 2:] >= size - slack


@lru_cache(maxsize=8)
def _innovation_weights(rate: float) -> np.ndarray:
    """rate x the mean over four axes of squared innovations (N, 4), as one product's (4, 1)
    weights (built once per rate, shared, so read-only)."""
    weights = np.full((4, 1), 0.25 * rate)
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=8)
def _lag_weights(rate: float) -> np.ndarray:
    """The running mean's weight on the two centre axes, none on width and height (whose lag
    columns stay zero), as one product's weights (built once per rate, shared, read-only)."""
    weights = np.array([rate, rate, 0.0, 0.0])
    weights.flags.writeable = False
    return weights


@dataclass(slots=True)
class TrackedHead:
    """One live track's state on the current frame.

    Attributes:
        track_id: the track's id, unique within one Tracker.
        box: (x1, y1, x2, y2): the Kalman filter's estimate of the head's box on this frame,
            i.e. the matched detection's box (for a face, the head around it: faces_as_heads)
            smoothed by the track's past, or the prediction when no detection matched.
            Steadier than the raw detection, whose own box is in `detection`: what to follow
            a person by.
        detection: the detection matched on this frame, None when the box is predicted.
        confirmed: whether the track has had enough detections to count as a person.
        sharp_box: (x1, y1, x2, y2): where the person's box most likely is on this frame: on
            a frame where the track was detected, the filter's update with the detection
            trusted the more, the more closely the track's detections have agreed around its
            lag (nearly the detection itself when they agree to min_measurement_noise, `box`
            when they are as noisy as measurement_noise); `box` (the prediction) on any other
            frame, and on every frame of a Tracker made with sharp_boxes=False.
            What `maskwatch track --mot` writes, scored frame by frame against annotations.
    """

    track_id: int
    box: Box
    detection: Detection | None
    confirmed: bool
    sharp_box: Box


@dataclass(slots=True)
class EndedTrack:
    """A track that was removed; a track that ended tentative is never a person.

    Attributes:
        track_id: the track's id.
        confirmed: whether it was ever confirmed.
        first_seen: timestamp (s) of its first matched detection.
        last_seen: timestamp (s) of its last matched detection.
        hits: number of detections matched to it.
    """

    track_id: int
    confirmed: bool
    first_seen: float
    last_seen: float
    hits: int


@dataclass(slots=True)
class TrackUpdate:
    """What one frame did to the tracks.

    Attributes:
        heads: every live track (tentative and confirmed) on this frame.
        ended: tracks removed on this frame; the tracker holds nothing of them any more.
    """

    heads: list[TrackedHead]
    ended: list[EndedTrack]


class _Track:
    """Bookkeeping of one live track; its Kalman state lives in the Tracker's arrays."""

    __slots__ = ("confirmed", "detection", "first_seen", "hits", "last_seen", "track_id")

    def __init__(self, track_id: int, timestamp: float, detection: Detection) -> None:
        """A new tentative track born from `detection` at `timestamp`."""
        self.track_id = track_id
        self.detection: Detection | None = detection
        self.first_seen = timestamp
        self.last_seen = timestamp
        self.hits = 1
        self.confirmed = False

    def ended(self) -> EndedTrack:
        """The record handed out when this track is removed."""
        return EndedTrack(self.track_id, self.confirmed, self.first_seen, self.last_seen, self.hits)


class Tracker:
    """Online multi-head tracker; feed it every frame, in time order."""

    def __init__(self, config: TrackerConfig, sharp_boxes: bool = True) -> None:
        """An empty tracker using `config`.

        sharp_boxes=False: every TrackedHead's sharp_box is its `box`, and the tracker spends
        nothing on the sharp box (its learnt lag and noise, its update): for a caller that
        follows people by `box` only, as the daemon does. Tracks, identities and `box` are
        the same either way (the filter's learnt noise is computed alike in both).
        """
        self.config = config
        self.sharp_boxes = sharp_boxes
        self._next_id = 1
        self._time: float | None = None
        # Seconds from the previous frame to this one (0 on the first), detected or only
        # predicted: follow_camera's velocity step divides a detection frame's shift by it.
        self._dt = 0.0
        # The covariance prediction's two small matrices for the interval _step_dt.
        self._step_dt = -1.0
        self._step = (np.zeros((2, 3)), np.zeros(3))
        # When follow_camera last moved the tracks (None: never).
        self._camera_moved_at: float | None = None
        self._tracks: list[_Track] = []
        # Kalman state, one row per entry of _tracks, in one array so that rows are gathered
        # and scattered in one go: centre x, centre y, width, height, their 4 velocities, then
        # var(position), cov(position, velocity), var(velocity). All noise is proportional to
        # the box height, the same on every axis, so the four axes share one covariance;
        # then the track's learnt detection noise for the filter (_R) and for the sharp box
        # (_R_SHARP), its sharp box (TrackedHead.sharp_box, _SHARP) and its lag (_LAG).
        self._state = np.zeros((0, _STATE))
        # Whether the row was matched on the last detection frame (ByteTrack's "tracked").
        self._matched = np.zeros(0, dtype=bool)
        # Whether the row is a hidden track: tentative, born mostly inside a live track's box
        # (birth_overlap). It takes only the detections the other tracks leave by overlap, and
        # it is confirmed only once clear of every older track.
        self._hidden = np.zeros(0, dtype=bool)
        # Time and box of each row's last matched detection.
        self._last_seen = np.zeros(0)
        self._last_box = np.zeros((0, 4))
        # Running share of detection frames on which each row was found (RELIABILITY_WEIGHT).
        self._found = np.zeros(0)

    # ----------------------------------------------------------------------------- public

    def update(
        self,
        detections: Sequence[Detection],
        timestamp: float,
        frame_size: tuple[float, float] | None = None,
    ) -> TrackUpdate:
        """One frame on which the detector ran: match, update, start and end tracks.

        frame_size: the frame's (width, height) in the detections' pixels, when known. A
        track missed on the previous detection frame whose predicted box has wholly left the
        frame then ends here: that person walked out, and someone walking in where they left
        must not take over their identity.
        """
        self._advance(timestamp)
        cfg = self.config
        exited: list[EndedTrack] = []
        if frame_size is not None and len(self._tracks) and not self._camera_moving(timestamp):
            exited = self._end_exits(frame_size)
        n = len(self._tracks)
        m = len(detections)
        det_of_row: list[Detection | None] = [None] * n
        if m:
            boxes = np.array([d.box for d in detections], dtype=float).reshape(m, 4)
            if cfg.faces_as_heads:
                # A seen face is boxed by the face, an unseen one by the head: track the head.
                # (Plain lists: numpy's per-call cost dwarfs ten booleans.)
                front = [d.label != FACE_NOT_VISIBLE for d in detections]
                if all(front):
                    boxes = _heads_around(boxes, cfg.head_aspect)
                elif any(front):
                    rows = np.array(front)
                    boxes[rows] = _heads_around(boxes[rows], cfg.head_aspect)
            scores = np.array([d.score for d in detections], dtype=float)
            usable = scores >= cfg.low_score
            high = scores >= cfg.high_score
        else:
            boxes = np.zeros((0, 4))
            scores = np.zeros(0)
            usable = high = np.zeros(0, dtype=bool)
        det_taken = ~usable
        matched = np.zeros(n, dtype=bool)
        n_matched = 0
        if n and m:
            iou = iou_matrix(self._boxes(), boxes)
            # Tracks that yield to hidden tracks (only needed, and computed, beside one): those
            # missed on the last detection frame and those walking out of the frame.
            yielding = None
            if self._hidden.any():
                yielding = ~self._matched
                if frame_size is not None:
                    yielding |= self._walking_out(np.array(frame_size))
                yielding &= ~self._hidden
            rows, cols = self._associate(
                boxes, iou, high, usable & ~high, timestamp, yielding, frame_size
            )
            n_matched = len(rows)
            if n_matched:
                measured = boxes[cols]
                self._correct(rows, measured)
                self._last_seen[rows] = timestamp
                self._last_box[rows] = measured
                matched[rows] = True
                det_taken[cols] = True
                for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                    det_of_row[r] = detections[c]
        # Bookkeeping of matched tracks; unmatched ones lose their size velocity so a lost box
        # neither balloons nor collapses while it is predicted.
        due: list[int] = []
        for row, (track, det) in enumerate(zip(self._tracks, det_of_row, strict=True)):
            track.detection = det
            if det is not None:
                track.hits += 1
                track.last_seen = timestamp
                if (
                    not track.confirmed
                    and track.hits >= cfg.min_hits
                    and timestamp - track.first_seen >= cfg.min_track_s
                ):
                    due.append(row)
        if due:
            self._confirm(np.array(due))
        if n:
            self._found += RELIABILITY_WEIGHT * (matched - self._found)
        if n_matched < n:
            self._state[~matched, 6:8] = 0.0
        self._matched = matched
        ended = exited + self._end_stale(timestamp)
        births = (~det_taken & high).nonzero()[0]
        if len(births):
            hidden = np.zeros(len(births), dtype=bool)
            if self._tracks and cfg.birth_overlap < 1:
                inside = inside_matrix(boxes[births], self._boxes()).max(axis=1)
                hidden = inside >= cfg.birth_overlap
            self._start(boxes[births], [detections[i] for i in births.tolist()], timestamp, hidden)
        return TrackUpdate(self._heads(), ended)

    def predict(self, timestamp: float) -> TrackUpdate:
        """A frame without detection: move every track to its Kalman prediction.

        No track misses a detection here and none ends; only update() decides that.
        """
        self._advance(timestamp)
        return TrackUpdate(self._heads(detected=False), [])

    def finish(self) -> list[EndedTrack]:
        """End every live track (shutdown or end of stream) and free all their state."""
        ended = [t.ended() for t in self._tracks]
        self._keep(np.zeros(len(self._tracks), dtype=bool))
        return ended

    @property
    def live_tracks(self) -> int:
        """Number of live tracks, tentative and confirmed."""
        return len(self._tracks)

    # ---------------------------------------------------------------------------- Kalman

    def _advance(self, timestamp: float) -> None:
        """Kalman prediction of every track from the last frame's time to `timestamp`."""
        if self._time is None:
            self._time = timestamp
            return
        dt = timestamp - self._time
        self._dt = max(dt, 0.0)
        if dt <= 0 or not self._tracks:
            self._time = max(self._time, timestamp)
            return
        self._time = timestamp
        # Noise scales with the person's height: the same settings serve heads and bodies.
        st = self._state
        cfg = self.config
        # (acceleration_noise x person height)^2.
        q = self._person_heights()
        q *= q
        q *= cfg.acceleration_noise**2
        st[:, :4] += st[:, 4:8] * dt
        np.maximum(st[:, 2:4], _MIN_SIZE, out=st[:, 2:4])
        # P00 += 2 dt P01 + dt^2 P11 + q dt^3/3;  P01 += dt P11 + q dt^2/2;  P11 += q dt,
        # as two small products over the three covariance columns (fewer numpy calls).
        if abs(dt - self._step_dt) > 1e-9:
            # Built once per interval (to a nanosecond: timestamps k / fps differ in their last
            # bits): footage at its frame rate builds them once, a live camera's clock, whose
            # intervals jitter, each frame.
            self._step_dt = dt
            self._step = (
                np.array([[2.0 * dt, 0.0, 0.0], [dt * dt, dt, 0.0]]),
                np.array([dt**3 / 3.0, dt**2 / 2.0, dt]),
            )
        transition, noise = self._step
        st[:, _P00 : _P11 + 1] += st[:, _P01 : _P11 + 1] @ transition + q[:, None] * noise

    def _correct(self, rows: np.ndarray, measured: np.ndarray) -> None:
        """Kalman update of the given rows (ascending) with measured boxes (x1, y1, x2, y2)."""
        cfg = self.config
        # Every row (the usual frame): work on the state in place, without a gather and scatter.
        whole = len(rows) == len(self._state)
        st = self._state if whole else self._state[rows]
        y = measured @ _CENTRES
        h2 = np.maximum(y[:, 3], _MIN_SIZE)
        h2 *= h2
        y -= st[:, :4]
        yy = y * y
        if cfg.follow_camera and len(y) >= _CAMERA_MIN_TRACKS:
            # A cheap first test: do the centre innovations share a direction at all (their
            # sum's squared length at least a fifth of what it would be were they all alike,
            # about 1 / N for N unrelated ones)? Most frames of a fixed camera stop here.
            n = len(y)
            ones = _ONES[:n] if n <= len(_ONES) else np.ones(n)
            # Sums of the innovations and of their squares, per axis (two small products and
            # plain floats: numpy's per-call cost dwarfs ten rows).
            total = (ones @ y).tolist()
            energy = (ones @ yy).tolist()
            spread = total[0] * total[0] + total[1] * total[1]
            if spread >= 0.2 * n * (energy[0] + energy[1]):
                shift = self._camera_shift(y[:, :2])
                if shift is not None:
                    # The camera moved: every track's prediction moves with it, lost ones
                    # too, and the innovation left is each person's own.
                    y[:, :2] -= shift
                    yy = y * y
                    step = shift * (_CAMERA_VELOCITY_SHARE / self._dt) if self._dt > 0 else 0.0
                    for arr in (self._state,) if whole else (self._state, st):
                        arr[:, :2] += shift
                        arr[:, 4:6] += step
                    self._last_box += np.concatenate([shift, shift])
                    self._camera_moved_at = self._time
        # The track's own detection noise, learnt from how far its detections fall from the
        # prediction beyond what the prediction's own uncertainty explains (innovation-based
        # estimate): detections that agree closely are trusted closely, down to
        # min_measurement_noise, never less than measurement_noise says. Learnt twice: for
        # the filter from the innovations themselves, and for the sharp box from the
        # innovations around the track's lag (their running mean, lag_adaptation): a track
        # left behind by a swaying camera or a person speeding up sees the same large
        # innovation frame after frame, which is not the detector's noise.
        if cfg.noise_adaptation > 0:
            rate = cfg.noise_adaptation
            # rate x (mean squared innovation over the four axes - P00) / h^2: the filter's
            # (N, 1), computed the same with or without sharp boxes, beside the sharp box's.
            weights = _innovation_weights(rate)
            seen = yy @ weights
            if self.sharp_boxes:
                lag = st[:, _LAG : _LAG + 4]  # a view: updated in place
                around = y - lag
                lag += around * _lag_weights(cfg.lag_adaptation)
                around *= around
                seen = np.concatenate((seen, around @ weights), axis=1)
                learnt = st[:, _R : _R_SHARP + 1]  # a view: updated in place
            else:
                learnt = st[:, _R : _R + 1]
            seen -= rate * st[:, _P00 : _P00 + 1]
            seen /= h2[:, None]
            learnt *= 1.0 - rate
            learnt += seen
            # Two ufuncs: np.clip costs several times as much on arrays this small.
            np.maximum(learnt, cfg.min_measurement_noise**2, out=learnt)
            np.minimum(learnt, cfg.measurement_noise**2, out=learnt)
        noise = st[:, _R] * h2
        if self.sharp_boxes:
            # The sharp box: the same update with the lag-free learnt noise variance times its
            # own fraction of measurement_noise^2. Only the box reported beside the filter's
            # estimate; the state (prediction, association, gating) does not see it.
            sharp = st[:, _R_SHARP] * (1.0 / cfg.measurement_noise**2)
            sharp *= st[:, _R_SHARP]
            sharp *= h2
            sharp += st[:, _P00]
            np.divide(st[:, _P00], sharp, out=sharp)
            st[:, _SHARP : _SHARP + 4] = st[:, :4] + sharp[:, None] * y
        s = noise + st[:, _P00]
        # Gains of position (k0) and velocity (k1), applied to all four axes in one product.
        gain = st[:, _P00 : _P01 + 1] / s[:, None]
        st[:, :8] += (gain[:, :, None] * y[:, None, :]).reshape(-1, 8)
        # P11 -= k1 P01 first, while P01 is still the prior; then P00, P01 *= 1 - k0.
        st[:, _P11] -= gain[:, 1] * st[:, _P01]
        st[:, _P00 : _P01 + 1] *= 1.0 - gain[:, :1]
        if not whole:
            self._state[rows] = st

    def _camera_moving(self, timestamp: float) -> bool:
        """Whether follow_camera moved the tracks within the last _CAMERA_MEMORY_S."""
        moved = self._camera_moved_at
        return moved is not None and timestamp - moved <= _CAMERA_MEMORY_S

    def _camera_shift(self, moved: np.ndarray) -> np.ndarray | None:
        """The camera's own shift since the prediction, or None: the median of the matched
        tracks' centre innovations (N, 2), per axis (the upper middle value for an even N),
        when at least camera_agreement of them lie within half its length of it (people do
        not all swerve alike; a camera moves them all)."""
        n = len(moved)
        shift = np.sort(moved, axis=0)[n // 2]
        size = float(shift @ shift)
        if size == 0.0:
            return None
        off = moved - shift
        far = int(((off * off).sum(axis=1) > 0.25 * size).sum())
        return shift if far <= (1.0 - self.config.camera_agreement) * n else None

    def _start(
        self,
        measured: np.ndarray,
        detections: list[Detection],
        timestamp: float,
        hidden: np.ndarray,
    ) -> None:
        """New tentative tracks, one per measured box; `hidden`: born inside another track."""
        k = len(measured)
        pos = measured @ _CENTRES
        np.maximum(pos[:, 2:], _MIN_SIZE, out=pos[:, 2:])
        h = pos[:, 3]
        cfg = self.config
        new = np.zeros((k, _STATE))
        new[:, :4] = pos
        new[:, _P00] = (cfg.measurement_noise * h) ** 2
        new[:, _P11] = (cfg.initial_velocity_std * h) ** 2
        new[:, _R : _R_SHARP + 1] = cfg.measurement_noise**2
        new[:, _SHARP : _SHARP + 4] = pos
        self._state = np.concatenate([self._state, new])
        self._matched = np.concatenate([self._matched, np.ones(k, dtype=bool)])
        self._hidden = np.concatenate([self._hidden, hidden])
        self._last_seen = np.concatenate([self._last_seen, np.full(k, timestamp)])
        self._last_box = np.concatenate([self._last_box, measured])
        self._found = np.concatenate([self._found, np.full(k, RELIABILITY_PRIOR)])
        # With min_hits 1 the birth itself confirms the track, unless it is hidden.
        confirmed = cfg.min_hits <= 1 and cfg.min_track_s <= 0
        for det, inside in zip(detections, hidden.tolist(), strict=True):
            track = _Track(self._next_id, timestamp, det)
            track.confirmed = confirmed and not inside
            self._tracks.append(track)
            self._next_id += 1

    # ------------------------------------------------------------------------ association

    def _boxes(self) -> np.ndarray:
        """Every track's current box estimate as (N, 4) x1, y1, x2, y2."""
        return self._state[:, :4] @ _CORNERS

    def _associate(
        self,
        boxes: np.ndarray,
        iou: np.ndarray,
        high: np.ndarray,
        weak: np.ndarray,
        timestamp: float,
        yielding: np.ndarray | None = None,
        frame_size: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matched (track row, detection index) pairs, rows ascending, in three stages.

        1. Every track against the confident detections by IoU (cost 1 - IoU, plus
           uncertainty_cost times the standard deviation of the track's predicted position in
           box heights: of two tracks overlapping a detection about as much, the one whose
           position is known takes it, not one long unseen whose coasting prediction happens
           to lie on it); hidden tracks
           (tentative, born inside another track's box) only afterwards, against the
           confident detections the others left: a double detection may not take over its
           host's box when the host's own box is missed, while a person hidden behind another
           keeps their own detections, which a neighbour whose person just left would
           otherwise take by distance. A `yielding` track (one missed on the last detection
           frame, or walking out of the frame: _walking_out) does not take a detection that a
           hidden track overlaps more: its own person is gone or going, and the box is the one
           the hidden track has been following (someone who walked in through the same edge,
           or out from behind them). A double detection still leaves its host's box to the
           host, which overlaps its own box more than the duplicate inside it does.
        2. Tracks left over against confident detections left over by centre distance: a
           detection is in reach when its centre is within distance_gate box heights of the
           prediction plus the way the track itself moves while unseen (speed_gate x its
           speed x the time since its last detection), so a person who stopped, slowed down
           or kept walking behind an occluder is found again, whatever the box size or speed.
           A detection touching an edge of the frame (frame_size known) is someone stepping
           into view there, or someone standing there half cut off: it is in reach only of
           tracks whose predicted box is within distance_gate box heights of that edge, and
           not of a track unseen for over _GONE_S while moving out through that edge at
           exit_speed (unless follow_camera moved the tracks lately). A walker lost in the
           middle of the frame, or gone a while towards its edge, does not become a newcomer
           there.
        3. Tracks seen on the last detection frame against the weak detections, strict IoU
           (ByteTrack): a weak box only extends a track it clearly overlaps.
        """
        cfg = self.config
        n = len(iou)
        # 1 - IoU plus uncertainty_cost x the standard deviation of the track's predicted
        # position in box heights (forbidden pairs stay exactly _FORBIDDEN, so the penalty
        # weighs on every match, not only when tracks outnumber detections).
        st = self._state
        base = np.sqrt(st[:, _P00])
        base /= st[:, 3]
        base *= cfg.uncertainty_cost
        base += 1.0
        cost = np.where(iou >= cfg.iou_threshold, base[:, None] - iou, _FORBIDDEN)
        hidden = self._hidden
        if yielding is not None and yielding.any():
            # A person walking out where another walks in, or gone from in front of someone:
            # the remaining box goes to the hidden track that has followed it, not to the host.
            best = np.where(hidden[:, None], iou, 0.0).max(axis=0)
            cost[yielding[:, None] & (iou < best[None, :])] = _FORBIDDEN
        rows, cols = self._assign(cost, ~hidden, high)
        if len(rows) == n:
            # Every track matched (so none is hidden): nothing left for the later stages.
            return rows, cols
        free_rows = np.ones(n, dtype=bool)
        free_rows[rows] = False
        free_cols = high.copy()
        free_cols[cols] = False
        if hidden.any() and free_cols.any():
            r, c = self._assign(cost, hidden, free_cols)
            rows = np.concatenate([rows, r])
            cols = np.concatenate([cols, c])
            free_rows[r] = False
            free_cols[c] = False
        if free_rows.any() and free_cols.any():
            cost = self._distance_cost(boxes, timestamp)
            if frame_size is not None:
                self._forbid_entries(cost, boxes, np.array(frame_size), timestamp)
            r, c = self._assign(cost, free_rows, free_cols)
            rows = np.concatenate([rows, r])
            cols = np.concatenate([cols, c])
            free_rows[r] = False
        if weak.any() and free_rows.any():
            # A confirmed person missed on a frame or two keeps this second chance: a stopped
            # person whose scores hover near the detector's threshold would otherwise be lost
            # at the first frame below it.
            free_rows &= self._matched | np.fromiter(
                (t.confirmed for t in self._tracks), dtype=bool, count=n
            )
            # Against the prediction or the last detection, whichever overlaps more: a person
            # who stops while unseen stays where the last box was, while the prediction
            # walks on.
            overlap = np.maximum(iou, iou_matrix(self._last_box, boxes))
            weak_cost = np.where(overlap >= cfg.low_iou_threshold, 1.0 - overlap, _FORBIDDEN)
            r, c = self._assign(weak_cost, free_rows, weak)
            rows = np.concatenate([rows, r])
            cols = np.concatenate([cols, c])
        order = rows.argsort()
        return rows[order], cols[order]

    def _distance_cost(self, boxes: np.ndarray, timestamp: float) -> np.ndarray:
        """Centre distance over the reach of every (track, detection) pair; _FORBIDDEN past 1.

        Distances are in units of the boxes' geometric-mean height; pairs whose heights differ
        by more than max_size_ratio are never matched.
        """
        cfg = self.config
        pos = self._state[:, :4]
        vel = self._state[:, 4:8]
        ph = pos[:, 3]
        dh = np.maximum(boxes[:, 3] - boxes[:, 1], _MIN_SIZE)
        scale = np.sqrt(ph[:, None] * dh[None, :])
        near = cfg.distance_gate * scale
        centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        d = pos[:, None, :2] - centres[None, :, :]
        dist = np.sqrt((d * d).sum(axis=2))
        unseen = timestamp - self._last_seen
        speed = np.sqrt(vel[:, 0] ** 2 + vel[:, 1] ** 2)
        reach = near + ((cfg.speed_gate * speed + cfg.gate_growth * ph) * unseen)[:, None]
        ratio = np.maximum(ph[:, None], dh[None, :]) / np.minimum(ph[:, None], dh[None, :])
        within = dist / reach
        # Someone who stopped while unseen is where they were last seen, while the
        # constant-velocity prediction carries on: a detection within distance_gate of the
        # last detection (no growth with time) is in reach too.
        last = (self._last_box[:, :2] + self._last_box[:, 2:]) * 0.5
        d = last[:, None, :] - centres[None, :, :]
        np.minimum(within, np.sqrt((d * d).sum(axis=2)) / near, out=within)
        return np.where((within <= 1.0) & (ratio <= cfg.max_size_ratio), within, _FORBIDDEN)

    def _forbid_entries(
        self, cost: np.ndarray, boxes: np.ndarray, size: np.ndarray, timestamp: float
    ) -> None:
        """Forbid, in the (tracks, detections) `cost` in place, every pair of a detection
        touching an edge of a frame `size` (width, height) and a track that cannot be the
        person there: one whose predicted box is more than distance_gate of its own heights
        from that edge, or one unseen for over _GONE_S that was walking out through that edge
        at exit_speed person heights a second or more (unless follow_camera moved the tracks
        lately: then the camera, not the person, may have done the walking)."""
        # Which of the left, top, right, bottom edges each detection touches (M, 4).
        touching = np.concatenate(_at_edges(boxes, size, _EDGE_TOUCH), axis=1)
        if not touching.any():
            return
        pred = self._boxes()
        # How far each track's predicted box lies from each edge (N, 4).
        gap = np.concatenate([pred[:, :2], size - pred[:, 2:]], axis=1)
        far = gap > (self.config.distance_gate * self._state[:, 3])[:, None]
        gone = timestamp - self._last_seen > _GONE_S
        if gone.any() and not self._camera_moving(timestamp):
            # Walking out through the left, top, right, bottom edge (the order of `gap`).
            far |= np.concatenate(self._heading_out(), axis=1) & gone[:, None]
        cost[(far[:, None, :] & touching[None, :, :]).any(axis=2)] = _FORBIDDEN

    @staticmethod
    def _assign(
        cost: np.ndarray, row_mask: np.ndarray, col_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hungarian assignment among the masked rows and columns; returns full indices."""
        row_idx = row_mask.nonzero()[0]
        col_idx = col_mask.nonzero()[0]
        if not len(row_idx) or not len(col_idx):
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        sub = (
            cost
            if len(row_idx) == len(cost) and len(col_idx) == cost.shape[1]
            else cost[np.ix_(row_idx, col_idx)]
        )
        r, c = linear_sum_assignment(sub)
        ok = sub[r, c] < _FORBIDDEN
        return row_idx[r[ok]], col_idx[c[ok]]

    # ------------------------------------------------------------------------- lifecycle

    def _confirm(self, due: np.ndarray) -> None:
        """Confirm the tracks of rows `due`, which have their hits, unless they are hidden.

        A hidden row (born mostly inside a live track's box) stays tentative while at least
        birth_overlap of its box lies inside the box of an older live track: a second box on
        one person (a whole body and its upper half) moves with its host and never counts,
        while a real person who appeared behind or in front of someone is confirmed, under the
        identity they had all along, once they part; from then on the row is like any other.
        """
        hidden = due[self._hidden[due]]
        if len(hidden):
            boxes = self._boxes()
            older = np.arange(len(boxes))[None, :] < hidden[:, None]
            inside = np.where(older, inside_matrix(boxes[hidden], boxes), 0.0).max(axis=1)
            self._hidden[hidden[inside < self.config.birth_overlap]] = False
            due = due[~self._hidden[due]]
        for row in due.tolist():
            self._tracks[row].confirmed = True

    def _person_heights(self) -> np.ndarray:
        """Each row's person height in pixels: its box height, times HEADS_PER_PERSON for a head."""
        st = self._state
        h = st[:, 3]
        return np.where(h < self.config.head_aspect * st[:, 2], HEADS_PER_PERSON * h, h)

    def _end_exits(self, frame_size: tuple[float, float]) -> list[EndedTrack]:
        """Remove tracks missed last time that walked out of the frame.

        Those whose predicted box lies wholly outside it, and the reliable ones (found on at
        least exit_reliability of their recent detection frames, this miss included) whose
        last detected box reached an edge of the frame (came within exit_margin of its own
        size of it) while they moved out through that edge at exit_speed person heights a
        second or more.
        """
        if self._matched.all():
            return []
        # Wholly outside: the centre further from the frame's centre than half the frame plus
        # half the box, on either axis. (A centre just past the edge is often a person still
        # standing there, half cut off, whom the detector missed once.)
        st = self._state
        size = np.array(frame_size)
        half = size * 0.5
        reach = st[:, 2:4] * 0.5
        reach += half
        outside = (np.abs(st[:, :2] - half) > reach).any(axis=1)
        outside |= self._walking_out(size)
        outside &= ~self._matched
        if not outside.any():
            return []
        ended = [t.ended() for t, out in zip(self._tracks, outside.tolist(), strict=True) if out]
        self._keep(~outside)
        return ended

    def _walking_out(self, size: np.ndarray) -> np.ndarray:
        """Rows whose person is walking out through an edge of a frame `size` (width, height).

        Reliable rows (found on at least exit_reliability of their recent detection frames)
        whose last detected box reached an edge (came within exit_margin of its own size of
        it) while they moved out through that edge at exit_speed person heights a second or
        more.
        """
        cfg = self.config
        # Seen by a detector that rarely misses this track (a noisy one misses people at the
        # edge who are still there, half cut off).
        reliable = self._found >= cfg.exit_reliability
        if not reliable.any():
            return reliable
        # Within exit_margin of its own size from the edge: people are lost (and no longer
        # annotated) once most of them is out, before their box touches the edge.
        low, high = _at_edges(self._last_box, size, cfg.exit_margin)
        out_low, out_high = self._heading_out()
        return reliable & ((low & out_low) | (high & out_high)).any(axis=1)

    def _heading_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Which rows move towards the frame's left (top) edge, and which towards its right
        (bottom) edge, at exit_speed person heights a second or more: two (N, 2) masks, laid
        out as _at_edges gives its own."""
        speed = self._state[:, 4:6] / self._person_heights()[:, None]
        out = self.config.exit_speed
        return speed <= -out, speed >= out

    def _end_stale(self, timestamp: float) -> list[EndedTrack]:
        """Remove tracks unmatched for too long: confirmed after max_age_s, tentative sooner."""
        cfg = self.config
        if not len(self._tracks) or timestamp - self._last_seen.min() <= min(
            cfg.max_age_s, cfg.tentative_max_age_s
        ):
            return []
        keep = np.ones(len(self._tracks), dtype=bool)
        ended: list[EndedTrack] = []
        for row, track in enumerate(self._tracks):
            limit = cfg.max_age_s if track.confirmed else cfg.tentative_max_age_s
            if timestamp - track.last_seen > limit:
                keep[row] = False
                ended.append(track.ended())
        if ended:
            self._keep(keep)
        return ended

    def _keep(self, keep: np.ndarray) -> None:
        """Drop every row whose keep flag is False, from the arrays and the track list."""
        self._tracks = [t for t, k in zip(self._tracks, keep.tolist(), strict=True) if k]
        self._state = self._state[keep]
        self._matched = self._matched[keep]
        self._hidden = self._hidden[keep]
        self._last_seen = self._last_seen[keep]
        self._last_box = self._last_box[keep]
        self._found = self._found[keep]

    def _heads(self, detected: bool = True) -> list[TrackedHead]:
        """The TrackedHead of every live track on this frame, with its filtered and sharp box.

        detected=False (a frame the detector skipped): no head carries a detection, not even
        the one its track matched on the last detected frame, and the sharp box is the
        prediction.
        """
        st = self._state
        boxes = self._boxes().tolist()
        if not detected or not len(st) or not self.sharp_boxes:
            # The sharp box is the box; a skipped frame carries no detection.
            return [
                TrackedHead(t.track_id, b := tuple(box), t.detection if detected else None,
                            t.confirmed, b)
                for t, box in zip(self._tracks, boxes, strict=True)
            ]
        # Rows detected on this frame report their update's sharp box, the others the prediction.
        centres = np.where(self._matched[:, None], st[:, _SHARP : _SHARP + 4], st[:, :4])
        sharp = (centres @ _CORNERS).tolist()
        return [
            TrackedHead(t.track_id, tuple(b), t.detection, t.confirmed, tuple(s))
            for t, b, s in zip(self._tracks, boxes, sharp, strict=True)
        ]
