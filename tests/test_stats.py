"""The stats and in_view diagnostics (edge.stats) and their publication.

The arithmetic (frame rates between snapshots, when in_view is due) is tested with a settable
clock and capture counters given by the test; the outbox is a real SQLite file; publication
goes through the real Publisher to a real mosquitto, which is killed and restarted to check
that the newest values come back after a reconnect. The daemon's own stats messages are
checked in tests/test_discovery.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edge.capture import CaptureState, CaptureStats
from edge.events import PersonEvent
from edge.outbox import Outbox, encode_json
from edge.publish import Publisher, Topics
from edge.stats import InView, StatsCollector, cpu_temperature_c

if TYPE_CHECKING:
    from conftest import Mosquitto, Subscriber

DEVICE = "entrance"
TOPICS = Topics.for_device("maskwatch", DEVICE)
T0 = datetime(2026, 3, 2, 10, 15, tzinfo=timezone.utc)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        """Start at 1000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current setting."""
        return self.now


@dataclass
class CaptureCounters:
    """What a Capture's stats() reports, set by the test."""

    state: CaptureState = "streaming"
    frames_read: int = 0
    frames_dropped: int = 0
    reconnects: int = 0

    def stats(self) -> CaptureStats:
        """A snapshot in Capture's shape."""
        return CaptureStats(
            state=self.state,
            state_since=0.0,
            frames_captured=self.frames_read + self.frames_dropped,
            frames_read=self.frames_read,
            frames_dropped=self.frames_dropped,
            reconnects=self.reconnects,
            backoff_s=0.0,
            last_error=None,
        )


@dataclass
class DetectorFigures:
    """The detector attributes the stats read."""

    accelerator: str = "cpu"
    runtime: str = "ai_edge_litert"


def person(n: int) -> PersonEvent:
    """Person number n, without a mask."""
    return PersonEvent(
        event_id=f"ev-{n}",
        camera="door",
        track_id=n,
        first_seen=T0,
        last_seen=T0 + timedelta(seconds=2),
        decision="no_mask",
        votes_mask=0,
        votes_no_mask=4,
        looks=6,
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """A fresh state database."""
    with Outbox(tmp_path / "state" / "maskwatch.sqlite3", tz="Europe/Berlin") as ob:
        yield ob


# -- CPU temperature -----------------------------------------------------------------------------


def test_cpu_temperature_reads_millidegrees(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert cpu_temperature_c(zone) == 48.3


@pytest.mark.parametrize("content", [None, "", "N/A\n"])
def test_cpu_temperature_is_none_where_unreadable(tmp_path: Path, content: str | None) -> None:
    zone = tmp_path / "temp"
    if content is not None:
        zone.write_text(content)
    assert cpu_temperature_c(zone) is None


# -- the stats payload ---------------------------------------------------------------------------


def test_snapshot_fields_and_frame_rate_between_snapshots(tmp_path: Path, outbox: Outbox) -> None:
    clock = Clock()
    door, hall = CaptureCounters(), CaptureCounters(state="reconnecting")
    detector = DetectorFigures(accelerator="edgetpu", runtime="tflite_runtime")
    in_view = InView(["door", "hall"])
    zone = tmp_path / "temp"
    zone.write_text("51000\n")
    stats = StatsCollector(
        detector,
        {"hall": hall, "door": door},
        outbox,
        in_view=in_view.counts,
        clock=clock,
        wall_clock=lambda: T0,
        thermal_zone=zone,
    )
    outbox.record_person(person(1), TOPICS.person, encode_json(person(1).to_json_dict()))
    outbox.record_person(person(2), TOPICS.person, encode_json(person(2).to_json_dict()))

    clock.now += 10.0
    door.frames_read, door.frames_dropped = 95, 3
    stats.add_inference(10.0)
    stats.add_inference(14.6)
    in_view.set("door", 2)
    first = stats.snapshot()
    assert first == {
        "time": "2026-03-02T10:15:00+00:00",
        "uptime_s": 10,
        "accelerator": "edgetpu",
        "runtime": "tflite_runtime",
        "inference_ms": 12.3,
        "cpu_temperature_c": 51.0,
        "outbox": {"pending": 2, "person_rows": 2, "hourly_rows": 0, "dropped_events": 0},
        "cameras": {
            "door": {
                "state": "streaming",
                "fps": 9.5,
                "frames_dropped": 3,
                "reconnects": 0,
                "in_view": 2,
            },
            "hall": {
                "state": "reconnecting",
                "fps": 0.0,
                "frames_dropped": 0,
                "reconnects": 0,
                "in_view": 0,
            },
        },
    }
    assert list(first["cameras"]) == ["door", "hall"], "cameras sorted by name"

    # The next rate counts only the frames since the previous snapshot.
    clock.now += 4.0
    door.frames_read = 95 + 30
    outbox.ack_many([1])
    second = stats.snapshot()
    assert second["cameras"]["door"]["fps"] == 7.5
    assert second["uptime_s"] == 14
    assert second["outbox"]["pending"] == 1
    assert second["inference_ms"] is None, "no inference since the previous snapshot"
    json.dumps(second)  # what the publisher encodes


def test_snapshot_without_a_thermal_zone_says_null(tmp_path: Path, outbox: Outbox) -> None:
    stats = StatsCollector(
        DetectorFigures(), {}, outbox, thermal_zone=tmp_path / "absent", clock=Clock()
    )
    payload = stats.snapshot()
    assert payload["cpu_temperature_c"] is None
    assert payload["cameras"] == {}
    assert payload["accelerator"] == "cpu"


# -- in_view -------------------------------------------------------------------------------------


def test_in_view_is_due_on_change_at_most_once_a_second() -> None:
    view = InView(["door", "hall"], min_interval_s=1.0)
    assert view.due(0.0) == {"people": 0, "cameras": {"door": 0, "hall": 0}}
    assert view.due(5.0) is None, "nothing changed"
    view.set("door", 2)
    assert view.due(5.0) == {"people": 2, "cameras": {"door": 2, "hall": 0}}
    view.set("hall", 1)
    assert view.due(5.5) is None, "held back: the last one went out 0.5 s ago"
    view.set("door", 1)
    # The held-back change goes out later, with the newest counts.
    assert view.due(6.0) == {"people": 2, "cameras": {"door": 1, "hall": 1}}
    view.set("door", 1)
    assert view.due(9.0) is None, "set to the same count is no change"


# -- publication ---------------------------------------------------------------------------------


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., Publisher]]:
    """make_publisher(outbox, port) -> a started Publisher, stopped at teardown."""
    publishers: list[Publisher] = []

    def make(outbox: Outbox, port: int, **kwargs: Any) -> Publisher:
        pub = Publisher(
            outbox,
            device=DEVICE,
            host="127.0.0.1",
            port=port,
            reconnect_initial_s=1,
            reconnect_max_s=1,
            **kwargs,
        )
        publishers.append(pub)
        pub.start()
        return pub

    yield make
    for pub in publishers:
        pub.stop(timeout_s=2)


