"""Training targets: which anchor learns which head, label and box (TensorFlow-free, so the
rule is unit-tested in the runtime venv)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.anchors import (
    anchors_xyxy,
    encode_boxes,
    inside_matrix,
    iou_matrix,
    make_anchors,
    with_input_size,
)
from edge.detection import FRONT_WITH_MASK, FRONT_WITHOUT_MASK, LABELS
from models.training.data import IGNORE, UNKNOWN, UNKNOWN_FACE

POS_IOU, NEG_IOU = 0.45, 0.3
NUM_CLASSES = len(LABELS)
# Around a frontal face: an anchor covering at least this share of the face, or overlapping it
# by NEG_IOU, and at most HALO_MAX_AREA times its area (a head box with a hat is about 4x).
HALO_COVER, HALO_MAX_AREA = 0.5, 9.0


@dataclass(frozen=True)
class Layout:
    """The square input side and the anchors on it: what targets are encoded against."""

    size: int
    anchors: np.ndarray  # (N, 4) cx, cy, w, h
    anchor_boxes: np.ndarray  # the same as x1, y1, x2, y2

    @classmethod
    def of(cls, size: int) -> Layout:
        """The project's anchor levels on a size x size input."""
        anchors = make_anchors(with_input_size(size))
        return cls(size, anchors, anchors_xyxy(anchors))


Targets = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def front_halo(layout: Layout, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Anchors around a labelled frontal face that no other head or ignore region touches:
    the face's own head box (brow to crown, hat and all) among them.

    The rest of the rule leaves these without a class target (they overlap a head), and the
    model learnt face_not_visible there: its most common false face_not_visible on the hard-hat
    photos was the head box around a face it also boxed as a face. Taught as 0 with
    encode_targets' halo_classes. (A, ) bool.
    """
    n = len(layout.anchors)
    front = (labels == FRONT_WITH_MASK) | (labels == FRONT_WITHOUT_MASK)
    if not front.any():
        return np.zeros(n, bool)
    a = layout.anchor_boxes
    faces = boxes[front]
    face_area = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    anchor_area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    near = (inside_matrix(faces, a).T >= HALO_COVER) | (iou_matrix(a, faces) >= NEG_IOU)
    near &= anchor_area[:, None] <= HALO_MAX_AREA * face_area
    halo = near.any(axis=1)
    # Another head nearby may be a back of a head; an ignore region may be anything.
    for kind, limit in ((~front & (labels != IGNORE), NEG_IOU), (labels == IGNORE, 0.2)):
        if kind.any():
            halo &= iou_matrix(a, boxes[kind]).max(axis=1) < limit
    return halo


def encode_targets(
    layout: Layout,
    boxes: np.ndarray,
    labels: np.ndarray,
    background_classes: tuple[int, ...],
    absent_classes: tuple[int, ...] = (),
    halo_classes: tuple[int, ...] = (),
) -> Targets:
    """Per-anchor class targets and weights, box targets and weights, and "some head" weights
    for one image.

    An anchor is positive for a labelled head when IoU >= POS_IOU (and every head gets its best
    anchor, so tiny heads are never unmatched); negative when IoU < NEG_IOU with every head;
    anchors on ignore regions or between the thresholds carry no class loss. Negatives teach
    only the image's background_classes. absent_classes (labels nobody in the image carries)
    are taught as 0 on every anchor that is not a positive, ignore regions included.

    A head of UNKNOWN label is matched like a labelled one, but its anchors get no per-class
    target: any_w marks them, and the loss teaches that *some* label is present there (see
    any_head_loss) and regresses the box. Like an ignore region it is never background.
    UNKNOWN_FACE is the same without the box: the head box of a face is not the face's box.

    halo_classes are taught as 0 on the anchors around a frontal face (front_halo) that are
    not its positives.
    """
    n = len(layout.anchors)
    cls_t = np.zeros((n, NUM_CLASSES), np.float32)
    cls_w = np.zeros((n, NUM_CLASSES), np.float32)
    box_t = np.zeros((n, 4), np.float32)
    box_w = np.zeros(n, np.float32)
    any_w = np.zeros(n, np.float32)
    cls_w[:, list(background_classes)] = 1.0
    if len(boxes) == 0:
        cls_w[:, list(absent_classes)] = 1.0
        return cls_t, cls_w, box_t, box_w, any_w
    ious = iou_matrix(layout.anchor_boxes, boxes)  # (A, G)
    matched = (labels >= 0) | (labels == UNKNOWN) | (labels == UNKNOWN_FACE)
    best_gt = ious.argmax(axis=1)
    best_iou = ious.max(axis=1)
    # Anything overlapping a head (labelled, unknown or ignored) is not clean background.
    cls_w[best_iou >= NEG_IOU] = 0.0
    if (labels < 0).any():
        ign = ious[:, labels < 0].max(axis=1)
        cls_w[ign >= 0.2] = 0.0
    pos = (best_iou >= POS_IOU) & matched[best_gt]
    # Force each head's best anchor positive.
    for g in np.flatnonzero(matched):
        a = int(ious[:, g].argmax())
        if ious[a, g] > 0.05:
            pos[a] = True
            best_gt[a] = g
    idx = np.flatnonzero(pos)
    gts = best_gt[idx]
    known = labels[gts] >= 0
    cls_t[idx[known], labels[gts[known]]] = 1.0
    cls_w[idx[known]] = 1.0  # a positive is a negative for the other two labels
    any_w[idx[~known]] = 1.0
    box_t[idx] = encode_boxes(boxes[gts], layout.anchors[idx])
    box_w[idx] = labels[gts] != UNKNOWN_FACE
    # Positives carry target 0 for absent classes already; unknown heads learn them as 0 too.
    cls_w[:, list(absent_classes)] = 1.0
    if halo_classes:
        halo = front_halo(layout, boxes, labels)
        halo[idx] = False
        cls_w[np.ix_(np.flatnonzero(halo), np.array(halo_classes))] = 1.0
    return cls_t, cls_w, box_t, box_w, any_w
