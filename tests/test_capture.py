"""Tests of edge.capture with real videos written by OpenCV and a real MJPEG stream over HTTP.

Nothing of OpenCV is mocked: file sources read real mp4 files from tmp_path, and the live (URL)
path reads a multipart MJPEG stream served from a thread on 127.0.0.1, which lets the tests drop
and stall the connection. The buffers and the freeze detector also get unit tests of their logic.
No test asserts a duration: waits are polls with generous deadlines.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.capture import Capture, Frame, FrameQueue, FreezeDetector, LatestFrameSlot
from edge.config.camera import CameraConfig

WIDTH, HEIGHT, FPS = 160, 120, 25.0
SQUARE = 16
DEADLINE_S = 20.0


# -- helpers ----------------------------------------------------------------------------------


def moving_square(n: int) -> list[np.ndarray]:
    """n frames with a white square moving 2 px to the right per frame on black."""
    frames = []
    for i in range(n):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        x = 4 + 2 * i
        image[50 : 50 + SQUARE, x : x + SQUARE] = 255
        frames.append(image)
    return frames


def still(n: int) -> list[np.ndarray]:
    """n identical frames: a grey picture with a fixed square."""
    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    image[30:60, 40:80] = (20, 200, 60)
    return [image.copy() for _ in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    """Write frames as an mp4v video, atomically: the file appears complete or not at all."""
    partial = path.with_name(path.stem + ".partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for image in frames:
        writer.write(image)
    writer.release()
    os.replace(partial, path)
    return path


def square_x(image: np.ndarray) -> float:
    """Horizontal centre of the bright pixels (the square), robust to mp4v's losses."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    xs = np.nonzero(gray > 128)[1]
    assert xs.size > 0, "no square in the frame"
    return float(xs.mean())


def camera(source: int | str | Path, **fields: Any) -> CameraConfig:
    """A camera config named "cam" for source, other fields from the arguments."""
    return CameraConfig(
        name="cam", source=str(source) if isinstance(source, Path) else source, **fields
    )


def poll(predicate: Callable[[], bool], deadline_s: float = DEADLINE_S) -> bool:
    """Call predicate until it is true or the deadline passes; its last result."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def read_to_end(capture: Capture, after_each: Callable[[Frame], None] | None = None) -> list[Frame]:
    """Every frame of a non-looping file source, until `capture.ended`."""
    frames: list[Frame] = []
    end = time.monotonic() + DEADLINE_S
    while not capture.ended:
        assert time.monotonic() < end, f"file did not end; state {capture.state}"
        frame = capture.read(timeout=0.2)
        if frame is not None:
            frames.append(frame)
            if after_each is not None:
                after_each(frame)
    return frames


def read_until(capture: Capture, predicate: Callable[[Frame], bool]) -> Frame:
    """Read frames until one satisfies predicate; fail at the deadline."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        frame = capture.read(timeout=0.2)
        if frame is not None and predicate(frame):
            return frame
    raise AssertionError(f"no matching frame before the deadline; state {capture.state}")


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    """Messages edge.capture logged at level or above."""
    return [
        r.getMessage() for r in caplog.records if r.name == "edge.capture" and r.levelno >= level
    ]


# -- buffers and freeze detector (logic) -----------------------------------------------------


def test_latest_frame_slot_keeps_only_the_newest_and_counts_the_rest() -> None:
    slot: LatestFrameSlot[int] = LatestFrameSlot()
    for item in (1, 2, 3):
        slot.put(item)
    assert slot.get(timeout=0) == 3
    assert slot.dropped == 2
    assert slot.get(timeout=0.01) is None  # taken: empty again
    slot.put(4)
    assert slot.get(timeout=0) == 4
    assert slot.dropped == 2


