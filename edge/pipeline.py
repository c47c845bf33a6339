"""One camera's path through the stages: frame -> detect -> track -> decide -> ledger.

Data flows one way. The pipeline owns no thread: the daemon or the replay calls `process` for
every frame of the camera and `finish` when the camera stops or loses its picture for too long.
`process` is three steps, which edge.threaded runs on threads of their own so that the next
frame is prepared while this one is inferred: `plan` (whether and where to detect), the
detector's inferences, and `complete` (merge, track, vote, record).

Where to look (regions) depends on where the tracks are, and the next frames are planned
before this one is tracked; so a frame is planned from the tracks as they were PLAN_LAG frames
earlier, by the serial and the threaded path alike, which therefore count the same people.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from edge.config.camera import CameraConfig
from edge.config.decide import DecideConfig
from edge.config.tracker import TrackerConfig
from edge.decide import Decider
from edge.detect import Detector
from edge.detection import Detection
from edge.events import PersonEvent
from edge.layout import Placement, Window, letterboxed, mosaic
from edge.motion import THUMBNAIL_WIDTH, MotionGate
from edge.regions import Box, Head, RegionPlanner
from edge.tiling import (
    LARGE_FACE_PX,
    ZOOMED_MIN_PX,
    longer_side,
    merge_windows,
    tile_windows,
    without_pieces,
)
from edge.track import EndedTrack, TrackedHead, Tracker

FrameClock = Callable[[float], datetime]

# A frame is planned from the tracks after the frame this many frames before it: the frame
# just before is still being inferred when the next is planned.
PLAN_LAG = 2
# Motion thumbnail width (pixels) when regions use it: 160 x 120 for a 4:3 camera, so that a
# person 40 px wide in a 768 px frame is 8 thumbnail pixels wide.
REGION_MOTION_WIDTH = 160


# camera.zoom_out_large_heads: the zoomed-out view is the frame in one cell of a mosaic this many
# cells wide (2: half the size). It is added while a tracked head is ZOOM_OUT_FROM_PX or more in
# a whole-frame input; the whole-frame view then keeps heads under LARGE_FACE_PX in its input,
# the zoomed-out one those from ZOOM_OUT_FROM_PX in the whole frame's (so the two overlap).
ZOOM_OUT_GRID = 2
ZOOM_OUT_FROM_PX = 2 * ZOOMED_MIN_PX


def _by_size(
    found: Sequence[Sequence[Detection]], inputs: Sequence[Sequence[Placement]]
) -> list[list[Detection]]:
    """The whole-frame view's small heads and the zoomed-out view's large ones, both measured
    in the whole-frame input's pixels."""
    scale = inputs[0][0].scale
    return [
        [d for d in found[0] if longer_side(d.box) * scale < LARGE_FACE_PX],
        *[list(f) for f in found[1:-1]],
        [d for d in found[-1] if longer_side(d.box) * scale >= ZOOM_OUT_FROM_PX],
    ]


def _whole_and_regions(
    found: Sequence[Sequence[Detection]], inputs: Sequence[Sequence[Placement]], keep_px: float
) -> list[list[Detection]]:
    """The whole-frame view's heads of keep_px or more (frame pixels; smaller ones are the
    regions' to find, magnified), and the regions' heads less the pieces of its faces.

    A region smaller than a face sees a piece of it (an eye, an ear) and may read it as a
    face: the still photo's rule for tiles decides (edge.tiling.without_pieces), each region
    a tile of its own scale.
    """
    whole = [d for d in found[0] if longer_side(d.box) >= keep_px]
    region_px = [1 / p.scale for placements in inputs[1:] for p in placements]
    return without_pieces([whole, *[list(f) for f in found[1:]]], [0.0, *region_px])


