"""What the pipeline reports: one decided person, as published and stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

DecisionName = Literal["mask", "no_mask", "undecided"]
DECISIONS: tuple[DecisionName, ...] = ("mask", "no_mask", "undecided")


@dataclass(frozen=True, slots=True)
class PersonEvent:
    """One person whose track has ended, with the decision voted over the whole track.

    Attributes:
        event_id: unique id, made once when the person is decided and stored with the event,
            so every re-send carries the same id and subscribers can de-duplicate.
        camera: name of the camera (from the config).
        track_id: the tracker's id; unique per camera within one daemon run only.
        first_seen: first frame time of the track, timezone-aware.
        last_seen: last frame time with a detection, timezone-aware; the event counts in the
            local hour that contains it.
        decision: mask, no_mask or undecided.
        votes_mask: confident frontal looks that read as mask (+1 votes).
        votes_no_mask: confident frontal looks that read as no mask (-1 votes).
        looks: frames in which the tracker matched a detection to this person.
    """

    event_id: str
    camera: str
    track_id: int
    first_seen: datetime
    last_seen: datetime
    decision: DecisionName
    votes_mask: int
    votes_no_mask: int
    looks: int

    def to_json_dict(self) -> dict[str, Any]:
        """The payload of maskwatch/<device>/person, times in ISO 8601 with UTC offset."""
        return {
            "event_id": self.event_id,
            "camera": self.camera,
            "track_id": self.track_id,
            "first_seen": self.first_seen.isoformat(timespec="milliseconds"),
            "last_seen": self.last_seen.isoformat(timespec="milliseconds"),
            "decision": self.decision,
            "votes_mask": self.votes_mask,
            "votes_no_mask": self.votes_no_mask,
            "looks": self.looks,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> PersonEvent:
        """Inverse of to_json_dict (used when the stored outbox is read back)."""
        return cls(
            event_id=str(data["event_id"]),
            camera=str(data["camera"]),
            track_id=int(data["track_id"]),
            first_seen=datetime.fromisoformat(data["first_seen"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            decision=data["decision"],
            votes_mask=int(data["votes_mask"]),
            votes_no_mask=int(data["votes_no_mask"]),
            looks=int(data["looks"]),
        )
