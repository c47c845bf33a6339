"""The one record that flows from the detector into the tracker and the vote."""

from __future__ import annotations

from dataclasses import dataclass

# Order of the model's class outputs; models/labels.txt must list the same names in this order.
LABELS: tuple[str, ...] = ("front_with_mask", "front_without_mask", "face_not_visible")
FRONT_WITH_MASK = 0
FRONT_WITHOUT_MASK = 1
FACE_NOT_VISIBLE = 2

# The detector boxes a visible face by the face (brow to chin, as the face photos it learnt from
# draw it) and a head whose face is not seen by the whole head, hair and hat included: one
# person turning towards the camera has a box about half as high, lower down. The head around a
# face box, as the shipped model draws both: medians over the pairs of boxes it gives one head
# (a front box lying inside a face_not_visible box, both scoring 0.3 or more), 327 pairs on
# the hard-hat validation photos (1.65 / 1.77 / 0.29) and 7 in the car park (1.56 / 1.68 / 0.29).
FACE_TO_HEAD_WIDTH = 1.6  # the head is this many face widths wide
FACE_TO_HEAD_HEIGHT = 1.75  # and this many face heights high,
FACE_TO_HEAD_RAISE = 0.28  # its centre this many face heights above the face's


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
