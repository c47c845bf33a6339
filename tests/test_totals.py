"""Local-hour bucketing across hour and DST boundaries, and the totals payloads."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.totals import (
    HOUR,
    Counts,
    LocalHour,
    hour_of,
    load_timezone,
    sum_counts,
    totals_payload,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A UTC datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def hours_seen(first: datetime, last: datetime, tz: ZoneInfo) -> list[LocalHour]:
    """The distinct hours met when walking from first to last in one-minute steps."""
    seen: list[LocalHour] = []
    # Step in UTC: adding a timedelta to a zoned datetime is wall-clock arithmetic and would
    # skip the repeated hour.
    t, last = first.astimezone(UTC), last.astimezone(UTC)
    while t < last:
        h = hour_of(t, tz)
        if not seen or seen[-1] != h:
            seen.append(h)
        t += timedelta(minutes=1)
    return seen


def test_hour_of_cuts_minutes_and_seconds_in_local_time() -> None:
    """A summer afternoon in Berlin: the hour is 14:00-15:00 +02:00."""
    h = hour_of(datetime(2026, 6, 15, 14, 37, 12, 345000, tzinfo=BERLIN), BERLIN)
    assert h.start_local.isoformat() == "2026-06-15T14:00:00+02:00"
    assert h.end_local.isoformat() == "2026-06-15T15:00:00+02:00"
    assert h.start == utc(2026, 6, 15, 12, 0)


def test_same_instant_in_any_zone_gives_the_same_hour() -> None:
    """The bucket depends on the instant, not on the zone the input was written in."""
    t = utc(2026, 1, 10, 7, 59, 59)
    assert hour_of(t, BERLIN) == hour_of(t.astimezone(ZoneInfo("America/New_York")), BERLIN)
    assert hour_of(t, BERLIN).start_local.isoformat() == "2026-01-10T08:00:00+01:00"


def test_hour_boundaries_are_half_open() -> None:
    """The start belongs to the hour, the end to the next one."""
    end = datetime(2026, 6, 15, 15, 0, tzinfo=BERLIN)
    before = hour_of(end - timedelta(microseconds=1), BERLIN)
    at = hour_of(end, BERLIN)
    assert before.start_local.hour == 14
    assert at.start_local.hour == 15
    assert before.end == at.start
    assert before.contains(end - timedelta(microseconds=1))
    assert not before.contains(end)
    assert at.contains(end)
    assert before.following() == at


def test_spring_forward_berlin_has_no_0200_hour() -> None:
    """2026-03-29: 02:00 CET jumps to 03:00 CEST; 01:00+01:00 is followed by 03:00+02:00."""
    last_winter = hour_of(utc(2026, 3, 29, 0, 59, 59), BERLIN)
    first_summer = hour_of(utc(2026, 3, 29, 1, 0, 0), BERLIN)
    assert last_winter.start_local.isoformat() == "2026-03-29T01:00:00+01:00"
    assert last_winter.end_local.isoformat() == "2026-03-29T03:00:00+02:00"
    assert first_summer.start_local.isoformat() == "2026-03-29T03:00:00+02:00"
    assert last_winter.following() == first_summer

    day = hours_seen(
        datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN), BERLIN
    )
    assert len(day) == 23
    assert [h.start_local.hour for h in day] == [0, 1, *range(3, 24)]
    assert all(a.end == b.start for a, b in itertools.pairwise(day))


def test_fall_back_berlin_has_two_0200_hours() -> None:
    """2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00 comes twice, told apart by offset."""
    first = hour_of(utc(2026, 10, 25, 0, 30), BERLIN)  # 02:30 CEST
    second = hour_of(utc(2026, 10, 25, 1, 30), BERLIN)  # 02:30 CET
    assert first != second
    assert first.start_local.isoformat() == "2026-10-25T02:00:00+02:00"
    assert first.end_local.isoformat() == "2026-10-25T02:00:00+01:00"
    assert second.start_local.isoformat() == "2026-10-25T02:00:00+01:00"
    assert second.end_local.isoformat() == "2026-10-25T03:00:00+01:00"
    assert first.following() == second
    assert first.key != second.key

    day = hours_seen(
        datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN), BERLIN
    )
    assert len(day) == 25
    assert [h.start_local.hour for h in day] == [0, 1, 2, 2, *range(3, 24)]
    assert all(a.end == b.start for a, b in itertools.pairwise(day))
    assert all(h.end - h.start == HOUR for h in day)


def test_input_given_with_local_fold_lands_in_the_right_repeated_hour() -> None:
    """A local time written with fold=1 (second pass) is the second 02:00 hour."""
    second_pass = datetime(2026, 10, 25, 2, 15, tzinfo=BERLIN, fold=1)
    first_pass = datetime(2026, 10, 25, 2, 15, tzinfo=BERLIN, fold=0)
    assert hour_of(second_pass, BERLIN).start == utc(2026, 10, 25, 1, 0)
    assert hour_of(first_pass, BERLIN).start == utc(2026, 10, 25, 0, 0)


def test_half_hour_offset_zone() -> None:
    """Asia/Kolkata (+05:30): local hours start at :30 UTC."""
    kolkata = ZoneInfo("Asia/Kolkata")
    h = hour_of(utc(2026, 5, 1, 5, 10), kolkata)  # 10:40 IST
    assert h.start_local.isoformat() == "2026-05-01T10:00:00+05:30"
    assert h.start == utc(2026, 5, 1, 4, 30)


def test_key_round_trips() -> None:
    """The stored key gives back the same hour."""
    h = hour_of(utc(2026, 10, 25, 1, 30), BERLIN)
    assert LocalHour.from_key(h.key, BERLIN) == h
    assert h.key == int(utc(2026, 10, 25, 1, 0).timestamp())


def test_naive_datetimes_are_refused() -> None:
    """A naive time would silently follow the host's zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        hour_of(datetime(2026, 1, 1, 12, 0), BERLIN)
    with pytest.raises(ValueError, match="timezone-aware"):
        LocalHour(datetime(2026, 1, 1, 12, 0), BERLIN)


