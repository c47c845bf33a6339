"""Configuration of the per-person vote (edge.decide)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DecideConfig(BaseModel):
    """How looks at one person's face become one decision: mask, no_mask or undecided."""

    model_config = ConfigDict(extra="forbid")

    no_mask_below: float = Field(
        0.2,
        ge=0,
        le=1,
        description=(
            "A frontal look whose mask probability (with / (with + without)) is below this "
            "votes -1 (no mask)."
        ),
    )
    mask_above: float = Field(
        0.8,
        ge=0,
        le=1,
        description="A frontal look whose mask probability is above this votes +1 (mask).",
    )
    min_votes: int = Field(
        3,
        ge=1,
        description=(
            "Votes a person needs before mask or no_mask is decided; fewer gives undecided."
        ),
    )
    min_head_px: float = Field(
        16.0,
        ge=0,
        description="Heads smaller than this (the shorter box side, in frame pixels) never vote.",
    )
    min_front_score: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "A look votes only when the detector's score for a frontal class (with or without "
            "mask) is at least this; weaker frontal looks keep the track alive but abstain."
        ),
    )
    min_travel: float = Field(
        0.0,
        ge=0,
        description=(
            "A confirmed track is counted only when its head moved: its centre shifted by at "
            "least this many head heights (its mean box height) from where it was first seen, "
            "or its height changed by a factor of 1 + 2 x this (someone walking straight "
            "toward or away from the camera; twice, because the box heights of a still thing "
            "jitter). Things that look like a head and never move (a bollard, a poster, a "
            "lamp) keep a track alive as long as they are in view; a person passing shifts by "
            "many head heights. On PETS 2009 the still clutter read as heads shifted 0.1-0.3 "
            "head heights, the people counted 3 or more, and 0.5 is what "
            "configs/street-camera.yaml uses. 0 (the default) counts every confirmed track: "
            "people who stand still in view from the moment they are first seen (a shop "
            "aisle, a queue) stay counted."
        ),
    )
    travel_gap_s: float = Field(
        0.0,
        ge=0,
        description=(
            "With min_travel: a look that comes more than this many seconds after the track's "
            "previous look starts a new stretch, and the head must have moved min_travel within "
            "one stretch, not across a gap. While a track is unseen the tracker may hand it to "
            "someone nearby when it is found again (a person who walks past a bollard read as a "
            "head, a lost person's track taking a neighbour in a group): such a track jumps "
            "from one head to the other without either moving, and counting that jump as "
            "travel counts a person who never walked. On PETS 2009 through the street config, "
            "one of the four tracks counted on no single person was confirmed on a person "
            "standing still and then moved only by two such jumps, of 2 and 0.6 seconds; every "
            "track counted on a person still moved min_travel with stretches broken at any gap "
            "over one detection interval (0.1 s there). Set it to a few detection intervals "
            "(configs/street-camera.yaml, detecting on every frame at 7 to 10 per second: 0.5); "
            "shorter than the interval every look is a stretch of its own and nothing moves. 0 "
            "(the default) measures travel over the whole track."
        ),
    )
    min_median_score: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "A confirmed track is counted only when the median score of its detections is at "
            "least this (as Frigate's threshold on an object's computed score). The tracker "
            "confirms a track on a few confident detections; clutter that passes for a head "
            "now and then (a sign, a bag, a patch of hedge) is followed on weak scores the "
            "rest of the time, while a person's head scores high most of the time. On PETS "
            "2009 through the street config, 3 of the 7 tracks counted on no person had a "
            "median score of 0.43-0.44 and every person counted 0.56 or more; "
            "configs/street-camera.yaml uses 0.5. Higher values drop more clutter and also "
            "people seen mostly at the limit of the detector (small, blurred, turned away). "
            "0 (the default) counts every confirmed track."
        ),
    )

    min_still_score: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "With min_travel: a confirmed track is counted only when the median score of its "
            "looks before its head first moved min_travel is at least this. Clutter read as a "
            "head (a sign, a bollard) stands still on weak scores, and when a person walks "
            "over it the tracker may carry the clutter's track on with that person: the track "
            "then moves and, on the person's scores, passes min_travel and min_median_score, "
            "but most of its looks are of no one. A person who waits and then walks scores "
            "like a person while waiting too. On PETS 2009 through the street config, two of "
            "the four tracks counted on no single person were such tracks (a patch above the "
            "path followed on scores of 0.35 to 0.5 for 25 and 106 looks before taking a "
            "passer-by): 6 of 27 and 46 of 106 of their still looks scored 0.5 or more, "
            "against half or more (2 of 4 at the least) for every track counted on a person. "
            "configs/street-camera.yaml uses 0.5, as min_median_score. Higher values also "
            "drop people who stand at the limit of the detector (small, turned away) before "
            "they walk; 0 (the default) switches the test off."
        ),
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> DecideConfig:
        if self.no_mask_below >= self.mask_above:
            raise ValueError("no_mask_below must be smaller than mask_above")
        return self
