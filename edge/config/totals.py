"""Configuration of the hourly totals (edge.totals): which clock the hours follow."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

FALLBACK_TIMEZONE = "UTC"


def _valid_zone(name: str) -> bool:
    """Whether zoneinfo knows this IANA zone name."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def local_timezone_name(environ: dict[str, str] | None = None, etc: Path = Path("/etc")) -> str:
    """The system's IANA zone name: $TZ, then /etc/localtime's link target, then /etc/timezone.

    "UTC" when none of them names a zone zoneinfo knows (containers often have no zone set).
    """
    env = os.environ if environ is None else environ
    candidates: list[str] = []
    tz = env.get("TZ", "").lstrip(":")
    if tz:
        candidates.append(tz)
    try:
        target = os.readlink(etc / "localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates.append((etc / "timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        if name and _valid_zone(name):
            return name
    return FALLBACK_TIMEZONE


class TotalsConfig(BaseModel):
    """How decisions are summed into hourly totals."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    timezone: str = Field(
        default_factory=local_timezone_name,
        description=(
            "IANA time zone (e.g. Europe/Berlin) whose clock hours the totals follow, so that "
            "'09:00-10:00' means the local morning hour. Default: the system's zone ($TZ, "
            "/etc/localtime), UTC when it cannot be determined."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        """Unknown zones would otherwise only fail at the first hour boundary."""
        if not _valid_zone(name):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)")
        return name

    @property
    def zoneinfo(self) -> ZoneInfo:
        """The zone as a tzinfo object."""
        return ZoneInfo(self.timezone)