def retained(sub: Subscriber, topic: str) -> list[dict[str, Any]]:
    """Decoded retained payloads received on topic."""
    return [json.loads(m.payload) for m in sub.on(topic) if m.retain]


def test_stats_are_retained_newest_wins_and_come_back_after_a_broker_restart(
    outbox: Outbox,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    make_publisher: Callable[..., Publisher],
) -> None:
    clock = Clock()
    door = CaptureCounters()
    stats = StatsCollector(DetectorFigures(), {"door": door}, outbox, clock=clock)
    pub = make_publisher(outbox, mosquitto.port)
    live = subscribe(mosquitto.host, mosquitto.port, TOPICS.stats)

    for frames in (10, 20, 30):  # faster than the broker acknowledges, maybe: newest must win
        clock.now += 1.0
        door.frames_read = frames
        pub.publish_state(TOPICS.stats, stats.snapshot())
    live.wait_for(
        lambda ms: any(json.loads(m.payload)["uptime_s"] == 3 for m in ms), what="newest stats"
    )
    assert json.loads(live.on(TOPICS.stats)[-1].payload)["uptime_s"] == 3

    late = subscribe(mosquitto.host, mosquitto.port, TOPICS.stats)
    late.wait_for(lambda _: bool(retained(late, TOPICS.stats)), what="retained stats")
    assert [p["uptime_s"] for p in retained(late, TOPICS.stats)] == [3]
    assert retained(late, TOPICS.stats)[0]["cameras"]["door"]["fps"] == 10.0

    # A crashed broker forgets retained messages; the publisher sends the newest again.
    mosquitto.stop()
    mosquitto.start()
    again = subscribe(mosquitto.host, mosquitto.port, TOPICS.stats)
    again.wait_for(lambda _: bool(again.on(TOPICS.stats)), what="stats after the restart")
    assert json.loads(again.on(TOPICS.stats)[-1].payload)["uptime_s"] == 3


def test_in_view_payload_reaches_the_broker_retained(
    outbox: Outbox,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    make_publisher: Callable[..., Publisher],
) -> None:
    pub = make_publisher(outbox, mosquitto.port)
    view = InView(["door"])
    view.set("door", 3)
    payload = view.due(0.0)
    assert payload is not None
    live = subscribe(mosquitto.host, mosquitto.port, TOPICS.in_view)
    pub.publish_state(TOPICS.in_view, payload)
    live.wait_for(lambda _: bool(live.on(TOPICS.in_view)), what="in_view")
    late = subscribe(mosquitto.host, mosquitto.port, TOPICS.in_view)
    late.wait_for(lambda _: bool(retained(late, TOPICS.in_view)), what="retained in_view")
    assert retained(late, TOPICS.in_view) == [{"people": 3, "cameras": {"door": 3}}]
