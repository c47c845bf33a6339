"""The SQLite outbox and hour counters, on real files (and a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.events import DecisionName, PersonEvent
from edge.outbox import Outbox, StateError, encode_json
from edge.totals import Counts, hour_of

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
PERSON = "maskwatch/dev/person"
HOURLY = "maskwatch/dev/totals/hourly"
REPO = Path(__file__).resolve().parents[1]


def event(
    n: int,
    last_seen: datetime,
    decision: DecisionName = "mask",
    camera: str = "gate",
) -> PersonEvent:
    """A decided person numbered n whose track ended at last_seen."""
    return PersonEvent(
        event_id=f"ev-{n:06d}",
        camera=camera,
        track_id=n,
        first_seen=last_seen - timedelta(seconds=3),
        last_seen=last_seen,
        decision=decision,
        votes_mask=5 if decision == "mask" else 0,
        votes_no_mask=5 if decision == "no_mask" else 0,
        looks=9,
    )


def record(outbox: Outbox, e: PersonEvent) -> int:
    """Record e the way the Ledger does."""
    return outbox.record_person(e, PERSON, encode_json(e.to_json_dict()))


def at(hour: int, minute: int = 0, second: int = 0, day: int = 15, month: int = 6) -> datetime:
    """A Berlin local time in 2026."""
    return datetime(2026, month, day, hour, minute, second, tzinfo=BERLIN)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a state database in a not yet existing state directory."""
    return tmp_path / "state" / "maskwatch.sqlite3"


def test_rows_come_back_in_order_and_ack_deletes(db: Path) -> None:
    """pending() is FIFO across kinds, payloads are byte-exact, ack removes one row."""
    with Outbox(db, tz=BERLIN, close_delay_s=0) as outbox:
        ids = [record(outbox, event(i, at(10, i))) for i in range(5)]
        assert ids == sorted(ids)
        closed = outbox.close_hours(at(11, 0), HOURLY)
        ids.append(closed[0].row_id)
        ids.append(record(outbox, event(5, at(11, 5))))

        rows = outbox.pending(100)
        assert [r.id for r in rows] == ids
        assert [r.kind for r in rows] == ["person"] * 5 + ["hourly", "person"]
        assert json.loads(rows[0].payload)["event_id"] == "ev-000000"
        assert PersonEvent.from_json_dict(json.loads(rows[0].payload)) == event(0, at(10, 0))
        assert (rows[0].topic, rows[0].qos, rows[0].retain) == (PERSON, 1, False)
        assert (rows[5].topic, rows[5].retain) == (HOURLY, True)
        assert [r.id for r in outbox.pending(2)] == ids[:2]

        outbox.ack(ids[1])
        outbox.ack(ids[1])  # a second ack (a duplicate PUBACK) is harmless
        outbox.ack_many([ids[0], ids[5]])
        assert [r.id for r in outbox.pending(100)] == [ids[2], ids[3], ids[4], ids[6]]
        assert outbox.stats().person_rows == 4
        assert outbox.stats().hourly_rows == 0


def test_rows_and_counters_survive_reopening(db: Path) -> None:
    """Everything is on disk: a new Outbox on the same file sees the same rows and counts."""
    outbox = Outbox(db, tz=BERLIN)
    for i in range(3):
        record(outbox, event(i, at(9, 10 + i), "no_mask" if i == 1 else "mask"))
    before = outbox.pending(10)
    outbox.close()

    reopened = Outbox(db, tz=BERLIN)
    assert reopened.pending(10) == before
    assert reopened.hour_counts(hour_of(at(9, 30), BERLIN)) == {"gate": Counts(2, 1, 0)}
    reopened.close()


def test_counts_follow_last_seen_hour_and_camera(db: Path) -> None:
    """Each event counts once, in the local hour of last_seen, under its camera."""
    with Outbox(db, tz=BERLIN) as outbox:
        record(outbox, event(1, at(10, 59, 59), "mask", "gate"))
        record(outbox, event(2, at(11, 0, 0), "no_mask", "gate"))
        record(outbox, event(3, at(11, 30), "undecided", "door"))
        record(outbox, event(4, at(11, 31), "mask", "door"))
        assert outbox.hour_counts(hour_of(at(10), BERLIN)) == {"gate": Counts(1, 0, 0)}
        assert outbox.hour_counts(hour_of(at(11), BERLIN)) == {
            "door": Counts(1, 0, 1),
            "gate": Counts(0, 1, 0),
        }
        assert outbox.hour_counts(hour_of(at(12), BERLIN)) == {}


