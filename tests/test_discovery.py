"""Home Assistant MQTT discovery (edge.discovery) against a real mosquitto, and in the daemon.

The retained configs are read back from the broker as Home Assistant would, and every value
template is rendered with Jinja2's immutable sandbox (Home Assistant's template engine is built
on it) against the payload the daemon really published on that entity's state topic.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from test_daemon import DEADLINE_S, Daemon, write_config
from test_daemon import DEVICE as DAEMON_DEVICE

from edge import __version__
from edge.capture import CaptureState, CaptureStats
from edge.config.load import ConfigError, parse_config
from edge.config.root import Config
from edge.discovery import (
    CAMERA_KEYS,
    DEVICE_KEYS,
    camera_entities,
    device_entities,
    discovery_configs,
    discovery_messages,
    status_topic,
)
from edge.events import DecisionName, PersonEvent
from edge.outbox import Outbox
from edge.publish import Ledger, Publisher, Topics
from edge.stats import InView, StatsCollector

if TYPE_CHECKING:
    from conftest import Message, Mosquitto, Subscriber

DEVICE = "entrance"
TOPICS = Topics.for_device("maskwatch", DEVICE)
PREFIX = "homeassistant"
T0 = datetime(2026, 3, 2, 10, 15, tzinfo=timezone.utc)
DIAGNOSTIC_KEYS = {"fps", "state", "inference_ms", "accelerator", "outbox_depth", "cpu_temperature"}
COUNTER_KEYS = {"people", "with_mask", "without_mask", "undecided"}
TEMPLATES = ImmutableSandboxedEnvironment()


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's MQTT entity makes of payload through its value_template."""
    return TEMPLATES.from_string(template).render(
        value_json=json.loads(payload), value=payload.decode()
    )


def two_camera_config(prefix: str = PREFIX) -> Config:
    """A device with cameras door and hall."""
    return Config(
        device=DEVICE,
        cameras=[
            {"name": "door", "source": "/dev/video0"},
            {"name": "hall", "source": "rtsp://hall.local/stream"},
        ],
        homeassistant={"discovery_prefix": prefix},
    )


def person(n: int, camera: str, decision: DecisionName) -> PersonEvent:
    """Person number n of camera, decided at T0."""
    return PersonEvent(
        event_id=f"ev-{n}",
        camera=camera,
        track_id=n,
        first_seen=T0 - timedelta(seconds=3),
        last_seen=T0,
        decision=decision,
        votes_mask=5 if decision == "mask" else 0,
        votes_no_mask=5 if decision == "no_mask" else 0,
        looks=8,
    )


def config_messages(messages: list[Message], prefix: str = PREFIX) -> list[Message]:
    """Non-empty messages on discovery config topics."""
    return [
        m
        for m in messages
        if m.topic.startswith(f"{prefix}/") and m.topic.endswith("/config") and m.payload
    ]


# -- building the configs (no broker) ------------------------------------------------------------


def test_object_ids_cannot_collide_whatever_the_camera_names() -> None:
    assert [e.key for e in camera_entities("x", TOPICS)] == list(CAMERA_KEYS)
    assert [e.key for e in device_entities(TOPICS)] == list(DEVICE_KEYS)
    keys = CAMERA_KEYS + DEVICE_KEYS
    # <camera>_<key> == <camera'>_<key'> needs one key to end in "_" + another.
    assert [(a, b) for a in keys for b in keys if a != b and a.endswith(f"_{b}")] == []
    # Names chosen to try anyway.
    names = ["a", "a_no", "a_with", "a_people", "outbox", "inference", "cpu"]
    config = Config(device="a", cameras=[{"name": n, "source": "/dev/video0"} for n in names])
    built = discovery_configs(config, Topics.for_device("maskwatch", "a"))
    assert len(built) == len(DEVICE_KEYS) + len(CAMERA_KEYS) * len(names)
    assert len({topic for topic, _ in built}) == len(built)
    assert len({payload["unique_id"] for _, payload in built}) == len(built)


