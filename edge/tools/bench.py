"""How much of the interpreter's own speed the full pipeline keeps: `make bench`, that is
`python -m edge.tools.bench [--json] [--video CLIP] [--frames N] ...`.

One process, one model, one interpreter, one clip (PETS09-S2L1 from ../shared when present,
else a generated clip):

1. ready: time from process start until the detector is loaded and the capture has delivered
   its first frame, in the daemon's order (config, state database and publisher, detector,
   capture).
2. raw: the interpreter loop alone on already-letterboxed input tensors (set_tensor + invoke):
   the limit no pipeline on this machine can beat.
3. pipeline: every frame of the clip through the real `CameraPipeline.process` (letterbox,
   invoke, box decoding and NMS, tracking, voting) with decoding in line and decided people
   recorded and published to a local mosquitto. Each stage is timed by wrapping the pipeline's
   own collaborators, so the code measured is the code that runs.
   threaded: the same, every stage on its own thread as `maskwatch replay` runs it
   (edge.threaded: capture, prepare, invoke, and the rest), timed block by block.
4. tracking: the tracker and the vote alone with 10 people in view.

Numbers are wall-clock medians and 95th percentiles per frame, in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import edge.detect
from edge.capture import Capture, Frame
from edge.config.load import ConfigError, load_config, parse_config
from edge.config.root import Config
from edge.decide import Decider
from edge.detect import Detector, ModelError
from edge.detection import FRONT_WITH_MASK, FRONT_WITHOUT_MASK, Detection
from edge.letterbox import letterbox_into
from edge.pipeline import CameraPipeline, footage_clock
from edge.runtime import (
    EXIT_CONFIG,
    EXIT_NO_INPUT,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_USAGE,
    HOUR_CLOSE_DELAY_S,
    Reporting,
    open_reporting,
)
from edge.threaded import ThreadedPipeline
from edge.totals import hour_of
from edge.track import Tracker

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = REPO_ROOT.parent / "shared" / "tracking" / "PETS09-S2L1-vtest.avi"
MOSQUITTO = "mosquitto"
MOSQUITTO_FALLBACK = Path("/usr/sbin/mosquitto")
RUNTIMES = ("auto", "ai_edge_litert", "tflite_runtime")
RUNTIME_PACKAGES = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}

# Pipeline stages in the order CameraPipeline.process runs them; "other" is the frame's time
# not inside any of them (the pipeline's glue and the timers themselves).
STAGES = ("decode", "plan", "preprocess", "invoke", "postprocess", "track", "vote", "publish",
          "other")
STAGE_MEANING = {
    "decode": "cv2.VideoCapture.read: demux and decode one frame",
    "plan": "motion areas and region selection (regions only)",
    "preprocess": "letterbox into the input tensor (resize, BGR to RGB)",
    "invoke": "interpreter.invoke",
    "postprocess": "dequantise outputs, box decoding, NMS, Detection objects",
    "track": "Tracker.update (Kalman predict, association, births and deaths)",
    "vote": "Decider.look and Decider.end",
    "publish": "Ledger.record (SQLite) and Ledger.tick; MQTT I/O is on its own thread",
    "other": "the rest of the frame: pipeline glue and the timers",
}
# First invokes allocate and warm caches; they are not what a running daemon sees.
WARMUP_INVOKES = 5
# Distinct letterboxed frames cycled through by the raw loop.
RAW_INPUTS = 16
# Raw loop and pipeline alternate in blocks of this many frames: a background job's load then
# weighs on both alike.
BLOCK_FRAMES = 20
# The tracking-only benchmark: people in view and frames timed (after the warm-up frames).
SYNTHETIC_TRACKS = 10
SYNTHETIC_FRAMES = 500
SYNTHETIC_WARMUP = 10
SYNTHETIC_SIZE = (768, 576)
SYNTHETIC_FPS = 10.0
# Generated clip when ../shared is absent: PETS09's frame size and rate.
GENERATED_SIZE = (768, 576)
GENERATED_FPS = 7.0
FLUSH_TIMEOUT_S = 15.0
# Memory samples taken over a soak (--soak-hours), evenly in footage time.
SOAK_SAMPLES = 12
BROKER_START_TIMEOUT_S = 10.0
FIRST_FRAME_TIMEOUT_S = 30.0


class BenchError(Exception):
    """The benchmark cannot run; `exit_code` is the documented exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        """Keep the one-line message and the exit code."""
        super().__init__(message)
        self.exit_code = exit_code


