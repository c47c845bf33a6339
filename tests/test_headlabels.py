"""The mask-or-not rule of the labelling step (models/training/headlabels.py, mask_label).

The two signals are the detector's reading and the nose colour test; a stand-in gives the
detector's scores and the nose distance is patched, so only the rule around them is tested.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.training import headlabels
from models.training.headlabels import NOSE_BARE, NOSE_MASK, mask_label

FACE = np.array([10, 10, 40, 40] + [0] * 11, np.float32)  # YuNet row: x, y, w, h, ...
IMAGE = np.zeros((64, 64, 3), np.uint8)


class Reader:
    """The detector's (mask, no-mask) scores on a face, fixed."""

    def __init__(self, mask: float, no_mask: float) -> None:
        self.scores = (mask, no_mask)

    def model_reading(self, bgr: np.ndarray, face: np.ndarray) -> tuple[float, float]:
        return self.scores


@pytest.mark.parametrize(
    ("source", "scores", "nose", "label"),
    [
        # Both bare: no mask anywhere.
        ("carpark-frames", (0.1, 0.9), NOSE_BARE - 1, "front_without_mask"),
        # The detector unsure, the nose bare: no mask only where masks are rare.
        ("hardhat-heads", (0.2, 0.3), NOSE_BARE - 1, "front_without_mask"),
        ("carpark-frames", (0.2, 0.3), NOSE_BARE - 1, "head"),
        # The detector bare, the nose unsure: likewise.
        ("hardhat-heads", (0.1, 0.9), (NOSE_BARE + NOSE_MASK) / 2, "front_without_mask"),
        ("street-masks-229", (0.1, 0.9), (NOSE_BARE + NOSE_MASK) / 2, "head"),
        # A signal saying mask is never overruled, even where masks are rare.
        ("hardhat-heads", (0.2, 0.3), NOSE_MASK + 1, "head"),
        ("hardhat-heads", (0.9, 0.1), NOSE_BARE - 1, "head"),
        # Both mask: trusted where checked, not on hard-hat photos.
        ("carpark-frames", (0.9, 0.1), NOSE_MASK + 1, "front_with_mask"),
        ("hardhat-heads", (0.9, 0.1), NOSE_MASK + 1, "head"),
    ],
)
def test_mask_label(
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    scores: tuple[float, float],
    nose: float,
    label: str,
) -> None:
    monkeypatch.setattr(headlabels, "nose_distance", lambda bgr, face: nose)
    got, why = mask_label(Reader(*scores), IMAGE, FACE, source)  # type: ignore[arg-type]
    assert got == label, why