def test_prefix_and_device_name_come_from_the_config() -> None:
    config = Config(
        device="shop-door",
        cameras=[{"name": "door", "source": "/dev/video0"}],
        homeassistant={"discovery_prefix": "ha/test", "device_name": "Shop door"},
    )
    built = discovery_configs(config, Topics.for_device("maskwatch", "shop-door"), "9.9.9")
    assert {t.split("/maskwatch_shop-door/")[0] for t, _ in built} == {
        "ha/test/sensor",
        "ha/test/event",
    }
    assert status_topic("ha/test") == "ha/test/status"
    device = built[0][1]["device"]
    assert device == {
        "identifiers": ["maskwatch_shop-door"],
        "name": "Shop door",
        "model": "maskwatch",
        "manufacturer": "maskwatch",
        "sw_version": "9.9.9",
    }


def test_config_defaults_and_errors_name_file_line_and_field() -> None:
    config = parse_config("device: d\n", "maskwatch.yaml")
    assert config.homeassistant.discovery is True
    assert config.homeassistant.discovery_prefix == "homeassistant"
    with pytest.raises(ConfigError) as bad_prefix:
        parse_config("homeassistant:\n  discovery_prefix: 'ha/#'\n", "maskwatch.yaml")
    assert "maskwatch.yaml:2: homeassistant.discovery_prefix:" in str(bad_prefix.value)
    with pytest.raises(ConfigError) as unknown:
        parse_config("homeassistant:\n  discovery: true\n  prefix: ha\n", "maskwatch.yaml")
    assert "maskwatch.yaml:3: homeassistant.prefix: Extra inputs" in str(unknown.value)


# -- against a real broker -----------------------------------------------------------------------


@dataclass
class CaptureCounters:
    """A capture's counters as the stats read them (the daemon test uses real captures)."""

    state: CaptureState
    frames_read: int

    def stats(self) -> CaptureStats:
        """A snapshot in Capture's shape."""
        return CaptureStats(self.state, 0.0, self.frames_read, self.frames_read, 4, 1, 0.0, None)


@dataclass
class DetectorFigures:
    """The detector attributes the stats read."""

    accelerator: str = "edgetpu"
    runtime: str = "tflite_runtime"


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """A fresh state database."""
    with Outbox(tmp_path / "state" / "maskwatch.sqlite3", tz="Europe/Berlin") as ob:
        yield ob


@pytest.fixture
def publisher(outbox: Outbox, mosquitto: Mosquitto) -> Iterator[Publisher]:
    """A started Publisher for DEVICE on the test broker."""
    pub = Publisher(
        outbox,
        device=DEVICE,
        host=mosquitto.host,
        port=mosquitto.port,
        reconnect_initial_s=1,
        reconnect_max_s=1,
    )
    pub.start()
    yield pub
    pub.stop(timeout_s=2)


@dataclass
class Published:
    """What test_discovered_entities... published, to compare the rendered values with."""

    stats: dict[str, Any]
    people: list[Message]


def publish_everything(
    tmp_path: Path, outbox: Outbox, publisher: Publisher, sub: Subscriber
) -> Published:
    """Discovery, three people, stats and in_view, as the daemon would; waits for delivery."""
    config = two_camera_config()
    publisher.set_discovery(discovery_messages(config, TOPICS), status_topic(PREFIX))
    ledger = Ledger(outbox, TOPICS, publisher=publisher, clock=lambda: T0)
    for n, (camera, decision) in enumerate(
        [("door", "mask"), ("door", "no_mask"), ("door", "mask"), ("hall", "no_mask")]
    ):
        ledger.record(person(n, camera, decision))  # type: ignore[arg-type]
    zone = tmp_path / "thermal_zone0_temp"
    zone.write_text("47900\n")
    clock = iter([100.0, 110.0]).__next__
    view = InView(["door", "hall"])
    view.set("door", 2)
    stats = StatsCollector(
        DetectorFigures(),
        {"door": CaptureCounters("streaming", 95), "hall": CaptureCounters("reconnecting", 0)},
        outbox,
        in_view=view.counts,
        clock=clock,
        thermal_zone=zone,
    )
    stats.add_inference(11.84)
    in_view = view.due(0.0)
    assert in_view is not None
    publisher.publish_state(TOPICS.in_view, in_view)
    stats_payload = stats.snapshot()
    publisher.publish_state(TOPICS.stats, stats_payload)
    # The running hour is re-published after each person: wait for the last one, so that the
    # retained totals/current a later subscriber gets is the final one.
    sub.wait_for(
        lambda ms: len([m for m in ms if m.topic == TOPICS.person]) == 4
        and any(m.topic == TOPICS.stats for m in ms)
        and any(m.topic == TOPICS.current and json.loads(m.payload)["people"] == 4 for m in ms),
        what="people, stats and the final totals/current",
    )
    return Published(stats_payload, sub.on(TOPICS.person))