# -- small helpers ----------------------------------------------------------------------------


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc, 10 ms resolution); None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text()
        # Field 22 (starttime, clock ticks after boot); the command name in field 2 may hold
        # spaces, so count from after its closing parenthesis (which is field 3's start).
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile and mean of durations given in seconds, in milliseconds."""
    if not seconds:
        return {"median": 0.0, "p95": 0.0, "mean": 0.0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "median": round(float(np.median(ms)), 4),
        "p95": round(float(np.percentile(ms, 95)), 4),
        "mean": round(float(ms.mean()), 4),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / divisor, 1)


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (a Pi's board model), else the platform's."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip().lower(), value.strip())
    # x86 says "model name"; a Raspberry Pi's kernel says "Model" (the board) instead.
    for key in ("model name", "model", "hardware"):
        if fields.get(key) and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were taken on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": usable,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "ai_edge_litert": package_version("ai-edge-litert"),
        "tflite_runtime": package_version("tflite-runtime"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def make_clip(path: Path, frames: int, size: tuple[int, int] = GENERATED_SIZE,
              fps: float = GENERATED_FPS) -> Path:
    """Write a synthetic street-like clip (MJPG .avi): a textured background, walking blobs.

    Used when ../shared is absent, and by the tests. Deterministic for a given frame count.
    """
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise BenchError(f"{path}: cannot write a MJPG video with this OpenCV build", EXIT_SOFTWARE)
    rng = np.random.default_rng(0)
    # Texture costs the decoder what a real street does; flat frames would decode for free.
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                                  (0, 0), 3)
    walkers = [(rng.uniform(0, width), rng.uniform(height * 0.2, height * 0.8),
                rng.uniform(-6, 6), rng.uniform(-2, 2)) for _ in range(6)]
    try:
        for i in range(frames):
            frame = background.copy()
            for x0, y0, vx, vy in walkers:
                cx = int((x0 + vx * i) % width)
                cy = int((y0 + vy * i) % height)
                cv2.rectangle(frame, (cx - 18, cy + 22), (cx + 18, cy + 110), (60, 40, 140), -1)
                cv2.ellipse(frame, (cx, cy), (14, 18), 0, 0, 360, (120, 160, 210), -1)
            writer.write(frame)
    finally:
        writer.release()
    return path


@contextlib.contextmanager
def local_broker() -> Iterator[int | None]:
    """A mosquitto on a free loopback port for the benchmark's publisher; None if none exists."""
    from edge.tools.demo import free_port, wait_for_port

    binary = shutil.which(MOSQUITTO) or (str(MOSQUITTO_FALLBACK)
                                        if MOSQUITTO_FALLBACK.exists() else None)
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="maskwatch-bench-broker-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")  # mosquitto drops to "mosquitto" otherwise
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, BROKER_START_TIMEOUT_S)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# -- per-stage timing around the pipeline's own collaborators ---------------------------------


@dataclass
class StageClock:
    """Seconds spent in each stage during the current frame, and every finished frame's."""

    current: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: list[dict[str, float]] = field(default_factory=list)

    def add(self, stage: str, seconds: float) -> None:
        """Charge seconds to a stage of the current frame."""
        self.current[stage] += seconds

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """fn, charging its duration to stage."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            """Call fn and charge the time it took, even when it raises."""
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start)

        return wrapper

    def end_frame(self, total_s: float) -> None:
        """Close the frame: what no stage accounts for is "other"."""
        frame = dict(self.current)
        frame["other"] = max(0.0, total_s - sum(frame.values()))
        frame["frame"] = total_s
        self.frames.append(frame)
        self.current = dict.fromkeys(STAGES, 0.0)

    def series(self, stage: str) -> list[float]:
        """Per-frame seconds of one stage (or "frame")."""
        return [f[stage] for f in self.frames]

    def missed_preprocess(self) -> bool:
        """True when frames were timed but no letterbox time arrived (the hook was not hit)."""
        return bool(self.frames) and sum(self.series("preprocess")) == 0.0


class TimedDetector:
    """The pipeline's detector, its `detect` split into preprocess, invoke and postprocess."""

    def __init__(self, detector: Detector, clock: StageClock) -> None:
        """Wrap detector; the split comes from the detector's own last_*_ms figures."""
        self.inner = detector
        self.clock = clock
        self.calls = 0
        self.heads = 0
        self.most_heads = 0

    def detect_placed(self, frame: np.ndarray, placements: Any) -> list[list[Detection]]:
        """Detector.detect_placed, its stages charged from last_preprocess/invoke/postprocess_ms.

        What the detector's own timers do not cover (the call itself) stays in "other".
        """
        found = self.inner.detect_placed(frame, placements)
        self.clock.add("preprocess", self.inner.last_preprocess_ms / 1000.0)
        self.clock.add("invoke", self.inner.last_invoke_ms / 1000.0)
        self.clock.add("postprocess", self.inner.last_postprocess_ms / 1000.0)
        heads = sum(len(f) for f in found)
        self.calls += 1
        self.heads += heads
        self.most_heads = max(self.most_heads, heads)
        return found

    def __getattr__(self, name: str) -> Any:
        """Everything else is the detector's own."""
        return getattr(self.inner, name)


class TimedStage:
    """A pipeline collaborator (tracker, decider) whose named methods charge a stage."""

    def __init__(self, inner: Any, stage: str, methods: tuple[str, ...], clock: StageClock) -> None:
        """Wrap the listed methods of inner; other attributes pass through."""
        self.inner = inner
        for name in methods:
            setattr(self, name, clock.timed(stage, getattr(inner, name)))

    def __getattr__(self, name: str) -> Any:
        """Attributes not wrapped are the collaborator's own."""
        return getattr(self.inner, name)


@contextlib.contextmanager
def preferred_runtime(runtime: str) -> Iterator[None]:
    """Make Detector load its CPU model with the given interpreter package ("auto": its own)."""
    if runtime == "auto":
        yield
        return
    original = edge.detect.load_cpu
    edge.detect.load_cpu = functools.partial(original, prefer=f"{runtime}.interpreter")
    try:
        yield
    finally:
        edge.detect.load_cpu = original


