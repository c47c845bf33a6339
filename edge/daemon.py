"""`maskwatch run`: the long-running service.

Startup order: config (already validated), state database, publisher (connects in the
background: the daemon counts with no broker), detector, captures; then READY=1. The loop takes
the newest frame of each camera in turn through its pipeline. WATCHDOG=1 is sent only while
every running camera delivers and processes frames, so a hung camera or inference gets the
service restarted by systemd. SIGTERM ends every open track as a decision, publishes, flushes
and exits 0.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from datetime import datetime, timezone
from types import FrameType

from edge.capture import Capture
from edge.config.root import Config
from edge.detect import Detector
from edge.discovery import discovery_messages, status_topic
from edge.notify import notify, watchdog_interval_s
from edge.pipeline import CameraPipeline, FrameClock, footage_clock, wall_clock
from edge.runtime import EXIT_SOFTWARE, open_reporting
from edge.stats import InView, StatsCollector

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


class Daemon:
    """Owns the captures, pipelines and reporting of one `maskwatch run`."""

    def __init__(self, config: Config) -> None:
        """Open state and publisher, load the detector (nothing is captured yet)."""
        self.config = config
        self.stopping = threading.Event()
        # The model first: a missing model must not make every restart flap online/offline.
        self.detector = Detector(config.detector)
        self.reporting = open_reporting(config, config.state.directory)
        self.captures: dict[str, Capture] = {}
        self.pipelines: dict[str, CameraPipeline] = {}
        self.segments: dict[str, int] = {}
        self.last_frame_at: dict[str, float] = {}
        self.in_view = InView([cam.name for cam in config.cameras])
        self.stats = StatsCollector(
            self.detector, self.captures, self.reporting.outbox, in_view=self.in_view.counts
        )
        self.last_stats = -math.inf  # the first stats go out at once: nothing is retained yet
        publisher = self.reporting.publisher
        if config.homeassistant.discovery:
            publisher.set_discovery(
                discovery_messages(config, publisher.topics),
                status_topic(config.homeassistant.discovery_prefix),
            )

    def _clock_for(self, camera_name: str) -> FrameClock:
        cam = self.config.camera(camera_name)
        if cam.source_kind == "file":
            # Positions in a file count from when this pass over it began.
            return footage_clock(datetime.now(timezone.utc).astimezone())
        return wall_clock

    def _new_pipeline(self, camera_name: str) -> CameraPipeline:
        cam = self.config.camera(camera_name)
        return CameraPipeline(
            cam,
            self.detector,
            self.config.tracker,
            self.config.decide,
            self.reporting.ledger.record,
            self._clock_for(camera_name),
        )

    def watch_inference(self) -> None:
        """Exit (code 70) when one inference hangs longer than detector.stuck_inference_s.

        A hung Edge TPU never returns; systemd restarts the service and the SQLite state keeps
        every count. Runs on its own thread because the main loop is the one that hangs.
        """
        limit = self.config.detector.stuck_inference_s
        while not self.stopping.wait(min(1.0, limit / 4)):
            started = self.detector.invoke_started
            if started is not None and time.perf_counter() - started > limit:
                log.error("inference stuck for more than %.0f s; exiting for a restart", limit)
                os._exit(EXIT_SOFTWARE)

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        """Signal handler: finish the current frame, then shut down cleanly."""
        log.info("signal %d: stopping", signum)
        self.stopping.set()

    def run(self) -> int:
        """The main loop; returns the exit code."""
        for cam in self.config.cameras:
            capture = Capture(cam)
            capture.start()
            self.captures[cam.name] = capture
            self.pipelines[cam.name] = self._new_pipeline(cam.name)
            self.segments[cam.name] = 0
            self.last_frame_at[cam.name] = time.monotonic()
        threading.Thread(target=self.watch_inference, name="inference-watch", daemon=True).start()
        notify("READY=1")
        log.info(
            "running: %d camera(s), detector on %s (%s)",
            len(self.captures),
            self.detector.accelerator,
            self.detector.runtime,
        )
        ping_every = watchdog_interval_s()
        last_ping = last_status = last_tick = time.monotonic()
        frames_since_status = 0
        timeout = 0.5 / max(1, len(self.captures))
        while not self.stopping.is_set():
            live = [n for n, c in self.captures.items() if not c.ended]
            if not live:
                log.info("every source has ended")
                break
            for name in live:
                frame = self.captures[name].read(timeout)
                now = time.monotonic()
                if frame is None:
                    self._check_gap(name, now)
                    continue
                if frame.segment != self.segments[name]:  # a file looped or reopened
                    self.pipelines[name].finish()
                    self.pipelines[name] = self._new_pipeline(name)
                    self.segments[name] = frame.segment
                result = self.pipelines[name].process(frame.image, frame.timestamp)
                self.in_view.set(name, sum(head.confirmed for head in result.heads))
                for ms in result.inference_ms:  # one per tile
                    self.stats.add_inference(ms)
                self.last_frame_at[name] = now
                frames_since_status += 1
            now = time.monotonic()
            if now - last_tick >= 1.0:
                self.reporting.ledger.tick()
                last_tick = now
            self._publish_diagnostics(now)
            if ping_every is not None and now - last_ping >= ping_every and self._all_flowing(now):
                notify("WATCHDOG=1")
                last_ping = now
            if now - last_status >= STATUS_EVERY_S:
                fps = frames_since_status / (now - last_status)
                notify(f"STATUS={fps:.1f} fps, {self.detector.accelerator}, "
                       f"inference {self.detector.last_invoke_ms:.0f} ms")
                frames_since_status, last_status = 0, now
        return self.shutdown()

    def _publish_diagnostics(self, now: float) -> None:
        """People in view when that changed, and the stats every mqtt.status_interval_s."""
        publisher = self.reporting.publisher
        in_view = self.in_view.due(now)
        if in_view is not None:
            publisher.publish_state(publisher.topics.in_view, in_view)
        if now - self.last_stats >= self.config.mqtt.status_interval_s:
            publisher.publish_state(publisher.topics.stats, self.stats.snapshot())
            self.last_stats = now

    def _all_flowing(self, now: float) -> bool:
        """Whether every camera that has not ended produced a processed frame lately, or is
        busy reconnecting to a source that went away.

        A camera that is unplugged or whose stream dropped is handled by its capture thread
        (backoff, state on MQTT); a restart would not bring it back, and restarting every
        WatchdogSec would soon hit the unit's start limit and leave the service failed even
        after the camera returns. It counts as alive while its reopen attempts go on: its
        last one (Capture.last_retry_at) lies within two backoff caps plus the stall timeout.
        A capture hung in a read or in an open (no frames, no new attempt) and a stuck
        inference still stop the pings.
        """
        limit = max(2 * (watchdog_interval_s() or 1.0), 1.0)
        return all(
            now - self.last_frame_at[n] < limit or self._reconnecting(n, c, now)
            for n, c in self.captures.items()
            if not c.ended
        )

    def _reconnecting(self, name: str, capture: Capture, now: float) -> bool:
        """Whether the camera's capture thread is busy reopening it, attempt after attempt."""
        last = capture.last_retry_at
        if not capture.running or capture.state != "reconnecting" or last is None:
            return False
        camera = self.config.camera(name)
        return now - last < 2 * camera.reconnect_max_s + camera.stall_timeout_s

    def _check_gap(self, name: str, now: float) -> None:
        """After end_track_gap_s without frames, open tracks end as decisions."""
        gap = self.config.camera(name).end_track_gap_s
        pipeline = self.pipelines[name]
        if now - self.last_frame_at[name] > gap and pipeline.tracker.live_tracks:
            log.warning("%s: no frames for %.0f s, ending its open tracks", name, gap)
            pipeline.finish()
            self.in_view.set(name, 0)

    def shutdown(self) -> int:
        """End open tracks, publish, flush and stop everything; exit code 0."""
        notify("STOPPING=1")
        for capture in self.captures.values():
            capture.stop()
        for pipeline in self.pipelines.values():
            pipeline.finish()
        self.reporting.ledger.tick()
        delivered = self.reporting.close(self.config.mqtt.stop_flush_s)
        if not delivered:
            log.warning("broker did not take everything; the rest stays queued in the state file")
        return 0


def run(config: Config) -> int:
    """Build the daemon, install signal handlers, run until stopped."""
    daemon = Daemon(config)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    return daemon.run()
