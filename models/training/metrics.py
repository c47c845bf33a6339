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
    detection on one (see `inside_regions`) is neither a hit nor a false alarm.
    """

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det_boxes: np.ndarray
    det_labels: np.ndarray
    det_scores: np.ndarray


def inside_regions(boxes: np.ndarray, regions: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Which boxes lie in an ignore region: at least `share` of the box's own area inside one.

    Intersection over the box's area, not IoU (COCO's rule for crowd regions): an unknown head
    is boxed by the whole head, and a face box on it covers only a third of that, so by IoU a
    right face on a head whose label is unknown would count as a false alarm.
    """
    if not len(boxes) or not len(regions):
        return np.zeros(len(boxes), dtype=bool)
    x1 = np.maximum(boxes[:, None, 0], regions[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], regions[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], regions[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], regions[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (inter / np.maximum(area, 1e-9)[:, None] >= share).any(axis=1)


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
        on_ignored = inside_regions(boxes, ign)
        for k in range(len(boxes)):
            if ious.shape[1]:
                cand = np.where(~used, ious[k], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= iou:
                    used[j] = True
                    scores.append(sc[k])
                    hits.append(1)
                    continue
            if on_ignored[k]:
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