def test_latest_frame_slot_wakes_a_waiting_reader_and_close_releases_it() -> None:
    slot: LatestFrameSlot[str] = LatestFrameSlot()
    got: list[str | None] = []
    reader = threading.Thread(target=lambda: got.append(slot.get(timeout=DEADLINE_S)))
    reader.start()
    slot.put("frame")
    reader.join(DEADLINE_S)
    assert got == ["frame"]

    reader = threading.Thread(target=lambda: got.append(slot.get(timeout=DEADLINE_S)))
    reader.start()
    slot.close()
    reader.join(DEADLINE_S)
    assert not reader.is_alive()
    assert got == ["frame", None]
    slot.put("late")  # ignored once closed
    assert slot.get(timeout=0) is None


def test_frame_queue_blocks_when_full_and_ends_after_finish() -> None:
    queue: FrameQueue[int] = FrameQueue(2)
    assert queue.put(0) and queue.put(1)
    third_put: list[bool] = []
    producer = threading.Thread(target=lambda: third_put.append(queue.put(2)))
    producer.start()
    assert poll(lambda: len(queue) == 2)
    assert third_put == []  # still blocked: nothing is ever dropped
    assert queue.get(timeout=0) == 0
    producer.join(DEADLINE_S)
    assert third_put == [True]
    queue.finish()
    assert not queue.drained
    assert [queue.get(timeout=0), queue.get(timeout=0)] == [1, 2]
    assert queue.drained
    assert queue.get(timeout=DEADLINE_S) is None  # finished: returns without waiting


def test_frame_queue_close_releases_a_blocked_producer() -> None:
    queue: FrameQueue[int] = FrameQueue(1)
    queue.put(0)
    results: list[bool] = []
    producer = threading.Thread(target=lambda: results.append(queue.put(1)))
    producer.start()
    queue.close()
    producer.join(DEADLINE_S)
    assert results == [False]
    assert queue.get(timeout=0) is None


def test_freeze_detector_needs_identical_pictures_for_the_whole_duration() -> None:
    detector = FreezeDetector(frozen_after_s=0.5)
    a = np.full((HEIGHT, WIDTH, 3), 7, np.uint8)
    b = a.copy()
    b[0, 0] = 8  # on the subsample grid: a real change
    assert detector.update(a, 0.0) is False
    assert detector.update(a.copy(), 0.3) is False
    assert detector.update(a.copy(), 0.5) is True
    assert detector.update(a.copy(), 9.0) is True
    assert detector.update(b, 9.1) is False
    assert detector.update(b.copy(), 9.2) is False
    assert detector.update(b.copy(), 9.6) is True
    detector.reset()
    assert detector.update(b.copy(), 20.0) is False


# -- file sources -----------------------------------------------------------------------------


def test_file_asap_delivers_every_frame_in_order(tmp_path: Path) -> None:
    path = write_video(tmp_path / "walk.mp4", moving_square(64))
    with Capture(camera(path, file_pacing="asap")) as capture:
        frames = read_to_end(capture)
        assert capture.state == "ended"
        assert capture.read(timeout=DEADLINE_S) is None  # ended: returns without waiting
    assert [f.index for f in frames] == list(range(64))
    assert [f.timestamp for f in frames] == pytest.approx([i / FPS for i in range(64)])
    assert {f.camera for f in frames} == {"cam"}
    assert {f.segment for f in frames} == {0}
    assert frames[0].image.shape == (HEIGHT, WIDTH, 3)
    xs = [square_x(f.image) for f in frames]
    assert all(later > earlier for earlier, later in itertools.pairwise(xs))
    assert capture.frames_read == 64
    assert capture.frames_dropped == 0
    assert capture.state == "stopped"


def test_file_realtime_pacing_delivers_every_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "short.mp4", moving_square(12))
    with Capture(camera(path, file_pacing="asap"), pacing="realtime") as capture:
        assert capture.pacing == "realtime"  # the override wins over the config
        frames = read_to_end(capture)
    assert [f.index for f in frames] == list(range(12))
    xs = [square_x(f.image) for f in frames]
    assert all(later > earlier for earlier, later in itertools.pairwise(xs))


