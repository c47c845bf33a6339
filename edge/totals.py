"""Hourly totals: local-time hour buckets and the payloads of the totals topics.

A local hour is the interval [start, start + 1 h) in UTC terms, where start is the event time
in the configured time zone with minutes and seconds cut off. Across daylight-saving changes
this gives exactly what a reader of a local clock expects:

- spring forward (Europe/Berlin 2026-03-29, 02:00 CET -> 03:00 CEST): 01:00+01:00 is followed
  by 03:00+02:00; the skipped 02:00 hour has no bucket;
- fall back (Europe/Berlin 2026-10-25, 03:00 CEST -> 02:00 CET): 02:00+02:00 and 02:00+01:00 are
  two distinct hours, told apart by their UTC offsets.

Everything here is pure: no clock, no storage. edge.outbox keeps the counters durable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.events import DecisionName

HOUR = timedelta(hours=1)


def load_timezone(name: str) -> ZoneInfo:
    """The IANA time zone called `name` (e.g. "Europe/Berlin").

    Raises:
        ValueError: the name is not a time zone known to this system's tz database.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc


def _require_aware(t: datetime, what: str) -> None:
    """Refuse naive datetimes: their hour would silently depend on the host's time zone."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t.isoformat()}")


@dataclass(frozen=True, slots=True)
class LocalHour:
    """One local-time hour in time zone `tz`, identified by the UTC instant it starts.

    Attributes:
        start: the first instant of the hour, in UTC.
        tz: the time zone the hour is local to.
    """

    start: datetime
    tz: ZoneInfo

    def __post_init__(self) -> None:
        """Normalize `start` to UTC so equal hours compare and hash equal."""
        _require_aware(self.start, "LocalHour.start")
        object.__setattr__(self, "start", self.start.astimezone(timezone.utc))

    @property
    def end(self) -> datetime:
        """The first instant after the hour, in UTC (start + 1 h)."""
        return self.start + HOUR

    @property
    def start_local(self) -> datetime:
        """`start` on the local clock, with the UTC offset in force then."""
        return self.start.astimezone(self.tz)

    @property
    def end_local(self) -> datetime:
        """`end` on the local clock, with the UTC offset in force then."""
        return self.end.astimezone(self.tz)

    @property
    def key(self) -> int:
        """The start as Unix seconds: how the hour is stored in the state database."""
        return int(self.start.timestamp())

    @classmethod
    def from_key(cls, key: int, tz: ZoneInfo) -> LocalHour:
        """Inverse of `key`."""
        return cls(datetime.fromtimestamp(key, timezone.utc), tz)

    def contains(self, t: datetime) -> bool:
        """Whether the instant `t` (timezone-aware) falls in this hour."""
        _require_aware(t, "t")
        return self.start <= t < self.end

    def following(self) -> LocalHour:
        """The local hour that starts when this one ends."""
        return hour_of(self.end, self.tz)


def hour_of(t: datetime, tz: ZoneInfo) -> LocalHour:
    """The local hour (in `tz`) that contains the instant `t` (timezone-aware)."""
    _require_aware(t, "t")
    # astimezone sets fold=1 for the second pass through a repeated hour, and replace() keeps
    # it, so converting the truncated time back to UTC picks the right one of the two hours.
    local = t.astimezone(tz)
    start_local = local.replace(minute=0, second=0, microsecond=0)
    return LocalHour(start_local.astimezone(timezone.utc), tz)


@dataclass(frozen=True, slots=True)
class Counts:
    """How many decided people fell into each decision."""

    mask: int = 0
    no_mask: int = 0
    undecided: int = 0

    @property
    def people(self) -> int:
        """Everyone counted, decided or not."""
        return self.mask + self.no_mask + self.undecided

    @property
    def mask_ratio(self) -> float | None:
        """mask / (mask + no_mask); None when nobody was decided either way."""
        decided = self.mask + self.no_mask
        return None if decided == 0 else self.mask / decided

    def add(self, decision: DecisionName, n: int = 1) -> Counts:
        """These counts with `n` more people of `decision`."""
        if decision == "mask":
            return Counts(self.mask + n, self.no_mask, self.undecided)
        if decision == "no_mask":
            return Counts(self.mask, self.no_mask + n, self.undecided)
        if decision == "undecided":
            return Counts(self.mask, self.no_mask, self.undecided + n)
        raise ValueError(f"unknown decision {decision!r}")

    def __add__(self, other: Counts) -> Counts:
        """Element-wise sum."""
        return Counts(
            self.mask + other.mask,
            self.no_mask + other.no_mask,
            self.undecided + other.undecided,
        )

    def to_json_dict(self) -> dict[str, Any]:
        """people, mask, no_mask, undecided, mask_ratio."""
        return {
            "people": self.people,
            "mask": self.mask,
            "no_mask": self.no_mask,
            "undecided": self.undecided,
            "mask_ratio": self.mask_ratio,
        }


def sum_counts(counts: Iterable[Counts]) -> Counts:
    """The element-wise sum of `counts` (zero counts when empty)."""
    total = Counts()
    for c in counts:
        total = total + c
    return total


def totals_payload(hour: LocalHour, cameras: Mapping[str, Counts]) -> dict[str, Any]:
    """The JSON object of maskwatch/<device>/totals/hourly and .../totals/current.

    hour_start and hour_end are ISO 8601 local times with their UTC offsets; the counts are the
    sum over all cameras, and `cameras` repeats them per camera (sorted by name, so the payload
    is stable).
    """
    total = sum_counts(cameras.values())
    return {
        "hour_start": hour.start_local.isoformat(),
        "hour_end": hour.end_local.isoformat(),
        **total.to_json_dict(),
        "cameras": {name: cameras[name].to_json_dict() for name in sorted(cameras)},
    }