def test_hour_closes_after_its_end_plus_delay_once(db: Path) -> None:
    """Not before end + close_delay_s; then once, with the summed payload, retained."""
    with Outbox(db, tz=BERLIN, close_delay_s=30) as outbox:
        record(outbox, event(1, at(10, 5), "mask"))
        record(outbox, event(2, at(10, 6), "mask"))
        record(outbox, event(3, at(10, 7), "no_mask", "door"))
        assert outbox.close_hours(at(10, 59, 59), HOURLY) == []
        assert outbox.close_hours(at(11, 0, 29), HOURLY) == []
        closed = outbox.close_hours(at(11, 0, 30), HOURLY)
        assert [c.hour for c in closed] == [hour_of(at(10), BERLIN)]
        assert closed[0].revision is False
        payload = closed[0].payload
        assert payload["hour_start"] == "2026-06-15T10:00:00+02:00"
        assert payload["hour_end"] == "2026-06-15T11:00:00+02:00"
        assert (payload["people"], payload["mask"], payload["no_mask"]) == (3, 2, 1)
        assert payload["mask_ratio"] == pytest.approx(2 / 3)
        assert set(payload["cameras"]) == {"gate", "door"}

        row = next(r for r in outbox.pending(10) if r.kind == "hourly")
        assert json.loads(row.payload) == payload
        assert row.retain is True
        assert outbox.close_hours(at(11, 5), HOURLY) == []
        assert outbox.close_hours(at(11, 0, 31), HOURLY) == []


def test_observed_hour_without_people_is_published_with_zeros(db: Path) -> None:
    """An hour the daemon watched and nobody passed still gets a total (people 0)."""
    with Outbox(db, tz=BERLIN, close_delay_s=0) as outbox:
        assert outbox.close_hours(at(7, 15), HOURLY) == []  # observes 07:00
        closed = outbox.close_hours(at(8, 0, 1), HOURLY)
        assert [c.payload["hour_start"] for c in closed] == ["2026-06-15T07:00:00+02:00"]
        assert closed[0].payload["people"] == 0
        assert closed[0].payload["mask_ratio"] is None


def test_hours_that_ended_during_downtime_are_closed_once_after_restart(db: Path) -> None:
    """Stopped at 10:40 with counts; restarted at 14:10: 10:00 is closed once, the hours the
    daemon never ran in (11-13) are not invented."""
    outbox = Outbox(db, tz=BERLIN, close_delay_s=30)
    outbox.close_hours(at(10, 0, 5), HOURLY)
    record(outbox, event(1, at(10, 20)))
    record(outbox, event(2, at(10, 39), "no_mask"))
    outbox.close()  # the daemon stops

    restarted = Outbox(db, tz=BERLIN, close_delay_s=30)
    closed = restarted.close_hours(at(14, 10), HOURLY)
    assert [c.payload["hour_start"] for c in closed] == ["2026-06-15T10:00:00+02:00"]
    assert (closed[0].payload["mask"], closed[0].payload["no_mask"]) == (1, 1)
    assert restarted.close_hours(at(14, 11), HOURLY) == []
    restarted.close()

    again = Outbox(db, tz=BERLIN, close_delay_s=30)  # and a second restart does not repeat it
    assert again.close_hours(at(14, 12), HOURLY) == []
    hourly = [r for r in again.pending(10) if r.kind == "hourly"]
    assert len(hourly) == 1
    closed = again.close_hours(at(15, 1), HOURLY)  # the 14:00 hour it observed closes
    assert [c.payload["hour_start"] for c in closed] == ["2026-06-15T14:00:00+02:00"]
    again.close()