def test_missing_file_backs_off_growing_then_streams_once_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.capture")
    path = tmp_path / "late.mp4"
    config = camera(path, file_pacing="asap", reconnect_initial_s=0.05, reconnect_max_s=0.4)
    with Capture(config) as capture:
        observed: dict[int, float] = {}

        def retried_enough() -> bool:
            stats = capture.stats()
            if stats.reconnects:
                observed[stats.reconnects] = stats.backoff_s
            return stats.reconnects >= 6

        assert poll(retried_enough)
        stats = capture.stats()
        assert stats.state == "reconnecting"
        assert stats.last_error is not None and "file not found" in stats.last_error
        # Every snapshot pairs the n-th retry with its wait: initial, doubling, capped.
        for n, backoff_s in observed.items():
            assert backoff_s == pytest.approx(min(0.05 * 2 ** (n - 1), 0.4))
        waits = [
            float(m.group(1))
            for m in map(re.compile(r"retrying in ([0-9.]+) s").search, messages(caplog))
            if m
        ]
        assert waits[:6] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4, 0.4])
        # The change of state is logged once as a warning, later retries only at debug.
        warnings = [m for m in messages(caplog, logging.WARNING) if "-> reconnecting" in m]
        assert len(warnings) == 1

        write_video(path, moving_square(64))
        frames = read_to_end(capture)
        assert [f.index for f in frames] == list(range(64))
        assert capture.stats().backoff_s == 0.0  # reset by the successful reads


def test_looping_file_that_disappears_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.capture")
    path = write_video(tmp_path / "loop.mp4", moving_square(16))
    config = camera(
        path, file_pacing="asap", loop=True, reconnect_initial_s=0.05, reconnect_max_s=0.2
    )
    with Capture(config) as capture:
        first = read_until(capture, lambda f: True)
        assert (first.segment, first.index) == (0, 0)
        rewound = read_until(capture, lambda f: f.segment == 1)
        assert rewound.index == 0  # a new pass starts at frame 0
        assert capture.state == "streaming"
        seen_segments = [rewound.segment]

        def vanish_and_come_back(retries: int) -> Frame:
            """Delete the file, read what is left until the capture retries, restore the file."""
            path.unlink()
            reconnects_before = capture.stats().reconnects

            def drained_and_retrying() -> bool:
                frame = capture.read(timeout=0.05)
                if frame is not None:
                    seen_segments.append(frame.segment)
                    return False
                stats = capture.stats()
                return (
                    stats.state == "reconnecting"
                    and stats.reconnects >= reconnects_before + retries
                )

            assert poll(drained_and_retrying)
            stats = capture.stats()
            assert stats.last_error is not None and "file not found" in stats.last_error
            write_video(path, moving_square(16))
            back = read_until(capture, lambda f: f.segment > max(seen_segments))
            assert back.index == 0
            assert back.segment == max(seen_segments) + 1
            seen_segments.append(back.segment)
            assert capture.stats().backoff_s == 0.0
            return back

        vanish_and_come_back(retries=3)  # long enough for the backoff to grow
        vanish_and_come_back(retries=1)
        assert poll(lambda: capture.state == "streaming")
    # Each disappearance is one logged change of state, and the backoff starts over each time.
    episodes = [m for m in messages(caplog, logging.WARNING) if "-> reconnecting" in m]
    assert len(episodes) == 2
    assert all("retrying in 0.05 s" in m for m in episodes)


