"""Configuration of logging (edge.daemon): verbosity and output format."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["journal", "text"]


def default_log_format(environ: dict[str, str] | None = None) -> LogFormat:
    """'journal' when stderr goes to the systemd journal ($JOURNAL_STREAM is set), else 'text'."""
    env = os.environ if environ is None else environ
    return "journal" if env.get("JOURNAL_STREAM") else "text"


class LoggingConfig(BaseModel):
    """How much the daemon logs and in which form."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    level: LogLevel = Field(
        "INFO", description="Least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
    format: LogFormat = Field(
        default_factory=default_log_format,
        description=(
            "'journal': messages with syslog priority prefixes for the systemd journal (no "
            "timestamps, the journal adds them); 'text': timestamped lines for a terminal. "
            "Default: journal under systemd ($JOURNAL_STREAM set), else text."
        ),
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        """Accept 'info' as well as 'INFO'."""
        return value.upper() if isinstance(value, str) else value
