"""The one record that flows from the detector into the tracker and the vote."""

from __future__ import annotations

from dataclasses import dataclass

# Order of the model's class outputs; models/labels.txt must list the same names in this order.
LABELS: tuple[str, ...] = ("front_with_mask", "front_without_mask", "face_not_visible")
FRONT_WITH_MASK = 0
FRONT_WITHOUT_MASK = 1
FACE_NOT_VISIBLE = 2


@dataclass(frozen=True, slots=True)
class Detection:
    """One head found in one frame.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the original frame.
        label: index into LABELS of the best-scoring class.
        score: that class's score in [0, 1].
        scores: the score of every class, in LABELS order (the vote needs both front scores).
    """

    box: tuple[float, float, float, float]
    label: int
    score: float
    scores: tuple[float, float, float]

    @property
    def label_name(self) -> str:
        """The label as written in models/labels.txt."""
        return LABELS[self.label]