# -- the measurements -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the camera does besides the defaults, for measuring the speed levers."""

    detect_every: int = 1  # camera.detect_every_n_frames
    motion: bool = False  # camera.motion.enabled
    threads: int | None = None  # detector.threads (None: its default)
    # A config file whose first camera's detection (tiles, regions, motion) and tracker the
    # bench uses, on its own clip and broker.
    camera: Path | None = None

    def as_json(self) -> dict[str, Any]:
        """For the result object."""
        return {"detect_every_n_frames": self.detect_every, "motion_gating": self.motion,
                "detector_threads": self.threads,
                "config": None if self.camera is None else str(self.camera)}


def bench_config(video: Path, port: int, runtime: str, model: Path | None = None,
                 options: Options = Options()) -> Config:
    """Built-in defaults with one file camera on the clip and the broker on a loopback port.

    model replaces the shipped model (labels.txt beside it); None keeps the shipped one.
    """
    camera: dict[str, Any] = {"name": "bench", "source": str(video), "file_pacing": "asap",
                              "detect_every_n_frames": options.detect_every,
                              "motion": {"enabled": options.motion}}
    data: dict[str, Any] = {
        "device": "bench",
        "cameras": [camera],
        "mqtt": {"host": "127.0.0.1", "port": port, "password_credential": None},
    }
    if options.camera is not None:
        given = load_config(options.camera)
        first = given.cameras[0]
        camera["tiles"] = first.tiles.model_dump()
        camera["regions"] = first.regions.model_dump()
        camera["motion"] = {**first.motion.model_dump(),
                            "enabled": options.motion or first.motion.enabled}
        data["tracker"] = given.tracker.model_dump()
    detector: dict[str, Any] = {}
    if options.threads is not None:
        detector["threads"] = options.threads
    if runtime != "auto":
        detector["accelerator"] = "cpu"
    if model is not None:
        detector["model"] = str(model.resolve())
    if detector:
        data["detector"] = detector
    return parse_config(json.dumps(data), "<bench>", Path.cwd())


def read_frames(video: Path, count: int) -> Iterator[np.ndarray]:
    """The first count frames of a video (fewer if it is shorter), one at a time."""
    cap = cv2.VideoCapture(str(video))
    try:
        for _ in range(count):
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def current_rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class RawLoop:
    """set_tensor + invoke on letterboxed inputs prepared beforehand: the interpreter's limit."""

    def __init__(self, detector: Detector, frames: Iterable[np.ndarray]) -> None:
        """Letterbox the sample frames once, then warm the interpreter up."""
        self.interpreter = detector.interpreter
        detail = self.interpreter.get_input_details()[0]
        self.index = detail["index"]
        self.inputs = []
        # Frame by frame: holding the decoded frames too would add 20 MB to the peak RSS.
        for frame in frames:
            tensor = np.zeros(tuple(detail["shape"]), dtype=detail["dtype"])
            letterbox_into(frame, tensor[0])
            self.inputs.append(tensor)
        self.loop_s: list[float] = []
        self.invoke_s: list[float] = []
        for i in range(WARMUP_INVOKES):
            self.interpreter.set_tensor(self.index, self.inputs[i % len(self.inputs)])
            self.interpreter.invoke()

    def step(self, count: int) -> None:
        """Time count more iterations."""
        for _ in range(count):
            tensor = self.inputs[len(self.loop_s) % len(self.inputs)]
            start = time.perf_counter()
            self.interpreter.set_tensor(self.index, tensor)
            set_done = time.perf_counter()
            self.interpreter.invoke()
            end = time.perf_counter()
            self.loop_s.append(end - start)
            self.invoke_s.append(end - set_done)

    @property
    def fps(self) -> float:
        """Iterations per second of loop time."""
        return len(self.loop_s) / sum(self.loop_s)


