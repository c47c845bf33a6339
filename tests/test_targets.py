"""Training targets and labels: heads of unknown label, zoomed views, the labels files.

Constructed data only (no TensorFlow, no ../shared): the rules the trainer relies on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.anchors import ANCHOR_SPEC, anchors_xyxy, iou_matrix, make_anchors
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK
from models.training.augment import ZOOM_HEAD_PX, zoom_on_head
from models.training.data import (
    IGNORE,
    UNKNOWN,
    UNKNOWN_FACE,
    in_validation,
    label_code,
    read_labels,
    write_labels,
)
from models.training.targets import NEG_IOU, Layout, encode_targets

ALL = (FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE)


def test_the_largest_anchors_reach_a_whole_frame_face() -> None:
    """A face filling the 320 input meets an anchor well (the stride-64 level)."""
    corners = anchors_xyxy(make_anchors(ANCHOR_SPEC))
    whole = np.array([[10, 0, 300, 320]], np.float32)
    assert iou_matrix(corners, whole).max() > 0.7


def test_an_unknown_head_teaches_some_head_and_its_box_but_no_label() -> None:
    layout = Layout.of(320)
    boxes = np.array([[100, 100, 140, 145], [200, 200, 240, 245]], np.float32)
    cls_t, cls_w, _, box_w, any_w = encode_targets(
        layout, boxes, np.array([FRONT_WITH_MASK, UNKNOWN]), ALL
    )
    known = np.flatnonzero(cls_t[:, FRONT_WITH_MASK] == 1)
    unknown = np.flatnonzero(any_w == 1)
    assert len(known) and len(unknown)
    assert not set(known) & set(unknown)
    # Its anchors regress the box, carry no per-class target and no class weight...
    assert (box_w[unknown] == 1).all()
    assert (cls_t[unknown] == 0).all() and (cls_w[unknown] == 0).all()
    # ...and nothing around it is taught as background.
    near = iou_matrix(layout.anchor_boxes, boxes[1:])[:, 0] >= NEG_IOU
    assert (cls_w[near] == 0).all()
    # A labelled head's positives teach every label (1 for its own, 0 for the others).
    assert (cls_w[known] == 1).all() and (any_w[known] == 0).all()


def test_an_ignore_region_teaches_nothing_at_all() -> None:
    layout = Layout.of(320)
    boxes = np.array([[100, 100, 140, 145]], np.float32)
    cls_t, cls_w, _, box_w, any_w = encode_targets(layout, boxes, np.array([IGNORE]), ALL)
    near = iou_matrix(layout.anchor_boxes, boxes)[:, 0] >= 0.2
    assert (cls_w[near] == 0).all() and box_w.sum() == 0 and any_w.sum() == 0
    assert cls_t.sum() == 0


def test_absent_classes_are_taught_zero_on_unknown_heads_too() -> None:
    """Nobody in the clips wears a mask: an unknown head there still learns 'not a mask'."""
    layout = Layout.of(320)
    boxes = np.array([[100, 100, 140, 145]], np.float32)
    _, cls_w, _, _, any_w = encode_targets(
        layout, boxes, np.array([UNKNOWN]), ALL, (FRONT_WITH_MASK,)
    )
    unknown = any_w == 1
    assert (cls_w[unknown, FRONT_WITH_MASK] == 1).all()
    assert (cls_w[unknown, FACE_NOT_VISIBLE] == 0).all()


def test_the_head_box_around_a_face_learns_it_is_not_a_hidden_face() -> None:
    """With halo_classes, anchors on a face's head box (1.6 x wide, 1.9 x high, raised) teach
    face_not_visible 0 even in a face-only photo; next to a back of a head they teach nothing."""
    layout = Layout.of(320)
    face = np.array([[100, 120, 140, 165]], np.float32)
    head = np.array([[88, 96, 152, 182]], np.float32)  # the face's own head, as people box it
    on_head = iou_matrix(layout.anchor_boxes, head)[:, 0] >= 0.6
    front_only = (FRONT_WITH_MASK, FRONT_WITHOUT_MASK)
    _, plain, _, _, _ = encode_targets(layout, face, np.array([FRONT_WITHOUT_MASK]), front_only)
    cls_t, cls_w, _, _, _ = encode_targets(
        layout, face, np.array([FRONT_WITHOUT_MASK]), front_only, (), (FACE_NOT_VISIBLE,)
    )
    assert on_head.any() and (plain[on_head, FACE_NOT_VISIBLE] == 0).all()
    assert (cls_w[on_head, FACE_NOT_VISIBLE] == 1).all()
    assert (cls_t[on_head] == 0).all()  # none of them is one of the face's positives
    # The front classes there keep the overlap rule (no target), and nothing far away changes.
    assert (cls_w[on_head, FRONT_WITH_MASK] == plain[on_head, FRONT_WITH_MASK]).all()
    far = iou_matrix(layout.anchor_boxes, np.array([[0, 0, 300, 300]], np.float32))[:, 0] == 0
    assert (cls_w[far] == plain[far]).all()
    # A back of a head beside the face: anchors on it are its own, never taught 0 by the face.
    back = np.array([[140, 100, 200, 170]], np.float32)
    both = np.concatenate([face, back])
    labels = np.array([FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE])
    cls_t, cls_w, _, _, _ = encode_targets(
        layout, both, labels, front_only, (), (FACE_NOT_VISIBLE,)
    )
    on_back = iou_matrix(layout.anchor_boxes, back)[:, 0] >= NEG_IOU
    assert (cls_w[on_back & (cls_t[:, FACE_NOT_VISIBLE] == 0), FACE_NOT_VISIBLE] == 0).all()
    assert (cls_t[on_back, FACE_NOT_VISIBLE] == 1).any()


def test_zoom_brings_one_labelled_head_large_and_whole_into_view() -> None:
    rng = np.random.default_rng(3)
    image = np.full((400, 600, 3), 90, np.uint8)
    boxes = np.array([[100, 100, 180, 190], [300, 50, 310, 62]], np.float32)
    labels = np.array([FACE_NOT_VISIBLE, UNKNOWN])
    sizes = []
    for _ in range(50):
        out = zoom_on_head(image, boxes, labels, 320, rng)
        assert out is not None  # the 90 px head can always be zoomed
        view, moved = out
        assert view.shape == (320, 320, 3)
        head = moved[0]
        assert head[0] >= -1 and head[1] >= -1 and head[2] <= 321 and head[3] <= 321
        sizes.append(max(head[2] - head[0], head[3] - head[1]))
    assert min(sizes) >= ZOOM_HEAD_PX[0] - 1 and max(sizes) <= ZOOM_HEAD_PX[1] + 1
    # Only labelled heads are zoomed on, and not past 3x their pixels.
    assert zoom_on_head(image, boxes[1:], labels[1:], 320, rng) is None


def test_zoom_prefers_the_asked_labels_at_their_shares() -> None:
    # Three 80 px heads so far apart that a zoomed view holds only the one zoomed on.
    rng = np.random.default_rng(4)
    image = np.full((300, 2400, 3), 90, np.uint8)
    boxes = np.array([[100 + 1000 * i, 100, 180 + 1000 * i, 180] for i in range(3)], np.float32)
    labels = np.array([FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE])
    prefer = ((FACE_NOT_VISIBLE, 0.3), (FRONT_WITHOUT_MASK, 0.5))
    picked = np.zeros(3)
    draws = 900
    for _ in range(draws):
        out = zoom_on_head(image, boxes, labels, 320, rng, prefer)
        assert out is not None
        _, moved = out
        centre_x = (moved[:, 0] + moved[:, 2]) / 2
        (k,) = np.flatnonzero((centre_x >= 0) & (centre_x <= 320))
        picked[k] += 1
    rest = 0.2 / 3  # draws past the preferences pick any of the three
    assert picked / draws == pytest.approx([rest, 0.5 + rest, 0.3 + rest], abs=0.05)


def test_labels_files_round_trip(tmp_path: Path) -> None:
    images = [
        {"image": "a.jpg", "heads": [{"box": [1, 2, 30.04, 40], "label": "head", "why": "x"}]},
        {"image": "b.jpg", "heads": [
            {"box": [5, 5, 9, 9], "label": "face_not_visible", "why": "no face"},
            {"box": [0, 0, 3, 3], "label": "front_with_mask", "why": "x"},
        ]},
    ]
    counts = write_labels(tmp_path / "s.json", "s", images)
    assert counts == {"head": 1, "face_not_visible": 1, "front_with_mask": 1}
    back = read_labels(tmp_path / "s.json")
    assert back["images"][0]["heads"][0] == {"box": [1, 2, 30.0, 40], "label": "head", "why": "x"}
    assert back["images"][1]["heads"][1]["label"] == "front_with_mask"


def test_validation_split_is_fixed_per_image() -> None:
    keys = [f"hardhat-heads/images/{i}.jpg" for i in range(2000)]
    first = [in_validation(k) for k in keys]
    assert first == [in_validation(k) for k in keys]
    assert 0.12 < sum(first) / len(keys) < 0.18


def test_an_unknown_face_teaches_some_head_but_not_its_head_box() -> None:
    """A head on which the teacher saw a face but no label: boxed by the whole head, while
    front classes are boxed by the face, so its anchors learn "a head is here" and no box."""
    layout = Layout.of(320)
    boxes = np.array([[100, 100, 140, 145], [200, 200, 240, 245]], np.float32)
    cls_t, cls_w, _, box_w, any_w = encode_targets(
        layout, boxes, np.array([UNKNOWN, UNKNOWN_FACE]), ALL
    )
    on = iou_matrix(layout.anchor_boxes, boxes).argmax(axis=1)
    head = np.flatnonzero((any_w == 1) & (on == 0))
    face = np.flatnonzero((any_w == 1) & (on == 1))
    assert len(head) and len(face)
    assert (box_w[head] == 1).all() and (box_w[face] == 0).all()
    assert (cls_t[face] == 0).all() and (cls_w[face] == 0).all()


def test_heads_where_the_teacher_saw_a_face_read_as_unknown_faces() -> None:
    assert label_code({"label": "head", "why": "face not frontal"}) == UNKNOWN_FACE
    assert label_code({"label": "head", "why": "mask signals disagree (model ?, nose mask)"}) == (
        UNKNOWN_FACE
    )
    assert label_code({"label": "head", "why": "no face"}) == UNKNOWN
    assert label_code({"label": "head", "why": "unboxed head"}) == UNKNOWN
    assert label_code({"label": "front_without_mask", "why": "face not frontal"}) == (
        FRONT_WITHOUT_MASK
    )
