"""Replays of real footage through the real model, tracker, vote and a real mosquitto.

These need ../shared (the footage is third-party and never copied into the project) and the
committed model; they skip with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:  # the fixtures' types; pytest provides the objects
    from conftest import Subscriber

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODEL = ROOT / "models" / "head_detector_int8.tflite"
VIDEOS = SHARED / "videos"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VIDEOS.is_dir(), reason="../shared/videos is absent (third-party footage)"
    ),
    pytest.mark.skipif(not MODEL.exists(), reason="the trained model is missing (make model)"),
]


def replay(
    video: Path, port: int, tmp_path: Path, start: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `maskwatch replay` as a user would, against the test's broker.

    config: the file to replay with; by default one for device `test`, camera `door`.
    """
    if config is None:
        config = tmp_path / "replay.yaml"
        config.write_text(
            f"device: test\ncameras:\n  - name: door\n    source: {video}\n"
            f"totals:\n  timezone: Europe/Berlin\nstate:\n  directory: {tmp_path / 'state'}\n"
        )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "replay",
            str(video),
            "--config",
            str(config),
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(port),
            "--start-time",
            start,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )


def published(sub: Subscriber, topic: str) -> list[dict[str, Any]]:
    """The JSON payloads received on one topic."""
    return [json.loads(m.payload) for m in sub.on(topic)]


def wait_for_hourly(sub: Subscriber, done: subprocess.CompletedProcess[str]) -> None:
    """The replay exited 0 and its closed hour reached the subscriber."""
    assert done.returncode == 0, done.stderr[-2000:]
    sub.wait_for(
        lambda ms: any(m.topic.endswith("totals/hourly") for m in ms), 30, "the hourly total"
    )


def test_one_by_one_counts_six_people_none_with_mask(mosquitto, subscribe, tmp_path: Path) -> None:
    """Six people walk in one at a time, seen from behind; nobody wears a mask."""
    sub = subscribe("127.0.0.1", mosquitto.port, "maskwatch/test/#")
    done = replay(
        VIDEOS / "one-by-one-person-detection.mp4",
        mosquitto.port,
        tmp_path,
        "2026-11-21T10:05:00+01:00",
    )
    wait_for_hourly(sub, done)
    people = published(sub, "maskwatch/test/person")
    assert len(people) == 6, people
    assert len({p["event_id"] for p in people}) == 6
    assert [p["decision"] for p in people if p["decision"] == "mask"] == []
    assert all(p["camera"] == "door" for p in people)
    assert all(
        p["first_seen"].startswith("2026-11-21T") and p["first_seen"].endswith("+01:00")
        for p in people
    )
    (hourly,) = published(sub, "maskwatch/test/totals/hourly")
    assert hourly["hour_start"] == "2026-11-21T10:00:00+01:00"
    assert hourly["people"] == 6
    assert hourly["mask"] == 0
    assert hourly["no_mask"] + hourly["undecided"] == 6
    assert hourly["cameras"]["door"]["people"] == 6
    assert "people  " in done.stdout and "6" in done.stdout


def test_face_demographics_two_people_without_mask(mosquitto, subscribe, tmp_path: Path) -> None:
    """Two people walk toward the camera, faces frontal, no masks: two no_mask decisions."""
    sub = subscribe("127.0.0.1", mosquitto.port, "maskwatch/test/#")
    done = replay(
        VIDEOS / "face-demographics-walking.gif",
        mosquitto.port,
        tmp_path,
        "2026-11-21T10:05:00+01:00",
    )
    wait_for_hourly(sub, done)
    decisions = sorted(p["decision"] for p in published(sub, "maskwatch/test/person"))
    assert decisions == ["no_mask", "no_mask"]


# -- replay --snapshot: one annotated frame as a PNG ------------------------------------------

CLIP_FRAMES = 80  # the first person is tracked from about frame 70 on
SNAPSHOT_FRAME = 74


