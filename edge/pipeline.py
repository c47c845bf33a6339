"""One camera's path through the stages: frame -> detect -> track -> decide -> ledger.

Data flows one way. The pipeline owns no thread: the daemon or the replay calls `process` for
every frame of the camera and `finish` when the camera stops or loses its picture for too long.
"""

from __future__ import annotations

from collections.abc import Callable
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
from edge.motion import MotionGate
from edge.tiling import Window, detect_tiled, tile_windows
from edge.track import EndedTrack, TrackedHead, Tracker

FrameClock = Callable[[float], datetime]


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
    # Invoke time (ms) of each inference the frame took: one per tile, none when skipped.
    inference_ms: list[float] = field(default_factory=list)

    @property
    def detected(self) -> bool:
        """Whether the detector ran on this frame (not skipped by detect_every_n or motion)."""
        return bool(self.inference_ms)


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
        self.tracker = Tracker(tracker)
        self.decider = Decider(decide, camera.name, camera.zone)
        self.record = record
        self.clock = clock
        self.frames = 0
        self.people = 0
        # Motion gating (camera.motion): frames the detector skipped because nothing moved.
        self.motion = MotionGate(camera.motion) if camera.motion.enabled else None
        self.still_frames = 0
        self._last_detect: float | None = None
        self._windows: list[Window] = []
        self._windows_for = (0, 0)

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Run one frame through every stage; decided people are recorded before returning."""
        detect_now = self.frames % self.camera.detect_every_n_frames == 0
        self.frames += 1
        if detect_now and self.motion is not None and not self._motion_or_refresh(image, timestamp):
            detect_now = False
            self.still_frames += 1
        inference_ms: list[float] = []
        h, w = image.shape[:2]
        if detect_now:
            self._last_detect = timestamp
            update = self.tracker.update(self.detect(image, inference_ms), timestamp, (w, h))
        else:
            update = self.tracker.predict(timestamp)
        for head in update.heads:
            if head.detection is not None:
                self.decider.look(head.track_id, head.detection, w, h)
        people = self._end(update.ended)
        return FrameResult(update.heads, people, inference_ms)

    def detect(self, image: np.ndarray, inference_ms: list[float] | None = None) -> list[Detection]:
        """Heads in the frame: the whole frame at once, or tile by tile when configured.

        Each inference's invoke time is appended to inference_ms when given (the daemon's
        `inference_ms` stat is a mean per inference, so every tile counts).
        """

        def detect_one(view: np.ndarray) -> list[Detection]:
            found = self.detector.detect(view)
            if inference_ms is not None:
                inference_ms.append(self.detector.last_invoke_ms)
            return found

        tiles = self.camera.tiles
        if tiles.columns == 1 and tiles.rows == 1:
            return detect_one(image)
        h, w = image.shape[:2]
        if self._windows_for != (w, h):
            self._windows = tile_windows(w, h, tiles.columns, tiles.rows, tiles.overlap)
            self._windows_for = (w, h)
        return detect_tiled(detect_one, image, self._windows, self.detector.config.nms_iou)

    def _motion_or_refresh(self, image: np.ndarray, timestamp: float) -> bool:
        """Motion gating: detect when something moved, or when a tracked head is due a look.

        The refresh keeps someone standing still from living on Kalman predictions alone.
        """
        assert self.motion is not None
        if self.motion.moved(image):
            return True
        return (
            self.tracker.live_tracks > 0
            and self._last_detect is not None
            and timestamp - self._last_detect >= self.camera.motion.refresh_s
        )

    def finish(self) -> list[PersonEvent]:
        """End every open track as a decision (shutdown, end of file, lost camera)."""
        return self._end(self.tracker.finish())

    def _end(self, ended: list[EndedTrack]) -> list[PersonEvent]:
        people = []
        for track in ended:
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
