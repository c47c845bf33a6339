"""Camera capture: one thread per camera reads frames with OpenCV and hands them to the pipeline.

Live sources (V4L2 devices, network streams) keep only the newest frame, so inference never lags
behind reality; a video file delivers every frame, either as fast as the pipeline consumes them
("asap") or paced at the file's frame rate ("realtime", to emulate a live camera). The thread
reopens a source that cannot be opened, stops delivering or stalls, waiting with capped
exponential backoff, and reports a frozen picture. It never raises: problems are logged, and the
state (`Capture.state`) says what is going on. A Raspberry Pi camera ("picamera2" sources) is read
through the picamera2 library, imported only when such a source is opened: where it is missing
the capture reports that and retries like a missing V4L2 device.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import cv2
import numpy as np

from edge.config.camera import CameraConfig, picamera2_number

log = logging.getLogger(__name__)

CaptureState = Literal[
    "starting", "streaming", "reconnecting", "stalled", "frozen", "ended", "stopped"
]
Pacing = Literal["asap", "realtime"]

T = TypeVar("T")

# A few bad frames in a row (a corrupt MJPEG frame makes V4L2 reads fail once) are not worth
# reopening a device for; more than this means the source is gone.
MAX_CONSECUTIVE_READ_FAILURES = 3
# Used to place file frames in time when the container states no usable frame rate.
FALLBACK_FILE_FPS = 25.0
# Samples per axis of the strided subsample compared to detect a frozen picture.
FREEZE_SAMPLES_X = 32
FREEZE_SAMPLES_Y = 24

_WARNING_STATES = ("reconnecting", "stalled", "frozen")


@dataclass(frozen=True, eq=False, slots=True)
class Frame:
    """One captured picture.

    Attributes:
        image: the picture, BGR, uint8, height x width x 3 as OpenCV decodes it.
        index: frame counter; for a file it counts from 0 at every open of the file (so it
            restarts when a file loops), for a live source it keeps counting across reconnects.
        timestamp: seconds; for a file the frame's position in the file, for a live source the
            capture clock (time.time() unless injected) right after the frame was grabbed.
        camera: name of the camera (from the config).
        segment: how many times the source had been (re)opened before this frame, starting at
            0. It changes when a file loops or a source reconnects, which is where file
            timestamps jump back and where per-source state (tracks) no longer carries over.
    """

    image: np.ndarray
    index: int
    timestamp: float
    camera: str
    segment: int = 0


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """A consistent snapshot of a capture's state and counters, for diagnostics.

    Attributes:
        state: what the capture is doing (see `Capture.state`).
        state_since: capture clock time at which that state began.
        frames_captured: frames decoded from the source.
        frames_read: frames handed to the consumer by `Capture.read`.
        frames_dropped: live frames overwritten by a newer one before the consumer read them.
        reconnects: failures after which the source was (or will be) reopened.
        backoff_s: the wait before the latest reopen attempt; 0 once a frame has been read.
        last_error: why the source last failed, None before any failure.
    """

    state: CaptureState
    state_since: float
    frames_captured: int
    frames_read: int
    frames_dropped: int
    reconnects: int
    backoff_s: float
    last_error: str | None


class LatestFrameSlot(Generic[T]):
    """A single-slot buffer holding only the newest item: a put overwrites an unread one.

    Used for live sources so the consumer always gets the most recent frame; every overwritten
    item is counted in `dropped`.
    """

    def __init__(self) -> None:
        """Create an empty, open slot."""
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        """Store item, replacing (and counting as dropped) any item not yet taken.

        Ignored once the slot is closed.
        """
        with self._cond:
            if self._closed:
                return
            if self._full:
                self.dropped += 1
            self._item = item
            self._full = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """Take the newest item, waiting up to timeout seconds (forever for None) for one.

        Returns None on timeout or once the slot is closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full or self._closed:
                return None
            item = self._item
            self._item = None
            self._full = False
            return item

    def close(self) -> None:
        """Drop any held item and wake every waiter; later puts are ignored."""
        with self._cond:
            self._closed = True
            self._item = None
            self._full = False
            self._cond.notify_all()


