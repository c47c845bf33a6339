"""Configuration of the head tracker (edge.track).

Distances and sizes are measured in box heights and times in seconds, so one set of values
serves heads and whole bodies, near and far, at any frame rate and with detection on every
n-th frame only; how fast people change their motion is measured in person heights (a head box
is one 7.5th of its person, see head_aspect). The defaults were chosen on MOTChallenge MOT15
(PETS09-S2L1, TUD-Campus, TUD-Stadtmitte) with their public detections, and on copies of all
three (edge.tools.mot_variants) with the ground truth as detections, with noise added to either,
with noisy head-sized boxes, as a crowd twice as dense, and at a half and a third of the TUD
frame rates, every candidate
measured on all of them at once, never per sequence. See `make eval-tracking` and
BENCHMARKS.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrackerConfig(BaseModel):
    """How detections are linked into one track per person."""

    model_config = ConfigDict(extra="forbid")

    min_hits: int = Field(
        4,
        ge=1,
        description=(
            "Detections a new track needs before it is confirmed and counts as a person. "
            "Higher values ignore more false alarms (a reflection, a poster, a box that "
            "flickers for a few frames) but a person seen only briefly is never counted and "
            "every person's count and vote start later; lower values count people seen only "
            "for a moment, and false alarms with them. At 5 detections per second, 4 is 0.8 "
            "s of being seen; at low detection rates (a few per second) every hit is a long "
            "time, so keep it small there."
        ),
    )
    min_track_s: float = Field(
        0.0,
        ge=0,
        description=(
            "Seconds between a track's first detection and its confirmation, on top of "
            "min_hits. Useful at high detection rates, where min_hits detections come within "
            "a fraction of a second: a burst of false detections then has to last this long "
            "to count. Raising it delays every person's confirmation by as much and drops "
            "people who pass faster than that."
        ),
    )
    max_age_s: float = Field(
        3.0,
        gt=0,
        description=(
            "Seconds a confirmed track survives without a matching detection before it ends "
            "(and its person is decided and published). Longer keeps the identity of a person "
            "hidden behind someone else or missed by the detector, so they are not counted "
            "twice; but the decision is published that much later, and a new person who "
            "appears where a lost one was heading within this time may take over the old "
            "identity and be missed."
        ),
    )
    tentative_max_age_s: float = Field(
        0.0,
        ge=0,
        description=(
            "Seconds a not-yet-confirmed track survives without a matching detection. 0 ends "
            "it on the first detection frame that misses it, so a new track must be detected "
            "min_hits times in a row; a larger value lets a person who is detected only on and "
            "off get confirmed, at the price of letting scattered false alarms add up to a "
            "person."
        ),
    )
    exit_reliability: float = Field(
        0.9,
        ge=0,
        le=1,
        description=(
            "With the frame's size known, a track whose last detected box reached an edge of the "
            "frame (exit_margin) while it moved out through that edge (exit_speed) ends once it "
            "is missed (on "
            "the next detection frame, before matching), if the detector has found it on at least "
            "this share of its recent detection frames (a running average over about 20, the "
            "miss included): the person walked out, and whoever comes in through the same edge "
            "next is someone else. A track the detector misses more often is kept as any missed "
            "track is, since a noisy detector also misses people still standing at the edge, half "
            "cut off. Lower values end more tracks at the edge and count such a person twice "
            "more often; higher values let a lingering track take over a newcomer at a doorway "
            "more often; from 0.95 up the rule never applies (a miss takes the average below it)."
        ),
    )
    exit_speed: float = Field(
        0.2,
        ge=0,
        description=(
            "How fast a track must move out through the frame's edge, in person heights per "
            "second, to end once missed there (see exit_reliability). A walk is 0.5 to "
            "0.8 person heights a second; a person standing at the edge, whose box only "
            "jitters, stays well below 0.2 and keeps their track through a missed detection. "
            "A track unseen for over a second while moving out through an edge this fast is "
            "not given, by distance, a detection at that edge: someone stepping in there is "
            "somebody new."
        ),
    )
    exit_margin: float = Field(
        0.5,
        ge=0,
        description=(
            "How near an edge of the frame a track's last detected box must come to count as "
            "having reached it (see exit_reliability), as a share of the box's own width (left "
            "and right edges) or height (top and bottom): its far side within this much of the "
            "edge. People are lost before their box touches the edge: a detector stops finding "
            "a head or body once most of it is out, and annotators stop boxing it. 0 asks the "
            "box to touch the edge; larger values also end tracks of people missed while they "
            "walk along near an edge, who are then counted twice."
        ),
    )
    iou_threshold: float = Field(
        0.2,
        ge=0,
        le=1,
        description=(
            "Smallest IoU between a track's predicted box and a confident detection for them "
            "to be matched by overlap. Lower values follow fast or jerky movement and poorly "
            "placed boxes, but make two people who cross more likely to swap identities; "
            "higher values swap less but lose more tracks, which the distance gate must then "
            "find again."
        ),
    )
    uncertainty_cost: float = Field(
        0.1,
        ge=0,
        description=(
            "Added to the cost of matching a track and a detection by overlap (1 - IoU), per "
            "box height of the standard deviation of the track's predicted position: the "
            "Kalman filter's own uncertainty, about 0.01 to 0.05 for a track seen on the last "
            "frame and 0.1 to 0.4 for one unseen for a second or more. Of two tracks that "
            "overlap a detection about as much, the one whose position is known takes it: a "
            "person seen a moment ago keeps their box when the coasting prediction of someone "
            "hidden behind them happens to lie on it, instead of the two swapping identities. "
            "At 0.1 a track unseen for a second or more needs an overlap 0.01 to 0.04 larger "
            "than a track just seen to take a detection from it. Larger values make a briefly "
            "missed person lose their box to a neighbour who was seen (0.2 to 0.5 already cost "
            "a crowded noisy sequence identity switches, 1 loses many); 0 matches by overlap "
            "alone."
        ),
    )
    high_score: float = Field(
        0.6,
        ge=0,
        le=1,
        description=(
            "Detections scoring at least this are matched first and may start a new track. "
            "Higher values start fewer tracks from false alarms but start real people later "
            "and miss faint ones; lower values let weak false alarms start tracks."
        ),
    )
    low_score: float = Field(
        0.1,
        ge=0,
        le=1,
        description=(
            "Detections below this are ignored. Those between low_score and high_score "
            "never start a track but may extend a track seen on the previous detection frame "
            "when they overlap its prediction by low_iou_threshold (ByteTrack), which keeps a "
            "person through a partly hidden or badly lit moment. Raising it towards "
            "high_score switches that second chance off."
        ),
    )
    low_iou_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Smallest IoU for a weak detection (between low_score and high_score) to extend a "
            "track. Kept strict because weak boxes are more often wrong: lower values keep "
            "more tracks alive through weak looks and also glue more clutter onto them."
        ),
    )
    distance_gate: float = Field(
        0.5,
        gt=0,
        description=(
            "Radius, in box heights, within which a track that found no overlapping detection "
            "may still take a confident detection by centre distance, before its time unseen "
            "widens the radius around the prediction (speed_gate, gate_growth). The same "
            "radius, never widened, also applies around the track's last detection: someone "
            "who walked in and stopped while unseen is where they were last seen, not where "
            "their velocity points. Larger values find a person again after a jump of the box "
            "or a missed detection, but may hand one person's identity to a neighbour; "
            "smaller values count a person twice more often."
        ),
    )
    speed_gate: float = Field(
        0.5,
        ge=0,
        description=(
            "How much the distance radius grows with the track's own speed while it is unseen: "
            "the radius gains speed_gate x speed x seconds unseen. It lets a fast-moving head "
            "that slowed down, stopped or turned behind an occluder be found again, in any "
            "units and at any size; larger values reach further for fast tracks and risk "
            "taking someone else's detection in a crowd."
        ),
    )
    gate_growth: float = Field(
        0.5,
        ge=0,
        description=(
            "How much the distance radius grows, in box heights per second unseen, whatever the "
            "track's speed: it covers a person who starts to move while hidden. Larger values "
            "re-find people after longer occlusions (up to max_age_s) but let a lost track "
            "claim a new person who appears nearby; 0 keeps the radius at distance_gate plus "
            "the speed term."
        ),
    )
    max_size_ratio: float = Field(
        1.5,
        ge=1,
        description=(
            "A track and a detection matched by distance may differ in height by at most this "
            "factor. It stops a far, small person from taking over a near, large one's identity "
            "(and back); values near 1 reject real size changes of a person walking towards "
            "the camera between two looks, large values allow such mix-ups."
        ),
    )
    birth_overlap: float = Field(
        0.4,
        gt=0,
        le=1,
        description=(
            "A confident detection left unmatched whose area lies at least this much inside a "
            "live track's box starts a hidden track: one that takes only the detections the "
            "other tracks leave after matching by overlap (or overlap less, where a track's "
            "own person is gone: missed on the last detection frame, or walking out of the "
            "frame as exit_reliability tells), and that is not confirmed (never "
            "counts as a person) while this much of its box still lies inside an older live "
            "track's box. Double detections of one person (a whole body and its upper half, "
            "one body and a pair split apart) move with their host and so never count as a "
            "second person; a real second person who appears behind or in front of someone is "
            "followed from their first detection, so nobody nearby takes their boxes over, and "
            "counted once they part. Lower values treat more boxes as possible duplicates and "
            "delay the count of more real people; 1 switches the check off, every new track "
            "being an ordinary one."
        ),
    )
    measurement_noise: float = Field(
        0.05,
        gt=0,
        description=(
            "Standard deviation of a detected box's centre and size, as a fraction of its "
            "height: how much the Kalman filter trusts a single detection, and so how much "
            "the box a track reports is smoothed. Larger values give smoother tracks that react "
            "late to turns and lag behind a person who speeds up; smaller values follow every "
            "jitter of the detector, which makes the velocity and so the prediction noisy."
        ),
    )
    follow_camera: bool = Field(
        True,
        description=(
            "Move every track with the camera when the camera moves (a camera on a pole in the "
            "wind, a pan-tilt camera, footage from a moving one): when at least "
            "camera_agreement of the tracks matched on a frame (4 or more) were found shifted "
            "alike from their predictions, the median shift is the camera's, and every track's "
            "predicted box (lost ones too) and, by half of it, its velocity move by it before "
            "the update. No person's own motion predicts a camera's, and without this a "
            "swaying view leaves every prediction behind its person (edge.tools.mot_variants "
            "`pan`). For a second after the camera last moved them no track ends for leaving "
            "the frame (the camera may turn back to them; lost, they end after max_age_s "
            "unseen, or by the exit rules once the camera has not been seen moving for a "
            "second). A fixed camera's people seldom all swerve alike, so it seldom fires."
        ),
    )
    camera_agreement: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "With follow_camera: the share of the matched tracks whose shift from their "
            "prediction must lie within half the median shift's length of it for the median "
            "to be taken for the camera's motion. Lower values follow a camera sooner and also "
            "move every track with a few people who happen to turn alike (0.7 on MOTChallenge "
            "MOT15 with exact boxes as detections: HOTA 0.987 against 0.995 with 0.8)."
        ),
    )
    noise_adaptation: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "How fast a track learns its own detection noise, as the weight of each new "
            "detection in a running estimate (0.05: about the last 20 detections). A track "
            "whose detections fall closer to its prediction than measurement_noise allows "
            "comes to trust them more, down to min_measurement_noise, so a clean detector's "
            "boxes are followed closely while a jittery one's are smoothed as much as "
            "measurement_noise says. Larger values adapt faster and chase chance runs of "
            "steady boxes; 0 switches learning off and trusts every detection by "
            "measurement_noise."
        ),
    )
    lag_adaptation: float = Field(
        0.2,
        ge=0,
        le=1,
        description=(
            "How fast a track learns its lag: the weight of each new detection in a running "
            "mean of how far the detected centre lies from the predicted one (0.2: about the "
            "last 5 detections). The noise behind the reported box (TrackedHead.sharp_box, "
            "what `maskwatch track --mot` writes) is learnt around that mean, so a box left "
            "behind frame after frame, by a swaying camera or a person speeding up or "
            "turning, follows its detections instead of being smoothed as if they were "
            "noisy. The filter itself, and so association, keeps learning from the plain "
            "distances (learning around the lag there too made noisy detections trusted "
            "and swapped identities: MOTChallenge MOT15 with noise added, HOTA 0.424 "
            "against 0.430). 0 reports the box as the filter's noise says; on MOT15's exact "
            "boxes seen by a swaying camera 0.2 gives HOTA 0.802 against 0.764 with 0, "
            "every fixed-camera figure within 0.004."
        ),
    )
    min_measurement_noise: float = Field(
        0.01,
        gt=0,
        description=(
            "The least detection noise a track may learn, as a fraction of the box height "
            "(see noise_adaptation): how closely the reported box may follow detections that "
            "agree with each other. Smaller values follow perfect boxes exactly and make a "
            "long run of steady boxes trusted blindly when the next one jumps; values at "
            "measurement_noise switch learning off."
        ),
    )
    acceleration_noise: float = Field(
        0.1,
        gt=0,
        description=(
            "Standard deviation of how fast a person's velocity changes, in box heights per "
            "second squared (the Kalman filter's process noise). Larger values let the "
            "prediction follow sudden stops and turns but make it wander during occlusions; "
            "smaller values assume steady walking, which keeps identities through crossings "
            "and gaps as long as people do walk steadily."
        ),
    )
    faces_as_heads: bool = Field(
        True,
        description=(
            "Track the head around a face: the detector boxes a face it sees (front_with_mask, "
            "front_without_mask) by the face, brow to chin, and a head whose face it cannot "
            "see by the whole head, hair and hat included, so the box of a person who turns "
            "towards or away from the camera jumps to about half or twice its height. The "
            "tracker follows the head, a face's box widened, heightened and raised by the "
            "model's own proportions (edge.detection.FACE_TO_HEAD_*; wider where a tall face "
            "would make it taller than head_aspect), and keeps one identity "
            "through the turn; the vote still reads the face's own box. A head box the detector "
            "reads as a face (a large back of a head read as a mask, models/MODEL_CARD.md) is "
            "then tracked as a head about 1.7 times its size. False follows each box as it "
            "comes: for a detector that boxes every label the same way."
        ),
    )
    head_aspect: float = Field(
        1.3,
        gt=0,
        description=(
            "A box less than this many times as high as it is wide is taken for a head, one "
            "of the 7.5 heads a person is tall; a taller box for a whole body. People speed "
            "up, turn and stop in proportion to their own height, not their box's, so a head "
            "track's acceleration_noise counts 7.5 times over in its own box heights: its "
            "prediction bends with a person who turns, instead of sailing on while a "
            "neighbour takes its place. Head boxes are about 1.1 to 1.25 times as high as "
            "wide (the detector's anchors: 1.1), standing bodies 2 to 3 (99 % of MOT15's "
            "public detections above 1.38). Raising it towards 1.5 treats squat body boxes "
            "(a person cut by the frame, a false alarm) as heads and lets their tracks "
            "wander; a value below 1 treats every box as a body, as a very large one every "
            "box as a head."
        ),
    )
    initial_velocity_std: float = Field(
        1.0,
        gt=0,
        description=(
            "Standard deviation of a new track's unknown velocity, in box heights per second. "
            "Larger values let the first few detections set the velocity quickly (and noisily); "
            "smaller values assume a new person is nearly still until proven otherwise."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrackerConfig:
        """Each lower bound at most its upper bound."""
        if self.low_score > self.high_score:
            raise ValueError("low_score must not be larger than high_score")
        if self.min_measurement_noise > self.measurement_noise:
            raise ValueError("min_measurement_noise must not be larger than measurement_noise")
        return self
