"""Durable state: the outbox of messages still to publish and the running hours' counters.

One SQLite file in the state directory holds

- `outbox`: messages not yet acknowledged by the broker, in the order they were made
  (autoincrement id): one per person event and one per closed hour;
- `hours` and `counters`: the decision counts per local hour and camera;
- `meta`: small facts about the file (dropped events, the time zone the hours are local to).

Recording a person inserts its outbox row and bumps its hour's counter in one transaction, and
closing an hour inserts the hourly total and marks the hour closed in one transaction, so a
published hourly total always equals the sum of the person events counted in that hour, also
after a crash or a power cut.

Hours are closed `close_delay_s` after they end, because a person is decided only when their
track ends, a moment after their last look. An event that still arrives for a closed hour is
counted there and the hour's total is published again, complete (subscribers keep the latest
total per hour_start; the retained message is replaced).

Everything is guarded by one lock so the pipeline thread (recording) and the publisher's
thread (sending and acknowledging) can share one Outbox.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from edge.events import DECISIONS, PersonEvent
from edge.totals import HOUR, Counts, LocalHour, hour_of, load_timezone, totals_payload

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATE_FILE_NAME = "maskwatch.sqlite3"  # suggested name inside the state directory
FILE_MODE = 0o600  # the file lists who passed when, per camera: readable by the daemon only

RowKind = Literal["person", "hourly"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('person', 'hourly')),
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
CREATE TABLE IF NOT EXISTS hours (
    hour_start INTEGER PRIMARY KEY,
    closed INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    hour_start INTEGER NOT NULL,
    camera TEXT NOT NULL,
    mask INTEGER NOT NULL DEFAULT 0,
    no_mask INTEGER NOT NULL DEFAULT 0,
    undecided INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_start, camera)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Column per decision; also keeps the decision out of SQL text unless it is one of these.
_DECISION_COLUMN = {"mask": "mask", "no_mask": "no_mask", "undecided": "undecided"}
assert set(_DECISION_COLUMN) == set(DECISIONS)


class StateError(Exception):
    """The state directory or database cannot be used; `path` names the file or directory."""

    def __init__(self, path: Path, message: str) -> None:
        """Store the path and build a one-line message that starts with it."""
        self.path = path
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for the broker's acknowledgement."""

    id: int
    kind: RowKind
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class ClosedHour:
    """An hour closed by Outbox.close_hours and the outbox row holding its total.

    Attributes:
        hour: the local hour.
        cameras: its counts per camera.
        payload: the JSON object queued for totals/hourly.
        row_id: the outbox row.
        revision: True when the hour had been closed before and late events changed it.
    """

    hour: LocalHour
    cameras: dict[str, Counts]
    payload: dict[str, Any]
    row_id: int
    revision: bool


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What is waiting in the outbox and what had to be dropped."""

    person_rows: int
    hourly_rows: int
    dropped_events: int


class Outbox:
    """The SQLite state file: outbox rows, hourly counters, meta (see the module docstring)."""

    def __init__(
        self,
        path: Path | str,
        *,
        tz: ZoneInfo | str,
        max_events: int = 100_000,
        close_delay_s: float = 30.0,
        keep_closed_s: float = 7 * 24 * 3600,
    ) -> None:
        """Open (or create) the state database at `path`.

        Args:
            path: the SQLite file; its directory is created (mode 0700) when missing.
            tz: time zone the hours are local to (ZoneInfo or IANA name).
            max_events: person rows kept at most; beyond it the oldest are dropped and counted
                in `dropped_events` (hourly rows are never dropped).
            close_delay_s: how long after its end an hour is closed, so people whose track
                ended just after the hour still count in it.
            keep_closed_s: how long the counters of a closed hour are kept, so late events can
                still correct its total.

        Raises:
            StateError: the directory or file cannot be created, opened or read as a state
                database.
            ValueError: bad arguments.
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if close_delay_s < 0:
            raise ValueError(f"close_delay_s must not be negative, got {close_delay_s}")
        self._path = Path(path)
        self._tz = load_timezone(tz) if isinstance(tz, str) else tz
        self._max_events = max_events
        self._close_delay_s = close_delay_s
        self._keep_closed_s = keep_closed_s
        self._lock = threading.RLock()  # re-entrant: a method may wrap a transaction
        self._observed_key: int | None = None
        self._create_file()
        self._conn = self._connect()
        with self._lock:
            self._person_rows = self._count_rows("person")

    # -- opening -------------------------------------------------------------------------------

    def _create_file(self) -> None:
        """Make the directory and an empty 0600 file before SQLite opens it.

        SQLite gives its -wal and -shm files the mode of the database file, so creating the
        file ourselves is what keeps all three private.
        """
        directory = self._path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(directory, f"cannot create state directory: {exc.strerror}") from exc
        if not directory.is_dir():
            raise StateError(directory, "state directory is not a directory")
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StateError(self._path, f"cannot open state database: {exc.strerror}") from exc
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, FILE_MODE)
        except OSError as exc:
            raise StateError(
                self._path, f"cannot make state database private: {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        """Open the connection, set WAL + synchronous=FULL and create or check the schema."""
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise StateError(self._path, f"cannot open state database: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(self._path, f"cannot switch the database to WAL (got {mode})")
            # FULL: a commit is on disk before record() returns, so a power cut (the usual way a
            # Pi stops) loses no counted person. The cost is one fsync per person or ack batch.
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    self._path,
                    f"state database has schema version {version}, newer than this maskwatch "
                    f"({SCHEMA_VERSION}); upgrade maskwatch or move the file away",
                )
            conn.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped_events', '0')")
            stored_tz = conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
            if stored_tz is not None and stored_tz[0] != self._tz.key:
                log.warning(
                    "%s: hours were counted in time zone %s, now %s; open hours keep their "
                    "start instants and are labelled in the new zone",
                    self._path,
                    stored_tz[0],
                    self._tz.key,
                )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('timezone', ?)", (self._tz.key,)
            )
        except StateError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(self._path, _describe(exc, "cannot use state database")) from exc
        return conn

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Cursor]:
        """Run the body as one IMMEDIATE transaction under the lock; errors become StateError."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("%s: rollback failed", self._path)
                if isinstance(exc, sqlite3.Error):
                    raise StateError(self._path, _describe(exc, action)) from exc
                raise
            finally:
                cur.close()

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock for a read; errors become StateError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StateError(self._path, _describe(exc, action)) from exc

    def _count_rows(self, kind: RowKind) -> int:
        """Rows of `kind` in the outbox (caller holds the lock)."""
        try:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE kind = ?", (kind,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StateError(self._path, _describe(exc, "cannot read outbox")) from exc
        return int(row[0])

    # -- public API ----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def tz(self) -> ZoneInfo:
        """The time zone the hours are local to."""
        return self._tz

    @property
    def close_delay_s(self) -> float:
        """How long after its end an hour is closed."""
        return self._close_delay_s

    def record_person(self, event: PersonEvent, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue a person event and count it in its hour, in one transaction.

        The event counts in the local hour that contains `event.last_seen`. When more than
        `max_events` person rows are waiting, the oldest are dropped (their counts stay).

        Returns:
            the outbox row id.
        """
        column = _DECISION_COLUMN.get(event.decision)
        if column is None:
            raise ValueError(f"event {event.event_id}: unknown decision {event.decision!r}")
        hour = hour_of(event.last_seen, self._tz)
        dropped = 0
        with self._lock:
            with self._transaction("cannot record person event") as cur:
                cur.execute(
                    "INSERT INTO outbox (kind, topic, payload, qos, retain, created_at) "
                    "VALUES ('person', ?, ?, ?, 0, ?)",
                    (topic, payload, qos, time.time()),
                )
                row_id = int(cur.lastrowid or 0)
                cur.execute(
                    f"INSERT INTO counters (hour_start, camera, {column}) VALUES (?, ?, 1) "
                    f"ON CONFLICT (hour_start, camera) DO UPDATE SET {column} = {column} + 1",
                    (hour.key, event.camera),
                )
                # changed=1 only matters for a closed hour: its total must be published again.
                cur.execute(
                    "INSERT INTO hours (hour_start, closed, changed) VALUES (?, 0, 1) "
                    "ON CONFLICT (hour_start) DO UPDATE SET changed = 1",
                    (hour.key,),
                )
                person_rows = self._person_rows + 1
                if person_rows > self._max_events:
                    dropped = person_rows - self._max_events
                    cur.execute(
                        "DELETE FROM outbox WHERE id IN "
                        "(SELECT id FROM outbox WHERE kind = 'person' ORDER BY id LIMIT ?)",
                        (dropped,),
                    )
                    cur.execute(
                        "UPDATE meta SET value = CAST(value AS INTEGER) + ? "
                        "WHERE key = 'dropped_events'",
                        (dropped,),
                    )
                    person_rows -= dropped
            self._person_rows = person_rows  # only once the commit succeeded
        if dropped:
            total = self.dropped_events
            # First drop and then every 1000th: enough to notice without flooding the journal.
            if total == dropped or total // 1000 != (total - dropped) // 1000:
                log.warning(
                    "%s: outbox full (%d person events waiting); dropped the oldest, %d so far",
                    self._path,
                    self._max_events,
                    total,
                )
        return row_id

    def close_hours(
        self, now: datetime, topic: str, qos: int = 1, *, retain: bool = True
    ) -> list[ClosedHour]:
        """Close every hour whose end is at least `close_delay_s` before `now`.

        Each closed hour's total goes into the outbox (retained unless `retain` is False) and
        the hour is marked closed in the same transaction. This includes hours that ended while
        the daemon was stopped, after a restart; an hour the daemon never ran in has no row and
        is not published. The hour containing `now` is remembered as observed, so it is
        published even if nobody passes. Closed hours are forgotten `keep_closed_s` after their
        end.

        Returns:
            the hours closed by this call, oldest first.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
        current = hour_of(now, self._tz)
        now_ts = now.timestamp()
        due_before = now_ts - self._close_delay_s - HOUR.total_seconds()
        with self._reading("cannot read hours") as conn:
            due = conn.execute(
                "SELECT COUNT(*) FROM hours WHERE hour_start <= ? AND (closed = 0 OR changed = 1)",
                (due_before,),
            ).fetchone()[0]
        if not due and current.key == self._observed_key:
            return []  # nothing to write: ticks stay free of disk writes

        closed: list[ClosedHour] = []
        with self._transaction("cannot close hours") as cur:
            cur.execute("INSERT OR IGNORE INTO hours (hour_start) VALUES (?)", (current.key,))
            rows = cur.execute(
                "SELECT hour_start, closed FROM hours "
                "WHERE hour_start <= ? AND (closed = 0 OR changed = 1) ORDER BY hour_start",
                (due_before,),
            ).fetchall()
            for key, was_closed in rows:
                hour = LocalHour.from_key(int(key), self._tz)
                cameras = _read_counters(cur, hour.key)
                payload = totals_payload(hour, cameras)
                cur.execute(
                    "INSERT INTO outbox (kind, topic, payload, qos, retain, created_at) "
                    "VALUES ('hourly', ?, ?, ?, ?, ?)",
                    (topic, encode_json(payload), qos, int(retain), time.time()),
                )
                row_id = int(cur.lastrowid or 0)
                cur.execute(
                    "UPDATE hours SET closed = 1, changed = 0 WHERE hour_start = ?", (hour.key,)
                )
                closed.append(ClosedHour(hour, cameras, payload, row_id, bool(was_closed)))
            forget_before = now_ts - self._keep_closed_s - HOUR.total_seconds()
            cur.execute(
                "DELETE FROM counters WHERE hour_start IN (SELECT hour_start FROM hours "
                "WHERE closed = 1 AND changed = 0 AND hour_start < ?)",
                (forget_before,),
            )
            cur.execute(
                "DELETE FROM hours WHERE closed = 1 AND changed = 0 AND hour_start < ?",
                (forget_before,),
            )
        self._observed_key = current.key
        return closed

    def hour_counts(self, hour: LocalHour) -> dict[str, Counts]:
        """The counts per camera recorded so far for `hour` (empty when none)."""
        with self._reading("cannot read counters") as conn:
            cur = conn.cursor()
            try:
                return _read_counters(cur, hour.key)
            finally:
                cur.close()

    def pending(self, limit: int) -> list[OutboxRow]:
        """Up to `limit` waiting rows, oldest first."""
        with self._reading("cannot read outbox") as conn:
            rows = conn.execute(
                "SELECT id, kind, topic, payload, qos, retain FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxRow(int(i), kind, topic, bytes(payload), int(qos), bool(retain))
            for i, kind, topic, payload, qos, retain in rows
        ]

    def ack(self, row_id: int) -> None:
        """Delete the row the broker has acknowledged (no-op when it is already gone)."""
        self.ack_many((row_id,))

    def ack_many(self, row_ids: Iterable[int]) -> None:
        """Delete several acknowledged rows in one transaction (one fsync for the batch)."""
        ids = list(row_ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._lock:
            with self._transaction("cannot delete acknowledged rows") as cur:
                people = cur.execute(
                    f"SELECT COUNT(*) FROM outbox WHERE kind = 'person' AND id IN ({marks})", ids
                ).fetchone()[0]
                cur.execute(f"DELETE FROM outbox WHERE id IN ({marks})", ids)
            self._person_rows -= int(people)  # only once the commit succeeded

    @property
    def dropped_events(self) -> int:
        """Person events dropped because the outbox was full, over the file's lifetime."""
        with self._reading("cannot read meta") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'dropped_events'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> OutboxStats:
        """Waiting rows per kind and the dropped-events counter."""
        with self._lock:
            person, hourly = self._count_rows("person"), self._count_rows("hourly")
        return OutboxStats(person, hourly, self.dropped_events)

    def close(self) -> None:
        """Close the database (checkpoints the WAL)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        """Context manager: the open outbox."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Context manager: close."""
        self.close()


def _read_counters(cur: sqlite3.Cursor, key: int) -> dict[str, Counts]:
    """Counts per camera of the hour `key`."""
    rows = cur.execute(
        "SELECT camera, mask, no_mask, undecided FROM counters WHERE hour_start = ? "
        "ORDER BY camera",
        (key,),
    ).fetchall()
    return {camera: Counts(int(m), int(n), int(u)) for camera, m, n, u in rows}


def encode_json(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the wire format of every maskwatch payload."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# SQLite primary result codes (sqlite3 exports them only from Python 3.11 on).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CORRUPT = 3, 8, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26


def _describe(exc: sqlite3.Error, action: str) -> str:
    """One line for a SQLite error, with a hint for the cases an operator can fix."""
    code = getattr(exc, "sqlite_errorcode", None)  # extended code, Python >= 3.11
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == _SQLITE_FULL or "disk is full" in text:
        return f"{action}: the state directory is full ({text})"
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or "not a database" in text:
        return f"{action}: not a usable maskwatch state database ({text}); move the file away"
    if primary in (_SQLITE_CANTOPEN, _SQLITE_READONLY, _SQLITE_PERM):
        return f"{action}: cannot read and write it ({text})"
    return f"{action}: {text}"
