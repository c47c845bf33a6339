"""Configuration of region detection (edge.regions): look where people can be, not everywhere."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegionsConfig(BaseModel):
    """Detect in small square regions around live tracks and motion, packed into one input.

    Tiles (`tiles`) show the model every part of the frame on every frame: 12 inferences for
    4 x 3. Regions show it only the places where a head can be: around each live track, around
    whatever moved, and a few cells of a slow sweep over the whole frame that finds people who
    arrive without moving much. Each region is a square of the frame, enlarged by `zoom`, and
    `grid` x `grid` regions share one model input as a mosaic, so one inference looks at up to
    `grid` squared places. Off by default; it is for cameras whose heads are too small for the
    whole frame (it cannot be combined with tiles).

    Cost per frame: one inference per `grid` squared regions, rounded up; at least one while
    anything is tracked or moving or `scan_cells_per_frame` is above 0; one more on the frames
    that look at the whole frame (`whole_frame_s`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        False,
        description=(
            "Detect in regions around tracks, motion and a rotating sweep instead of the whole "
            "frame or tiles."
        ),
    )
    grid: int = Field(
        2,
        ge=1,
        le=4,
        description=(
            "Regions per side of one model input: grid x grid regions share one inference "
            "(2: four regions of 160 x 160 model pixels in a 320 x 320 input). Larger packs more "
            "places into each inference but gives each region fewer model pixels, so at the "
            "same zoom it covers less of the frame."
        ),
    )
    zoom: float = Field(
        2.0,
        ge=0.25,
        le=4.0,
        description=(
            "Model pixels per frame pixel in a region around a tracked head that walks: such a "
            "region is (model input / grid / zoom) frame pixels wide (80 px for a 320 input, "
            "grid 2, zoom 2). The larger a head looks to the model, the more often it is found: "
            "of PETS 2009's 12-18 px heads, 10 % are found per look at 1.4, 23 % at 2 and 41 % "
            "at 3; but a smaller region leaves a fast head less room (see track_margin), and "
            "box sizes that differ much from the search regions' make the tracker start second "
            "tracks on one head. Only heads whose track has moved its own height since it began "
            "are magnified; a confirmed head that has not is looked at at search_zoom, a new one "
            "only by motion and sweep regions: a patch of background that the model once took "
            "for a head, magnified on every frame, would be found again and again and counted. "
            "Below 1 shrinks, for large heads near a door camera."
        ),
    )
    search_zoom: float = Field(
        1.4,
        ge=0.25,
        le=4.0,
        description=(
            "Model pixels per frame pixel in regions that look for new people (over motion and "
            "the sweep): lower than zoom so that each covers more of the frame (114 px for a "
            "320 input, grid 2, 1.4), high enough that the smallest heads that should count "
            "reach about 12 model pixels at least once while they cross."
        ),
    )
    overlap: float = Field(
        0.2,
        ge=0.0,
        le=0.5,
        description=(
            "Share of a sweep cell that its neighbour also covers, so a head on a seam is "
            "whole in one of them; at least the largest head's size over the region's size."
        ),
    )
    max_regions: int = Field(
        16,
        ge=1,
        le=64,
        description=(
            "Most regions per frame (tracks first, then motion, then the sweep): caps the "
            "inferences per frame at max_regions / grid squared, rounded up, when a crowd or a "
            "large moving area would ask for more."
        ),
    )
    scan_cells_per_frame: int = Field(
        1,
        ge=0,
        le=64,
        description=(
            "Sweep cells added to every frame on top of the free places of its last input: the "
            "sweep covers the frame in overlapping region-sized cells, a few per frame, so that "
            "someone standing still who was never tracked is found within one sweep. A sweep "
            "takes (cells in the frame) / (cells per frame) frames; 0 relies on motion and on "
            "the free places alone."
        ),
    )
    motion: bool = Field(
        True,
        description=(
            "Put regions over moving areas (found as for `motion`, with its threshold, on a "
            "160 px wide thumbnail), so people walking in are looked at on the first frames "
            "they move. Off: only tracked heads and the sweep are looked at."
        ),
    )
    whole_frame_s: float = Field(
        1.0,
        ge=0.0,
        le=3600.0,
        description=(
            "Seconds between looks at the whole frame, for people too near the camera for a "
            "region (a head larger than a search region is only pieces in one). Each look is "
            "three detection frames in a row, one inference more on each (so up to three "
            "inferences a second more, one a frame below 3 frames a second); the whole frame "
            "is also looked at on every frame on which something moves that is 2.5 search "
            "regions tall and half one wide or more (someone close to the camera; needs "
            "`motion`). It keeps heads of a "
            "third of a search region or more (38 px for a 320 input, grid 2, search_zoom "
            "1.4), smaller ones being the regions' to find, magnified. A head half a search region "
            "or larger, however found, is followed in a region sized to it (track_margin head "
            "sizes on each side), whether or not it counts yet, with these looks or without. "
            "On PETS 2009 (heads of "
            "12-18 px, the file stamped at 10 fps) it changes no count and adds 0.3 "
            "inferences a frame; on the "
            "one-by-one sample clip (heads boxed at 73-105 px in a 768 px frame) "
            "configs/street-camera.yaml counts 5 of its 6 people (`make eval-model`), 4 "
            "without these looks. 0: never (only tracks, motion and the sweep)."
        ),
    )
    track_margin: float = Field(
        1.0,
        ge=0.0,
        le=8.0,
        description=(
            "Space kept around a tracked head inside its region, in head sizes on each side: "
            "the head can move that far before the region is placed again (regions follow the "
            "tracks two frames behind, since the next frames are prepared while the current "
            "one is detected). Tracks closer together than the region share one."
        ),
    )