def wall_clock(timestamp: float) -> datetime:
    """Live sources stamp frames with time.time(): that is the wall clock."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def footage_clock(origin: datetime) -> FrameClock:
    """File sources stamp frames with their position in the file: origin + position."""
    return lambda timestamp: origin + timedelta(seconds=timestamp)


@dataclass
class FrameResult:
    """What one frame produced: the live heads (for annotation) and the decided people."""

    heads: list[TrackedHead]
    people: list[PersonEvent] = field(default_factory=list)
    # Invoke time (ms) of each inference the frame took: one per tile or per input of
    # regions, none when skipped.
    inference_ms: list[float] = field(default_factory=list)

    @property
    def detected(self) -> bool:
        """Whether the detector ran on this frame (not skipped by detect_every_n or motion)."""
        return bool(self.inference_ms)


@dataclass(frozen=True)
class FramePlan:
    """What the detector does on one frame: nothing, or one inference per input.

    Attributes:
        index: the frame's number in this pipeline, from 0.
        detect: whether the detector runs (False: skipped by detect_every_n or motion).
        inputs: the model inputs, each the windows of the frame placed in it.
        zoomed_out: whether the last input is the whole frame zoomed out for large heads
            (camera.zoom_out_large_heads), the first the whole frame as usual.
        whole_first: whether the first input is the whole frame ahead of the regions'
            inputs (regions.whole_frame_s).
    """

    index: int
    detect: bool
    inputs: list[list[Placement]] = field(default_factory=list)
    zoomed_out: bool = False
    whole_first: bool = False

    @property
    def windows(self) -> list[Window]:
        """Every window of the frame that the inputs show, input by input."""
        return [p.window for placements in self.inputs for p in placements]


class CameraPipeline:
    """Detector (shared), tracker and decider of one camera."""

    def __init__(
        self,
        camera: CameraConfig,
        detector: Detector,
        tracker: TrackerConfig,
        decide: DecideConfig,
        record: Callable[[PersonEvent], object],
        clock: FrameClock,
    ) -> None:
        """Wire the stages; `record` receives every decided person (the ledger's record)."""
        self.camera = camera
        self.detector = detector
        # The daemon follows people by the steady box: no sharp boxes to compute.
        self.tracker = Tracker(tracker, sharp_boxes=False)
        self.decider = Decider(decide, camera.name, camera.zone)
        self.record = record
        self.clock = clock
        self.frames = 0  # frames planned
        self.completed = 0  # frames completed
        self.people = 0
        # Motion gating (camera.motion): frames the detector skipped because nothing moved.
        # Regions use the same gate to find moving areas.
        regions = camera.regions
        uses_motion = camera.motion.enabled or (regions.enabled and regions.motion)
        # Regions need a finer thumbnail: a far walker is a pixel wide in the gate's usual one.
        width = REGION_MOTION_WIDTH if regions.enabled else THUMBNAIL_WIDTH
        self.motion = MotionGate(camera.motion, width) if uses_motion else None
        self.still_frames = 0
        self.regions = RegionPlanner(regions, detector.input_size) if regions.enabled else None
        self._last_detect: float | None = None
        # regions.whole_frame_s: when the whole frame was last due by time, and how many more
        # detection frames of the run of whole-frame looks that began then are to come.
        self._last_whole: float | None = None
        self._whole_left = 0
        self._windows: list[Window] = []
        self._windows_for = (0, 0)
        # (frame index, heads after it) of the last completed frames, for planning.
        self._heads_after: deque[tuple[int, list[Head]]] = deque(maxlen=PLAN_LAG + 1)
        self._snapshot_lock = threading.Lock()
        # The box each live track began with (regions only).
        self._began: dict[int, Box] = {}
        # The longer side of each live track's last detection, as the detector drew it.
        self._seen_side: dict[int, float] = {}

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Run one frame through every stage; decided people are recorded before returning."""
        plan = self.plan(image, timestamp)
        found: list[list[Detection]] = []
        inference_ms: list[float] = []
        for placements in plan.inputs:
            found += self.detector.detect_placed(image, placements)
            inference_ms.append(self.detector.last_invoke_ms)
        return self.complete(image, timestamp, plan, found, inference_ms)

    def plan(self, image: np.ndarray, timestamp: float) -> FramePlan:
        """Decide whether the detector runs on this frame, and on which windows of it.

        Frames must be planned in order; frame n may be planned once frame n - PLAN_LAG is
        complete (edge.threaded waits for that).
        """
        index = self.frames
        self.frames += 1
        if index % self.camera.detect_every_n_frames:
            return FramePlan(index, False)
        heads = self._heads_for(index)
        moving: list[Box] = []
        if self.motion is not None:
            moved, moving = self.motion.moving_areas(image)
            if self.camera.motion.enabled and not moved and not self._refresh_due(heads, timestamp):
                self.still_frames += 1
                return FramePlan(index, False)
        self._last_detect = timestamp
        h, w = image.shape[:2]
        size = self.detector.input_size
        if self.regions is not None:
            inputs = self.regions.inputs(self.regions.plan(w, h, heads, moving))
            if self._whole_frame_due(timestamp) or self.regions.near_motion(moving):
                return FramePlan(index, True, [letterboxed((0, 0, w, h), size), *inputs],
                                 whole_first=True)
            return FramePlan(index, True, inputs)
        inputs = [letterboxed(win, size) for win in self._tiles(w, h)]
        if self._zoom_out_due(heads, w, h):
            # The whole frame in one cell of a 2 x 2 mosaic: half the size, the rest black.
            inputs.append(mosaic([(0, 0, w, h)], size, ZOOM_OUT_GRID))
            return FramePlan(index, True, inputs, zoomed_out=True)
        return FramePlan(index, True, inputs)

    def _whole_frame_due(self, timestamp: float) -> bool:
        """Whether regions look at the whole frame too (regions.whole_frame_s): on PLAN_LAG + 1
        detection frames in a row once every whole_frame_s (and, RegionPlanner.near_motion, on
        every frame on which someone near the camera moves).

        A run, not one frame: a head the whole frame finds gets a region of its own only from
        the frame planned PLAN_LAG frames later, and a new track missed once is dropped.
        """
        every = self.camera.regions.whole_frame_s
        if every <= 0:
            return False
        # A clock stepped back (a live camera's wall clock) starts a run too.
        if self._last_whole is None or not 0 <= timestamp - self._last_whole < every:
            self._last_whole = timestamp
            self._whole_left = PLAN_LAG + 1
        if self._whole_left <= 0:
            return False
        self._whole_left -= 1
        return True

    def _zoom_out_due(self, heads: list[Head], width: int, height: int) -> bool:
        """Whether a tracked head is large enough in a whole-frame input for the zoomed-out
        view to read it (camera.zoom_out_large_heads)."""
        tiles = self.camera.tiles
        if not self.camera.zoom_out_large_heads or tiles.columns * tiles.rows > 1:
            return False
        scale = self.detector.input_size / max(width, height)
        # By the detector's own box, as the zoomed-out view reads it (_by_size): the head
        # around a 50 px face is over 80 px, but that face is read from the whole frame only.
        return any(h.seen_side * scale >= ZOOM_OUT_FROM_PX for h in heads)

    def complete(
        self,
        image: np.ndarray,
        timestamp: float,
        plan: FramePlan,
        found: Sequence[Sequence[Detection]],
        inference_ms: list[float],
    ) -> FrameResult:
        """Track and vote on one planned frame, given the heads found in each of its windows.

        Frames must be completed in the order they were planned.
        """
        if plan.detect:
            h, w = image.shape[:2]
            nms_iou = self.detector.config.nms_iou
            if plan.zoomed_out:
                found = _by_size(found, plan.inputs)
            if plan.whole_first:
                assert self.regions is not None
                found = _whole_and_regions(found, plan.inputs, self.regions.whole_keep_px)
            cut = self.regions is not None
            heads = merge_windows(found, plan.windows, w, h, nms_iou, drop_cut=cut)
            update = self.tracker.update(heads, timestamp, (w, h))
        else:
            update = self.tracker.predict(timestamp)
        for head in update.heads:
            if head.detection is not None:
                self.decider.look(head.track_id, head.detection, w, h, timestamp)
                self._seen_side[head.track_id] = longer_side(head.detection.box)
        people = self._end(update.ended)
        if self.regions is not None:
            # Where each track began, to tell a walking head from a patch of background.
            live = {head.track_id for head in update.heads}
            for head in update.heads:
                self._began.setdefault(head.track_id, head.box)
            for track_id in [t for t in self._began if t not in live]:
                del self._began[track_id]
        # A snapshot of its own: the next frames are planned from it on another thread.
        snapshot = [self._head(head) for head in update.heads]
        with self._snapshot_lock:
            self._heads_after.append((plan.index, snapshot))
        self.completed += 1
        return FrameResult(update.heads, people, inference_ms)

    def _tiles(self, width: int, height: int) -> list[Window]:
        """The whole frame, or the tiles of camera.tiles (cached per frame size)."""
        if self._windows_for != (width, height):
            tiles = self.camera.tiles
            self._windows = tile_windows(width, height, tiles.columns, tiles.rows, tiles.overlap)
            self._windows_for = (width, height)
        return self._windows

    def _head(self, head: TrackedHead) -> Head:
        """A tracked head for region selection: has it moved its height since it began?"""
        x1, y1, x2, y2 = head.box
        b = self._began.get(head.track_id, head.box)
        moved = math.hypot((x1 + x2 - b[0] - b[2]) / 2, (y1 + y2 - b[1] - b[3]) / 2)
        seen = self._seen_side.get(head.track_id, 0.0)
        return Head(head.box, head.confirmed, moved >= y2 - y1, seen)

    def _heads_for(self, index: int) -> list[Head]:
        """The tracked heads after frame index - PLAN_LAG (none before it exists)."""
        with self._snapshot_lock:
            snapshots = list(self._heads_after)
        for done, boxes in snapshots:
            if done == index - PLAN_LAG:
                return boxes
        return []

    def _refresh_due(self, heads: list[Head], timestamp: float) -> bool:
        """Motion gating without motion: detect anyway when a tracked head is due a look.

        The refresh keeps someone standing still from living on Kalman predictions alone.
        """
        return (
            bool(heads)
            and self._last_detect is not None
            and timestamp - self._last_detect >= self.camera.motion.refresh_s
        )

    def finish(self) -> list[PersonEvent]:
        """End every open track as a decision (shutdown, end of file, lost camera)."""
        return self._end(self.tracker.finish())

    def _end(self, ended: list[EndedTrack]) -> list[PersonEvent]:
        people = []
        for track in ended:
            self._seen_side.pop(track.track_id, None)
            event = self.decider.end(
                track.track_id,
                track.confirmed,
                self.clock(track.first_seen),
                self.clock(track.last_seen),
            )
            if event is not None:
                self.record(event)
                people.append(event)
        self.people += len(people)
        return people
