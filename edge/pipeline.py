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
from edge.events import PersonEvent
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
    detected: bool = False


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

    def process(self, image: np.ndarray, timestamp: float) -> FrameResult:
        """Run one frame through every stage; decided people are recorded before returning."""
        detect_now = self.frames % self.camera.detect_every_n_frames == 0
        self.frames += 1
        if detect_now:
            update = self.tracker.update(self.detector.detect(image), timestamp)
        else:
            update = self.tracker.predict(timestamp)
        h, w = image.shape[:2]
        for head in update.heads:
            if head.detection is not None:
                self.decider.look(head.track_id, head.detection, w, h)
        people = self._end(update.ended)
        return FrameResult(update.heads, people, detect_now)

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
