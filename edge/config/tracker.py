"""Configuration of the head tracker (edge.track)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrackerConfig(BaseModel):
    """How detections are linked into one track per person."""

    model_config = ConfigDict(extra="forbid")

    min_hits: int = Field(
        3,
        ge=1,
        description="Detections a new track needs before it is confirmed and can count as a person.",
    )
    max_age_s: float = Field(
        1.0,
        gt=0,
        description="Seconds a confirmed track survives without a matching detection before it ends.",
    )
    iou_threshold: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Smallest IoU between a predicted track box and a detection that may be matched.",
    )
