"""Motion gating: the gate itself on synthetic frames, and the pipeline skipping the detector."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import camera_pipeline
from pydantic import ValidationError

from edge.config.camera import CameraConfig
from edge.config.detector import DetectorConfig, default_model_path
from edge.config.motion import MotionConfig
from edge.detect import Detector
from edge.detection import FACE_NOT_VISIBLE, Detection
from edge.motion import MotionGate, thumbnail
from edge.pipeline import CameraPipeline

needs_model = pytest.mark.skipif(
    not default_model_path().is_file(),
    reason=f"{default_model_path()} not built yet (make model)",
)


def street(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A textured still background, like an empty street (smooth, so noise does not alias)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 8)


def with_person(frame: np.ndarray, x: int, y: int = 150) -> np.ndarray:
    """The frame with a dark 60 x 180 px figure at (x, y): someone walking past."""
    out = frame.copy()
    cv2.rectangle(out, (x, y), (x + 60, y + 180), (20, 20, 20), -1)
    return out


def test_first_frame_counts_as_motion() -> None:
    """With nothing to compare against, the detector must look."""
    assert MotionGate(MotionConfig(enabled=True)).moved(street())


def test_still_frames_do_not_move() -> None:
    """The same picture again and again is not motion."""
    gate = MotionGate(MotionConfig(enabled=True))
    frame = street()
    gate.moved(frame)
    assert not any(gate.moved(frame) for _ in range(10))
    assert gate.changed_pct == 0.0


def test_sensor_noise_is_not_motion() -> None:
    """Small per-pixel noise (a few grey levels) stays under the threshold."""
    gate = MotionGate(MotionConfig(enabled=True))
    base = street().astype(np.int16)
    rng = np.random.default_rng(1)
    moved = []
    for _ in range(10):
        noisy = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        moved.append(gate.moved(noisy))
    assert moved[0] is True  # the first frame
    assert not any(moved[1:])


def test_someone_walking_in_is_motion() -> None:
    """A figure entering the still scene moves the frame, on its first frame in view."""
    gate = MotionGate(MotionConfig(enabled=True))
    frame = street()
    for _ in range(5):
        gate.moved(frame)
    assert gate.moved(with_person(frame, 300))
    assert gate.changed_pct > 1.0


def test_walking_keeps_moving_and_standing_still_settles() -> None:
    """Each step is motion; once the figure stands still the background absorbs it."""
    gate = MotionGate(MotionConfig(enabled=True))
    frame = street()
    gate.moved(frame)
    walking = [gate.moved(with_person(frame, 100 + 20 * i)) for i in range(10)]
    assert all(walking)
    standing = with_person(frame, 300)
    settled = [gate.moved(standing) for _ in range(40)]
    assert not any(settled[-10:])


def test_min_area_decides_how_much_must_change() -> None:
    """A change smaller than min_area_pct of the thumbnail is not motion."""
    frame = street()
    small = frame.copy()
    cv2.rectangle(small, (300, 200), (315, 215), (255, 255, 255), -1)  # 16 x 16 px of 640 x 480
    lenient = MotionGate(MotionConfig(enabled=True, min_area_pct=0.1))
    strict = MotionGate(MotionConfig(enabled=True, min_area_pct=5.0))
    for gate in (lenient, strict):
        gate.moved(frame)
    assert lenient.moved(small)
    assert not strict.moved(small)


def test_moving_areas_box_the_walker() -> None:
    """Regions ask where things moved: around the figure, nowhere else."""
    gate = MotionGate(MotionConfig(enabled=True, min_area_pct=0.2), width=160)
    frame = street()
    for _ in range(5):
        gate.moving_areas(frame)
    moved, areas = gate.moving_areas(with_person(frame, 300))
    assert moved
    assert len(areas) == 1
    x1, y1, x2, y2 = areas[0]
    # The figure (300..360, 150..330), grown by a thumbnail pixel (4 px) at most a little more.
    assert 288 <= x1 <= 300 and 360 <= x2 <= 372 and 138 <= y1 <= 150 and 330 <= y2 <= 342
    first, everywhere = MotionGate(MotionConfig(enabled=True)).moving_areas(frame)
    assert first and everywhere == [(0.0, 0.0, 640.0, 480.0)]  # nothing to compare with yet


def test_grey_and_bgra_frames() -> None:
    """Cameras that deliver grey or BGRA frames are gated like BGR ones."""
    bgr = street()
    for convert in (cv2.COLOR_BGR2GRAY, cv2.COLOR_BGR2BGRA):
        gate = MotionGate(MotionConfig(enabled=True))
        gate.moved(cv2.cvtColor(bgr, convert))
        assert not gate.moved(cv2.cvtColor(bgr, convert))
        assert gate.moved(cv2.cvtColor(with_person(bgr, 200), convert))
    assert thumbnail(bgr[:, :, :1]).shape == (48, 64)


def test_resolution_change_starts_over() -> None:
    """A new frame size leaves no background: the next frame counts as motion.

    (After a capture gap the daemon builds a new pipeline, so a new gate, for the new segment.)
    """
    gate = MotionGate(MotionConfig(enabled=True))
    frame = street()
    gate.moved(frame)
    assert not gate.moved(frame)
    assert gate.moved(street(1280, 720))
    assert not gate.moved(street(1280, 720))
    assert gate.moved(frame)


def test_config_defaults_off_and_rejects_unknown_keys() -> None:
    """Motion gating is opt-in; its fields are checked like every config field."""
    camera = CameraConfig(name="door", source="clip.mp4")
    assert camera.motion.enabled is False
    with pytest.raises(ValidationError):
        CameraConfig(name="door", source="clip.mp4", motion={"enabled": True, "treshold": 5})
    with pytest.raises(ValidationError):
        MotionConfig(threshold=0)


@pytest.fixture(scope="module")
def detector() -> Detector:
    """The shipped model on the CPU."""
    return Detector(DetectorConfig(accelerator="cpu", threads=1))


def pipeline(detector: Detector, gating: bool, refresh_s: float = 0.5) -> CameraPipeline:
    """A camera pipeline with motion gating on or off; decided people are dropped."""
    return camera_pipeline(detector, motion={"enabled": gating, "refresh_s": refresh_s})


@needs_model
def test_pipeline_skips_the_detector_on_a_still_scene(detector: Detector) -> None:
    """Still frames are not detected (the tracker predicts); motion brings the detector back."""
    pipe = pipeline(detector, gating=True)
    frame = street()
    detected = [pipe.process(frame, i / 10).detected for i in range(10)]
    assert detected == [True] + [False] * 9
    assert pipe.still_frames == 9
    assert pipe.process(with_person(frame, 200), 1.0).detected


@needs_model
def test_pipeline_without_gating_detects_every_frame(detector: Detector) -> None:
    """Off (the default), every frame goes to the detector."""
    pipe = pipeline(detector, gating=False)
    frame = street()
    assert all(pipe.process(frame, i / 10).detected for i in range(5))
    assert pipe.still_frames == 0


@needs_model
def test_tracked_head_is_refreshed_without_motion(detector: Detector) -> None:
    """While a head is tracked, the detector still looks every refresh_s on a still scene."""
    pipe = pipeline(detector, gating=True, refresh_s=0.3)
    frame = street()
    assert pipe.process(frame, 0.0).detected
    head = Detection(box=(100.0, 100.0, 140.0, 150.0), label=FACE_NOT_VISIBLE, score=0.9,
                     scores=(0.05, 0.05, 0.9))
    pipe.tracker.update([head], 0.05)  # someone standing still, already tracked
    assert pipe.tracker.live_tracks == 1
    detected = [pipe.process(frame, round(0.1 * i, 1)).detected for i in range(1, 4)]
    # Last detection at t=0.0: due again at 0.3 (and not before).
    assert detected == [False, False, True]