def test_load_timezone() -> None:
    """Known names load; unknown ones fail with the name in the message."""
    assert load_timezone("Europe/Berlin") == BERLIN
    with pytest.raises(ValueError, match="Mars/Olympus_Mons"):
        load_timezone("Mars/Olympus_Mons")


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2040, 1, 1),
        timezones=st.just(UTC),
    ),
    st.sampled_from(
        [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Asia/Kolkata",
            "UTC",
            "America/Sao_Paulo",
        ]
    ),
)
def test_every_instant_is_in_its_hour(t: datetime, zone: str) -> None:
    """Property: the hour contains the instant, starts on a local full hour, and is stable."""
    tz = ZoneInfo(zone)
    h = hour_of(t, tz)
    assert h.contains(t)
    assert (h.start_local.minute, h.start_local.second, h.start_local.microsecond) == (0, 0, 0)
    assert hour_of(h.start, tz) == h
    assert h.end - h.start == HOUR


def test_counts_arithmetic() -> None:
    """people, mask_ratio, add and sum."""
    c = Counts().add("mask").add("mask").add("mask").add("no_mask").add("undecided", 2)
    assert (c.mask, c.no_mask, c.undecided, c.people) == (3, 1, 2, 6)
    assert c.mask_ratio == pytest.approx(0.75)
    assert Counts(undecided=4).mask_ratio is None
    assert Counts().mask_ratio is None
    assert sum_counts([Counts(1, 2, 3), Counts(4, 5, 6)]) == Counts(5, 7, 9)
    assert sum_counts([]) == Counts()
    with pytest.raises(ValueError, match="unknown decision"):
        Counts().add("maybe")  # type: ignore[arg-type]


def test_totals_payload_shape_and_sums() -> None:
    """Totals over cameras, per-camera counts, local times with offsets, JSON null ratio."""
    hour = hour_of(utc(2026, 10, 25, 1, 30), BERLIN)
    payload = totals_payload(hour, {"gate": Counts(3, 1, 0), "door": Counts(0, 0, 2)})
    assert payload == {
        "hour_start": "2026-10-25T02:00:00+01:00",
        "hour_end": "2026-10-25T03:00:00+01:00",
        "people": 6,
        "mask": 3,
        "no_mask": 1,
        "undecided": 2,
        "mask_ratio": 0.75,
        "cameras": {
            "door": {"people": 2, "mask": 0, "no_mask": 0, "undecided": 2, "mask_ratio": None},
            "gate": {"people": 4, "mask": 3, "no_mask": 1, "undecided": 0, "mask_ratio": 0.75},
        },
    }
    assert list(payload["cameras"]) == ["door", "gate"]
    assert '"mask_ratio":null' in json.dumps(payload["cameras"]["door"], separators=(",", ":"))


def test_totals_payload_for_an_empty_hour() -> None:
    """An hour nobody passed: zeros, ratio null, no cameras."""
    payload = totals_payload(hour_of(utc(2026, 6, 1, 3, 0), BERLIN), {})
    assert payload["people"] == 0
    assert payload["mask_ratio"] is None
    assert payload["cameras"] == {}
