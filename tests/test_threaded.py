"""The threaded pipeline: a file keeps every frame in order and counts what the serial pipeline
counts; a live source that outpaces it is read newest-frame-first; a failing stage surfaces."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import camera_pipeline

from edge.capture import Capture, Frame, LatestFrameSlot
from edge.config.camera import CameraConfig
from edge.config.detector import DetectorConfig
from edge.detect import Detector
from edge.threaded import StageError, ThreadedPipeline
from edge.tools.bench import make_clip

PETS = Path(__file__).resolve().parents[2] / "shared/tracking/PETS09-S2L1-vtest.avi"
FRAMES = 24
# Regions with a sweep: the plan of every frame depends on the tracks two frames before.
REGIONS = {"enabled": True, "grid": 2, "zoom": 2.0, "scan_cells_per_frame": 3}


@pytest.fixture(scope="module")
def detector() -> Detector:
    """The real model on one interpreter thread, as on an accelerator-like split."""
    return Detector(DetectorConfig(accelerator="cpu", threads=1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PETS 2009 (real street heads) when ../shared has it, else a generated street clip."""
    if PETS.exists():
        return PETS
    return make_clip(tmp_path_factory.mktemp("clip") / "street.avi", FRAMES)


def heads_of(result: object) -> list[tuple[int, tuple[float, ...]]]:
    """A frame result's tracks as (id, rounded box), comparable between runs."""
    return [(h.track_id, tuple(round(v, 3) for v in h.box)) for h in result.heads]  # type: ignore[attr-defined]


def test_a_file_keeps_its_order_and_counts_as_the_serial_pipeline(
    detector: Detector, clip: Path
) -> None:
    serial = camera_pipeline(detector, regions=REGIONS)
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    expected = []
    for i in range(FRAMES):
        ok, image = cap.read()
        assert ok
        result = serial.process(image, i / fps)
        expected.append((i, len(result.inference_ms), heads_of(result)))
    cap.release()

    threaded = camera_pipeline(detector, regions=REGIONS)
    camera = CameraConfig(name="door", source=str(clip), file_pacing="asap")
    got = []
    with Capture(camera) as capture:
        for frame, result in ThreadedPipeline(threaded, capture).run():
            got.append((frame.index, len(result.inference_ms), heads_of(result)))
            if len(got) == FRAMES:
                break
    assert [g[0] for g in got] == list(range(FRAMES))
    assert got == expected
    assert sum(g[1] for g in got) > FRAMES  # regions took more than one input on some frames


class LiveCamera:
    """A camera delivering frames faster than the pipeline takes them, into Capture's slot."""

    def __init__(self, count: int, interval_s: float) -> None:
        """Deliver count frames, one every interval_s, on a thread of its own."""
        self.slot: LatestFrameSlot[Frame] = LatestFrameSlot()
        self.count = count
        self.image = np.full((360, 640, 3), 100, np.uint8)
        self.thread = threading.Thread(target=self._deliver, args=(interval_s,), daemon=True)
        self.thread.start()

    def _deliver(self, interval_s: float) -> None:
        for i in range(self.count):
            self.slot.put(Frame(self.image, i, i * interval_s, "door"))
            time.sleep(interval_s)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet read, as Capture.read gives it for a live source."""
        return self.slot.get(timeout)

    @property
    def ended(self) -> bool:
        """A live source never ends."""
        return False


def test_a_live_source_that_outpaces_the_pipeline_is_read_newest_first(
    detector: Detector,
) -> None:
    camera = LiveCamera(count=150, interval_s=0.0005)
    pipeline = camera_pipeline(detector)
    seen = []
    for frame, _ in ThreadedPipeline(pipeline, camera).run():
        seen.append(frame.index)
        if frame.index == camera.count - 1:
            break
    assert seen == sorted(set(seen))  # in order, none twice
    assert seen[-1] == camera.count - 1  # the newest frame always gets in
    assert len(seen) < camera.count  # frames the pipeline had no time for were dropped ...
    assert camera.slot.dropped == camera.count - len(seen)  # ... at the source, and only there
    assert pipeline.completed == len(seen)


def test_a_failing_stage_stops_the_pipeline_with_its_error(detector: Detector) -> None:
    class TwoChannelFile:
        """A file source whose second frame is not a picture the detector can take."""

        def __init__(self) -> None:
            self.frames = [
                Frame(np.zeros((120, 160, 3), np.uint8), 0, 0.0, "door"),
                Frame(np.zeros((120, 160, 2), np.uint8), 1, 0.1, "door"),
            ]

        def read(self, timeout: float | None = None) -> Frame | None:
            return self.frames.pop(0) if self.frames else None

        @property
        def ended(self) -> bool:
            return not self.frames

    seen = []
    with pytest.raises(StageError, match="2 channels"):
        for frame, _ in ThreadedPipeline(camera_pipeline(detector), TwoChannelFile()).run():
            seen.append(frame.index)
    assert seen == [0]