def test_discovered_entities_read_back_from_the_broker(
    tmp_path: Path,
    outbox: Outbox,
    publisher: Publisher,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
) -> None:
    live = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    published = publish_everything(tmp_path, outbox, publisher, live)
    expected_count = len(DEVICE_KEYS) + 2 * len(CAMERA_KEYS)

    # What Home Assistant sees when it subscribes: retained configs, retained states.
    ha = subscribe(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    ha.wait_for(lambda ms: len(config_messages(ms)) >= expected_count, what="discovery configs")
    configs = {m.topic: json.loads(m.payload) for m in config_messages(ha.messages)}
    assert len(configs) == expected_count
    assert all(m.retain for m in config_messages(ha.messages))
    states = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    state_topics = {TOPICS.availability, TOPICS.current, TOPICS.stats, TOPICS.in_view}
    states.wait_for(
        lambda ms: {m.topic for m in ms if m.retain} >= state_topics, what="retained states"
    )
    latest = {m.topic: m.payload for m in states.messages if m.retain}
    assert latest[TOPICS.availability] == b"online"

    # Expected values, from the payloads as published.
    door_stats = published.stats["cameras"]["door"]
    expected = {
        "maskwatch.entrance.door.people": "3",
        "maskwatch.entrance.door.with_mask": "2",
        "maskwatch.entrance.door.without_mask": "1",
        "maskwatch.entrance.door.undecided": "0",
        "maskwatch.entrance.door.mask_ratio": "66.7",
        "maskwatch.entrance.door.in_view": "2",
        "maskwatch.entrance.door.fps": str(door_stats["fps"]),
        "maskwatch.entrance.door.state": "streaming",
        "maskwatch.entrance.hall.people": "1",
        "maskwatch.entrance.hall.with_mask": "0",
        "maskwatch.entrance.hall.without_mask": "1",
        "maskwatch.entrance.hall.undecided": "0",
        "maskwatch.entrance.hall.mask_ratio": "0.0",
        "maskwatch.entrance.hall.in_view": "0",
        "maskwatch.entrance.hall.fps": "0.0",
        "maskwatch.entrance.hall.state": "reconnecting",
        "maskwatch.entrance.inference_ms": "11.8",
        "maskwatch.entrance.accelerator": "edgetpu",
        "maskwatch.entrance.outbox_depth": str(published.stats["outbox"]["pending"]),
        "maskwatch.entrance.cpu_temperature": "47.9",
    }
    assert door_stats["fps"] == 9.5  # 95 frames in 10 s: the value is not a default

    seen: set[str] = set()
    device = None
    for topic, cfg in configs.items():
        component, node, object_id, _ = topic.split("/")[1:]
        assert node == f"maskwatch_{DEVICE}"
        uid = cfg["unique_id"]
        key = uid.rsplit(".", 1)[1]
        assert object_id == uid.removeprefix(f"maskwatch.{DEVICE}.").replace(".", "_")
        assert uid not in seen
        seen.add(uid)
        device = device or cfg["device"]
        assert cfg["device"] == device
        assert cfg["availability_topic"] == TOPICS.availability
        assert (cfg["payload_available"], cfg["payload_not_available"]) == ("online", "offline")
        if key in DIAGNOSTIC_KEYS:
            assert cfg["entity_category"] == "diagnostic", uid
        else:
            assert "entity_category" not in cfg, uid
        if key in COUNTER_KEYS:
            assert cfg["state_class"] == "total_increasing"
        if component == "event":
            assert key == "no_mask_event" and cfg["event_types"] == ["no_mask"]
            continue
        assert component == "sensor"
        assert render(cfg["value_template"], latest[cfg["state_topic"]]) == expected[uid], uid
    assert device == {
        "identifiers": [f"maskwatch_{DEVICE}"],
        "name": f"maskwatch {DEVICE}",
        "model": "maskwatch",
        "manufacturer": "maskwatch",
        "sw_version": __version__,
    }
    assert seen >= set(expected)

    # The event fires for door's unmasked person only; the rest render nothing (ignored).
    door_event = configs[f"{PREFIX}/event/maskwatch_{DEVICE}/door_no_mask_event/config"]
    assert door_event["state_topic"] == TOPICS.person
    rendered = [render(door_event["value_template"], m.payload) for m in published.people]
    fired = [json.loads(r) for r in rendered if r]
    assert [(f["event_type"], f["event_id"]) for f in fired] == [("no_mask", "ev-1")]
    assert fired[0]["votes_no_mask"] == 5
    assert rendered.count("") == 3


def test_mask_ratio_and_counters_before_anyone_passed(
    outbox: Outbox, publisher: Publisher, subscribe: Callable[..., Subscriber], mosquitto: Mosquitto
) -> None:
    """A fresh hour: counters read 0 and the ratio unknown ("None"), not a made-up 0 %."""
    config = two_camera_config()
    ledger = Ledger(outbox, TOPICS, publisher=publisher, clock=lambda: T0)
    sub = subscribe(mosquitto.host, mosquitto.port, TOPICS.current)
    ledger.tick()  # publishes the empty running hour
    sub.wait_for(lambda ms: bool(ms), what="totals/current")
    current = sub.on(TOPICS.current)[-1].payload
    by_uid = {p["unique_id"]: p for _, p in discovery_configs(config, TOPICS)}
    assert render(by_uid["maskwatch.entrance.door.people"]["value_template"], current) == "0"
    assert render(by_uid["maskwatch.entrance.door.mask_ratio"]["value_template"], current) == (
        "None"
    )


def test_reannounces_when_home_assistant_says_online(
    tmp_path: Path,
    outbox: Outbox,
    publisher: Publisher,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
) -> None:
    config = two_camera_config()
    count = len(discovery_messages(config, TOPICS))
    live = subscribe(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    publisher.set_discovery(discovery_messages(config, TOPICS), status_topic(PREFIX))
    live.wait_for(lambda ms: len(config_messages(ms)) == count, what="first announcement")
    topics = [m.topic for m in config_messages(live.messages)]

    # The broker loses the retained configs (what an empty retained message does).
    ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-home-assistant")
    ha.connect(mosquitto.host, mosquitto.port)
    ha.loop_start()
    try:
        for topic in topics:
            ha.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        # Home Assistant starts and says so, not retained (its default birth message).
        ha.publish(f"{PREFIX}/status", b"online", qos=1).wait_for_publish(10)
        live.wait_for(lambda ms: len(config_messages(ms)) == 2 * count, what="re-announcement")
    finally:
        ha.disconnect()
        ha.loop_stop()
    fresh = subscribe(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    fresh.wait_for(lambda ms: len(config_messages(ms)) == count, what="retained again")
    assert sorted(m.topic for m in config_messages(fresh.messages)) == sorted(topics)
    assert all(m.retain for m in config_messages(fresh.messages))


def test_configs_come_back_after_a_broker_restart(
    outbox: Outbox,
    publisher: Publisher,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
) -> None:
    config = two_camera_config()
    count = len(discovery_messages(config, TOPICS))
    publisher.set_discovery(discovery_messages(config, TOPICS), status_topic(PREFIX))
    first = subscribe(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    first.wait_for(lambda ms: len(config_messages(ms)) == count, what="configs")
    mosquitto.stop()  # forgets every retained message
    mosquitto.start()
    after = subscribe(mosquitto.host, mosquitto.port, f"{PREFIX}/#")
    after.wait_for(lambda ms: len(config_messages(ms)) == count, what="configs after restart")


# -- the daemon ----------------------------------------------------------------------------------


def daemon_config(tmp_path: Path, port: int, discovery: bool) -> Path:
    """The daemon test config with stats every 0.5 s and discovery on or off."""
    return write_config(
        tmp_path,
        port,
        mqtt=(
            "mqtt:\n"
            "  host: 127.0.0.1\n"
            f"  port: {port}\n"
            "  reconnect_initial_s: 0.2\n"
            "  reconnect_max_s: 1.0\n"
            "  status_interval_s: 0.5\n"
        ),
        homeassistant=f"homeassistant:\n  discovery: {str(discovery).lower()}\n",
    )


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    """run_daemon(config) -> a running `maskwatch run`; killed at teardown if alive."""
    daemons: list[Daemon] = []

    def start(config: Path) -> Daemon:
        daemon = Daemon(config, tmp_path, None)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.kill()


def stop_cleanly(daemon: Daemon) -> None:
    """SIGTERM; exit 0 without errors."""
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert " ERROR " not in daemon.stderr() and "Traceback" not in daemon.stderr()


def test_daemon_announces_itself_and_publishes_stats(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    run_daemon: Callable[[Path], Daemon],
) -> None:
    sub = subscribe(mosquitto.host, mosquitto.port, "#")
    daemon = run_daemon(daemon_config(tmp_path, mosquitto.port, discovery=True))
    stats_topic = f"maskwatch/{DAEMON_DEVICE}/stats"

    def flowing(ms: list[Message]) -> bool:
        """A stats message that saw frames go through the door pipeline."""
        return any(
            m.topic == stats_topic and json.loads(m.payload)["cameras"]["door"]["fps"] > 0
            for m in ms
        )

    count = len(DEVICE_KEYS) + len(CAMERA_KEYS)
    sub.wait_for(
        lambda ms: len(config_messages(ms)) >= count and flowing(ms),
        DEADLINE_S,
        "discovery configs and stats with frames",
    )
    configs = [json.loads(m.payload) for m in config_messages(sub.messages)]
    assert len(configs) == count
    assert {c["device"]["sw_version"] for c in configs} == {__version__}
    assert {c["availability_topic"] for c in configs} == {f"maskwatch/{DAEMON_DEVICE}/availability"}
    stats = json.loads(sub.on(stats_topic)[-1].payload)
    assert set(stats) == {
        "time",
        "uptime_s",
        "accelerator",
        "runtime",
        "inference_ms",
        "cpu_temperature_c",
        "outbox",
        "cameras",
    }
    assert stats["accelerator"] == "cpu"
    assert stats["inference_ms"] > 0
    assert set(stats["cameras"]) == {"door"}
    assert stats["outbox"]["dropped_events"] == 0
    in_view = sub.on(f"maskwatch/{DAEMON_DEVICE}/in_view")
    assert in_view and set(json.loads(in_view[0].payload)["cameras"]) == {"door"}
    # The accelerator entity's template reads the daemon's own stats payload.
    (accelerator,) = [c for c in configs if c["unique_id"].endswith(".accelerator")]
    assert render(accelerator["value_template"], sub.on(stats_topic)[-1].payload) == "cpu"
    stop_cleanly(daemon)


def test_daemon_with_discovery_off_publishes_nothing_for_home_assistant(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    run_daemon: Callable[[Path], Daemon],
) -> None:
    sub = subscribe(mosquitto.host, mosquitto.port, "#")
    daemon = run_daemon(daemon_config(tmp_path, mosquitto.port, discovery=False))
    stats_topic = f"maskwatch/{DAEMON_DEVICE}/stats"
    # Configs would go out right after connecting, before the first stats (one client, QoS 1,
    # in order): once stats arrived, none can still be on the way.
    sub.wait_for(lambda _: bool(sub.on(stats_topic)), DEADLINE_S, "stats")
    assert [m.topic for m in sub.messages if not m.topic.startswith("maskwatch/")] == []
    stop_cleanly(daemon)
