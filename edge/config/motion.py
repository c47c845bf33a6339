"""Configuration of motion gating (edge.motion)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MotionConfig(BaseModel):
    """Motion gating (edge.motion): skip the detector on frames where nothing moves.

    Each frame is shrunk to a small greyscale thumbnail and compared with a running average of
    the previous ones; the tracker predicts across skipped frames. Off by default: it saves CPU
    and heat on an empty scene but does not raise the frame rate needed while people pass.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        False, description="Run the detector only on frames where something moves."
    )
    threshold: int = Field(
        25,
        ge=1,
        le=255,
        description="Grey-level change (0-255) of a thumbnail pixel that counts as motion.",
    )
    min_area_pct: float = Field(
        0.2,
        gt=0.0,
        le=100.0,
        description="Percent of the thumbnail's pixels that must change for a frame to move.",
    )
    refresh_s: float = Field(
        0.5,
        gt=0,
        description=(
            "While people are tracked, run the detector at least this often (seconds) even "
            "without motion, so that someone standing still keeps their track."
        ),
    )