def test_identical_frames_report_frozen_once_then_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.capture")
    # 40 identical frames (1.6 s of video) then 24 moving ones; frozen after 0.5 s of video.
    path = write_video(tmp_path / "stuck.mp4", still(40) + moving_square(24))
    config = camera(path, file_pacing="asap", frozen_after_s=0.5)
    states: list[str] = []
    with Capture(config, queue_size=2) as capture:
        frames = read_to_end(capture, after_each=lambda _frame: states.append(capture.state))
    assert len(frames) == 64
    assert "frozen" in states
    first_frozen = states.index("frozen")
    # The bounded queue keeps the reader a few frames ahead, so the states seen while reading
    # still frames and then moving ones are deterministic.
    assert first_frozen < 40
    assert "streaming" in states[first_frozen:]
    frozen_warnings = [m for m in messages(caplog, logging.WARNING) if "-> frozen" in m]
    assert len(frozen_warnings) == 1
    assert any("frozen -> streaming" in m for m in messages(caplog, logging.INFO))


# -- stopping ---------------------------------------------------------------------------------


def test_stop_joins_a_thread_blocked_on_a_full_queue(tmp_path: Path) -> None:
    path = write_video(tmp_path / "walk.mp4", moving_square(64))
    capture = Capture(camera(path, file_pacing="asap"), queue_size=2)
    capture.start()
    with pytest.raises(RuntimeError, match="already started"):
        capture.start()
    assert poll(lambda: capture.stats().frames_captured >= 2)  # queue full: the put blocks
    assert capture.running
    capture.stop()
    assert not capture.running
    assert capture.state == "stopped"
    assert capture.read(timeout=0.01) is None
    capture.stop()  # twice is harmless


def test_stop_interrupts_the_backoff_wait(tmp_path: Path) -> None:
    config = camera(tmp_path / "never.mp4", reconnect_initial_s=30.0, reconnect_max_s=30.0)
    capture = Capture(config)
    capture.start()
    assert poll(lambda: capture.state == "reconnecting")
    capture.stop()  # joins for at most 5 s, far less than the 30 s wait
    assert not capture.running
    assert capture.state == "stopped"


def test_missing_v4l2_device_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.capture")
    config = camera("/dev/video-maskwatch-test-missing", reconnect_initial_s=0.05)
    with Capture(config) as capture:
        assert capture.kind == "v4l2" and capture.live
        assert poll(lambda: capture.stats().reconnects >= 2)
        stats = capture.stats()
        assert stats.state == "reconnecting"
        assert stats.last_error is not None and "could not open" in stats.last_error


# -- live source: a real MJPEG stream over HTTP -----------------------------------------------


class MjpegServer(ThreadingHTTPServer):
    """Serves /stream.mjpg as multipart MJPEG at about 30 fps; can drop or stall a connection."""

    daemon_threads = True

    def __init__(self) -> None:
        """Listen on a free loopback port."""
        super().__init__(("127.0.0.1", 0), MjpegHandler)
        self.closing = threading.Event()
        self.drop_requested = threading.Event()
        self.stall_requested = threading.Event()
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}/stream.mjpg"


