"""A fleet of devices: each device's mosquitto bridged to a central one with the shipped
configs/mosquitto-bridge.conf.

Three real mosquittos on free loopback ports: a central broker and two device brokers, each
running the shipped bridge file (only the central address and the device name replaced). Each
device replays the same cut of real footage (../shared, third-party; the test skips without
it) through the committed model to its own broker under its own `device:` name. A subscriber on
the central broker must see every person event of both devices under its device's topic, each
event_id exactly once, and each device's hourly total, equal to what the device published
locally; the totals stay retained centrally for a subscriber that comes later. A second test
kills the central broker before the replays and starts it again after them: the device brokers
keep everything meanwhile and deliver it once the bridges are back.

Every wait polls for a state (a bridge's notification, a replay's exit, messages received)
against a deadline; nothing depends on how fast the clip is replayed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MOSQUITTO, Message, Mosquitto, Subscriber, persistent_broker, write_cut

REPO = Path(__file__).resolve().parent.parent
BRIDGE_CONF = REPO / "configs" / "mosquitto-bridge.conf"
FOOTAGE = REPO.parent / "shared" / "videos" / "one-by-one-person-detection.mp4"
MODEL = REPO / "models" / "head_detector_int8.tflite"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FOOTAGE.is_file(),
        reason=f"{FOOTAGE} is absent (third-party footage, read from ../shared, never copied)",
    ),
    pytest.mark.skipif(not MODEL.is_file(), reason="the trained model is missing (make model)"),
    pytest.mark.skipif(not MOSQUITTO.exists(), reason=f"{MOSQUITTO} is not installed"),
]

# The placeholders of the shipped bridge file, replaced per device by the test.
EXAMPLE_DEVICE = "entrance-pi"
EXAMPLE_ADDRESS = "address central.example.com:1883"
DEVICES = ("door-north", "door-south")
# Seconds of the footage in which its first three people are seen (as in tests/test_replay.py).
THREE_PEOPLE_S = ((6.5, 7.3), (24.1, 24.9), (51.1, 52.3))
START = "2026-11-21T10:05:00+01:00"
DEADLINE_S = 120.0  # only a broken bridge or replay ever reaches it


@pytest.fixture(scope="module")
def three_people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three people, one after the other, each with 1 s before and 1.5 s after (about 10 s)."""
    return write_cut(FOOTAGE, tmp_path_factory.mktemp("cut") / "three.mp4", THREE_PEOPLE_S,
                     1.0, 1.5)


def bridge_config(device: str, central: Mosquitto) -> list[str]:
    """The shipped bridge file for `device`, pointed at the central broker."""
    text = BRIDGE_CONF.read_text(encoding="utf-8")
    assert text.count(EXAMPLE_ADDRESS) == 1 and EXAMPLE_DEVICE in text
    text = text.replace(EXAMPLE_ADDRESS, f"address {central.host}:{central.port}")
    return text.replace(EXAMPLE_DEVICE, device).splitlines()


def bridge_state(messages: list[Message], device: str) -> bytes | None:
    """The last bridge notification of device's bridge seen (b"1": connected), or None."""
    topic = f"$SYS/broker/connection/maskwatch-{device}/state"
    states = [m.payload for m in messages if m.topic == topic]
    return states[-1] if states else None


def start_replay(clip: Path, device: str, broker: Mosquitto, workdir: Path
                 ) -> subprocess.Popen[str]:
    """`maskwatch replay` of clip as `device` (camera `door`) against its own broker."""
    workdir.mkdir()
    config = workdir / "replay.yaml"
    config.write_text(
        f"device: {device}\ncameras:\n  - name: door\n    source: {clip}\n"
        "tracker:\n  max_age_s: 1.0\ntotals:\n  timezone: Europe/Berlin\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "replay", str(clip), "--config", str(config),
         "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--start-time", START,
         "--state-dir", str(workdir / "state"), "--drain-timeout", "60"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # This checkout's code, whatever else is installed (the cwd is not the checkout).
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )


@pytest.fixture
def replays() -> Iterator[list[subprocess.Popen[str]]]:
    """Collects the test's replay processes and kills those still running at teardown."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def payloads(messages: list[Message], topic: str) -> list[dict[str, Any]]:
    """The JSON payloads received on exactly `topic`, in arrival order."""
    return [json.loads(m.payload) for m in messages if m.topic == topic]


def connected_fleet(
    central: Mosquitto,
    mosquitto_factory: Callable[..., Mosquitto],
    subscribe: Callable[..., Subscriber],
    restart_timeout: str | None = None,
) -> tuple[dict[str, Mosquitto], Subscriber]:
    """The device brokers, once both bridges say (centrally) that they are connected, and
    the central subscriber to the bridges' notifications.

    restart_timeout: replaces the shipped file's value (a test's faster retry)."""
    states = subscribe(central.host, central.port, "$SYS/broker/connection/+/state")
    brokers = {}
    for device in DEVICES:
        lines = bridge_config(device, central)
        if restart_timeout is not None:
            (at,) = [i for i, line in enumerate(lines) if line.startswith("restart_timeout ")]
            lines[at] = f"restart_timeout {restart_timeout}"
        brokers[device] = mosquitto_factory(lines)
    states.wait_for(
        lambda ms: all(bridge_state(ms, d) == b"1" for d in DEVICES), DEADLINE_S,
        "both bridges connected",
    )
    return brokers, states


def replay_on_each(
    clip: Path, brokers: dict[str, Mosquitto], replays: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """Replay clip on every device at once, each to its own broker; each must exit 0 (its
    broker acknowledged every event and the hourly total)."""
    for device, broker in brokers.items():
        replays.append(start_replay(clip, device, broker, tmp_path / device))
    for proc in replays:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-2000:]


def assert_arrived_once(
    hub: Subscriber, local: dict[str, Subscriber], *, reconnected: bool = False
) -> list[set[str]]:
    """Every device's person events reached the hub under its own device topic, each
    event_id once and as published, and its hourly total equal to the local one; nothing
    arrived outside the device trees. Returns each device's event ids.

    reconnected: the bridges reconnected after the total was published. A mosquitto bridge
    then forwards the retained messages of its topics again (the total among them), so the
    total may arrive more than once, always the same."""
    for device in DEVICES:
        person, hourly = f"maskwatch/{device}/person", f"maskwatch/{device}/totals/hourly"
        mine = payloads(local[device].messages, person)
        (local_hourly,) = payloads(local[device].messages, hourly)
        assert len(mine) == local_hourly["people"] >= 2, (device, mine, local_hourly)
        ids = {e["event_id"] for e in mine}
        central_messages = hub.wait_for(
            lambda ms, h=hourly, i=ids, p=person: (  # type: ignore[misc]
                any(m.topic == h for m in ms) and i <= {e["event_id"] for e in payloads(ms, p)}
            ),
            DEADLINE_S, f"{device}'s events and hourly total centrally",
        )
        assert payloads(central_messages, person) == mine, "each event once, as published"
        totals = payloads(central_messages, hourly)
        if reconnected:
            assert totals and all(t == local_hourly for t in totals), totals
        else:
            assert totals == [local_hourly]
    assert {m.topic.split("/")[1] for m in hub.messages} == set(DEVICES)
    per_device = [{e["event_id"] for e in payloads(hub.messages, f"maskwatch/{d}/person")}
                  for d in DEVICES]
    assert not per_device[0] & per_device[1], "the devices' events are told apart"
    return per_device


def assert_totals_retained(
    central: Mosquitto, subscribe: Callable[..., Subscriber], local: dict[str, Subscriber]
) -> None:
    """A subscriber that comes to the central broker later still finds both hourly totals."""
    late = subscribe(central.host, central.port, "maskwatch/+/totals/hourly")
    retained = late.wait_for(lambda ms: len(ms) == len(DEVICES), DEADLINE_S, "retained totals")
    assert all(m.retain for m in retained)
    assert {m.topic: json.loads(m.payload) for m in retained} == {
        f"maskwatch/{d}/totals/hourly": payloads(local[d].messages,
                                                 f"maskwatch/{d}/totals/hourly")[0]
        for d in DEVICES
    }


def report(hub: Subscriber, per_device: list[set[str]], what: str) -> str:
    """One line of what arrived centrally, printed (pytest -s) for the README; checks once
    more, at the end, that no person event arrived twice."""
    received = Counter(e["event_id"] for d in DEVICES
                       for e in payloads(hub.messages, f"maskwatch/{d}/person"))
    assert set(received) == set().union(*per_device) and set(received.values()) == {1}
    counts = ", ".join(f"{d} {len(i)} events" for d, i in zip(DEVICES, per_device, strict=True))
    return f"\n{what}: {counts}, each once; both hourly totals, retained"


def test_two_bridged_devices_arrive_centrally_once_each_under_their_own_topics(
    three_people: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscribe: Callable[..., Subscriber],
    replays: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    central = mosquitto_factory()
    hub = subscribe(central.host, central.port, "maskwatch/#")
    brokers, states = connected_fleet(central, mosquitto_factory, subscribe)
    local = {d: subscribe(b.host, b.port, f"maskwatch/{d}/#") for d, b in brokers.items()}
    replay_on_each(three_people, brokers, replays, tmp_path)
    per_device = assert_arrived_once(hub, local)
    assert_totals_retained(central, subscribe, local)
    print(report(hub, per_device, "bridged"))

    # A device that drops off the network: the central broker publishes its bridge's last
    # will, state 0 (the device's own availability topic cannot change when the link is gone).
    gone, stays = DEVICES
    brokers[gone].stop()
    states.wait_for(lambda ms: bridge_state(ms, gone) == b"0", DEADLINE_S, f"{gone}'s bridge 0")
    assert bridge_state(states.messages, stays) == b"1"


def test_devices_queue_while_the_central_broker_is_down_and_deliver_once_after(
    three_people: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    subscribe: Callable[..., Subscriber],
    replays: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    """The central broker dies (SIGKILL) once both bridges are connected and stays down for
    both replays; each device broker keeps what its device publishes. Once the central broker
    is back (on the same port, its sessions restored from its persistence file), the bridges
    reconnect and deliver everything, each event once."""
    central, saved = persistent_broker(mosquitto_factory, tmp_path / "central-db")
    hub = subscribe(central.host, central.port, "maskwatch/#", session_file=saved)
    # The shipped 2..60 s backoff would let the test wait up to a minute for a reconnect.
    brokers, _ = connected_fleet(central, mosquitto_factory, subscribe, restart_timeout="1")
    local = {d: subscribe(b.host, b.port, f"maskwatch/{d}/#") for d, b in brokers.items()}
    bridge_states = {d: subscribe(b.host, b.port, f"$SYS/broker/connection/maskwatch-{d}/state")
                     for d, b in brokers.items()}
    central.stop()
    for device, states in bridge_states.items():
        states.wait_for(lambda ms, d=device: bridge_state(ms, d) == b"0",  # type: ignore[misc]
                        DEADLINE_S, f"{device}'s bridge down")
    replay_on_each(three_people, brokers, replays, tmp_path)
    assert not any(m.topic.startswith("maskwatch/") for m in hub.messages)

    central.start()
    for device, states in bridge_states.items():
        states.wait_for(lambda ms, d=device: bridge_state(ms, d) == b"1",  # type: ignore[misc]
                        DEADLINE_S, f"{device}'s bridge back")
    per_device = assert_arrived_once(hub, local, reconnected=True)
    assert_totals_retained(central, subscribe, local)
    copies = [len(hub.on(f"maskwatch/{d}/totals/hourly")) for d in DEVICES]
    print(report(hub, per_device, "queued on the devices while the centre was down, then bridged")
          + f" (the totals arrived {' and '.join(map(str, copies))} times)")