def write_clip(path: Path, frames: int) -> None:
    """The first frames of the one-by-one clip as a short mp4 (the test's input, in tmp_path)."""
    cap = cv2.VideoCapture(str(VIDEOS / "one-by-one-person-detection.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok, "the one-by-one clip is shorter than expected"
        if writer is None:
            size = (frame.shape[1], frame.shape[0])
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
            assert writer.isOpened(), "OpenCV cannot write mp4v here"
        writer.write(frame)
    cap.release()
    assert writer is not None
    writer.release()


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as the replay decodes it."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def files_under(folder: Path) -> set[str]:
    """Every file and folder below folder, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def snapshot_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """inputs/ (the clip and its config), work/ (the cwd) and tmp/ ($TMPDIR), the last two
    empty, so a test sees every file a replay leaves behind."""
    inputs, work, tmp = tmp_path / "inputs", tmp_path / "work", tmp_path / "tmp"
    for folder in (inputs, work, tmp):
        folder.mkdir()
    write_clip(inputs / "clip.mp4", CLIP_FRAMES)
    (inputs / "replay.yaml").write_text(
        "device: test\ncameras:\n  - name: door\n    source: clip.mp4\n"
        "totals:\n  timezone: Europe/Berlin\nstate:\n  directory: state\n"
    )
    return inputs, work, tmp


def run_snapshot(
    dirs: tuple[Path, Path, Path], port: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """`maskwatch replay inputs/clip.mp4 ARGS` from work/, with $TMPDIR set to tmp/."""
    inputs, work, tmp = dirs
    return subprocess.run(
        [sys.executable, "-m", "edge", "replay", str(inputs / "clip.mp4"),
         "--config", str(inputs / "replay.yaml"), "--mqtt-host", "127.0.0.1",
         "--mqtt-port", str(port), *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=work,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def test_snapshot_writes_the_requested_frame_annotated_and_nothing_else(
    mosquitto, snapshot_dirs: tuple[Path, Path, Path]
) -> None:
    inputs, work, tmp = snapshot_dirs
    inputs_before = files_under(inputs)
    done = run_snapshot(
        snapshot_dirs, mosquitto.port, "--snapshot", "frame.png",
        "--snapshot-frame", str(SNAPSHOT_FRAME),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert files_under(work) == {"frame.png"}
    assert files_under(tmp) == set(), "the replay left files in $TMPDIR"
    assert files_under(inputs) == inputs_before, "the replay wrote next to its input"

    png = work / "frame.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    snapshot = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert snapshot is not None
    frames = decoded_frames(inputs / "clip.mp4")
    assert len(frames) == CLIP_FRAMES
    height, width = frames[0].shape[:2]
    assert snapshot.shape == (height, width, 3)

    # Inside the counting zone (default margins: 5 % a side) the annotation only adds a box and
    # a label, so the lossless PNG equals the requested frame pixel for pixel almost everywhere,
    # and its neighbours, where the person has moved, less so.
    x1, y1, x2, y2 = (round(width * 0.06), round(height * 0.06),
                      round(width * 0.94), round(height * 0.94))

    def same(frame: np.ndarray) -> float:
        """Share of zone pixels identical in the snapshot and frame."""
        equal = np.all(snapshot[y1:y2, x1:x2] == frame[y1:y2, x1:x2], axis=2)
        return float(equal.mean())

    shares = {i: same(frames[i]) for i in (SNAPSHOT_FRAME - 1, SNAPSHOT_FRAME, SNAPSHOT_FRAME + 1)}
    assert shares[SNAPSHOT_FRAME] > 0.9, shares
    assert shares[SNAPSHOT_FRAME] > max(shares[SNAPSHOT_FRAME - 1], shares[SNAPSHOT_FRAME + 1])
    # The margins are shaded: darker than in the frame itself.
    left = np.s_[:, : round(width * 0.04)]
    assert snapshot[left].mean() < 0.8 * frames[SNAPSHOT_FRAME][left].mean()


def test_snapshot_frame_beyond_the_end_or_not_png_is_refused(
    mosquitto, snapshot_dirs: tuple[Path, Path, Path]
) -> None:
    inputs, work, tmp = snapshot_dirs
    done = run_snapshot(snapshot_dirs, mosquitto.port, "--snapshot", "frame.jpg")
    assert done.returncode == 2
    assert "--snapshot: frame.jpg: must end in .png" in done.stderr
    done = run_snapshot(
        snapshot_dirs, mosquitto.port, "--snapshot", "frame.png", "--snapshot-frame", "500"
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"--snapshot-frame 500: {inputs / 'clip.mp4'} has only {CLIP_FRAMES} frames" in (
        done.stderr
    )
    assert files_under(work) == set() and files_under(tmp) == set()


# -- the demo: PETS 2009 street footage through configs/street-camera.yaml -----------------

PETS = SHARED / "tracking" / "PETS09-S2L1-vtest.avi"  # the same clip opencv-doc's vtest.avi is


@pytest.mark.skipif(not PETS.exists(), reason="../shared/tracking is absent (third-party footage)")
def test_street_config_counts_people_in_pets_footage(mosquitto, subscribe, tmp_path: Path) -> None:
    """What `make demo` shows: with the street config the small street heads become people.

    The first 300 frames (about 40 s of footage; 10 of the clip's 19 people appear in them):
    at least a few counted, and no more than 1.2 times as many as there are.
    """
    cut = tmp_path / "pets-300.avi"
    cap = cv2.VideoCapture(str(PETS))
    fps = cap.get(cv2.CAP_PROP_FPS) or 7.0
    writer = None
    for _ in range(300):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(cut), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
        writer.write(frame)
    cap.release()
    assert writer is not None
    writer.release()
    sub = subscribe("127.0.0.1", mosquitto.port, "maskwatch/street/#")
    done = replay(
        cut,
        mosquitto.port,
        tmp_path,
        "2026-11-21T10:05:00+01:00",
        config=ROOT / "configs" / "street-camera.yaml",
    )
    wait_for_hourly(sub, done)
    people = published(sub, "maskwatch/street/person")
    [hourly] = published(sub, "maskwatch/street/totals/hourly")
    assert 3 <= len(people) <= 12, [p["track_id"] for p in people]
    assert hourly["people"] == len(people)