class MjpegHandler(BaseHTTPRequestHandler):
    """One client connection of MjpegServer."""

    server: MjpegServer

    def do_GET(self) -> None:
        """Stream JPEG frames until the client leaves or the test drops/stalls the stream."""
        if self.path != "/stream.mjpg":
            self.send_error(404)
            return
        server = self.server
        server.connections += 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        frames = moving_square(64)
        try:
            for n in itertools.count():
                if server.closing.is_set():
                    return
                if server.drop_requested.is_set():
                    server.drop_requested.clear()
                    return  # closes the connection mid-stream
                if server.stall_requested.is_set():
                    server.stall_requested.clear()
                    server.closing.wait(5.0)  # connection open, nothing sent
                    return
                ok, jpeg = cv2.imencode(".jpg", frames[n % len(frames)])
                assert ok
                data = jpeg.tobytes()
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                    % (len(data), data)
                )
                self.wfile.flush()
                server.closing.wait(1 / 30)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean."""


@pytest.fixture
def mjpeg_server() -> Iterator[MjpegServer]:
    """A running MJPEG server on 127.0.0.1, shut down after the test."""
    server = MjpegServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.closing.set()
    server.shutdown()
    server.server_close()
    thread.join(DEADLINE_S)


def live_config(url: str, **fields: Any) -> CameraConfig:
    """A camera reading url with short recovery timings."""
    defaults: dict[str, Any] = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}
    return camera(url, **{**defaults, **fields})


def test_live_stream_hands_out_only_the_newest_frame(mjpeg_server: MjpegServer) -> None:
    ticks = itertools.count()
    clock = lambda: 1000.0 + next(ticks)  # noqa: E731 - an injected wall clock
    with Capture(live_config(mjpeg_server.url), clock=clock) as capture:
        assert capture.kind == "url" and capture.live
        first = read_until(capture, lambda f: True)
        assert capture.state == "streaming"
        assert first.camera == "cam"
        assert first.image.shape == (HEIGHT, WIDTH, 3)
        assert first.timestamp >= 1000.0  # from the injected clock

        # Do not read while the source delivers 10 more frames: they overwrite each other.
        captured = capture.stats().frames_captured
        assert poll(lambda: capture.stats().frames_captured >= captured + 10)
        newest_before = capture.stats().frames_captured - 1
        frame = capture.read(timeout=DEADLINE_S)
        assert frame is not None
        assert frame.index >= newest_before  # the newest, not the oldest waiting frame
        assert frame.timestamp > first.timestamp
        assert capture.frames_dropped >= 8
        assert capture.frames_read == 2


def test_live_stream_reconnects_after_the_connection_drops(
    mjpeg_server: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.capture")
    with Capture(live_config(mjpeg_server.url)) as capture:
        first = read_until(capture, lambda f: True)
        assert first.segment == 0
        mjpeg_server.drop_requested.set()
        after = read_until(capture, lambda f: f.segment >= 1)
        assert after.index > first.index  # live indices keep counting across reconnects
        stats = capture.stats()
        assert stats.reconnects >= 1
        assert mjpeg_server.connections >= 2
        assert poll(lambda: capture.state == "streaming")
    assert any("streaming -> reconnecting" in m for m in messages(caplog, logging.WARNING))


def test_live_stream_that_stalls_is_reported_and_reopened(
    mjpeg_server: MjpegServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.capture")
    with Capture(live_config(mjpeg_server.url, stall_timeout_s=1.0)) as capture:
        read_until(capture, lambda f: True)
        mjpeg_server.stall_requested.set()  # the connection stays open but goes silent
        after = read_until(capture, lambda f: f.segment >= 1)
        assert after.image.shape == (HEIGHT, WIDTH, 3)
        assert any("-> stalled" in m for m in messages(caplog, logging.WARNING))
        stats = capture.stats()
        assert stats.reconnects >= 1
        assert stats.last_error is not None and "stalled" in stats.last_error


# -- Raspberry Pi camera without picamera2 ------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None,
    reason="picamera2 is installed here; this test is about machines without it",
)
@pytest.mark.parametrize("source", ["picamera2", "picamera2:1"])
def test_picamera2_source_without_picamera2_is_reported_and_retried(
    source: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.capture")
    config = camera(source, reconnect_initial_s=0.05, reconnect_max_s=0.2)
    with Capture(config) as capture:
        assert capture.kind == "picamera2" and capture.live
        assert poll(lambda: capture.stats().reconnects >= 3)
        stats = capture.stats()
        assert capture.running, "the capture thread must keep retrying, not die"
    assert stats.state == "reconnecting"
    assert stats.last_error is not None
    assert stats.last_error.startswith("picamera2 is not installed"), stats.last_error
    assert 0.05 < stats.backoff_s <= 0.2  # the backoff grew from its first value, up to the cap
    warnings = messages(caplog, logging.WARNING)
    # One warning line names the problem; the retries after it are logged at DEBUG only.
    assert len(warnings) == 1, warnings
    assert "picamera2 is not installed" in warnings[0] and "\n" not in warnings[0]
    assert "unexpected error" not in " ".join(messages(caplog))
