"""Replays of real footage through the real model, tracker, vote and a real mosquitto.

These need ../shared (the footage is third-party and never copied into the project) and the
committed model; they skip with the reason when either is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest
from conftest import outbox_rows, persistent_broker, write_cut

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
    at least a few counted, and no more than 1.6 times as many as there are (the street
    config counts 15: people lost behind others and found again are counted twice).
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
    assert 3 <= len(people) <= 16, [p["track_id"] for p in people]
    assert hourly["people"] == len(people)


# -- nothing lost when the broker is away at the end -----------------------------------------

FOOTAGE = VIDEOS / "one-by-one-person-detection.mp4"
# Seconds of the footage in which its first three people are seen (as in tests/test_faults.py).
THREE_PEOPLE_S = ((6.5, 7.3), (24.1, 24.9), (51.1, 52.3))
START = "2026-11-21T10:05:00+01:00"


@pytest.fixture(scope="module")
def three_people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three people, one after the other, each with 1 s before and 1.5 s after (about 10 s)."""
    return write_cut(FOOTAGE, tmp_path_factory.mktemp("cut") / "three.mp4", THREE_PEOPLE_S,
                     1.0, 1.5)


def lossless_config(directory: Path, clip: Path, port: int, *, loop: bool = False) -> Path:
    """Device `test`, camera `door` on clip (tracks end 1 s after the last look, so each
    person of the cut is decided before the next), a broker retried every second, state in
    directory/state (used by `maskwatch run`; a replay takes --state-dir)."""
    config = directory / "lossless.yaml"
    config.write_text(
        f"device: test\ncameras:\n  - name: door\n    source: {clip}\n"
        f"    loop: {str(loop).lower()}\n"
        "tracker:\n  max_age_s: 1.0\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  reconnect_initial_s: 1\n"
        "  reconnect_max_s: 1\n"
        f"totals:\n  timezone: Europe/Berlin\nstate:\n  directory: {directory / 'state'}\n"
    )
    return config


def maskwatch(*args: str | Path) -> list[str]:
    """The command line of `maskwatch ARGS` as this checkout runs it."""
    return [sys.executable, "-m", "edge", *map(str, args)]


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """proc, killed at the end of the block if it still runs (a failed test leaves none)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def people_counted(stdout: str) -> int:
    """The `people` row of a replay's summary table."""
    (row,) = [ln for ln in stdout.splitlines() if ln.split()[:1] == ["people"]]
    return int(row.split()[1])


def waiting_in(db: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The person events and the hourly totals waiting in a state file, oldest first."""
    rows = outbox_rows(db)
    return ([json.loads(p) for kind, p in rows if kind == "person"],
            [json.loads(p) for kind, p in rows if kind == "hourly"])


@pytest.mark.parametrize("next_start", ["replay", "run"])
def test_replay_with_the_broker_down_at_its_end_leaves_its_events_for_the_next_start(
    next_start: str, three_people: Path, mosquitto_factory, subscribe, tmp_path: Path,
    private_user_state: Path,
) -> None:
    """The broker is down from before a replay until after it: the replay waits its drain
    time, says what still waits and exits 75, the events kept in the user's state directory.
    Once the broker is back, the next replay (or `maskwatch run`) on that directory sends
    them first, each event_id once, with the payload the first replay made."""
    broker, saved = persistent_broker(mosquitto_factory, tmp_path / "broker-db")
    sub = subscribe(broker.host, broker.port, "maskwatch/test/#", session_file=saved)
    broker.stop()
    config = lossless_config(tmp_path, three_people, broker.port, loop=next_start == "run")

    first = subprocess.run(
        maskwatch("replay", three_people, "--config", config, "--start-time", START,
                  "--drain-timeout", "1"),
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert first.returncode == 75, first.stderr[-2000:]
    default_dir = private_user_state / "maskwatch" / "replay"  # no --state-dir: the user's
    db = default_dir / "maskwatch.sqlite3"
    left, left_hourly = waiting_in(db)
    assert len(left) == people_counted(first.stdout) >= 2, first.stdout
    assert [h["people"] for h in left_hourly] == [len(left)]
    assert (f"{len(left)} person event(s) and 1 hourly total(s) still wait for the MQTT broker "
            f"at 127.0.0.1:{broker.port} after 1 s; kept in {db}") in first.stderr
    assert not (tmp_path / "state").exists(), "a replay uses --state-dir, not state.directory"

    broker.start()
    sub.wait_connected(2)
    if next_start == "replay":
        second = subprocess.run(
            maskwatch("replay", three_people, "--config", config, "--start-time", START,
                      "--state-dir", default_dir, "--drain-timeout", "60"),
            capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
        )
        assert second.returncode == 0, second.stderr[-2000:]
        assert waiting_in(db) == ([], [])
    else:
        run_config = config.read_text().replace(f"directory: {tmp_path / 'state'}",
                                                f"directory: {default_dir}")
        config.write_text(run_config)
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        with reaped(subprocess.Popen(maskwatch("run", "--config", config), cwd=tmp_path, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)) as daemon:
            sub.wait_for(
                lambda ms: {e["event_id"] for e in left} <= {
                    json.loads(m.payload)["event_id"] for m in ms if m.topic.endswith("/person")
                },
                90, "the events the replay left",
            )
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=90)
        assert daemon.returncode == 0, stderr[-2000:]
    sent = published(sub, "maskwatch/test/person")
    assert sent[: len(left)] == left, "the left events come first, as the replay made them"
    ids = Counter(e["event_id"] for e in sent)
    assert all(ids[e["event_id"]] == 1 for e in left), ids
    assert published(sub, "maskwatch/test/totals/hourly")[0] == left_hourly[0]


def test_replay_waits_for_a_broker_that_comes_back_while_it_drains(
    three_people: Path, mosquitto_factory, subscribe, tmp_path: Path
) -> None:
    """The broker is down when a replay reaches its end; it comes back during the drain
    time: everything is delivered and the replay exits 0."""
    broker, saved = persistent_broker(mosquitto_factory, tmp_path / "broker-db")
    sub = subscribe(broker.host, broker.port, "maskwatch/test/#", session_file=saved)
    broker.stop()
    config = lossless_config(tmp_path, three_people, broker.port)
    state = tmp_path / "replay-state"
    with reaped(subprocess.Popen(
        maskwatch("replay", three_people, "--config", config, "--start-time", START,
                  "--state-dir", state, "--drain-timeout", "300"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )) as proc:
        # The hourly total is queued after the last frame: the replay is draining now.
        deadline = time.monotonic() + 300
        while not waiting_in(state / "maskwatch.sqlite3")[1]:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the replay did not reach its end"
            time.sleep(0.1)
        left, _ = waiting_in(state / "maskwatch.sqlite3")
        broker.start()
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    assert len(left) == people_counted(stdout) >= 2
    sub.wait_for(lambda ms: any(m.topic.endswith("totals/hourly") for m in ms), 30, "the total")
    sent = published(sub, "maskwatch/test/person")
    assert [e["event_id"] for e in sent] == [e["event_id"] for e in left]
    assert waiting_in(state / "maskwatch.sqlite3") == ([], [])


def test_replay_state_dir_that_cannot_be_created_exits_73(tmp_path: Path) -> None:
    """--state-dir below a regular file: one line naming the folder, exit 73."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        maskwatch("replay", FOOTAGE, "--state-dir", blocker / "state", "--mqtt-port", "1"),
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert done.returncode == 73, done.stderr[-2000:]
    assert f"{blocker / 'state'}: cannot create state directory" in done.stderr
