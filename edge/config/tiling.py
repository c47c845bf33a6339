"""Configuration of tiled detection for large frames (edge.tiling)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TilingConfig(BaseModel):
    """Cut each frame into a grid of overlapping tiles and detect heads in each.

    The model sees 320 x 320 pixels. A frame is shrunk to fit, so on a wide camera heads lose
    most of their pixels: 1280 x 720 shrinks 4x and a 16 px head becomes 4 px. A grid of
    columns x rows tiles gives every head columns (or rows) times more model pixels, at the
    cost of one inference per tile. 1 x 1 (the default) detects on the whole frame.
    """

    model_config = ConfigDict(extra="forbid")

    columns: int = Field(
        1,
        ge=1,
        le=8,
        description="Tiles across the frame. Each inference costs as much as a whole frame.",
    )
    rows: int = Field(1, ge=1, le=8, description="Tiles down the frame.")
    overlap: float = Field(
        0.15,
        ge=0,
        le=0.5,
        description=(
            "Share of a tile that its neighbour also covers, so a head on a seam is whole in "
            "one of them; at least the largest head's size over the tile's size."
        ),
    )
