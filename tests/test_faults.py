"""Fault injection against the real daemon: broker outages, SIGKILL, a vanishing camera.

Every test runs `python -m edge run --config FILE` as a subprocess, as systemd would, on a cut of
the one-by-one footage (../shared, third-party, read in place: the tests skip without it) through
the committed model, with its real SQLite state file and a real mosquitto on a free loopback
port. Nothing is mocked; the state file is only ever opened read-only by the tests.

Determinism:
- The clip is six short windows of the footage, one person each (197 frames at 10 fps, paced
  in real time like a camera); a clean run counts the people in it. Frames of a file are never
  dropped and carry their position in the file as time stamp, so every pass over the clip makes
  the same decisions, whatever the CPU load: faulted runs are compared with a clean one.
- No test races the clip: every faulted daemon reads it in a loop, so whatever a test waits
  for (people counted, queued, delivered; a reconnect) comes however slow the machine is, and
  the test ends the daemon with SIGTERM once it has what it needs. Each complete pass must
  decide like the clean run; the last person may be cut short by the stop.
- Hours are local to `totals.timezone`. The tests pick, among UTC, Asia/Kolkata (+05:30) and
  Asia/Kathmandu (+05:45), whose hours end at :00, :30 and :15 UTC, the zone whose current hour
  has the most time left (at least 30 minutes), so no test straddles an hour boundary and the
  hour's totals are those of totals/current.
- A subscriber that must not miss what is published while it reconnects to a restarted broker
  keeps a persistent session (clean_session false) in a broker that saves its state every
  second: a restarted broker queues QoS 1 messages for it even before it is back.

Every wait polls against a deadline; nothing asserts how long anything took. The figures each
test measures are printed (run with -s to see them) and quoted in README.md ("Reliability").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import MOSQUITTO, Message, Mosquitto, Subscriber, persistent_broker, write_cut

from edge.outbox import STATE_FILE_NAME

REPO = Path(__file__).resolve().parent.parent
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

DEVICE = "testdev"
PERSON = f"maskwatch/{DEVICE}/person"
CURRENT = f"maskwatch/{DEVICE}/totals/current"
HOURLY = f"maskwatch/{DEVICE}/totals/hourly"
STATS = f"maskwatch/{DEVICE}/stats"
STATS_INTERVAL_S = 0.5
# How long a wait may take before the test fails: generous, since the daemon loads a model and
# shares two cores with other work. Only a broken daemon ever reaches it.
DEADLINE_S = 300.0

# Seconds (in the footage) during which each of its six people is detected; the clip keeps
# CUT_BEFORE_S before and CUT_AFTER_S after each, enough for the track to end (max_age_s 1).
PEOPLE_SEEN_S = ((6.5, 7.3), (24.1, 24.9), (51.1, 52.3), (75.0, 75.7), (84.6, 85.0), (124.8, 125.6))
CUT_BEFORE_S, CUT_AFTER_S = 1.0, 1.5
MAX_AGE_S = 1.0
KILLS = 20
KILL_SEED = 20261121


# -- footage -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six people, one after the other (about 20 s)."""
    return write_cut(FOOTAGE, tmp_path_factory.mktemp("footage") / "six.mp4", PEOPLE_SEEN_S,
                     CUT_BEFORE_S, CUT_AFTER_S)


