"""From raw model outputs to head boxes: score threshold, box decoding and NMS, vectorised."""

from __future__ import annotations

import numpy as np

from edge.anchors import decode_boxes, iou_matrix

# NMS runs on at most this many candidates: enough for a crowded street, and it keeps the
# pairwise IoU matrix small (200 x 200) on the per-frame path.
MAX_CANDIDATES = 200


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy non-maximum suppression; returns indices into boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    ious = iou_matrix(boxes, boxes)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= max_keep:
            break
        suppressed |= ious[i] > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def select_heads(
    scores: np.ndarray,
    deltas: np.ndarray,
    anchors: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads from per-anchor class scores (A, C) in [0, 1] and box offsets (A, 4).

    NMS is class-agnostic: one head has one box, and its three labels compete for it.
    Returns boxes (K, 4) x1y1x2y2 in model-input pixels, labels (K,), class scores (K, C).
    """
    best = scores.max(axis=1)
    cand = np.flatnonzero(best >= score_threshold)
    if len(cand) > MAX_CANDIDATES:
        cand = cand[np.argpartition(-best[cand], MAX_CANDIDATES)[:MAX_CANDIDATES]]
    if len(cand) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, scores.shape[1]))
    boxes = decode_boxes(deltas[cand].astype(np.float32), anchors[cand])
    keep = nms(boxes, best[cand], iou_threshold, max_detections)
    kept_scores = scores[cand[keep]]
    return boxes[keep], kept_scores.argmax(axis=1), kept_scores