class PipelineRun:
    """Frames of the clip through CameraPipeline.process, decoded in line as a replay does."""

    def __init__(self, video: Path, config: Config, detector: Detector, reporting: Reporting,
                 position: list[float]) -> None:
        """Open the clip and build the camera's pipeline with its collaborators timed."""
        self.config = config
        self.reporting = reporting
        self.position = position
        self.cap = cv2.VideoCapture(str(video))
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 25.0  # GIFs and some containers report none
        self.clock = footage_clock(datetime.now(timezone.utc).astimezone())
        self.stages = StageClock()
        ledger = reporting.ledger
        self.tick = self.stages.timed("publish", ledger.tick)
        record = self.stages.timed("publish", ledger.record)
        self.pipeline = CameraPipeline(config.cameras[0], detector, config.tracker,
                                       config.decide, record, self.clock)
        # The pipeline's own collaborators, timed in place: process() itself runs unchanged.
        pipe: Any = self.pipeline
        self.detector = pipe.detector = TimedDetector(detector, self.stages)
        pipe.tracker = TimedStage(pipe.tracker, "track", ("update", "predict"), self.stages)
        pipe.decider = TimedStage(pipe.decider, "vote", ("look", "end"), self.stages)
        if pipe.motion is not None:
            pipe.motion = TimedStage(pipe.motion, "plan", ("moving_areas",), self.stages)
        if pipe.regions is not None:
            pipe.regions = TimedStage(pipe.regions, "plan", ("plan", "inputs"), self.stages)
        self.decode = self.stages.timed("decode", self.cap.read)
        self.frames = 0
        self.people = 0
        self.ended = False

    def step(self, count: int) -> None:
        """Time count more frames (fewer when the clip ends)."""
        # As `maskwatch replay` does: a tick queries SQLite, once per second of footage is enough.
        tick_every = max(1, round(self.fps))
        for _ in range(count):
            frame_start = time.perf_counter()
            ok, frame = self.decode()
            if not ok:
                self.stages.current = dict.fromkeys(STAGES, 0.0)
                self.ended = True
                return
            self.position[0] = self.frames / self.fps
            self.people += len(self.pipeline.process(frame, self.position[0]).people)
            if self.frames % tick_every == 0:
                self.tick()
            self.stages.end_frame(time.perf_counter() - frame_start)
            self.frames += 1
        if self.detector.calls and self.stages.missed_preprocess():
            raise BenchError(
                "edge.detect.Detector.detect no longer reports last_preprocess_ms: "
                "update edge/bench.py's stage timing", EXIT_SOFTWARE)

    @property
    def fps_measured(self) -> float:
        """Frames per second of frame time (the pauses while the raw loop runs excluded)."""
        total = sum(self.stages.series("frame"))
        return self.frames / total if total > 0 else 0.0

    def close(self, flush_timeout_s: float) -> tuple[bool, float]:
        """End the open tracks, close the hour, flush to the broker: (delivered, seconds)."""
        self.cap.release()
        self.people += len(self.pipeline.finish())
        last_hour = hour_of(self.clock(self.position[0]), self.config.totals.zoneinfo)
        self.reporting.ledger.tick(last_hour.end + timedelta(seconds=HOUR_CLOSE_DELAY_S + 1))
        start = time.perf_counter()
        delivered = self.reporting.close(flush_timeout_s)
        return delivered, time.perf_counter() - start


class GatedSource:
    """A frame source that hands out only as many frames as the bench allows.

    The threaded pipeline runs in blocks between blocks of the raw loop, which uses the same
    interpreter: between blocks its threads wait here, and the interpreter is free.
    """

    def __init__(self, source: Capture) -> None:
        """Gate source; nothing is allowed yet."""
        self.source = source
        self._allowed = 0
        self._cond = threading.Condition()

    def allow(self, count: int) -> None:
        """Let count more frames through."""
        with self._cond:
            self._allowed += count
            self._cond.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame once one is allowed; None on timeout or at the end of the clip."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._allowed > 0, timeout):
                return None
            self._allowed -= 1
        frame = self.source.read(timeout)
        if frame is None:
            self.allow(1)
        return frame

    @property
    def ended(self) -> bool:
        """True once the clip has ended and been read."""
        return self.source.ended


class ThreadedRun:
    """The whole pipeline as edge.threaded runs it, detecting every frame.

    A Capture thread decodes, a prepare thread plans and letterboxes, an invoke thread runs the
    model, and this thread decodes the boxes, tracks, votes and records (edge.threaded). Each
    block's frames are timed from one result to the next; the wait for a block's first result
    (the pipeline filling up again after the raw loop had the interpreter) is reported apart.
    """

    def __init__(self, config: Config, detector: Detector, reporting: Reporting) -> None:
        """Start the capture thread on the clip and build a second pipeline."""
        self.capture = Capture(config.cameras[0], pacing="asap")
        self.capture.start()
        self.gate = GatedSource(self.capture)
        self.ledger = reporting.ledger
        self.clock = footage_clock(datetime.now(timezone.utc).astimezone())
        self.pipeline = CameraPipeline(config.cameras[0], detector, config.tracker,
                                       config.decide, self.ledger.record, self.clock)
        self.runner = ThreadedPipeline(self.pipeline, self.gate)
        self.results = self.runner.run()
        self.frame_s: list[float] = []
        self.fill_s: list[float] = []
        self.seen = 0
        self.ended = False
        self.last_second = -1

    def step(self, count: int) -> None:
        """Let count frames through; time each result after the block's first.

        The first result of a block comes after the pipeline has filled (prepare, invoke and
        the rest of one frame one after another): a running camera pays that once, not every
        20 frames, so it is kept apart in fill_s.
        """
        self.gate.allow(count)
        start = last = time.perf_counter()
        for i in range(count):
            item = next(self.results, None)
            if item is None:
                self.ended = True
                return
            frame = item[0]
            if int(frame.timestamp) != self.last_second:  # a tick per second of footage
                self.last_second = int(frame.timestamp)
                self.ledger.tick(self.clock(frame.timestamp))
            self.seen += 1
            now = time.perf_counter()
            if i == 0:
                self.fill_s.append(now - start)
            else:
                self.frame_s.append(now - last)
            last = now

    @property
    def fps(self) -> float:
        """Frames per second of timed wall time."""
        total = sum(self.frame_s)
        return len(self.frame_s) / total if total > 0 else 0.0

    def close(self) -> None:
        """Stop the stage threads and the capture thread."""
        self.runner.stop()
        self.results.close()
        self.capture.stop()