class FrameQueue(Generic[T]):
    """A bounded FIFO whose put blocks while it is full: nothing is ever dropped.

    Used for file sources so that every frame of the file reaches the consumer. `finish` marks
    the end of the items (get then returns None once drained, without waiting); `close`
    abandons the queue and wakes blocked producers and consumers.
    """

    def __init__(self, maxsize: int) -> None:
        """Create an empty queue holding at most maxsize items."""
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self._maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._finished = False
        self._closed = False

    def put(self, item: T) -> bool:
        """Append item, blocking while the queue is full; False if the queue was closed."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self._maxsize or self._closed)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the oldest item, waiting up to timeout seconds (forever for None) for one.

        Returns None on timeout, once the queue is finished and drained, or once it is closed.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: bool(self._items) or self._finished or self._closed, timeout
            )
            if self._closed or not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def finish(self) -> None:
        """Mark that no more items will come."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def close(self) -> None:
        """Drop all items and wake every waiter; later puts return False."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        """True once the queue is finished and every item has been taken."""
        with self._cond:
            return self._finished and not self._items

    def __len__(self) -> int:
        """Number of items waiting."""
        with self._cond:
            return len(self._items)


class FreezeDetector:
    """Tells when a source has delivered identical pictures for at least `frozen_after_s`.

    Pictures are compared through a strided subsample of about 32 x 24 pixels, which costs
    microseconds, where comparing full frames would cost milliseconds on a Pi. Only exact
    equality counts: sensor noise makes a live, static scene differ from frame to frame, while a
    hung encoder or a stuck driver repeats the very same pixels.
    """

    def __init__(self, frozen_after_s: float) -> None:
        """Detect runs of identical pictures lasting frozen_after_s seconds or more."""
        self.frozen_after_s = frozen_after_s
        self._previous: np.ndarray | None = None
        self._previous_t = 0.0
        self._same_since: float | None = None

    def reset(self) -> None:
        """Forget the previous picture (after a reconnect nothing is known about freezing)."""
        self._previous = None
        self._same_since = None

    def update(self, image: np.ndarray, t: float) -> bool:
        """Feed the picture taken at time t (seconds); True while the picture is frozen."""
        height, width = image.shape[:2]
        step_y = max(1, height // FREEZE_SAMPLES_Y)
        step_x = max(1, width // FREEZE_SAMPLES_X)
        sample = np.ascontiguousarray(image[::step_y, ::step_x])
        previous, previous_t = self._previous, self._previous_t
        self._previous, self._previous_t = sample, t
        if previous is None or not np.array_equal(previous, sample):
            self._same_since = None
            return False
        if self._same_since is None:
            # The run of identical pictures began with the previous one.
            self._same_since = previous_t
        return t - self._same_since >= self.frozen_after_s


PICAMERA2_MISSING = (
    "picamera2 is not installed (Raspberry Pi OS: sudo apt install python3-picamera2; a "
    "virtualenv needs --system-site-packages to see it)"
)


class Picamera2Reader:
    """A Raspberry Pi camera opened with picamera2, read like a cv2.VideoCapture.

    Frames come from the video configuration's main stream in RGB888, which libcamera lays out
    as B, G, R bytes: exactly OpenCV's BGR, so no conversion is needed.
    """

    def __init__(self, camera: Any, read_timeout_s: float) -> None:
        """Wrap a started picamera2.Picamera2; reads wait at most read_timeout_s."""
        self._camera = camera
        self._read_timeout_s = read_timeout_s

    @classmethod
    def open(cls, config: CameraConfig) -> tuple[Picamera2Reader | None, str]:
        """Open and start the camera; (reader, "") or (None, one-line reason)."""
        try:
            from picamera2 import Picamera2  # only Raspberry Pi OS has it (with libcamera)
        except ImportError:
            return None, PICAMERA2_MISSING
        except Exception as exc:  # installed but broken (e.g. libcamera bindings mismatch)
            return None, f"picamera2 cannot be imported: {exc!r}"
        assert isinstance(config.source, str)
        camera = None
        try:
            camera = Picamera2(picamera2_number(config.source))
            main: dict[str, object] = {"format": "RGB888"}
            if config.width is not None or config.height is not None:
                # The library's default video size, for whichever side is not configured.
                main["size"] = (config.width or 1280, config.height or 720)
            controls = {"FrameRate": config.fps} if config.fps is not None else {}
            camera.configure(camera.create_video_configuration(main=main, controls=controls))
            camera.start()
        except Exception as exc:  # libcamera reports a missing or busy camera in many ways
            if camera is not None:
                with contextlib.suppress(Exception):
                    camera.close()
            return None, f"could not open {config.source}: {exc!r}"
        return cls(camera, config.stall_timeout_s), ""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame as (True, BGR image), or (False, None) when none came in time."""
        try:
            # A number makes newer picamera2 raise TimeoutError; older ones wait forever.
            image = self._camera.capture_array("main", wait=self._read_timeout_s)
        except Exception as exc:
            log.debug("picamera2 read failed: %r", exc)
            return False, None
        return True, np.ascontiguousarray(image[:, :, :3])

    def release(self) -> None:
        """Stop and close the camera so that it can be opened again."""
        for step in ("stop", "close"):
            with contextlib.suppress(Exception):
                getattr(self._camera, step)()


