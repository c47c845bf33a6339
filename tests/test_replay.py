"""Replays of real footage through the real model, tracker, vote and a real mosquitto.

These need ../shared (the footage is third-party and never copied into the project) and the
committed model; they skip with the reason when either is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def replay(video: Path, port: int, tmp_path: Path, start: str) -> subprocess.CompletedProcess[str]:
    """Run `maskwatch replay` as a user would, against the test's broker."""
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


def published(sub, topic: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The JSON payloads received on one topic."""
    return [json.loads(m.payload) for m in sub.on(topic)]


def test_one_by_one_counts_six_people_none_with_mask(mosquitto, subscribe, tmp_path: Path) -> None:
    """Six people walk in one at a time, seen from behind; nobody wears a mask."""
    sub = subscribe("127.0.0.1", mosquitto.port, "maskwatch/test/#")
    done = replay(
        VIDEOS / "one-by-one-person-detection.mp4",
        mosquitto.port,
        tmp_path,
        "2026-11-21T10:05:00+01:00",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sub.wait_for(
        lambda ms: any(m.topic.endswith("totals/hourly") for m in ms), 30, "the hourly total"
    )
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


@pytest.mark.xfail(
    strict=True,
    reason="the current model scores these 20 px unmasked faces at 0.2-0.35, under the 0.35 "
    "operating threshold (no-mask AP50 0.39, see models/MODEL_CARD.md); issue 3 stays open",
)
def test_face_demographics_two_people_without_mask(mosquitto, subscribe, tmp_path: Path) -> None:
    """Two people walk toward the camera, faces frontal, no masks: two no_mask decisions."""
    sub = subscribe("127.0.0.1", mosquitto.port, "maskwatch/test/#")
    done = replay(
        VIDEOS / "face-demographics-walking.gif",
        mosquitto.port,
        tmp_path,
        "2026-11-21T10:05:00+01:00",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sub.wait_for(
        lambda ms: any(m.topic.endswith("totals/hourly") for m in ms), 30, "the hourly total"
    )
    decisions = sorted(p["decision"] for p in published(sub, "maskwatch/test/person"))
    assert decisions == ["no_mask", "no_mask"]