def interleaved(raw: RawLoop, run: PipelineRun, frames: int,
                threaded: ThreadedRun | None = None) -> None:
    """Alternate blocks of raw loop and pipeline so both see the same background load."""
    while run.frames < frames and not run.ended:
        block = min(BLOCK_FRAMES, frames - run.frames)
        raw.step(block)
        run.step(block)
        if threaded is not None and not threaded.ended:
            raw.step(block)
            threaded.step(block)


def tracking_only(config: Config) -> dict[str, Any]:
    """Tracker.update plus the vote per frame with SYNTHETIC_TRACKS people walking in view."""
    tracker = Tracker(config.tracker, sharp_boxes=False)  # as the daemon's pipeline runs it
    decider = Decider(config.decide, "bench", config.cameras[0].zone)
    width, height = SYNTHETIC_SIZE
    origin = datetime.now(timezone.utc)
    track_s: list[float] = []
    vote_s: list[float] = []
    columns = 5
    for i in range(SYNTHETIC_WARMUP + SYNTHETIC_FRAMES):
        t = i / SYNTHETIC_FPS
        detections = []
        for k in range(SYNTHETIC_TRACKS):
            # People on a 5 x 2 grid, each swaying sideways: always apart, always in view.
            cx = (k % columns + 0.5) * width / columns + 40 * math.sin(0.05 * i + k)
            cy = (k // columns + 0.5) * height / 2 + 10 * math.cos(0.03 * i + k)
            box = (cx - 20, cy - 24, cx + 20, cy + 24)
            mask = 0.9 if k % 2 else 0.05
            scores = [0.0, 0.0, 0.05]
            scores[FRONT_WITH_MASK], scores[FRONT_WITHOUT_MASK] = mask, 0.95 - mask
            label = FRONT_WITH_MASK if mask > 0.5 else FRONT_WITHOUT_MASK
            detections.append(Detection(box=box, label=label, score=max(scores),
                                        scores=(scores[0], scores[1], scores[2])))
        start = time.perf_counter()
        update = tracker.update(detections, t)
        tracked = time.perf_counter()
        for head in update.heads:
            if head.detection is not None:
                decider.look(head.track_id, head.detection, width, height, t)
        for ended in update.ended:
            decider.end(ended.track_id, ended.confirmed, origin, origin)
        voted = time.perf_counter()
        if i >= SYNTHETIC_WARMUP:
            track_s.append(tracked - start)
            vote_s.append(voted - tracked)
    return {
        "tracks": tracker.live_tracks,
        "frames": SYNTHETIC_FRAMES,
        "track_ms": stats_ms(track_s),
        "vote_ms": stats_ms(vote_s),
        "total_ms": stats_ms([a + b for a, b in zip(track_s, vote_s, strict=True)]),
    }


def soak(video: Path, config: Config, detector: Detector, reporting: Reporting,
         hours: float, samples: int = SOAK_SAMPLES) -> dict[str, Any]:
    """Replay the clip in a loop for `hours` of footage, as fast as it goes; sample the memory.

    The real path, untimed: CameraPipeline.process on every frame, decided people recorded and
    published, a ledger tick per second of footage (hours close along the way). Footage time
    runs on across loops. Resident memory is sampled `samples` times, evenly in footage time:
    a leak shows as a curve that keeps rising after the first minutes.
    """
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0
    total_frames = max(1, round(hours * 3600.0 * fps))
    sample_every = max(1, total_frames // samples)
    tick_every = max(1, round(fps))
    position = 0.0
    clock = footage_clock(datetime.now(timezone.utc).astimezone())
    ledger = reporting.ledger
    pipeline = CameraPipeline(config.cameras[0], detector, config.tracker, config.decide,
                              ledger.record, clock)
    curve: list[dict[str, float]] = []
    loops = 0
    detected = 0
    start = time.perf_counter()
    try:
        for index in range(total_frames):
            ok, frame = cap.read()
            if not ok:  # end of the clip: start it again, footage time runs on
                cap.release()
                cap = cv2.VideoCapture(str(video))
                loops += 1
                ok, frame = cap.read()
                if not ok:
                    raise BenchError(f"{video}: cannot be read again", EXIT_NO_INPUT)
            position = index / fps
            detected += pipeline.process(frame, position).detected
            if index % tick_every == 0:
                ledger.tick(clock(position))
            if index % sample_every == 0 or index == total_frames - 1:
                rss = current_rss_mb()
                # The kernel updates the high-water mark lazily: it can trail the RSS now.
                curve.append({"footage_min": round(position / 60.0, 1),
                              "wall_s": round(time.perf_counter() - start, 1),
                              "rss_mb": rss, "peak_rss_mb": max(rss, peak_rss_mb())})
    finally:
        cap.release()
    wall = time.perf_counter() - start
    pipeline.finish()
    last_hour = hour_of(clock(position), config.totals.zoneinfo)
    ledger.tick(last_hour.end + timedelta(seconds=HOUR_CLOSE_DELAY_S + 1))
    delivered = reporting.close(FLUSH_TIMEOUT_S)
    rss_curve = [p["rss_mb"] for p in curve]
    after_warmup = rss_curve[1:] or rss_curve
    return {
        "footage_hours": round(total_frames / fps / 3600.0, 3),
        "frames": total_frames,
        "loops": loops,
        "wall_s": round(wall, 1),
        "fps": round(total_frames / wall, 2) if wall > 0 else 0.0,
        "detected_frames": detected,
        "people": pipeline.people,
        "delivered": delivered,
        "rss_growth_mb": round(after_warmup[-1] - after_warmup[0], 1),
        "curve": curve,
    }


def run_bench(video: Path | None, frames: int, runtime: str = "auto",
              entry_age_s: float | None = None, model: Path | None = None,
              options: Options = Options(), soak_hours: float | None = None) -> dict[str, Any]:
    """Run every measurement and return the results (what --json prints).

    entry_age_s: the process's age when the command began (None: measured now); model: another
    .tflite than the shipped one; soak_hours: instead of the raw / pipeline comparison, replay
    the clip in a loop for this many hours of footage and sample the memory (see `soak`).
    """
    if entry_age_s is None:
        entry_age_s = process_age_s()
    rss_imports = current_rss_mb()
    machine = machine_info()
    with contextlib.ExitStack() as stack:
        note: list[str] = []
        if video is None:
            if DEFAULT_CLIP.is_file():
                video = DEFAULT_CLIP
            else:
                clip_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                video = make_clip(clip_dir / "generated.avi", frames)
                note.append(f"{DEFAULT_CLIP} absent: generated clip")
        elif not video.is_file():
            raise BenchError(f"{video}: no such file", EXIT_NO_INPUT)
        if runtime != "auto" and importlib.util.find_spec(runtime) is None:
            raise BenchError(f"--runtime {runtime}: {RUNTIME_PACKAGES[runtime]} is not installed "
                             f"in {sys.prefix}", EXIT_SOFTWARE)
        # Broker start-up is the benchmark's scaffolding, not the appliance's: not in ready_s.
        port = stack.enter_context(local_broker())
        publishing = port is not None
        if port is None:
            from edge.tools.demo import free_port

            # Nothing listens there: events are stored and queue, as on a device offline.
            port = free_port()
            note.append("mosquitto not installed: events stored, not published")
            logging.getLogger("edge.publish").setLevel(logging.ERROR)

        t0 = time.perf_counter()
        try:
            config = bench_config(video, port, runtime, model, options)
        except ConfigError as exc:
            raise BenchError("; ".join(exc.messages), EXIT_CONFIG) from exc
        t1 = time.perf_counter()
        state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        position = [0.0]
        clock = footage_clock(datetime.now(timezone.utc).astimezone())
        reporting = open_reporting(config, state_dir, clock=lambda: clock(position[0]))
        closed = [False]

        def close_reporting() -> None:
            """On an error before the pipeline closed it: stop the publisher, close the DB."""
            if not closed[0]:
                reporting.close(0.0)

        stack.callback(close_reporting)
        t2 = time.perf_counter()
        try:
            with preferred_runtime(runtime):
                detector = Detector(config.detector)
        except ModelError as exc:
            raise BenchError(str(exc), EXIT_SOFTWARE) from exc
        if runtime != "auto" and detector.runtime != runtime:
            raise BenchError(f"--runtime {runtime}: loaded {detector.runtime} instead",
                             EXIT_SOFTWARE)
        t3 = time.perf_counter()
        capture = Capture(config.cameras[0], pacing="asap")
        capture.start()
        first = capture.read(FIRST_FRAME_TIMEOUT_S)
        t4 = time.perf_counter()
        capture.stop()
        if first is None:
            raise BenchError(f"{video}: no frame could be read", EXIT_NO_INPUT)
        rss_loaded = peak_rss_mb()
        ready = {
            "python_and_imports_s": None if entry_age_s is None else round(entry_age_s, 3),
            "config_s": round(t1 - t0, 4),
            "reporting_s": round(t2 - t1, 4),
            "model_load_s": round(t3 - t2, 4),
            "first_frame_s": round(t4 - t3, 4),
        }
        ready_s = sum(v for v in ready.values() if v is not None)
        if entry_age_s is None:
            note.append("no /proc: ready_s leaves out Python start-up and imports")
        # A first inference may do one-off work (kernel set-up, weight packing): the first
        # result comes this much after ready.
        t5 = time.perf_counter()
        detector.detect(first.image)
        first_detect_s = time.perf_counter() - t5
        rss_now_loaded = current_rss_mb()
        if soak_hours is not None:
            closed[0] = True
            result = soak(video, config, detector, reporting, soak_hours)
            return {
                "video": str(video),
                "model": str(detector.model_path),
                "runtime": detector.runtime,
                "options": options.as_json(),
                "rss_mb_after_load": rss_loaded,
                "soak": result,
                "machine": {**machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
                "notes": note,
            }

        raw = RawLoop(detector, read_frames(video, RAW_INPUTS))
        run = PipelineRun(video, config, detector, reporting, position)
        threaded = ThreadedRun(config, detector, reporting)
        try:
            interleaved(raw, run, frames, threaded)
        finally:
            threaded.close()
        closed[0] = True
        delivered, flush_s = run.close(FLUSH_TIMEOUT_S if publishing else 0.0)
        if run.frames < frames:
            note.append(f"clip ended after {run.frames} frames")
        tracking = tracking_only(config)
        rss_end = current_rss_mb()

    stages = run.stages
    total = sum(stages.series("frame"))
    invoke_total = sum(stages.series("invoke"))
    decode_total = sum(stages.series("decode"))
    raw_fps = raw.fps
    pipeline_fps = run.fps_measured
    ms = {"raw_loop": stats_ms(raw.loop_s), "raw_invoke": stats_ms(raw.invoke_s)}
    ms.update({stage: stats_ms(stages.series(stage)) for stage in (*STAGES, "frame")})
    ms["threaded_frame"] = stats_ms(threaded.frame_s)
    ms["threaded_fill"] = stats_ms(threaded.fill_s)
    height, width = first.image.shape[:2]
    return {
        "video": str(video),
        "frame_size": [width, height],
        "frames": run.frames,
        "model": str(detector.model_path),
        "runtime": detector.runtime,
        "runtime_version": (package_version(RUNTIME_PACKAGES[detector.runtime])
                            if detector.runtime in RUNTIME_PACKAGES else None),
        "accelerator": detector.accelerator,
        "threads": config.detector.threads,
        "raw_fps": round(raw_fps, 3),
        "pipeline_fps": round(pipeline_fps, 3),
        "pipeline_vs_raw": round(pipeline_fps / raw_fps, 4),
        # Medians resist the bursts of a loaded machine better than the means behind the fps.
        "pipeline_vs_raw_median": round(ms["raw_loop"]["median"] / ms["frame"]["median"], 4),
        # Every stage on its own thread (edge.threaded): capture, prepare, invoke, the rest.
        "threaded_fps": round(threaded.fps, 3),
        "threaded_vs_raw": round(threaded.fps / raw_fps, 4),
        "threaded_vs_raw_median": round(
            ms["raw_loop"]["median"] / stats_ms(threaded.frame_s)["median"], 4)
        if threaded.frame_s else 0.0,
        "overhead_ratio": round((total - invoke_total - decode_total) / total, 4) if total else 0.0,
        "share": {s: round(sum(stages.series(s)) / total, 4) if total else 0.0 for s in STAGES},
        "ms": ms,
        "inferences_per_frame": round(run.detector.calls / max(1, run.frames), 3),
        # Inferences per second of the threaded pipeline against the raw loop's: the share of
        # the interpreter's time it keeps busy, whatever the inferences per frame.
        "threaded_inferences_vs_raw": round(
            threaded.fps * run.detector.calls / max(1, run.frames) / raw_fps, 4),
        "detections": {
            "per_frame": round(run.detector.heads / max(1, run.detector.calls), 3),
            "most": run.detector.most_heads,
        },
        "tracking_10": tracking,
        "rss_mb": peak_rss_mb(),
        "rss_mb_after_load": rss_loaded,
        # Resident memory (not peak) after the imports, after loading, and at the end.
        "rss_mb_now": {"imports": rss_imports, "loaded": rss_now_loaded, "end": rss_end},
        "options": options.as_json(),
        "detector_calls": run.detector.calls,
        "still_frames": run.pipeline.still_frames,
        "ready_s": round(ready_s, 3),
        "ready": ready,
        "first_detect_s": round(first_detect_s, 4),
        "mqtt": {
            "broker": f"mosquitto 127.0.0.1:{port}" if publishing else None,
            "people": run.people,
            "delivered": delivered if publishing else None,
            "flush_s": round(flush_s, 3),
        },
        "machine": {**machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "notes": note,
    }


# -- output -----------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The readable report: headline figures, then one row per stage."""
    m = result["machine"]
    lines = [
        f"clip     {result['video']} ({result['frame_size'][0]}x{result['frame_size'][1]}, "
        f"{result['frames']} frames)",
        f"model    {result['model']}",
        f"runtime  {result['runtime']} {result['runtime_version'] or ''} on "
        f"{result['accelerator']}, {result['threads']} thread(s)",
        f"machine  {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}",
        "",
        f"raw interpreter loop  {result['raw_fps']:8.2f} fps",
        f"full pipeline         {result['pipeline_fps']:8.2f} fps  "
        f"({100 * result['pipeline_vs_raw']:.0f}% of raw)",
        f"outside invoke+decode {100 * result['overhead_ratio']:7.1f} % of pipeline time",
        f"median frame vs raw   {100 * result['pipeline_vs_raw_median']:7.0f} %",
        f"threaded pipeline     {result['threaded_fps']:8.2f} fps  "
        f"({100 * result['threaded_vs_raw']:.0f}% of raw; medians "
        f"{100 * result['threaded_vs_raw_median']:.0f}%)",
        "",
        f"{'stage':<12} {'median ms':>10} {'p95 ms':>10} {'share':>7}  what",
    ]
    ms = result["ms"]
    lines.append(f"{'raw loop':<12} {ms['raw_loop']['median']:10.3f} "
                 f"{ms['raw_loop']['p95']:10.3f} {'':>7}  set_tensor + invoke, inputs ready")
    lines.append(f"{'raw invoke':<12} {ms['raw_invoke']['median']:10.3f} "
                 f"{ms['raw_invoke']['p95']:10.3f} {'':>7}  interpreter.invoke alone")
    for stage in STAGES:
        share = 100 * result["share"][stage]
        lines.append(f"{stage:<12} {ms[stage]['median']:10.3f} {ms[stage]['p95']:10.3f} "
                     f"{share:6.1f}%  {STAGE_MEANING[stage]}")
    lines.append(f"{'frame':<12} {ms['frame']['median']:10.2f} {ms['frame']['p95']:10.2f} "
                 f"{100.0:6.1f}%")
    tr = result["tracking_10"]
    ready = result["ready"]
    mqtt = result["mqtt"]
    lines += [
        "",
        f"detector {result['detector_calls']} of {result['frames']} frames "
        f"({result['still_frames']} skipped as still); options {result['options']}",
        f"heads    {result['detections']['per_frame']:.2f} per frame on average, at most "
        f"{result['detections']['most']}",
        f"tracking alone, {tr['tracks']} people: track {tr['track_ms']['median']:.3f} ms, "
        f"vote {tr['vote_ms']['median']:.3f} ms per frame (median)",
        f"ready in {result['ready_s']:.2f} s: python+imports "
        f"{ready['python_and_imports_s'] if ready['python_and_imports_s'] is not None else '?'} s,"
        f" model {ready['model_load_s']:.2f} s, first frame {ready['first_frame_s']:.3f} s; "
        f"first detection {result['first_detect_s']:.3f} s later",
        f"peak RSS {result['rss_mb']:.0f} MB ({result['rss_mb_after_load']:.0f} MB after load)",
        f"mqtt     {mqtt['broker'] or 'none'}: {mqtt['people']} people, delivered "
        f"{mqtt['delivered']}, flushed in {mqtt['flush_s']:.2f} s",
    ]
    lines += [f"note     {n}" for n in result["notes"]]
    return "\n".join(lines)


def soak_table(result: dict[str, Any]) -> str:
    """The readable report of a soak: the memory curve."""
    soak_result = result["soak"]
    lines = [
        f"clip     {result['video']}, looped {soak_result['loops']} times",
        f"soak     {soak_result['footage_hours']} h of footage ({soak_result['frames']} frames, "
        f"{soak_result['detected_frames']} detected) in {soak_result['wall_s']:.0f} s "
        f"({soak_result['fps']:.1f} fps); {soak_result['people']} people, delivered "
        f"{soak_result['delivered']}",
        f"options  {result['options']}",
        "",
        f"{'footage min':>11} {'wall s':>8} {'RSS MB':>8} {'peak MB':>8}",
    ]
    lines += [f"{p['footage_min']:11.1f} {p['wall_s']:8.1f} {p['rss_mb']:8.1f} "
              f"{p['peak_rss_mb']:8.1f}" for p in soak_result["curve"]]
    lines.append(f"RSS growth after the first sample: {soak_result['rss_growth_mb']:+.1f} MB")
    lines += [f"note     {n}" for n in result["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m edge.tools.bench` (`make bench`)."""
    parser = argparse.ArgumentParser(prog="python -m edge.tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--video", type=Path, help="clip to measure on (default: PETS09-S2L1)")
    parser.add_argument("--frames", type=int, default=300, help="pipeline frames to time")
    parser.add_argument("--runtime", choices=("auto", "ai_edge_litert", "tflite_runtime"),
                        default="auto", help="CPU interpreter package to measure")
    parser.add_argument("--detect-every", type=int, default=1, metavar="N",
                        help="camera.detect_every_n_frames (Kalman prediction in between)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="detector.threads: interpreter threads (1 leaves the other cores to "
                        "the pipeline, as an Edge TPU would)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="use this config's first camera (tiles, regions, motion) and tracker "
                        "on the bench's clip")
    parser.add_argument("--motion", action="store_true",
                        help="camera.motion.enabled: skip the detector when nothing moves")
    parser.add_argument("--soak-hours", type=float, metavar="H",
                        help="instead: replay the clip in a loop for H hours of footage, as fast "
                        "as it goes, and report the resident memory curve")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the bench for parsed arguments (see build_parser); the exit status."""
    entry_age_s = process_age_s()
    frames = int(args.frames)
    if frames < 1:
        print(f"--frames: must be at least 1, got {frames}", file=sys.stderr)
        return EXIT_USAGE
    runtime = getattr(args, "runtime", "auto") or "auto"
    if runtime not in RUNTIMES:
        print(f"--runtime: one of {', '.join(RUNTIMES)}, got {runtime!r}", file=sys.stderr)
        return EXIT_USAGE
    # A Namespace built by hand may leave options out: their defaults then apply.
    detect_every = getattr(args, "detect_every", None)
    threads = getattr(args, "threads", None)
    options = Options(detect_every=1 if detect_every is None else int(detect_every),
                      motion=bool(getattr(args, "motion", False)), threads=threads,
                      camera=getattr(args, "config", None))
    if threads is not None and not 1 <= threads <= 64:
        print(f"--threads: must be 1 to 64, got {threads}", file=sys.stderr)
        return EXIT_USAGE
    if options.detect_every < 1:
        print(f"--detect-every: must be at least 1, got {options.detect_every}", file=sys.stderr)
        return EXIT_USAGE
    soak_hours = getattr(args, "soak_hours", None)
    if soak_hours is not None and not 0 < soak_hours <= 24 * 7:
        print(f"--soak-hours: must be above 0 and at most 168, got {soak_hours}", file=sys.stderr)
        return EXIT_USAGE
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_bench(args.video, frames, runtime, entry_age_s, options=options,
                           soak_hours=soak_hours)
    except BenchError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(soak_table(result) if soak_hours is not None else table(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