@pytest.fixture(scope="module")
def one_person_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first person only (about 3 s), for a camera that loops quickly."""
    return write_cut(FOOTAGE, tmp_path_factory.mktemp("footage") / "one.mp4",
                     PEOPLE_SEEN_S[:1], CUT_BEFORE_S, CUT_AFTER_S)


def steady_timezone(now: datetime | None = None) -> str:
    """The zone, of three whose hours end at :00, :15 and :30 UTC, with the most time left in
    its current hour (at least 30 minutes): tests using it never cross an hour boundary."""
    now = now or datetime.now(timezone.utc)

    def left(name: str) -> timedelta:
        local = now.astimezone(ZoneInfo(name))
        return local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - local

    return max(("UTC", "Asia/Kolkata", "Asia/Kathmandu"), key=left)


# -- the daemon --------------------------------------------------------------------------------


def write_config(
    directory: Path,
    source: Path,
    port: int,
    tz: str,
    *,
    loop: bool,
    pacing: str = "realtime",
    status_interval_s: float = 60.0,
) -> Path:
    """A daemon config: the clip (paced in real time unless told), the committed model on one
    thread, the test broker, state in directory/state, hours local to tz."""
    config = directory / "maskwatch.yaml"
    config.write_text(
        f"device: {DEVICE}\n"
        "cameras:\n"
        "  - name: door\n"
        f"    source: {source}\n"
        f"    loop: {str(loop).lower()}\n"
        f"    file_pacing: {pacing}\n"
        "    reconnect_initial_s: 0.2\n"
        "    reconnect_max_s: 1.0\n"
        f"detector:\n  model: {MODEL}\n  accelerator: cpu\n  threads: 1\n"
        f"tracker:\n  max_age_s: {MAX_AGE_S}\n"
        "mqtt:\n"
        "  host: 127.0.0.1\n"
        f"  port: {port}\n"
        "  reconnect_initial_s: 0.2\n"
        "  reconnect_max_s: 1.0\n"
        f"  status_interval_s: {status_interval_s}\n"
        # A stop waits for the broker to take what is queued for as long as that takes here:
        # with the default 5 s a loaded machine may stop with the last person still queued
        # (kept for the next start, as designed), and the test would race the clock.
        "  stop_flush_s: 300\n"
        f"totals:\n  timezone: {tz}\n"
        f"state:\n  directory: {directory / 'state'}\n"
        "logging:\n  level: INFO\n  format: text\n"
    )
    return config


class DaemonProcess:
    """One `maskwatch run` subprocess; its output goes to a file (a pipe could fill up)."""

    def __init__(self, config: Path, log: Path) -> None:
        """Start the daemon outside systemd (no notify socket, no watchdog)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY")
        }
        self.log = log
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                cwd=config.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """What the daemon logged so far."""
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def wait_for_log(self, text: str, count: int = 1, timeout_s: float = DEADLINE_S) -> None:
        """Poll until `text` appears `count` times in the log; fail if the daemon exits first."""
        deadline = time.monotonic() + timeout_s
        while self.output().count(text) < count:
            if not self.alive():
                raise AssertionError(f"daemon exited before logging {text!r}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {text!r} in {timeout_s}s:\n{self.output()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed (a crash or a power cut)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        """The exit code; fails the test (with the log) if it does not exit in time."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout_s}s:\n{self.output()}"
            ) from None

    def cleanup(self) -> None:
        """Teardown: kill it if a failed test left it running."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Collects the test's daemon processes and kills those still alive at teardown."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.cleanup()


def start(daemons: list[DaemonProcess], config: Path) -> DaemonProcess:
    """Start one daemon, its log numbered after the ones before."""
    daemon = DaemonProcess(config, config.parent / f"daemon-{len(daemons)}.log")
    daemons.append(daemon)
    return daemon


# -- the state file, read-only ---------------------------------------------------------------


@dataclass(frozen=True)
class StateSnapshot:
    """What the state file holds: person events waiting for the broker, counts per hour."""

    waiting: list[dict[str, Any]]  # person payloads still in the outbox, oldest first
    hourly_rows: int  # closed-hour totals still in the outbox
    counted: dict[int, int]  # people counted per hour (key: the hour's start, Unix seconds)

    @property
    def people(self) -> int:
        """People counted over all hours."""
        return sum(self.counted.values())


def read_state(directory: Path) -> StateSnapshot:
    """Read the daemon's SQLite file read-only (no checkpoint, no recovery written back), so
    that a restarted daemon finds exactly what the killed one left."""
    db = directory / "state" / STATE_FILE_NAME
    empty = StateSnapshot([], 0, {})
    if not db.exists():
        return empty
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            rows = conn.execute("SELECT kind, payload FROM outbox ORDER BY id").fetchall()
            counts = conn.execute(
                "SELECT hour_start, SUM(mask + no_mask + undecided) FROM counters "
                "GROUP BY hour_start"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # killed before the schema was created
                return empty
            raise
    return StateSnapshot(
        waiting=[json.loads(p) for kind, p in rows if kind == "person"],
        hourly_rows=sum(1 for kind, _ in rows if kind == "hourly"),
        counted={int(h): int(n) for h, n in counts},
    )


def wait_for_state(
    directory: Path,
    predicate: Callable[[StateSnapshot], bool],
    daemon: DaemonProcess,
    what: str,
    poll_s: float = 0.05,
) -> StateSnapshot:
    """Poll the state file until predicate holds; fail if the daemon exits first."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        state = read_state(directory)
        if predicate(state):
            return state
        if not daemon.alive():
            raise AssertionError(f"daemon exited before {what}:\n{daemon.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {DEADLINE_S}s; state {state}:\n{daemon.output()}")
        time.sleep(poll_s)


