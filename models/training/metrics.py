"""Detection metrics: AP at IoU 0.5 per class with ignore regions (VOC all-point interpolation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.anchors import iou_matrix


@dataclass
class ImageResult:
    """Ground truth and detections of one image, boxes x1y1x2y2 in the same pixel frame.

    gt_labels below 0 are ignore regions (incorrectly worn masks, heads of unknown label): a
    detection on one is neither a hit nor a false alarm.
    """

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det_boxes: np.ndarray
    det_labels: np.ndarray
    det_scores: np.ndarray


def average_precision(results: Sequence[ImageResult], cls: int, iou: float = 0.5) -> float:
    """AP50 of one class over a set of images; nan when the class has no ground truth."""
    scores, hits = [], []
    n_gt = 0
    for r in results:
        gt = r.gt_boxes[r.gt_labels == cls]
        ign = r.gt_boxes[r.gt_labels < 0]
        n_gt += len(gt)
        sel = r.det_labels == cls
        boxes, sc = r.det_boxes[sel], r.det_scores[sel]
        order = np.argsort(-sc)
        boxes, sc = boxes[order], sc[order]
        used = np.zeros(len(gt), dtype=bool)
        ious = iou_matrix(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        ign_iou = iou_matrix(boxes, ign) if len(ign) and len(boxes) else None
        for k in range(len(boxes)):
            if ious.shape[1]:
                cand = np.where(~used, ious[k], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= iou:
                    used[j] = True
                    scores.append(sc[k])
                    hits.append(1)
                    continue
            if ign_iou is not None and ign_iou[k].max() >= iou:
                continue
            scores.append(sc[k])
            hits.append(0)
    if n_gt == 0:
        return float("nan")
    if not scores:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(hits)[order])
    fp = np.cumsum(1 - np.asarray(hits)[order])
    recall = tp / n_gt
    precision = tp / np.maximum(tp + fp, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