def test_late_event_republishes_the_complete_hour(db: Path) -> None:
    """A person decided after their hour closed is counted there and the full total is sent
    again, so the last hourly message for that hour equals the sum of its events."""
    with Outbox(db, tz=BERLIN, close_delay_s=10) as outbox:
        record(outbox, event(1, at(10, 30)))
        first = outbox.close_hours(at(11, 1), HOURLY)
        assert first[0].payload["people"] == 1
        record(outbox, event(2, at(10, 59, 58), "no_mask"))  # decided long after
        again = outbox.close_hours(at(11, 2), HOURLY)
        assert len(again) == 1
        assert again[0].revision is True
        assert again[0].hour == first[0].hour
        assert (again[0].payload["mask"], again[0].payload["no_mask"]) == (1, 1)


def test_dst_fall_back_hours_are_closed_separately(db: Path) -> None:
    """The two 02:00 hours of 2026-10-25 in Berlin are two totals with different offsets."""
    with Outbox(db, tz=BERLIN, close_delay_s=0) as outbox:
        record(outbox, event(1, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)))  # 02:30 CEST
        record(outbox, event(2, datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "no_mask"))  # CET
        closed = outbox.close_hours(datetime(2026, 10, 25, 2, 0, tzinfo=UTC), HOURLY)
        assert [
            (c.payload["hour_start"], c.payload["mask"], c.payload["no_mask"]) for c in closed
        ] == [
            ("2026-10-25T02:00:00+02:00", 1, 0),
            ("2026-10-25T02:00:00+01:00", 0, 1),
        ]


def test_dst_spring_forward_hour_spans_the_gap(db: Path) -> None:
    """2026-03-29: the hour starting 01:00 CET ends at 03:00 CEST, one hour later."""
    with Outbox(db, tz=BERLIN, close_delay_s=0) as outbox:
        record(outbox, event(1, datetime(2026, 3, 29, 0, 59, tzinfo=UTC)))
        record(outbox, event(2, datetime(2026, 3, 29, 1, 1, tzinfo=UTC)))
        closed = outbox.close_hours(datetime(2026, 3, 29, 2, 0, tzinfo=UTC), HOURLY)
        assert [(c.payload["hour_start"], c.payload["hour_end"]) for c in closed] == [
            ("2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00"),
            ("2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"),
        ]


def test_max_events_drops_oldest_person_rows_only(db: Path) -> None:
    """Beyond max_events the oldest person rows go (counted, persistently); hourly rows stay;
    the hour counters still count everyone."""
    with Outbox(db, tz=BERLIN, max_events=5, close_delay_s=0) as outbox:
        record(outbox, event(0, at(9, 59)))
        outbox.close_hours(at(10, 0), HOURLY)  # one hourly row, oldest in the outbox
        for i in range(1, 9):
            record(outbox, event(i, at(10, i)))
        rows = outbox.pending(100)
        assert [r.kind for r in rows] == ["hourly"] + ["person"] * 5
        assert [json.loads(r.payload)["event_id"] for r in rows[1:]] == [
            f"ev-{i:06d}" for i in range(4, 9)
        ]
        assert outbox.dropped_events == 4
        assert outbox.hour_counts(hour_of(at(10), BERLIN)) == {"gate": Counts(8, 0, 0)}
    with Outbox(db, tz=BERLIN, max_events=5) as reopened:
        assert reopened.dropped_events == 4
        assert reopened.stats().person_rows == 5
        record(reopened, event(9, at(10, 9)))
        assert reopened.dropped_events == 5


