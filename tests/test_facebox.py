"""The face-box convention of the labelling step (models/training/facebox.py).

YuNet's face boxes are moved onto face-mask-853's; the shifts are fitted on that set's training
split, so the fit is re-run on the real photos (skipped without ../shared) and must give the
shifts the labels were made with, and must bring YuNet's boxes closer to the drawn ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.training import facebox
from models.training.data import face_mask_split
from models.training.facebox import EDGE_SHIFT, photo_box

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_photo_box_moves_each_edge_by_its_share_of_the_box() -> None:
    """Edges move by their fraction of the YuNet box's width (x) or height (y), per label."""
    dx1, dy1, dx2, dy2 = EDGE_SHIFT["front_without_mask"]
    got = photo_box((100, 200, 140, 250), "front_without_mask")
    assert got == pytest.approx((100 + 40 * dx1, 200 + 50 * dy1, 140 + 40 * dx2, 250 + 50 * dy2))
    # The forehead YuNet takes in is dropped: the top edge moves down more than the bottom.
    assert got[1] - 200 > got[3] - 250 > 0
    assert photo_box((0, 0, 10, 10), "front_with_mask") != photo_box(
        (0, 0, 10, 10), "front_without_mask"
    )


def test_fit_on_the_photos_gives_the_shifts_in_use() -> None:
    """Refitting on face-mask-853's training split reproduces EDGE_SHIFT, and on its
    validation split the moved boxes overlap the drawn ones better than YuNet's own."""
    dataset = SHARED / "datasets" / "face-mask-853"
    if not (dataset / "annotations").is_dir() or not (SHARED / facebox.YUNET).is_file():
        pytest.skip(f"{dataset} or YuNet is absent (third-party data kept in ../shared)")
    train, val = face_mask_split(dataset)
    fitted = facebox.fit(facebox.yunet_pairs(SHARED, train))
    for label, edges in EDGE_SHIFT.items():
        assert np.allclose(fitted[label], edges, atol=0.002), (label, fitted[label])
    pairs = facebox.yunet_pairs(SHARED, val)
    for label in EDGE_SHIFT:
        found = facebox.median_iou(pairs, label, moved=False)
        moved = facebox.median_iou(pairs, label, moved=True)
        assert moved > found + 0.05, (label, found, moved)
