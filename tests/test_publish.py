"""The MQTT publisher and the Ledger against a real mosquitto, with real faults.

Faults: the broker is SIGKILLed and restarted on the same port (it keeps no state, like a
crash), and the publisher reaches it through TcpGate, a plain TCP relay the test can close
(connections refused, as during an outage) or hold (bytes not forwarded, as on a stalled link).
The gate also lets a test re-subscribe after a broker restart before the publisher gets
through, so "every event arrives" does not depend on who reconnects first.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from edge.events import DecisionName, PersonEvent
from edge.outbox import Outbox
from edge.publish import Ledger, Publisher, TlsOptions, Topics

if TYPE_CHECKING:  # the fixtures' types; pytest provides the objects
    from conftest import Message, Mosquitto, Subscriber

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
DEVICE = "entrance"
TOPICS = Topics.for_device("maskwatch", DEVICE)
REPO = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll predicate until true; fail with `what` at the deadline (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting until {what}")
        time.sleep(0.05)


def read_line(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """The next stdout line of proc, stripped; fails the test instead of hanging forever."""
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s).strip()
    except queue.Empty:
        raise AssertionError(f"no output from the child process within {timeout_s}s") from None


def event(n: int, last_seen: datetime, decision: DecisionName = "mask") -> PersonEvent:
    """Person number n, decided at last_seen."""
    return PersonEvent(
        event_id=f"ev-{n:05d}",
        camera="door",
        track_id=n,
        first_seen=last_seen - timedelta(seconds=2),
        last_seen=last_seen,
        decision=decision,
        votes_mask=4 if decision == "mask" else 0,
        votes_no_mask=4 if decision == "no_mask" else 0,
        looks=6,
    )


def event_ids(messages: list[Message]) -> list[str]:
    """event_id of every person message, in arrival order."""
    return [json.loads(m.payload)["event_id"] for m in messages if m.topic == TOPICS.person]


def first_occurrences(ids: list[str]) -> list[str]:
    """ids without repeats, in order of first arrival."""
    return list(dict.fromkeys(ids))


class TcpGate:
    """A TCP relay to 127.0.0.1:upstream_port that can refuse or stall connections.

    hold() stalls one or both directions: holding only broker -> client delivers publishes to
    the broker (and its subscribers) but loses the acknowledgements, which is what a link
    failure at the wrong moment does.
    """

    def __init__(self, upstream_port: int) -> None:
        """Listen on a free loopback port and relay everything (open, flowing)."""
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._to_broker = threading.Event()
        self._to_client = threading.Event()
        self._to_broker.set()
        self._to_client.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        """Accept clients; connect each to the broker unless the gate is closed."""
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            if not self._open.is_set():
                down.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                down.close()  # broker down: the client sees the connection drop
                continue
            with self._lock:
                self._sockets |= {down, up}
            for src, dst, flowing in ((down, up, self._to_broker), (up, down, self._to_client)):
                threading.Thread(target=self._pump, args=(src, dst, flowing), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, flowing: threading.Event) -> None:
        """Copy src to dst while `flowing` is set; when either side ends, end both."""
        try:
            while True:
                flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        """Shut down and forget sockets."""
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            with self._lock:
                self._sockets.discard(s)

    def close(self) -> None:
        """Drop every relayed connection and refuse new ones."""
        self._open.clear()
        with self._lock:
            socks = list(self._sockets)
        self._drop(*socks)

    def open(self) -> None:
        """Relay new connections again."""
        self._open.set()

    def hold(self, to_broker: bool = True, to_client: bool = True) -> None:
        """Stop forwarding bytes in the given directions (connections stay up)."""
        if to_broker:
            self._to_broker.clear()
        if to_client:
            self._to_client.clear()

    def release(self) -> None:
        """Forward both ways again."""
        self._to_broker.set()
        self._to_client.set()

    def shutdown(self) -> None:
        """Stop listening and drop everything."""
        self.release()
        self.close()
        self._listener.close()


@pytest.fixture
def gate(mosquitto: Mosquitto) -> Iterator[TcpGate]:
    """A TcpGate in front of the test broker."""
    g = TcpGate(mosquitto.port)
    yield g
    g.shutdown()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """A fresh state database (hours close as soon as they end)."""
    with Outbox(tmp_path / "state" / "maskwatch.sqlite3", tz=BERLIN, close_delay_s=0) as ob:
        yield ob


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., Publisher]]:
    """make_publisher(outbox, port, **kwargs) -> a started Publisher, stopped at teardown."""
    publishers: list[Publisher] = []

    def make(outbox: Outbox, port: int, start: bool = True, **kwargs: Any) -> Publisher:
        options: dict[str, Any] = {
            "device": DEVICE,
            "host": "127.0.0.1",
            "port": port,
            "reconnect_initial_s": 1,
            "reconnect_max_s": 1,
        }
        options.update(kwargs)
        pub = Publisher(outbox, **options)
        publishers.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in publishers:
        pub.stop(timeout_s=2)


class FixedClock:
    """A settable clock for the Ledger (the hour logic is exercised, not the wall clock)."""

    def __init__(self, now: datetime) -> None:
        """Start at now."""
        self.now = now

    def __call__(self) -> datetime:
        """The current setting."""
        return self.now


# -- unit tests of the wiring (no broker) --------------------------------------------------------


def test_topics() -> None:
    """Topic layout, and names that would break the tree are refused."""
    topics = Topics.for_device("maskwatch", "entrance")
    assert topics.availability == "maskwatch/entrance/availability"
    assert topics.person == "maskwatch/entrance/person"
    assert topics.hourly == "maskwatch/entrance/totals/hourly"
    assert topics.current == "maskwatch/entrance/totals/current"
    assert Topics.for_device("site/a", "cam").person == "site/a/cam/person"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError, match="device name"):
            Topics.for_device("maskwatch", bad)
    with pytest.raises(ValueError, match="base topic"):
        Topics.for_device("mask#", "cam")


class RecordingSink:
    """Test double for the publisher side of the Ledger: remembers what it was told."""

    def __init__(self) -> None:
        """Nothing yet."""
        self.notified = 0
        self.currents: list[dict[str, Any]] = []

    def notify(self) -> None:
        """Count wake-ups."""
        self.notified += 1

    def publish_current(self, payload: dict[str, Any]) -> None:
        """Keep each running-hour payload."""
        self.currents.append(payload)


def test_ledger_updates_current_on_each_decision_and_hour_change(outbox: Outbox) -> None:
    """record -> row + count + current + notify; tick publishes the new hour once."""
    sink = RecordingSink()
    clock = FixedClock(datetime(2026, 6, 15, 10, 20, tzinfo=BERLIN))
    ledger = Ledger(outbox, TOPICS, publisher=sink, clock=clock)

    assert ledger.tick() == []
    assert [c["people"] for c in sink.currents] == [0]
    assert ledger.tick() == []
    assert len(sink.currents) == 1  # nothing changed, nothing sent

    ledger.record(event(1, clock.now - timedelta(seconds=5)))
    ledger.record(event(2, clock.now - timedelta(seconds=1), "no_mask"))
    assert sink.notified == 2
    assert (sink.currents[-1]["mask"], sink.currents[-1]["no_mask"]) == (1, 1)
    assert sink.currents[-1]["hour_start"] == "2026-06-15T10:00:00+02:00"
    assert [r.topic for r in outbox.pending(10)] == [TOPICS.person] * 2

    clock.now = datetime(2026, 6, 15, 11, 0, 1, tzinfo=BERLIN)
    closed = ledger.tick()
    assert [c.payload["people"] for c in closed] == [2]
    assert sink.notified == 3
    assert sink.currents[-1]["hour_start"] == "2026-06-15T11:00:00+02:00"
    assert sink.currents[-1]["people"] == 0
    assert ledger.current_payload() == sink.currents[-1]
    assert outbox.pending(10)[-1].topic == TOPICS.hourly


# -- against the real broker ---------------------------------------------------------------------


def test_backlog_recorded_while_broker_down_is_delivered_in_order(
    mosquitto: Mosquitto,
    gate: TcpGate,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """Broker down from the start: records pile up durably; once it is up, all are delivered,
    in recording order, exactly once, and the outbox empties."""
    mosquitto.stop()
    pub = make_publisher(outbox, gate.port)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    t0 = datetime.now(UTC)
    for i in range(60):
        ledger.record(event(i, t0 + timedelta(milliseconds=i)))
    assert not pub.connected
    assert outbox.stats().person_rows == 60

    gate.close()
    mosquitto.start()
    sub = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    gate.open()

    messages = sub.wait_for(lambda ms: len(event_ids(ms)) >= 60, what="60 person events")
    assert event_ids(messages) == [f"ev-{i:05d}" for i in range(60)]
    wait_until(lambda: outbox.stats().person_rows == 0, "every row is acknowledged")
    assert pub.connected
    online = sub.wait_for(lambda ms: any(m.topic == TOPICS.availability for m in ms))
    assert [m.payload for m in online if m.topic == TOPICS.availability] == [b"online"]
    current = sub.wait_for(lambda ms: any(m.topic == TOPICS.current for m in ms))
    assert json.loads([m for m in current if m.topic == TOPICS.current][-1].payload)["people"] == 60


def test_broker_killed_mid_stream_every_event_arrives_with_its_id(
    mosquitto: Mosquitto,
    gate: TcpGate,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """Events stream; acknowledgements stall with a window of events delivered but not
    acknowledged; the broker is SIGKILLed; recording goes on; the broker restarts. Every event
    arrives at least once, the unacknowledged ones are re-sent with the same id and payload,
    first arrivals keep the recording order, the outbox empties, and `online` and the running
    hour are retained again on the restarted broker."""
    before = subscribe(mosquitto.host, mosquitto.port, TOPICS.person)
    pub = make_publisher(outbox, gate.port, max_inflight=10)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    wait_until(lambda: pub.connected, "the publisher is connected")
    t0 = datetime.now(UTC)
    ids = [f"ev-{i:05d}" for i in range(300)]

    for i in range(100):
        ledger.record(event(i, t0 + timedelta(milliseconds=i)))
    before.wait_for(lambda ms: len(ms) >= 100, what="the first 100 events")
    wait_until(lambda: outbox.stats().person_rows == 0, "the first 100 are acknowledged")

    gate.hold(to_broker=False, to_client=True)  # publishes get through, PUBACKs do not
    for i in range(100, 150):
        ledger.record(event(i, t0 + timedelta(milliseconds=i)))
    before.wait_for(lambda ms: len(ms) >= 110, what="the window of 10 beyond the first 100")
    wait_until(lambda: pub.in_flight == 10, "10 events wait for their acknowledgement")
    unacknowledged = set(ids[100:110])
    assert set(event_ids(before.messages)) == set(ids[:110])

    mosquitto.stop()
    for i in range(150, 300):
        ledger.record(event(i, t0 + timedelta(milliseconds=i)))
    gate.close()
    gate.release()
    mosquitto.start()
    after = subscribe(mosquitto.host, mosquitto.port, TOPICS.person)
    gate.open()

    after.wait_for(
        lambda ms: set(ids) <= set(event_ids(before.messages) + event_ids(ms)),
        timeout_s=60,
        what="every event at least once",
    )
    wait_until(lambda: outbox.stats().person_rows == 0, "every row is acknowledged")

    received = before.messages + after.messages
    assert first_occurrences(event_ids(received)) == ids
    resent = set(event_ids(before.messages)) & set(event_ids(after.messages))
    assert resent >= unacknowledged
    payloads: dict[str, bytes] = {}
    for m in received:
        eid = json.loads(m.payload)["event_id"]
        assert payloads.setdefault(eid, m.payload) == m.payload, f"re-send of {eid} differs"

    fresh = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    retained = fresh.wait_for(
        lambda ms: {TOPICS.availability, TOPICS.current} <= {m.topic for m in ms},
        what="availability and current re-published after the reconnect",
    )
    by_topic = {m.topic: m for m in retained}
    assert by_topic[TOPICS.availability].payload == b"online"
    assert json.loads(by_topic[TOPICS.current].payload)["people"] == 300


@pytest.mark.parametrize("qos", [1, 2])
def test_states_unacknowledged_when_the_broker_dies_are_neither_lost_nor_stuck(
    qos: int,
    mosquitto: Mosquitto,
    gate: TcpGate,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """stats and totals/current sent while the broker's acknowledgements are held back, then
    the broker killed (its retained messages gone) and restarted: the newest values end up
    retained, and later values still go out (no topic waits forever for a lost ack)."""
    pub = make_publisher(outbox, gate.port, qos=qos)
    wait_until(lambda: pub.connected, "connected")
    live = subscribe(mosquitto.host, mosquitto.port, TOPICS.stats)

    states = {TOPICS.stats, TOPICS.current}

    def publish(value: int) -> None:
        pub.publish_state(TOPICS.stats, {"v": value})
        pub.publish_current({"v": value})

    def newest_is(value: int) -> Callable[[list[Message]], bool]:
        def check(ms: list[Message]) -> bool:
            last = {m.topic: json.loads(m.payload)["v"] for m in ms if m.topic in states}
            return last.get(TOPICS.stats) == value and last.get(TOPICS.current) == value

        return check

    publish(1)
    live.wait_for(lambda ms: any(json.loads(m.payload)["v"] == 1 for m in ms), what="v1")
    gate.hold(to_broker=False, to_client=True)  # the broker hears v2, its acks never return
    publish(2)
    time.sleep(0.3)
    publish(3)  # waits behind the unacknowledged v2
    time.sleep(0.3)
    mosquitto.stop()
    publish(4)
    gate.close()
    gate.release()
    mosquitto.start()
    gate.open()
    wait_until(lambda: pub.connected, "reconnected")
    fresh = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    fresh.wait_for(newest_is(4), what="v4 on stats and totals/current", timeout_s=20)
    late = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    retained = late.wait_for(newest_is(4), what="v4 retained for a later subscriber")
    assert all(m.retain for m in retained if m.topic in states)
    publish(5)
    fresh.wait_for(newest_is(5), what="v5 after the reconnect", timeout_s=20)


def test_retained_totals_and_availability_reach_a_new_subscriber(
    mosquitto: Mosquitto,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """After an hour closes, a subscriber that arrives later gets the retained hourly total,
    the running hour and `online`, all flagged retained."""
    clock = FixedClock(datetime(2026, 10, 25, 1, 40, tzinfo=UTC))  # 02:40 CET, second 02:00
    live = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    pub = make_publisher(outbox, mosquitto.port)
    ledger = Ledger(outbox, pub.topics, publisher=pub, clock=clock)
    ledger.tick()
    decisions: tuple[DecisionName, ...] = ("mask", "mask", "no_mask", "undecided")
    for i, decision in enumerate(decisions):
        ledger.record(event(i, clock.now - timedelta(minutes=i), decision))
    clock.now = datetime(2026, 10, 25, 2, 5, tzinfo=UTC)  # 03:05 CET
    closed = ledger.tick()
    assert len(closed) == 1
    ledger.record(event(9, clock.now, "no_mask"))

    def current_has_the_new_hour(ms: list[Message]) -> bool:
        currents = [json.loads(m.payload) for m in ms if m.topic == TOPICS.current]
        return bool(currents) and currents[-1]["people"] == 1

    live.wait_for(current_has_the_new_hour, what="totals/current of 03:00 with one person")
    wait_until(lambda: not outbox.pending(1), "the outbox is empty")

    fresh = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    retained = fresh.wait_for(
        lambda ms: {TOPICS.hourly, TOPICS.current, TOPICS.availability} <= {m.topic for m in ms},
        what="the three retained topics",
    )
    by_topic = {m.topic: m for m in retained}
    assert all(by_topic[t].retain for t in (TOPICS.hourly, TOPICS.current, TOPICS.availability))
    assert by_topic[TOPICS.availability].payload == b"online"
    hourly = json.loads(by_topic[TOPICS.hourly].payload)
    assert hourly["hour_start"] == "2026-10-25T02:00:00+01:00"
    assert hourly["hour_end"] == "2026-10-25T03:00:00+01:00"
    assert (hourly["people"], hourly["mask"], hourly["no_mask"], hourly["undecided"]) == (
        4,
        2,
        1,
        1,
    )
    assert hourly["mask_ratio"] == pytest.approx(2 / 3)
    assert hourly["cameras"]["door"]["people"] == 4
    current = json.loads(by_topic[TOPICS.current].payload)
    assert current["hour_start"] == "2026-10-25T03:00:00+01:00"
    assert (current["people"], current["no_mask"], current["mask_ratio"]) == (1, 1, 0.0)
    assert not [m for m in retained if m.topic == TOPICS.person]  # persons are not retained


def test_hours_ended_during_downtime_are_published_once(
    mosquitto: Mosquitto,
    tmp_path: Path,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """Run 1 counts people in the 10:00 hour and stops at 10:40 without a broker; run 2 starts
    at 14:10: one hourly message for 10:00, none for 11-13, nothing more on later ticks."""
    db = tmp_path / "state.sqlite3"
    clock = FixedClock(datetime(2026, 6, 15, 10, 5, tzinfo=BERLIN))
    with Outbox(db, tz=BERLIN, close_delay_s=30) as first_run:
        ledger = Ledger(first_run, TOPICS, clock=clock)
        ledger.tick()
        for i in range(3):
            ledger.record(event(i, clock.now + timedelta(minutes=i)))
        clock.now = datetime(2026, 6, 15, 10, 40, tzinfo=BERLIN)
        ledger.tick()

    sub = subscribe(mosquitto.host, mosquitto.port, TOPICS.hourly)
    clock.now = datetime(2026, 6, 15, 14, 10, tzinfo=BERLIN)
    with Outbox(db, tz=BERLIN, close_delay_s=30) as second_run:
        pub = make_publisher(second_run, mosquitto.port)
        ledger = Ledger(second_run, pub.topics, publisher=pub, clock=clock)
        assert [c.payload["hour_start"] for c in ledger.tick()] == ["2026-06-15T10:00:00+02:00"]
        clock.now += timedelta(minutes=5)
        assert ledger.tick() == []
        sub.wait_for(lambda ms: len(ms) >= 1, what="the hourly total")
        wait_until(lambda: not second_run.pending(1), "the outbox is empty")
        assert pub.stop(timeout_s=10)

    hourly = [json.loads(m.payload) for m in sub.messages]
    assert [(h["hour_start"], h["people"]) for h in hourly] == [("2026-06-15T10:00:00+02:00", 3)]


def test_stop_flushes_then_leaves_offline(
    mosquitto: Mosquitto,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """stop() sends what is queued, then a retained `offline`, then disconnects."""
    sub = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    pub = make_publisher(outbox, mosquitto.port)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    wait_until(lambda: pub.connected, "connected")
    t0 = datetime.now(UTC)
    for i in range(40):
        ledger.record(event(i, t0))
    assert pub.stop(timeout_s=30) is True
    assert not pub.connected
    assert outbox.stats().person_rows == 0

    messages = sub.wait_for(
        lambda ms: any(m.topic == TOPICS.availability and m.payload == b"offline" for m in ms),
        what="offline",
    )
    assert event_ids(messages) == [f"ev-{i:05d}" for i in range(40)]
    fresh = subscribe(mosquitto.host, mosquitto.port, TOPICS.availability)
    retained = fresh.wait_for(lambda ms: len(ms) >= 1, what="retained availability")
    assert (retained[0].payload, retained[0].retain) == (b"offline", True)


def test_stop_with_broker_down_keeps_rows_for_next_start(
    mosquitto: Mosquitto,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
) -> None:
    """No broker: stop() returns (False) and the rows stay for the next run."""
    mosquitto.stop()
    pub = make_publisher(outbox, mosquitto.port)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    t0 = datetime.now(UTC)
    for i in range(5):
        ledger.record(event(i, t0))
    assert pub.stop(timeout_s=2) is False
    assert [json.loads(r.payload)["event_id"] for r in outbox.pending(10)] == [
        f"ev-{i:05d}" for i in range(5)
    ]


def test_in_flight_messages_are_bounded_on_a_stalled_link(
    mosquitto: Mosquitto,
    gate: TcpGate,
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """With acknowledgements stalled, only max_inflight rows leave the outbox for the client;
    the rest wait on disk and follow, in order, once the link flows again."""
    sub = subscribe(mosquitto.host, mosquitto.port, TOPICS.person)
    pub = make_publisher(outbox, gate.port, max_inflight=5)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    wait_until(lambda: pub.connected, "connected")
    gate.hold()
    t0 = datetime.now(UTC)
    for i in range(200):
        ledger.record(event(i, t0))
    wait_until(lambda: pub.in_flight == 5, "the window is full")
    for _ in range(10):  # the sender has nothing else to do: the window must stay at its bound
        assert pub.in_flight == 5
        pub.notify()
        time.sleep(0.02)
    assert outbox.stats().person_rows == 200
    assert sub.messages == []

    gate.release()
    messages = sub.wait_for(lambda ms: len(ms) >= 200, what="all 200 events")
    assert event_ids(messages) == [f"ev-{i:05d}" for i in range(200)]
    wait_until(lambda: outbox.stats().person_rows == 0, "every row is acknowledged")


_RECORD_UNTIL_WINDOW_FULL = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime, timezone
    from edge.events import PersonEvent
    from edge.outbox import Outbox
    from edge.publish import Ledger, Publisher

    outbox = Outbox(sys.argv[1], tz="UTC")
    pub = Publisher(outbox, device="entrance", host="127.0.0.1", port=int(sys.argv[2]),
                    max_inflight=5)
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    pub.start()
    while not pub.connected:
        time.sleep(0.02)
    print("connected", flush=True)
    sys.stdin.readline()  # the test stalls the acknowledgements now
    now = datetime.now(timezone.utc)
    for i in range(30):
        ledger.record(PersonEvent(f"ev-{i:05d}", "door", i, now, now, "mask", 3, 0, 3))
    print("recorded", flush=True)
    time.sleep(600)
    """
)