def test_files_are_private(tmp_path: Path) -> None:
    """The database, its WAL and shared-memory files are 0600; a 0644 file is tightened."""
    db = tmp_path / "s" / "m.sqlite3"
    with Outbox(db, tz=BERLIN) as outbox:
        record(outbox, event(1, at(10)))
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    os.chmod(db, 0o644)
    Outbox(db, tz=BERLIN).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_wal_and_full_sync_are_on(db: Path) -> None:
    """journal_mode=WAL is persistent in the file; the outbox asks for synchronous=FULL."""
    Outbox(db, tz=BERLIN).close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_state_directory_that_cannot_exist_names_the_path(tmp_path: Path) -> None:
    """A state 'directory' below a regular file: StateError with that path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create state directory") as info:
        Outbox(blocker / "state" / "m.sqlite3", tz=BERLIN)
    assert str(blocker) in str(info.value)


def test_garbage_file_is_reported_as_not_a_database(db: Path) -> None:
    """Something else at the state path: a clear error naming the file."""
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 512)
    with pytest.raises(StateError, match="not a usable maskwatch state database") as info:
        Outbox(db, tz=BERLIN)
    assert info.value.path == db
    assert str(info.value).startswith(str(db))


def test_newer_schema_is_refused(db: Path) -> None:
    """A file written by a newer maskwatch is not silently reused."""
    Outbox(db, tz=BERLIN).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StateError, match="schema version 99"):
        Outbox(db, tz=BERLIN)


def test_full_database_raises_and_keeps_counts_consistent(db: Path) -> None:
    """SQLITE_FULL (here: a page limit on the connection) -> StateError naming the file, and
    the failed transaction leaves neither a row nor a count behind."""
    with Outbox(db, tz=BERLIN) as outbox:
        record(outbox, event(1, at(10)))
        pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
        outbox._conn.execute(f"PRAGMA max_page_count = {pages}")
        big = PersonEvent("x" * 20000, "gate", 2, at(10), at(10, 1), "no_mask", 0, 3, 3)
        with pytest.raises(StateError, match="full") as info:
            record(outbox, big)
        assert str(db) in str(info.value)
        assert len(outbox.pending(10)) == 1
        assert outbox.hour_counts(hour_of(at(10), BERLIN)) == {"gate": Counts(1, 0, 0)}


def test_concurrent_record_and_ack(db: Path) -> None:
    """The pipeline thread records while the publisher thread acknowledges: no errors, and
    every row is either still pending or was acknowledged exactly once."""
    outbox = Outbox(db, tz=BERLIN)
    acked: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def acknowledge() -> None:
        try:
            while not done.is_set() or outbox.pending(1):
                rows = outbox.pending(7)
                outbox.ack_many(r.id for r in rows)
                acked.extend(r.id for r in rows)
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    t = threading.Thread(target=acknowledge)
    t.start()
    ids = [record(outbox, event(i, at(10, i % 60))) for i in range(300)]
    done.set()
    t.join(timeout=60)
    assert not errors
    assert sorted(acked) == ids
    assert outbox.stats().person_rows == 0
    assert outbox.hour_counts(hour_of(at(10), BERLIN))["gate"].mask == 300
    outbox.close()


_RECORD_FOREVER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, timezone
    from edge.events import PersonEvent
    from edge.outbox import Outbox, encode_json

    outbox = Outbox(sys.argv[1], tz="Europe/Berlin")
    t0 = datetime(2026, 6, 15, 9, 50, tzinfo=timezone.utc)
    i = 0
    while True:
        seen = t0 + timedelta(seconds=7 * i)  # crosses several hour boundaries
        e = PersonEvent(f"ev-{i}", "gate", i, seen, seen, ("mask", "no_mask", "undecided")[i % 3],
                        1, 1, 3)
        outbox.record_person(e, "t/person", encode_json(e.to_json_dict()))
        i += 1
        if i == 200:
            print("ready", flush=True)
    """
)


def test_sigkill_never_splits_a_row_from_its_count(db: Path) -> None:
    """Kill -9 a process in the middle of recording: afterwards, per hour, the counters equal
    the person rows (both or neither were written for every event)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECORD_FOREVER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # let it get well into further transactions; the kill lands in one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    with Outbox(db, tz=BERLIN) as outbox:
        rows = outbox.pending(1_000_000)
        assert len(rows) >= 200
        by_hour: dict[int, Counts] = {}
        for r in rows:
            e = PersonEvent.from_json_dict(json.loads(r.payload))
            key = hour_of(e.last_seen, BERLIN).key
            by_hour[key] = by_hour.get(key, Counts()).add(e.decision)
        assert len(by_hour) >= 2
        for key, counts in by_hour.items():
            stored = outbox.hour_counts(hour_of(datetime.fromtimestamp(key, UTC), BERLIN))
            assert stored == {"gate": counts}
        ids = [json.loads(r.payload)["event_id"] for r in rows]
        assert ids == [f"ev-{i}" for i in range(len(rows))]  # no gaps: nothing half-written