# -- what reached the broker -----------------------------------------------------------------


def people(messages: list[Message]) -> list[dict[str, Any]]:
    """Every person event received (re-sends included), in arrival order."""
    return [json.loads(m.payload) for m in messages if m.topic == PERSON]


def distinct(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One event per event_id, asserting that every copy of an id is the same event."""
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        first = by_id.setdefault(event["event_id"], event)
        assert first == event, f"{event['event_id']} arrived as two events: {first}, {event}"
    return by_id


def hour_key(iso: str, tz: str) -> int:
    """Unix start of the local hour (in tz) containing the ISO 8601 time."""
    local = datetime.fromisoformat(iso).astimezone(ZoneInfo(tz))
    return int(local.replace(minute=0, second=0, microsecond=0).timestamp())


def per_hour(events: dict[str, dict[str, Any]], tz: str) -> dict[int, Counter[str]]:
    """Decisions per local hour of last_seen (where the daemon counts a person)."""
    hours: dict[int, Counter[str]] = {}
    for event in events.values():
        hours.setdefault(hour_key(event["last_seen"], tz), Counter())[event["decision"]] += 1
    return hours


def retained(host: str, port: int, topic: str) -> dict[str, Any]:
    """The retained message on topic, read by a fresh subscriber."""
    sub = Subscriber(host, port, topic)
    try:
        (message,) = sub.wait_for(lambda ms: any(m.retain for m in ms), 30, f"retained {topic}")
        return json.loads(message.payload)
    finally:
        sub.close()


def decision(event: dict[str, Any]) -> tuple[Any, ...]:
    """What was decided about one person, without what differs between runs (event ids,
    wall-clock times): the track (numbered from 1 in every pass), the decision, the votes,
    the looks and how long the person was seen."""
    seen = datetime.fromisoformat(event["last_seen"]) - datetime.fromisoformat(
        event["first_seen"]
    )
    return (event["track_id"], event["decision"], event["votes_mask"], event["votes_no_mask"],
            event["looks"], round(seen.total_seconds(), 1))


# -- the reference -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanRun:
    """What the daemon publishes over the clip with nothing going wrong."""

    events: dict[str, dict[str, Any]]
    current: dict[str, Any]


@pytest.fixture(scope="module")
def clean_run(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """One undisturbed run over the clip, to compare the faulted ones with."""
    workdir = tmp_path_factory.mktemp("clean")
    (workdir / "broker").mkdir()
    broker = Mosquitto(workdir / "broker")
    broker.start()
    sub = Subscriber(broker.host, broker.port, f"maskwatch/{DEVICE}/#")
    tz = steady_timezone()
    daemon = DaemonProcess(
        # As fast as it goes: a file's frames are all processed, in order, with their
        # positions as time stamps, whatever the pacing, so the decisions are the same.
        write_config(workdir, clip, broker.port, tz, loop=False, pacing="asap"),
        workdir / "daemon.log",
    )
    try:
        assert daemon.wait() == 0, daemon.output()
        events = distinct(people(sub.messages))
        current = retained(broker.host, broker.port, CURRENT)
    finally:
        daemon.cleanup()
        sub.close()
        broker.stop()
    # The previous model counted all 6, the shipped one 5; the outages below need at least 5.
    assert len(events) >= 5, f"the clean run counts too few of the clip's 6 people: {events}"
    assert current["people"] == len(events), current
    return CleanRun(events, current)


def assert_passes_like_clean_run(clean: CleanRun, events: dict[str, dict[str, Any]]) -> None:
    """Every pass over the looping clip decided its people as the clean run did, in order;
    the last person is left out, as the stop may have ended their track early."""
    def by_time(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(found.values(), key=lambda e: datetime.fromisoformat(e["first_seen"]))

    expected = [decision(e) for e in by_time(clean.events)]
    decided = [decision(e) for e in by_time(events)][:-1]
    assert decided == [expected[i % len(expected)] for i in range(len(decided))]


def assert_counted_once_and_totals_agree(
    events: dict[str, dict[str, Any]], state: StateSnapshot, broker: Mosquitto, tz: str
) -> None:
    """The state file counted exactly the distinct events delivered, per hour, and the
    retained totals/current of the hour say the same."""
    hours = per_hour(events, tz)
    assert {h: sum(c.values()) for h, c in hours.items()} == state.counted
    current = retained(broker.host, broker.port, CURRENT)
    (hour,) = hours
    assert hour_key(current["hour_start"], tz) == hour
    assert current["people"] == len(events)
    for kind in ("mask", "no_mask", "undecided"):
        assert current[kind] == hours[hour][kind], (kind, current, hours)


def stop_once_delivered(
    daemon: DaemonProcess, sub: Subscriber, state_dir: Path, at_least: int
) -> None:
    """Wait until the daemon has counted at least `at_least` people and the broker has all
    of them (the outbox empty), then stop it with SIGTERM; it must exit 0."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        state = read_state(state_dir)
        delivered = len(distinct(people(sub.messages)))
        if state.people >= at_least and not state.waiting and delivered >= state.people:
            break
        assert daemon.alive(), daemon.output()
        assert time.monotonic() < deadline, (
            f"{state.people} counted, {len(state.waiting)} waiting, {delivered} delivered after "
            f"{DEADLINE_S}s:\n{daemon.output()}"
        )
        time.sleep(0.1)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.output()


def assert_nothing_lost(
    sub: Subscriber, broker: Mosquitto, clean: CleanRun, tz: str, state_dir: Path
) -> tuple[list[Message], dict[str, dict[str, Any]]]:
    """After the daemon stopped: the outbox is empty, every counted person arrived (once as
    an event, whatever the re-sends), the totals agree, each pass decided like the clean run.

    Returns all person messages received (re-sends included) and the distinct events.
    """
    after = read_state(state_dir)
    assert after.waiting == [] and after.hourly_rows == 0, "the outbox was not emptied"
    messages = sub.wait_for(
        lambda ms: len(distinct(people(ms))) >= after.people, DEADLINE_S, "every event"
    )
    events = distinct(people(messages))
    assert len(events) == after.people
    assert_counted_once_and_totals_agree(events, after, broker, tz)
    assert_passes_like_clean_run(clean, events)
    assert sub.on(HOURLY) == [], "no hour ended during the test (see steady_timezone)"
    return messages, events


# -- the tests ---------------------------------------------------------------------------------


def test_broker_down_for_the_first_half_of_a_run_loses_nothing(
    tmp_path: Path,
    clip: Path,
    clean_run: CleanRun,
    mosquitto_factory: Callable[..., Mosquitto],
    subscribe: Callable[..., Subscriber],
    daemons: list[DaemonProcess],
) -> None:
    """The daemon starts with no broker and counts half a pass's people into its state file;
    then the broker comes: every event arrives, and the totals agree with what was counted."""
    broker, saved = persistent_broker(mosquitto_factory, tmp_path / "broker-db")
    sub = subscribe(broker.host, broker.port, f"maskwatch/{DEVICE}/#", session_file=saved)
    broker.stop()
    tz = steady_timezone()
    daemon = start(daemons, write_config(tmp_path, clip, broker.port, tz, loop=True))
    half = math.ceil(len(clean_run.events) / 2)
    during = wait_for_state(
        tmp_path, lambda s: len(s.waiting) >= half, daemon, f"{half} people queued"
    )
    outage_s = time.monotonic() - daemon.started
    broker.start()
    daemon.wait_for_log("connected to MQTT broker")
    stop_once_delivered(daemon, sub, tmp_path, at_least=len(clean_run.events))

    messages, events = assert_nothing_lost(sub, broker, clean_run, tz, tmp_path)
    assert set(events) >= {e["event_id"] for e in during.waiting}
    print(
        f"\nbroker down {outage_s:.1f} s from the daemon's start; {len(during.waiting)} "
        f"events queued meanwhile; {len(events)}/{len(events)} delivered, "
        f"{len(people(messages)) - len(events)} re-sent"
    )


def test_broker_restarted_three_times_during_a_run_loses_nothing(
    tmp_path: Path,
    clip: Path,
    clean_run: CleanRun,
    mosquitto_factory: Callable[..., Mosquitto],
    subscribe: Callable[..., Subscriber],
    daemons: list[DaemonProcess],
) -> None:
    """The broker is killed once the 1st, 3rd and 4th person is counted and started again
    once one more person has been counted while it was away; the daemon reconnects each
    time: every event arrives, and the totals agree with what was counted."""
    broker, saved = persistent_broker(mosquitto_factory, tmp_path / "broker-db")
    sub = subscribe(broker.host, broker.port, f"maskwatch/{DEVICE}/#", session_file=saved)
    tz = steady_timezone()
    daemon = start(daemons, write_config(tmp_path, clip, broker.port, tz, loop=True))
    daemon.wait_for_log("connected to MQTT broker")
    outages: list[float] = []
    queued: list[int] = []
    for restart, down_after in enumerate((1, 3, 4), start=1):
        wait_for_state(
            tmp_path,
            lambda s, n=down_after: s.people >= n,  # type: ignore[misc]
            daemon,
            f"person {down_after} counted",
            poll_s=0.01,
        )
        down_at = time.monotonic()
        broker.stop()
        counted_at_kill = read_state(tmp_path).people
        during = wait_for_state(
            tmp_path,
            lambda s, n=counted_at_kill: s.people > n and bool(s.waiting),  # type: ignore[misc]
            daemon,
            "a person counted and queued while the broker is down",
        )
        broker.start()
        outages.append(time.monotonic() - down_at)
        queued.append(len(during.waiting))
        # The camera loops: the daemon is still running, however long the outage took.
        daemon.wait_for_log("connected to MQTT broker", count=restart + 1)
        sub.wait_connected(restart + 1)
    stop_once_delivered(daemon, sub, tmp_path, at_least=len(clean_run.events))

    messages, events = assert_nothing_lost(sub, broker, clean_run, tz, tmp_path)
    print(
        f"\n3 broker restarts, down {', '.join(f'{s:.1f}' for s in outages)} s with "
        f"{', '.join(map(str, queued))} events queued; {len(events)}/{len(events)} delivered, "
        f"{len(people(messages)) - len(events)} re-sent"
    )


def test_sigkill_at_twenty_random_points_loses_and_double_counts_nothing(
    tmp_path: Path,
    clip: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    daemons: list[DaemonProcess],
) -> None:
    """The daemon (a looping, live-paced camera) is killed 20 times, at a random delay after it
    starts or a random instant just after it counts someone, and restarted each time."""
    rng = random.Random(KILL_SEED)
    sub = subscribe(mosquitto.host, mosquitto.port, f"maskwatch/{DEVICE}/#")
    tz = steady_timezone()
    config = write_config(tmp_path, clip, mosquitto.port, tz, loop=True)
    decided_before_kill: set[str] = set()
    waiting_at_kill: list[int] = []
    for _ in range(KILLS):
        counted_before = read_state(tmp_path).people
        daemon = start(daemons, config)
        if rng.random() < 0.5:
            # Anywhere in its life: loading the model, re-sending the backlog, counting.
            time.sleep(rng.uniform(0.2, 5.0))
        else:
            # Just after a decision: the event is in the outbox, maybe on its way.
            wait_for_state(
                tmp_path,
                lambda s, n=counted_before: s.people > n,  # type: ignore[misc]
                daemon,
                "a new person counted",
                poll_s=0.01,
            )
            time.sleep(rng.uniform(0.0, 0.05))
        assert daemon.alive(), daemon.output()
        daemon.kill9()
        state = read_state(tmp_path)
        waiting_at_kill.append(len(state.waiting))
        decided_before_kill |= {e["event_id"] for e in state.waiting}
        decided_before_kill |= set(distinct(people(sub.messages)))

    # The 21st run is left alone until it has delivered its predecessors' backlog, then stopped
    # (once it runs: before that SIGTERM is not handled yet and would be one more kill).
    daemon = start(daemons, config)
    daemon.wait_for_log("running:")
    sub.wait_for(
        lambda ms: decided_before_kill <= set(distinct(people(ms))),
        DEADLINE_S,
        "every event decided before a kill",
    )
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.output()

    state = read_state(tmp_path)
    assert state.waiting == [] and state.hourly_rows == 0, "the outbox was not emptied"
    messages = sub.wait_for(
        lambda ms: len(distinct(people(ms))) >= state.people, DEADLINE_S, "the last events"
    )
    events = distinct(people(messages))
    # Decided before a kill -> delivered after a restart.
    assert decided_before_kill <= set(events)
    # Counted once: the state file counted exactly the distinct events delivered, per hour, and
    # the published totals of the hour say the same.
    assert_counted_once_and_totals_agree(events, state, mosquitto, tz)
    assert sub.on(HOURLY) == [], "no hour ended during the test (see steady_timezone)"
    assert len(decided_before_kill) > 0, "no kill came after a decision: nothing was tested"
    resent = len(people(sub.messages)) - len(events)
    print(
        f"\n{KILLS} SIGKILLs survived; {len(decided_before_kill)} events decided before a kill, "
        f"all delivered; {sum(1 for n in waiting_at_kill if n)} kills left events queued "
        f"(at most {max(waiting_at_kill)}); {len(events)} distinct events, {resent} re-sent"
    )


def camera_states(messages: list[Message]) -> list[dict[str, Any]]:
    """The camera's entry of every `stats` message received, in order."""
    return [json.loads(m.payload)["cameras"]["door"] for m in messages if m.topic == STATS]


def test_camera_file_vanishing_and_coming_back(
    tmp_path: Path,
    one_person_clip: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    daemons: list[DaemonProcess],
) -> None:
    """The looping camera file is renamed away: the daemon keeps running and says (in `stats`
    and its log) that the camera is reconnecting; once the file is back it streams and counts
    again."""
    sub = subscribe(mosquitto.host, mosquitto.port, f"maskwatch/{DEVICE}/#")
    source = tmp_path / "camera.mp4"
    source.write_bytes(one_person_clip.read_bytes())
    tz = steady_timezone()
    config = write_config(
        tmp_path, source, mosquitto.port, tz, loop=True, status_interval_s=STATS_INTERVAL_S
    )
    daemon = start(daemons, config)
    sub.wait_for(lambda ms: len(people(ms)) >= 1, DEADLINE_S, "a first person")

    gone = source.rename(tmp_path / "camera.away")
    gone_at = time.monotonic()
    daemon.wait_for_log("camera door: streaming -> reconnecting: ")
    seen = len(sub.messages)
    # Still running and reporting: several stats in a row say so while reopening keeps failing.
    messages = sub.wait_for(
        lambda ms: (
            [c["state"] for c in camera_states(ms[seen:])][-4:] == ["reconnecting"] * 4
            and camera_states(ms)[-1]["reconnects"] >= 3
        ),
        DEADLINE_S,
        "stats saying the camera is reconnecting",
    )
    assert daemon.alive(), daemon.output()
    counted_without_camera = len(distinct(people(messages)))
    lost = camera_states(messages)[-1]
    gone.rename(source)
    daemon.wait_for_log("camera door: reconnecting -> streaming")
    lost_s = time.monotonic() - gone_at
    back = len(sub.messages)
    sub.wait_for(
        lambda ms: any(c["state"] == "streaming" for c in camera_states(ms[back:])),
        DEADLINE_S,
        "stats saying the camera streams again",
    )
    sub.wait_for(
        lambda ms: len(distinct(people(ms))) > counted_without_camera,
        DEADLINE_S,
        "a person after the camera came back",
    )
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.output()
    events = distinct(people(sub.messages))
    state = read_state(tmp_path)
    assert state.waiting == [] and state.people == len(events)
    assert retained(mosquitto.host, mosquitto.port, CURRENT)["people"] == len(events)
    assert "Traceback" not in daemon.output()
    print(
        f"\ncamera file gone {lost_s:.1f} s (until streaming again), {lost['reconnects']} "
        "failed reopens, the daemon running throughout; "
        f"{len(events)} people counted, {len(events) - counted_without_camera} after the return"
    )