def test_rows_sent_but_unacknowledged_survive_a_crash(
    mosquitto: Mosquitto,
    gate: TcpGate,
    tmp_path: Path,
    make_publisher: Callable[..., Publisher],
    subscribe: Callable[..., Subscriber],
) -> None:
    """A daemon SIGKILLed while 5 events are delivered but not acknowledged: the rows are still
    on disk, and the next run delivers them again (same ids) together with the rest."""
    db = tmp_path / "state.sqlite3"
    sub = subscribe(mosquitto.host, mosquitto.port, TOPICS.person)
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECORD_UNTIL_WINDOW_FULL, str(db), str(gate.port)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None
        assert read_line(proc) == "connected"
        gate.hold(to_broker=False, to_client=True)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert read_line(proc) == "recorded"
        sub.wait_for(lambda ms: len(ms) >= 5, what="the 5 events in flight")
        time.sleep(0.3)  # give anything beyond the window the chance to get through (it must not)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    gate.close()
    gate.release()
    gate.open()
    assert event_ids(sub.messages) == [f"ev-{i:05d}" for i in range(5)]

    with Outbox(db, tz="UTC") as outbox:
        assert outbox.stats().person_rows == 30
        make_publisher(outbox, gate.port)
        messages = sub.wait_for(lambda ms: len(ms) >= 35, what="30 events after the restart")
        wait_until(lambda: outbox.stats().person_rows == 0, "every row is acknowledged")
    assert event_ids(messages)[5:] == [f"ev-{i:05d}" for i in range(30)]


