"""Diagnostics of a running daemon: the `stats` and `in_view` payloads.

`maskwatch/<device>/stats` (retained, every mqtt.status_interval_s) says how the device is
doing: frames per second per camera, the mean inference time, the accelerator, dropped frames,
the outbox depth, uptime and the CPU temperature where the kernel exposes it. `in_view` says
how many confirmed people each camera sees right now; it changes with every person walking by,
so it has its own small retained topic, published on change at most once a second.

Nothing here touches the network: the daemon hands the payloads to the publisher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from edge.capture import CaptureStats
from edge.outbox import OutboxStats, StateError

log = logging.getLogger(__name__)

# The SoC sensor on a Raspberry Pi (and most ARM boards); millidegrees Celsius.
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
IN_VIEW_MIN_INTERVAL_S = 1.0


def cpu_temperature_c(path: Path = THERMAL_ZONE) -> float | None:
    """The temperature in °C from a sysfs thermal zone, None where it cannot be read.

    Containers, VMs and many x86 machines have no zone 0 or a zone that reads an error; a
    diagnostic must not fail for that.
    """
    try:
        millidegrees = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return round(millidegrees / 1000.0, 1)


class StatsSource(Protocol):
    """Anything with a capture's stats() (edge.capture.Capture)."""

    def stats(self) -> CaptureStats:
        """A consistent snapshot of the capture's counters."""
        ...


class DetectorInfo(Protocol):
    """What the stats read from the detector (edge.detect.Detector)."""

    @property
    def accelerator(self) -> str:
        """'cpu' or 'edgetpu'."""
        ...

    @property
    def runtime(self) -> str:
        """The interpreter module."""
        ...


class OutboxInfo(Protocol):
    """What the stats read from the outbox (edge.outbox.Outbox)."""

    def stats(self) -> OutboxStats:
        """Waiting rows and the dropped-events counter."""
        ...


def _local_now() -> datetime:
    """The wall clock in the system's time zone."""
    return datetime.now().astimezone()


class StatsCollector:
    """Builds the stats payload; frame rates are measured between consecutive snapshots."""

    def __init__(
        self,
        detector: DetectorInfo,
        captures: Mapping[str, StatsSource],
        outbox: OutboxInfo,
        *,
        in_view: Callable[[], Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _local_now,
        thermal_zone: Path = THERMAL_ZONE,
    ) -> None:
        """Start the uptime and the first frame-rate interval now.

        Args:
            detector: the shared detector.
            captures: camera name -> capture; read at each snapshot, so cameras added to the
                mapping later are included.
            outbox: the state database (its waiting rows are the outbox depth).
            in_view: returns camera name -> confirmed people in view; None leaves it out.
            clock: monotonic seconds (uptime and frame-rate intervals).
            wall_clock: timezone-aware time for the payload's `time`.
            thermal_zone: the sysfs file of the CPU temperature.
        """
        self._detector = detector
        self._captures = captures
        self._outbox = outbox
        self._in_view = in_view
        self._clock = clock
        self._wall_clock = wall_clock
        self._thermal_zone = thermal_zone
        self._started = clock()
        self._last_at = self._started
        self._last_read: dict[str, int] = {}
        self._inference_ms_sum = 0.0
        self._inferences = 0

    def add_inference(self, ms: float) -> None:
        """Count one inference's duration in the current interval's mean."""
        self._inference_ms_sum += ms
        self._inferences += 1

    def snapshot(self) -> dict[str, Any]:
        """The stats payload now (see the README for an example)."""
        now = self._clock()
        elapsed = now - self._last_at
        in_view = dict(self._in_view()) if self._in_view is not None else {}
        cameras: dict[str, dict[str, Any]] = {}
        for name in sorted(self._captures):
            s = self._captures[name].stats()
            # Frames the daemon took from the capture are the frames it ran through the pipeline.
            read = s.frames_read - self._last_read.get(name, 0)
            self._last_read[name] = s.frames_read
            cameras[name] = {
                "state": s.state,
                "fps": round(read / elapsed, 1) if elapsed > 0 else None,
                "frames_dropped": s.frames_dropped,
                "reconnects": s.reconnects,
                "in_view": in_view.get(name, 0),
            }
        self._last_at = now
        # One inference varies a lot (other processes, caches): the mean says more.
        inference_ms = (
            round(self._inference_ms_sum / self._inferences, 1) if self._inferences else None
        )
        self._inference_ms_sum, self._inferences = 0.0, 0
        return {
            "time": self._wall_clock().isoformat(timespec="seconds"),
            "uptime_s": round(now - self._started),
            "accelerator": self._detector.accelerator,
            "runtime": self._detector.runtime,
            "inference_ms": inference_ms,  # None: no inference since the last snapshot
            "cpu_temperature_c": cpu_temperature_c(self._thermal_zone),
            "outbox": self._outbox_depth(),
            "cameras": cameras,
        }

    def _outbox_depth(self) -> dict[str, int] | None:
        """Rows waiting for the broker; None when the state database cannot be read."""
        try:
            s = self._outbox.stats()
        except StateError as exc:
            log.warning("stats: %s", exc)
            return None
        return {
            "pending": s.person_rows + s.hourly_rows,
            "person_rows": s.person_rows,
            "hourly_rows": s.hourly_rows,
            "dropped_events": s.dropped_events,
        }


class InView:
    """Confirmed people each camera sees now, and when the in_view payload is due."""

    def __init__(
        self, cameras: list[str], min_interval_s: float = IN_VIEW_MIN_INTERVAL_S
    ) -> None:
        """Every camera starts at 0; the first payload is due at once."""
        self._counts = dict.fromkeys(cameras, 0)
        self._min_interval_s = min_interval_s
        self._sent: dict[str, int] | None = None
        self._sent_at = -float("inf")

    def set(self, camera: str, people: int) -> None:
        """The confirmed tracks `camera` has on its latest frame."""
        self._counts[camera] = people

    def counts(self) -> dict[str, int]:
        """Camera name -> people in view now."""
        return dict(self._counts)

    def due(self, now: float) -> dict[str, Any] | None:
        """The payload to publish now, or None: unchanged, or the last one went out less than
        min_interval_s ago (tracks flicker; a busy door must not flood the broker). A change
        held back is returned by a later call, so the last state always goes out."""
        if self._counts == self._sent or now - self._sent_at < self._min_interval_s:
            return None
        self._sent, self._sent_at = dict(self._counts), now
        return {
            "people": sum(self._counts.values()),
            "cameras": dict(sorted(self._counts.items())),
        }
