"""From raw model outputs to head boxes: score threshold, box decoding and NMS, vectorised.

The per-frame path (`select_heads_quantized`) thresholds the model's uint8/int8 outputs as they
come and dequantises only the anchors that pass: most of the 5,800 anchors score near zero on
every frame, so converting them all to float would be most of the post-processing time.
"""

from __future__ import annotations

import numpy as np

from edge.anchors import decode_boxes, iou_matrix

# NMS runs on at most this many candidates: enough for a crowded street, and it keeps the
# pairwise IoU matrix small (200 x 200) on the per-frame path.
MAX_CANDIDATES = 200

Quantization = tuple[float, int]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy non-maximum suppression; returns indices into boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 1:  # the usual case on a quiet street: nothing to suppress
        return order
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


def row_max(values: np.ndarray) -> np.ndarray:
    """The maximum of each row of a (N, C) array.

    Column by column: numpy's `max(axis=1)` over 3 columns costs ten times as much.
    """
    best = values[:, 0].copy()
    for c in range(1, values.shape[1]):
        np.maximum(best, values[:, c], out=best)
    return best


def dequantize(raw: np.ndarray, quantization: Quantization) -> np.ndarray:
    """Quantised tensor values as float32 reals: (raw - zero) * scale (scale 0: not quantised)."""
    scale, zero = quantization
    if scale == 0:
        return raw.astype(np.float32)
    return (raw.astype(np.float32) - zero) * np.float32(scale)


def quantized_threshold(threshold: float, quantization: Quantization, dtype: np.dtype) -> int:
    """The smallest raw value of dtype whose dequantised value is >= threshold.

    Computed by dequantising every raw value with `dequantize`, so that thresholding raw
    values keeps exactly the anchors that thresholding float scores would keep. Returns one
    past the dtype's maximum when no raw value reaches the threshold.
    """
    info = np.iinfo(dtype)
    values = dequantize(np.arange(info.min, info.max + 1, dtype=np.int64), quantization)
    passing = np.flatnonzero(values >= np.float32(threshold))
    return int(info.min + passing[0]) if len(passing) else int(info.max) + 1


def _heads(
    cand: np.ndarray,
    cand_scores: np.ndarray,
    cand_deltas: np.ndarray,
    anchors: np.ndarray,
    iou_threshold: float,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the candidate anchors' boxes, NMS, and the kept boxes, labels and scores."""
    boxes = decode_boxes(cand_deltas.astype(np.float32), anchors[cand])
    keep = nms(boxes, row_max(cand_scores), iou_threshold, max_detections)
    kept_scores = cand_scores[keep]
    return boxes[keep], kept_scores.argmax(axis=1), kept_scores


def _none(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No heads: empty boxes, labels and scores."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, classes))


def _strongest(cand: np.ndarray, best: np.ndarray) -> np.ndarray:
    """At most MAX_CANDIDATES of the candidate anchors, the highest-scoring ones."""
    if len(cand) > MAX_CANDIDATES:
        cand = cand[np.argpartition(-best[cand].astype(np.float32), MAX_CANDIDATES)]
        cand = np.sort(cand[:MAX_CANDIDATES])
    return cand


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
    best = row_max(scores)
    cand = _strongest(np.flatnonzero(best >= score_threshold), best)
    if len(cand) == 0:
        return _none(scores.shape[1])
    return _heads(cand, scores[cand], deltas[cand], anchors, iou_threshold, max_detections)


class HeadSelector:
    """`select_heads` on a model's raw quantised outputs, with the same result, per frame.

    Built once per model: the score threshold is converted to raw units once, so that a frame
    without a head costs one `max` over the raw scores. Only the anchors above the threshold
    are dequantised. Right after an inference the CPU caches are cold and every numpy call
    costs several times its usual price, so the per-frame path makes as few as it can.
    """

    def __init__(
        self,
        score_quantization: Quantization,
        delta_quantization: Quantization,
        score_dtype: np.dtype,
        anchors: np.ndarray,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int,
    ) -> None:
        """Keep the model's output quantisation, anchors and thresholds."""
        self.score_quantization = score_quantization
        self.delta_quantization = delta_quantization
        self.anchors = anchors
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        # Raw scores order like real ones only for an integer type with a positive scale.
        self.quantized = score_quantization[0] > 0 and np.issubdtype(score_dtype, np.integer)
        self.lowest = (
            quantized_threshold(score_threshold, score_quantization, np.dtype(score_dtype))
            if self.quantized
            else 0
        )

    def __call__(
        self, scores: np.ndarray, deltas: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heads from raw scores (A, C) and raw box offsets (A, 4) as the interpreter gives them.

        Returns boxes (K, 4) x1y1x2y2 in model-input pixels, labels (K,), class scores (K, C).
        """
        if not self.quantized:
            # A float model (or a quantisation that does not preserve order): the float path.
            return select_heads(
                dequantize(scores, self.score_quantization),
                dequantize(deltas, self.delta_quantization),
                self.anchors,
                self.score_threshold,
                self.iou_threshold,
                self.max_detections,
            )
        if scores.max() < self.lowest:  # the usual frame: no anchor reaches the threshold
            return _none(scores.shape[1])
        best = row_max(scores)
        cand = _strongest(np.flatnonzero(best >= self.lowest), best)
        return _heads(
            cand,
            dequantize(scores[cand], self.score_quantization),
            dequantize(deltas[cand], self.delta_quantization),
            self.anchors,
            self.iou_threshold,
            self.max_detections,
        )