_PUBLISH_THEN_SLEEP = textwrap.dedent(
    """
    import sys, time
    from edge.outbox import Outbox
    from edge.publish import Publisher

    outbox = Outbox(sys.argv[1], tz="UTC")
    pub = Publisher(outbox, device=sys.argv[2], host="127.0.0.1", port=int(sys.argv[3]))
    pub.start()
    while not pub.connected:
        time.sleep(0.02)
    print("connected", flush=True)
    time.sleep(600)
    """
)


def test_last_will_says_offline_when_the_process_dies(
    mosquitto: Mosquitto, tmp_path: Path, subscribe: Callable[..., Subscriber]
) -> None:
    """SIGKILL a process running a Publisher: the broker publishes its retained `offline`."""
    topics = Topics.for_device("maskwatch", "doomed")
    sub = subscribe(mosquitto.host, mosquitto.port, topics.availability)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _PUBLISH_THEN_SLEEP,
            str(tmp_path / "s.sqlite3"),
            "doomed",
            str(mosquitto.port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == "connected"
        sub.wait_for(lambda ms: [m.payload for m in ms] == [b"online"], what="online")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    messages = sub.wait_for(lambda ms: len(ms) >= 2, what="the last will")
    assert [m.payload for m in messages] == [b"online", b"offline"]
    fresh = subscribe(mosquitto.host, mosquitto.port, topics.availability)
    retained = fresh.wait_for(lambda ms: len(ms) >= 1, what="retained availability")
    assert (retained[0].payload, retained[0].retain) == (b"offline", True)


# -- TLS and credentials -------------------------------------------------------------------------


def _make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost, made by openssl."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=maskwatch test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture
def tls_broker(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> tuple[Mosquitto, Path]:
    """A broker that speaks only TLS and wants user 'edge' with password 's3cret'."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl and mosquitto_passwd are needed to set up a TLS broker")
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _make_certificates(certs)
    passwd = certs / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "s3cret"],
        check=True,
        capture_output=True,
    )
    broker = mosquitto_factory(
        [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", f"password_file {passwd}"],
        anonymous=False,
    )
    return broker, ca


def test_tls_with_password_delivers(
    tls_broker: tuple[Mosquitto, Path],
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
) -> None:
    """TLS verified against the test CA plus username/password: rows get acknowledged."""
    broker, ca = tls_broker
    pub = make_publisher(
        outbox, broker.port, tls=TlsOptions(ca_file=ca), username="edge", password="s3cret"
    )
    ledger = Ledger(outbox, pub.topics, publisher=pub)
    ledger.record(event(1, datetime.now(UTC)))
    wait_until(lambda: pub.connected, "connected over TLS")
    wait_until(lambda: not outbox.pending(1), "the broker acknowledged the event")


def test_wrong_password_is_refused_and_rows_stay(
    tls_broker: tuple[Mosquitto, Path],
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker refuses bad credentials: logged as refused, nothing lost meanwhile."""
    broker, ca = tls_broker
    pub = make_publisher(
        outbox, broker.port, tls=TlsOptions(ca_file=ca), username="edge", password="wrong"
    )
    Ledger(outbox, pub.topics, publisher=pub).record(event(1, datetime.now(UTC)))
    wait_until(lambda: "not authorised" in broker.log.read_text(), "the broker refused us")
    wait_until(lambda: "refused the connection" in caplog.text, "the refusal is logged")
    assert not pub.connected
    assert len(outbox.pending(10)) == 1


def test_untrusted_broker_certificate_is_logged_and_rows_stay(
    tls_broker: tuple[Mosquitto, Path],
    outbox: Outbox,
    make_publisher: Callable[..., Publisher],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker certificate from another CA is rejected; the log says why."""
    broker, _ = tls_broker
    other = tmp_path / "other-ca"
    other.mkdir()
    other_ca, _, _ = _make_certificates(other)
    pub = make_publisher(
        outbox, broker.port, tls=TlsOptions(ca_file=other_ca), username="edge", password="s3cret"
    )
    Ledger(outbox, pub.topics, publisher=pub).record(event(1, datetime.now(UTC)))
    wait_until(lambda: "certificate verify failed" in caplog.text, "the TLS failure is logged")
    assert not pub.connected
    assert len(outbox.pending(10)) == 1


def test_missing_tls_file_is_a_clear_error(tmp_path: Path, outbox: Outbox) -> None:
    """A CA path that does not exist is named in the error."""
    missing = tmp_path / "nope.crt"
    with pytest.raises(ValueError, match=str(missing)):
        Publisher(outbox, device=DEVICE, host="127.0.0.1", tls=TlsOptions(ca_file=missing))
