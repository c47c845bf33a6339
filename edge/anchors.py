"""The detector's anchor layout, shared by the training code and the runtime decoder.

The model predicts, for every anchor, three class scores and four box offsets. Which anchor sits
where is not stored in the .tflite file, so the trainer and the decoder must agree on it: both
build it from ANCHOR_SPEC here. A model whose output count differs from the layout is rejected
at load time with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# Box offsets are scaled by these (centre-size encoding, as in SSD): small numbers for the
# centre, larger for the log-size, so both regress in a similar numeric range.
BOX_VARIANCES = np.array([0.1, 0.1, 0.2, 0.2], dtype=np.float32)


@dataclass(frozen=True)
class AnchorLevel:
    """One feature map: its stride in input pixels and the anchor sizes at each cell."""

    stride: int
    sizes: tuple[float, ...]


@dataclass(frozen=True)
class AnchorSpec:
    """The full layout: square input side, feature levels, head aspect ratio (width / height)."""

    input_size: int
    levels: tuple[AnchorLevel, ...]
    aspect: float


# Heads in face-mask-853 at 320 px have a median side of 18 px and a quarter are under 12 px,
# so the stride-8 level carries three small sizes; faces are slightly taller than wide (0.9).
# The levels do not depend on the input size; the runtime takes the size from the model's
# input tensor (with_input_size), so a model exported at any square multiple of the coarsest
# stride (64) decodes right. The stride-64 level carries faces and heads that fill most of the
# input (a door camera, a person next to the lens): 230 and 330 px, so a whole-frame face still
# meets an anchor.
ANCHOR_SPEC = AnchorSpec(
    input_size=320,
    levels=(
        AnchorLevel(stride=8, sizes=(8.0, 13.0, 20.0)),
        AnchorLevel(stride=16, sizes=(32.0, 52.0)),
        AnchorLevel(stride=32, sizes=(88.0, 150.0)),
        AnchorLevel(stride=64, sizes=(230.0, 330.0)),
    ),
    aspect=0.9,
)


# A square input side must be a multiple of the coarsest stride for every level's grid to fit.
INPUT_MULTIPLE = max(level.stride for level in ANCHOR_SPEC.levels)


def with_input_size(size: int, spec: AnchorSpec = ANCHOR_SPEC) -> AnchorSpec:
    """The same anchor levels for a square input of another side (a multiple of the strides)."""
    return replace(spec, input_size=size)


def make_anchors(spec: AnchorSpec = ANCHOR_SPEC) -> np.ndarray:
    """All anchors as (N, 4) float32 (cx, cy, w, h) in input pixels, in model output order.

    Order: level by level; within a level row-major over cells; within a cell size by size.
    That is the order of a (H, W, A*k) convolution output reshaped to (H*W*A, k).
    """
    out = []
    for level in spec.levels:
        cells = spec.input_size // level.stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) * level.stride
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        per_size = []
        for size in level.sizes:
            w = size * np.sqrt(spec.aspect)
            h = size / np.sqrt(spec.aspect)
            per_size.append(
                np.stack([cx, cy, np.full_like(cx, w), np.full_like(cy, h)], axis=-1)
            )
        out.append(np.stack(per_size, axis=2).reshape(-1, 4))
    return np.concatenate(out, axis=0).astype(np.float32)


def anchors_per_cell(spec: AnchorSpec = ANCHOR_SPEC) -> list[int]:
    """Anchors per feature-map cell, level by level (the trainer sizes its head with this)."""
    return [len(level.sizes) for level in spec.levels]


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Turn (N, 4) offsets (dx, dy, dw, dh) into (N, 4) boxes (x1, y1, x2, y2), input pixels."""
    d = deltas * BOX_VARIANCES
    cx = anchors[:, 0] + d[:, 0] * anchors[:, 2]
    cy = anchors[:, 1] + d[:, 1] * anchors[:, 3]
    # Clip the log-size so a wild int8 value cannot overflow exp.
    w = anchors[:, 2] * np.exp(np.clip(d[:, 2], -6.0, 6.0))
    h = anchors[:, 3] * np.exp(np.clip(d[:, 3], -6.0, 6.0))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def encode_boxes(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of decode_boxes: (N, 4) x1y1x2y2 boxes matched to (N, 4) anchors -> offsets."""
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    d = np.stack(
        [
            (cx - anchors[:, 0]) / anchors[:, 2],
            (cy - anchors[:, 1]) / anchors[:, 3],
            np.log(w / anchors[:, 2]),
            np.log(h / anchors[:, 3]),
        ],
        axis=1,
    )
    return (d / BOX_VARIANCES).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of a (N, 4) and every box of b (M, 4), both x1y1x2y2 -> (N, M)."""
    # Both corners at once on (N, M, 2) arrays: half the numpy calls of per-axis code, which
    # matters for the tracker's 10 x 10 matrices, where each call costs more than its arithmetic.
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    np.maximum(wh, 0.0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    size_a = a[:, 2:] - a[:, :2]
    size_b = b[:, 2:] - b[:, :2]
    union = (size_a[:, 0] * size_a[:, 1])[:, None] + size_b[:, 0] * size_b[:, 1] - inter
    return inter / np.maximum(union, 1e-9)


def inside_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of each box of a (N, 4) that lies inside each box of b (M, 4) -> (N, M).

    Intersection over a's own area (x1y1x2y2); a box of no area lies inside nothing.
    """
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area = np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-9)
    return inter / area[:, None]


def anchors_xyxy(anchors: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h anchors as x1, y1, x2, y2."""
    half = anchors[:, 2:] / 2
    return np.concatenate([anchors[:, :2] - half, anchors[:, :2] + half], axis=1)
