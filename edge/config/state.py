"""Configuration of persistent state (edge.outbox, edge.totals): where it lives, how much."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edge.config.paths import relative_to_config

DEFAULT_STATE_DIRECTORY = Path("/var/lib/maskwatch")


def default_state_directory(environ: dict[str, str] | None = None) -> Path:
    """$STATE_DIRECTORY (set by systemd's StateDirectory=), else /var/lib/maskwatch.

    systemd sets a colon-separated list when several StateDirectory= entries exist; the first
    is ours.
    """
    env = os.environ if environ is None else environ
    value = env.get("STATE_DIRECTORY", "").split(":", 1)[0]
    return Path(value) if value else DEFAULT_STATE_DIRECTORY


def user_state_directory(environ: dict[str, str] | None = None) -> Path:
    """Where `maskwatch replay` keeps its state unless told (--state-dir): the user's state
    directory of the XDG base directory specification, $XDG_STATE_HOME (an absolute path),
    else ~/.local/state, followed by maskwatch/replay.

    Raises:
        RuntimeError: neither $XDG_STATE_HOME nor a home directory is known.
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    # The specification ignores a relative value.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "maskwatch" / "replay"


class StateConfig(BaseModel):
    """Where the SQLite state (unsent events outbox, running totals) is kept."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    directory: Path = Field(
        default_factory=default_state_directory,
        description=(
            "Folder for the state database. Default: $STATE_DIRECTORY when systemd sets it "
            "(StateDirectory=maskwatch), else /var/lib/maskwatch."
        ),
    )
    outbox_max_events: int = Field(
        100_000,
        ge=1,
        description=(
            "Most unsent events kept while the broker is unreachable; beyond that the oldest "
            "are dropped (and counted) so the disk cannot fill up."
        ),
    )

    @field_validator("directory")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        """A relative state folder points next to the config file."""
        return relative_to_config(path, info)