@functools.cache
def _has_backend(api: int, *, camera: bool) -> bool:
    """True when this OpenCV build has the video backend `api` (camera or stream backends)."""
    registry = cv2.videoio_registry
    backends = registry.getCameraBackends() if camera else registry.getStreamBackends()
    return api in backends


class Capture:
    """Reads one camera in a background thread and hands frames to one consumer.

    Usage: `start()`, then call `read(timeout)` in a loop, `stop()` at the end (or use it as a
    context manager). `state` says what the capture is doing:

    - "starting": started, no frame yet;
    - "streaming": frames arrive;
    - "reconnecting": the source failed (could not be opened, reads failed, stalled, or a
      looping file vanished) and is reopened after a capped exponential backoff;
    - "stalled": a read has been waiting longer than `stall_timeout_s`; the capture reconnects
      as soon as the video backend gives up on the read;
    - "frozen": frames arrive but have been identical for `frozen_after_s` or longer;
    - "ended": a non-looping file reached its end (`ended` says when its last frame was read);
    - "stopped": `stop()` was called.

    Every state change is logged once, at WARNING for reconnecting, stalled and frozen.
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        pacing: Pacing | None = None,
        clock: Callable[[], float] = time.time,
        queue_size: int = 4,
        join_timeout_s: float = 5.0,
    ) -> None:
        """Prepare the capture of one camera; nothing is opened before `start()`.

        Args:
            config: the camera's configuration.
            pacing: overrides `config.file_pacing` for file sources (replay forces "asap").
            clock: wall clock for live frame timestamps and `state_since`; injectable so
                callers can run the pipeline on their own time base.
            queue_size: frames a file source may read ahead of the consumer.
            join_timeout_s: longest wait in `stop()` for the thread to finish.
        """
        self.config = config
        self.name = config.name
        self.kind = config.source_kind
        self.live = self.kind != "file"
        self.pacing: Pacing = pacing or config.file_pacing
        self.join_timeout_s = join_timeout_s
        self._clock = clock
        self._slot: LatestFrameSlot[Frame] | None = LatestFrameSlot() if self.live else None
        self._queue: FrameQueue[Frame] | None = None if self.live else FrameQueue(queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: CaptureState = "starting"
        self._state_since = clock()
        self.frames_captured = 0
        self.frames_read = 0
        self.reconnects = 0
        # Monotonic time of the last failed open or read that scheduled a reopen; None before
        # the first. The daemon's watchdog reads it: attempts that stop coming mean a hang.
        self.last_retry_at: float | None = None
        self.backoff_s = 0.0
        self.last_error: str | None = None
        self._next_backoff_s = config.reconnect_initial_s
        # Monotonic time at which the read now in progress began; None between reads. The
        # consumer's thread compares it with stall_timeout_s, as the reader itself is blocked.
        self._read_started: float | None = None
        self._segment = -1
        self._live_index = 0
        # File time already played in earlier passes of a looping file, so that the freeze
        # detector sees time that keeps running.
        self._media_offset = 0.0
        self._freeze = FreezeDetector(config.frozen_after_s)
        self._settings_checked = False

    # -- consumer side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the capture thread; the source is opened there."""
        if self._thread is not None:
            raise RuntimeError(f"capture of camera {self.name!r} was already started")
        log.info(
            "camera %s: starting capture of %s (%s)",
            self.name,
            self.config.source_redacted,
            self.kind if self.live else f"file, {self.pacing}",
        )
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, waiting up to timeout seconds (forever for None).

        Live sources return the newest frame not yet read; files return every frame in order.
        Returns None on timeout, once a non-looping file has ended and been drained (without
        waiting), and after `stop()`.
        """
        self._check_stall()
        buffer = self._slot if self._slot is not None else self._queue
        assert buffer is not None
        frame = buffer.get(timeout)
        if frame is None:
            self._check_stall()
            return None
        with self._lock:
            self.frames_read += 1
        return frame

    def stop(self) -> None:
        """Stop the thread and wait for it (at most join_timeout_s); safe to call twice."""
        self._stop.set()
        self._set_state("stopped")
        if self._slot is not None:
            self._slot.close()
        if self._queue is not None:
            self._queue.close()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(self.join_timeout_s)
        if thread.is_alive():
            # Only a video backend blocked inside a read can cause this; the thread is a daemon
            # and releases the source itself once the read returns.
            log.warning(
                "camera %s: capture thread still blocked in the video backend after %.1f s; "
                "leaving it behind",
                self.name,
                self.join_timeout_s,
            )

    def __enter__(self) -> Capture:
        """Start the capture when entering a with block."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the capture when leaving a with block."""
        self.stop()

    @property
    def state(self) -> CaptureState:
        """What the capture is doing now (see the class docstring)."""
        self._check_stall()
        with self._lock:
            return self._state

    @property
    def state_since(self) -> float:
        """Capture clock time at which the current state began."""
        with self._lock:
            return self._state_since

    @property
    def frames_dropped(self) -> int:
        """Live frames overwritten by a newer one before they were read (0 for files)."""
        return self._slot.dropped if self._slot is not None else 0

    @property
    def ended(self) -> bool:
        """True once a non-looping file has ended and its last frame has been read."""
        return self._queue is not None and self._queue.drained

    @property
    def running(self) -> bool:
        """True while the capture thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> CaptureStats:
        """A consistent snapshot of the state and counters."""
        self._check_stall()
        with self._lock:
            return CaptureStats(
                state=self._state,
                state_since=self._state_since,
                frames_captured=self.frames_captured,
                frames_read=self.frames_read,
                frames_dropped=self.frames_dropped,
                reconnects=self.reconnects,
                backoff_s=self.backoff_s,
                last_error=self.last_error,
            )

    # -- state ----------------------------------------------------------------------------

    def _set_state(self, new: CaptureState, detail: str = "") -> None:
        """Enter state `new`, logging the change once; nothing leaves "stopped"."""
        with self._lock:
            old = self._state
            if old == new or old == "stopped":
                return
            self._state = new
            self._state_since = self._clock()
        self._log_change(old, new, detail)

    def _log_change(self, old: CaptureState, new: CaptureState, detail: str) -> None:
        """Log one state change."""
        level = logging.WARNING if new in _WARNING_STATES else logging.INFO
        if not detail and new == "frozen":
            detail = f"identical frames for {self.config.frozen_after_s:g} s or more"
        elif not detail and new == "streaming" and old in ("frozen", "stalled"):
            detail = "frames are changing again" if old == "frozen" else "frames arrive again"
        suffix = f": {detail}" if detail else ""
        log.log(level, "camera %s: %s -> %s%s", self.name, old, new, suffix)

    def _check_stall(self) -> None:
        """Report "stalled" when the read in progress has waited longer than stall_timeout_s."""
        started = self._read_started
        if started is None:
            return
        waited = time.monotonic() - started
        if waited < self.config.stall_timeout_s:
            return
        with self._lock:
            if self._read_started is None or self._state in ("stalled", "ended", "stopped"):
                return
            old = self._state
            self._state = "stalled"
            self._state_since = self._clock()
        self._log_change(old, "stalled", f"no new frame for {waited:.1f} s")

    # -- capture thread -------------------------------------------------------------------

    def _run(self) -> None:
        """Thread body: open, stream, and reopen after failures until stopped or ended."""
        outcome = ""
        while not self._stop.is_set():
            try:
                outcome, reason = self._run_session(quiet=outcome == "rewind")
            except Exception as exc:
                # Whatever OpenCV or numpy raise, the camera must keep being retried.
                log.exception("camera %s: unexpected error in capture", self.name)
                outcome, reason = "failed", f"unexpected error: {exc!r}"
            if outcome == "stopped":
                break
            if outcome == "ended":
                assert self._queue is not None
                self._queue.finish()
                self._set_state("ended", "end of file")
                return
            if outcome == "failed":
                self._freeze.reset()
                self._wait_before_retry(reason)
            # "rewind": a looping file reopens at once.
        log.debug("camera %s: capture thread finished", self.name)

    def _wait_before_retry(self, reason: str) -> None:
        """Wait the current backoff (interrupted by stop), then double it up to the cap."""
        with self._lock:
            wait = self._next_backoff_s
            self.backoff_s = wait
            self.reconnects += 1
            self.last_retry_at = time.monotonic()
            self.last_error = reason
            self._next_backoff_s = min(wait * 2.0, self.config.reconnect_max_s)
            already = self._state == "reconnecting"
        detail = f"{reason}; retrying in {wait:g} s"
        if already:
            log.debug("camera %s: %s", self.name, detail)
        else:
            self._set_state("reconnecting", detail)
        self._stop.wait(wait)

    def _run_session(self, *, quiet: bool) -> tuple[str, str]:
        """Open the source once and stream from it; quiet: log the open at DEBUG (a rewind).

        Returns (outcome, reason) with outcome "stopped", "ended", "rewind" or "failed".
        """
        cap, reason = self._open()
        if cap is None:
            return "failed", reason
        try:
            self._segment += 1
            log.log(
                logging.DEBUG if quiet else logging.INFO,
                "camera %s: opened %s",
                self.name,
                self.config.source_redacted,
            )
            return self._stream(cap)
        finally:
            cap.release()

    def _open(self) -> tuple[cv2.VideoCapture | Picamera2Reader | None, str]:
        """Open the source; (capture, "") on success, (None, reason) on failure."""
        if self.kind == "picamera2":
            return Picamera2Reader.open(self.config)
        source = self.config.source
        shown = self.config.source_redacted
        try:
            if self.kind == "file":
                assert isinstance(source, str)
                if not os.path.isfile(source):
                    return None, f"file not found: {shown}"
                cap = cv2.VideoCapture(source)
            elif self.kind == "url":
                assert isinstance(source, str)
                cap = self._open_url(source)
            else:
                api = cv2.CAP_V4L2 if _has_backend(cv2.CAP_V4L2, camera=True) else cv2.CAP_ANY
                cap = cv2.VideoCapture(source, api)
        except cv2.error as exc:
            return None, f"could not open {shown}: {exc}"
        if not cap.isOpened():
            cap.release()
            return None, f"could not open {shown}"
        if self.kind == "v4l2":
            self._apply_wanted_settings(cap)
        return cap, ""

    def _open_url(self, url: str) -> cv2.VideoCapture:
        """Open a network stream with open and read timeouts, so a dead peer cannot hang us."""
        if not _has_backend(cv2.CAP_FFMPEG, camera=False):
            return cv2.VideoCapture(url)
        timeout_ms = max(1, round(self.config.stall_timeout_s * 1000))
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            timeout_ms,
        ]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)

    def _apply_wanted_settings(self, cap: cv2.VideoCapture) -> None:
        """Ask a V4L2 device for the configured size and frame rate; warn once if refused."""
        wanted = (
            (cv2.CAP_PROP_FRAME_WIDTH, "width", self.config.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, "height", self.config.height),
            (cv2.CAP_PROP_FPS, "fps", self.config.fps),
        )
        for prop, _, value in wanted:
            if value is not None:
                cap.set(prop, float(value))
        if self._settings_checked:
            return
        self._settings_checked = True
        refused = [
            f"{label} {value:g} (got {cap.get(prop):g})"
            for prop, label, value in wanted
            if value is not None and abs(cap.get(prop) - value) > 0.5
        ]
        if refused:
            log.warning("camera %s: the device did not accept %s", self.name, ", ".join(refused))

    def _stream(self, cap: cv2.VideoCapture | Picamera2Reader) -> tuple[str, str]:
        """Read frames from an open source until it fails, ends or the capture is stopped."""
        # Files open through OpenCV only; picamera2 is always live.
        file_cap = cap if not self.live and isinstance(cap, cv2.VideoCapture) else None
        is_file = file_cap is not None
        file_fps = self._file_fps(file_cap) if file_cap is not None else 0.0
        realtime = is_file and self.pacing == "realtime"
        index = 0
        last_timestamp = 0.0
        pace_anchor: float | None = None
        failures = 0
        stall_timeout_s = self.config.stall_timeout_s
        while not self._stop.is_set():
            started = time.monotonic()
            self._read_started = started
            try:
                ok, image = cap.read()
            finally:
                self._read_started = None
            read_s = time.monotonic() - started
            if self._stop.is_set():
                return "stopped", ""
            if not ok or image is None:
                if is_file:
                    if index == 0:
                        return (
                            "failed",
                            f"no frame could be read from {self.config.source_redacted}",
                        )
                    if self.config.loop:
                        self._media_offset += last_timestamp + 1.0 / (file_fps or FALLBACK_FILE_FPS)
                        return "rewind", ""
                    return "ended", ""
                if read_s >= stall_timeout_s:
                    self._set_state("stalled", f"no new frame for {read_s:.1f} s")
                    return "failed", f"stalled: no new frame for {read_s:.1f} s"
                failures += 1
                if failures >= MAX_CONSECUTIVE_READ_FAILURES:
                    return "failed", f"{failures} reads in a row failed"
                continue
            failures = 0
            if self.backoff_s:
                # A successful read ends the failure streak: the next failure waits the least.
                with self._lock:
                    self._next_backoff_s = self.config.reconnect_initial_s
                    self.backoff_s = 0.0
            if file_cap is not None:
                timestamp = self._file_timestamp(file_cap, index, file_fps)
                frame_index = index
                freeze_t = self._media_offset + timestamp
            else:
                timestamp = self._clock()
                frame_index = self._live_index
                self._live_index += 1
                freeze_t = time.monotonic()
            self._set_state("frozen" if self._freeze.update(image, freeze_t) else "streaming")
            frame = Frame(image, frame_index, timestamp, self.name, self._segment)
            if realtime:
                if pace_anchor is None:
                    pace_anchor = time.monotonic() - timestamp
                delay = pace_anchor + timestamp - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return "stopped", ""
            if self._queue is not None:
                if not self._queue.put(frame):
                    return "stopped", ""
            else:
                assert self._slot is not None
                self._slot.put(frame)
            with self._lock:
                self.frames_captured += 1
            index += 1
            last_timestamp = timestamp
        return "stopped", ""

    def _file_fps(self, cap: cv2.VideoCapture) -> float:
        """The file's frame rate, else the configured fps, else 0 (then positions are used)."""
        fps = cap.get(cv2.CAP_PROP_FPS)
        # Some containers report their time base (e.g. 90000) instead of a frame rate.
        if math.isfinite(fps) and 0.0 < fps <= 1000.0:
            return float(fps)
        return float(self.config.fps or 0.0)

    @staticmethod
    def _file_timestamp(cap: cv2.VideoCapture, index: int, fps: float) -> float:
        """Position in the file of the frame just read, in seconds."""
        if fps > 0.0:
            return index / fps
        position_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        if math.isfinite(position_ms) and position_ms >= 0.0:
            return position_ms / 1000.0
        return index / FALLBACK_FILE_FPS
