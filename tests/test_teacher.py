"""The MoveNet teacher (models/training/teacher.py): the keypoints -> head label/box rule on
constructed poses, label files, and (when ../shared is present) a real clip through real MoveNet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.training.teacher import (
    L_EAR,
    L_EYE,
    L_HIP,
    L_SH,
    NOSE,
    R_EAR,
    R_EYE,
    R_HIP,
    R_SH,
    FrameLabels,
    HeadLabel,
    count_labels,
    facing,
    head_from_keypoints,
    label_clip,
    load_labels,
    read_frame,
    save_labels,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
W, H = 768, 432


def pose(points: dict[int, tuple[float, float]], score: float = 0.7) -> np.ndarray:
    """(17, 3) keypoints (x, y, score): the given points at `score`, the rest unseen (0.05)."""
    kp = np.zeros((17, 3), np.float32)
    kp[:, 2] = 0.05
    for i, (x, y) in points.items():
        kp[i] = (x, y, score)
    return kp


def person(
    front: bool, shoulder_half: float = 45.0, dx: float = 0.0, dy: float = 0.0
) -> np.ndarray:
    """An upright person centred on x=400+dx, seen from the front or from behind.

    Seen from the front, the person's left side is on the image's right. Face keypoints are
    confident either way, as MoveNet makes them on the back of a head.
    """
    side = 1.0 if front else -1.0
    cx = 400.0 + dx
    return pose(
        {
            NOSE: (cx, 62 + dy),
            L_EYE: (cx + side * 10, 55 + dy),
            R_EYE: (cx - side * 10, 55 + dy),
            L_EAR: (cx + side * 20, 60 + dy),
            R_EAR: (cx - side * 20, 60 + dy),
            L_SH: (cx + side * shoulder_half, 120 + dy),
            R_SH: (cx - side * shoulder_half, 120 + dy),
            L_HIP: (cx + side * 30, 240 + dy),
            R_HIP: (cx - side * 30, 240 + dy),
        }
    )


def centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Centre of an (x1, y1, x2, y2) box."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def test_back_view_is_face_not_visible_with_the_box_on_the_ears() -> None:
    """Shoulders and ears in 'back' order: face_not_visible even with confident 'face' points."""
    head = head_from_keypoints(person(front=False), W, H)
    assert head is not None
    assert head.label == "face_not_visible"
    x1, y1, x2, y2 = head.box
    cx, cy = centre(head.box)
    assert abs(cx - 400) < 2 and abs(cy - 60) < 4  # centred on the ears
    assert 40 <= x2 - x1 <= 60  # ears 40 px apart: a head a little wider than that
    assert 1.1 <= (y2 - y1) / (x2 - x1) <= 1.3  # taller than wide


def test_front_view_with_a_confident_face_is_front_without_mask() -> None:
    """Shoulders in 'front' order and a confident nose and both eyes: a frontal face."""
    head = head_from_keypoints(person(front=True), W, H)
    assert head is not None
    assert head.label == "front_without_mask"
    x1, y1, x2, y2 = head.box
    for x, y in ((400, 62), (410, 55), (390, 55)):  # nose and eyes inside the box
        assert x1 < x < x2 and y1 < y < y2
    assert y2 - y1 > x2 - x1


def test_front_view_without_a_confident_face_is_ignored() -> None:
    """Facing the camera but the eyes are unsure: neither label, an ignore region."""
    kp = person(front=True)
    kp[[L_EYE, R_EYE], 2] = 0.1
    head = head_from_keypoints(kp, W, H)
    assert head is not None and head.label == "ignore"


def test_side_on_person_is_ignored() -> None:
    """Shoulders 20 px apart over a 120 px torso: a profile, where a mask would be visible."""
    kp = person(front=False, shoulder_half=10.0)
    assert abs(facing(kp)) < 0.5
    head = head_from_keypoints(kp, W, H)
    assert head is not None and head.label == "ignore"
    # The box is still head-sized (from the torso), not shrunk to the shoulder gap.
    assert head.box[2] - head.box[0] >= 0.3 * 120


def test_ears_against_shoulders_are_ignored() -> None:
    """Ears in front order, shoulders in back order: MoveNet mixed the sides up."""
    kp = person(front=False)
    kp[[L_EAR, R_EAR]] = kp[[R_EAR, L_EAR]]
    assert facing(kp) == 0.0
    head = head_from_keypoints(kp, W, H)
    assert head is not None and head.label == "ignore"


def test_head_cut_by_the_top_border_is_ignored_and_clipped() -> None:
    """A head half above the frame: the clipped box is kept as an ignore region."""
    head = head_from_keypoints(person(front=False, dy=-60), W, H)
    assert head is not None and head.label == "ignore"
    assert head.box[1] == 0.0


def test_shoulders_leaving_the_frame_are_ignored() -> None:
    """A person close under the camera whose shoulders reach the bottom border."""
    head = head_from_keypoints(person(front=False, dy=H - 121), W, H)
    assert head is not None and head.label == "ignore"


def test_tiny_head_is_ignored() -> None:
    """A person a tenth of the size: the head is under 10 px wide."""
    kp = person(front=False)
    kp[:, :2] = 400 + (kp[:, :2] - 400) / 10
    head = head_from_keypoints(kp, W, H)
    assert head is not None and head.label == "ignore"


def test_no_confident_body_is_no_person() -> None:
    """Only a confident nose: no shoulders, no ears, no head to label."""
    assert head_from_keypoints(pose({NOSE: (400, 62)}), W, H) is None


def test_labels_round_trip_and_bad_label_is_named(tmp_path: Path) -> None:
    """save_labels then load_labels gives the same frames; a bad label names file and entry."""
    labels = [
        FrameLabels("c.mp4", 0, W, H, [HeadLabel((1.0, 2.0, 30.0, 40.0), "face_not_visible")]),
        FrameLabels("c.mp4", 3, W, H, []),
    ]
    path = tmp_path / "labels.json"
    save_labels(labels, path)
    assert load_labels(path) == labels
    assert count_labels(labels) == {"front_without_mask": 0, "face_not_visible": 1, "ignore": 0}
    path.write_text(path.read_text().replace("face_not_visible", "smiling"))
    with pytest.raises(ValueError, match=r"labels\.json: entry 0: bad head label 'smiling'"):
        load_labels(path)


needs_shared = pytest.mark.skipif(
    not (SHARED / "videos").is_dir(), reason="../shared (videos, MoveNet weights) is absent"
)


@needs_shared
def test_walking_clip_gives_frontal_faces_only() -> None:
    """Two people walking toward the camera: frontal faces found, never a back of a head."""
    clip = SHARED / "videos" / "face-demographics-walking.gif"
    labels = label_clip(clip, every_n=6)
    assert [fl.frame_index for fl in labels] == list(range(0, 35, 6))
    counts = count_labels(labels)
    assert counts["face_not_visible"] == 0
    assert counts["front_without_mask"] >= len(labels)  # two people, most frames
    for fl in labels:
        assert (fl.width, fl.height) == (480, 270)
        for head in fl.heads:
            x1, y1, x2, y2 = head.box
            assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 270
            assert x2 - x1 < 60  # a head, not a body
    assert label_clip(clip, every_n=6) == labels  # deterministic
    assert read_frame(clip, 6).shape == (270, 480, 3)
