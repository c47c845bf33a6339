"""`maskwatch replay VIDEO`: the full pipeline over a video file, as fast as the machine allows.

Every frame of the file goes through, in order, with decoding, preparing and inferring on
threads of their own (edge.threaded), as the stages overlap on the device.

The clock is --start-time plus each frame's position in the file, so a replay produces the
person events and hourly totals that a live camera would have produced at that time. The
replayed hour is closed at the end (an hourly total for it is queued) so a replay ends with its
totals on the broker.

Events go through the same durable outbox as the daemon's, kept in a state directory that
outlives the process (--state-dir; by default the user's, edge.config.state.
user_state_directory). At the end the replay waits up to a drain time for the broker to
acknowledge every row, also while the broker is away (it may come back); whatever is still
unacknowledged then stays in the state file, and the next replay or `maskwatch run` on the same
directory sends it first, with its original event_id.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2

from edge.annotate import draw, open_writer
from edge.capture import Capture
from edge.config.root import Config
from edge.detect import Detector
from edge.events import DECISIONS, PersonEvent
from edge.outbox import STATE_FILE_NAME, OutboxStats
from edge.pipeline import CameraPipeline, footage_clock
from edge.runtime import HOUR_CLOSE_DELAY_S, REPLAY_DRAIN_TIMEOUT_S, open_reporting
from edge.threaded import ThreadedPipeline
from edge.totals import hour_of

log = logging.getLogger(__name__)


class SnapshotFrameMissing(ValueError):
    """The video ended before the frame asked for with --snapshot-frame."""


@dataclass
class ReplayResult:
    """What a replay counted, and what still waits for the broker in its state file."""

    people: list[PersonEvent]
    frames: int
    seconds: float
    waiting: OutboxStats
    state_file: Path

    @property
    def delivered(self) -> bool:
        """Whether the broker acknowledged every event and total (this replay's and any left
        in the state file before it)."""
        return self.waiting.person_rows == 0 and self.waiting.hourly_rows == 0


def replay(
    video: Path,
    config: Config,
    start_time: datetime | None = None,
    annotate: Path | None = None,
    drain_timeout_s: float = REPLAY_DRAIN_TIMEOUT_S,
    progress: bool = False,
    snapshot: Path | None = None,
    snapshot_frame: int = 0,
    *,
    state_dir: Path,
) -> ReplayResult:
    """Run the pipeline of the config's first camera over every frame of video.

    state_dir: where the outbox lives (created when missing; StateError when it cannot be).
    drain_timeout_s: how long to wait at the end for the broker to acknowledge everything.
    annotate: write the annotated video there. snapshot: write frame number snapshot_frame
    (counted from 0), annotated, as an image there (after the replay; SnapshotFrameMissing
    when the video is shorter, OSError when the image cannot be written).
    """
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise FileNotFoundError(f"{video}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not 0 < fps < 1000:
        fps = 25.0  # GIFs and some containers report none
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    origin = start_time or datetime.now(timezone.utc).astimezone()
    clock = footage_clock(origin)
    position = [0.0]
    # The file itself, read as fast as the pipeline goes, every frame in order; frames of a file
    # without a frame rate are placed at 25 fps, as before.
    camera = config.cameras[0].model_copy(
        update={"source": str(video), "file_pacing": "asap", "loop": False, "fps": fps}
    )
    detector = Detector(config.detector)
    reporting = open_reporting(config, state_dir, clock=lambda: clock(position[0]))
    try:
        pipeline = CameraPipeline(
            camera, detector, config.tracker, config.decide, reporting.ledger.record, clock
        )
        writer = None
        people: list[PersonEvent] = []
        snapshot_image = None
        started = time.perf_counter()
        index = 0
        # Decoding, preparing and inferring run on threads of their own (edge.threaded); this
        # loop tracks, votes, records and annotates while the next frames are inferred.
        with Capture(camera, pacing="asap") as capture:
            for captured, result in ThreadedPipeline(pipeline, capture).run():
                frame = captured.image
                position[0] = captured.timestamp
                people += result.people
                snap = snapshot is not None and index == snapshot_frame
                if annotate is not None or snap:
                    draw(frame, result.heads, pipeline.decider, pipeline.people)
                if annotate is not None:
                    if writer is None:
                        writer = open_writer(annotate, fps, frame.shape[1], frame.shape[0])
                    writer.write(frame)
                if snap:
                    snapshot_image = frame
                index += 1
                if progress and index % 25 == 0:
                    _progress(index, n_frames, time.perf_counter() - started)
                # Once per footage second: a tick queries SQLite.
                if index % max(1, round(fps)) == 0:
                    reporting.ledger.tick()
        if writer is not None:
            writer.release()
        people += pipeline.finish()
        seconds = time.perf_counter() - started
        if progress:
            _progress(index, n_frames, seconds, end=True)
        # Close the replayed hour(s): pretend the clock ran on past the last hour's end.
        last_hour = hour_of(clock(position[0]), config.totals.zoneinfo)
        reporting.ledger.tick(last_hour.end + timedelta(seconds=HOUR_CLOSE_DELAY_S + 1))
    except BaseException:
        # What was counted is in the state file already; the next start sends it.
        reporting.close(0.0)
        raise
    waiting = reporting.drain(drain_timeout_s)
    if snapshot is not None:
        if snapshot_image is None:
            raise SnapshotFrameMissing(
                f"--snapshot-frame {snapshot_frame}: {video} has only {index} frames "
                f"(0 to {index - 1})"
            )
        # Lossless either way; the strongest compression keeps README images small.
        if not cv2.imwrite(str(snapshot), snapshot_image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"{snapshot}: cannot write the snapshot image")
    return ReplayResult(people, index, seconds, waiting, state_dir / STATE_FILE_NAME)


def _progress(done: int, total: int, elapsed: float, end: bool = False) -> None:
    """One progress line on stderr: frames, fps and time left."""
    fps = done / elapsed if elapsed > 0 else 0.0
    if total > 0:
        eta = (total - done) / fps if fps > 0 else 0.0
        bar = "#" * int(30 * done / total)
        line = f"\r[{bar:<30}] {done}/{total} frames {fps:5.1f} fps ETA {eta:4.0f}s"
    else:
        line = f"\r{done} frames {fps:5.1f} fps"
    sys.stderr.write(line + ("\n" if end else ""))
    sys.stderr.flush()


def summary_table(people: list[PersonEvent]) -> str:
    """The closing table: people and each decision."""
    counts = {d: sum(1 for p in people if p.decision == d) for d in DECISIONS}
    rows = [("people", len(people)), ("mask", counts["mask"]), ("no mask", counts["no_mask"])]
    rows.append(("undecided", counts["undecided"]))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value:>5}" for name, value in rows)
