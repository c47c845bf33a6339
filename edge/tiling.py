"""Detect small heads in large frames by running the detector on overlapping tiles.

The model sees its input at 320 x 320: a 1280 x 720 frame shrinks 4x, so a 16 px head becomes
4 px, far below what the model finds. Cutting the frame into a grid of tiles that overlap (so a
head on a seam is whole in at least one tile) gives each head more model pixels, at the price of
one inference per tile. Detections from all tiles are merged by class-agnostic NMS, and a box
that touches a tile's inner edge is dropped when another tile holds all of it: that tile saw the
whole head, this one half of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edge.detection import Detection
from edge.postprocess import nms

Window = tuple[int, int, int, int]

# A box within this many pixels of a tile's inner edge is cut by it.
EDGE_PX = 2


def tile_windows(width: int, height: int, columns: int, rows: int, overlap: float) -> list[Window]:
    """Tile rectangles (x1, y1, x2, y2) covering the frame; neighbours share `overlap` of a tile.

    With overlap o and n tiles along a side of length L, each tile is L / (n - (n - 1) o) long.
    """
    def spans(length: int, n: int) -> list[tuple[int, int]]:
        if n == 1:
            return [(0, length)]
        size = length / (n - (n - 1) * overlap)
        step = size * (1 - overlap)
        return [(round(i * step), min(length, round(i * step + size))) for i in range(n)]

    return [
        (x1, y1, x2, y2) for y1, y2 in spans(height, rows) for x1, x2 in spans(width, columns)
    ]


def _cut_by_inner_edge(box: tuple[float, ...], window: Window, width: int, height: int) -> bool:
    """Whether the box touches an edge of its tile that is not the frame's edge."""
    x1, y1, x2, y2 = box
    wx1, wy1, wx2, wy2 = window
    return (
        (wx1 > 0 and x1 <= wx1 + EDGE_PX)
        or (wy1 > 0 and y1 <= wy1 + EDGE_PX)
        or (wx2 < width and x2 >= wx2 - EDGE_PX)
        or (wy2 < height and y2 >= wy2 - EDGE_PX)
    )


def _inside(box: tuple[float, ...], window: Window) -> bool:
    """Whether the box lies within the window, clear of its edges."""
    return (
        box[0] > window[0] + EDGE_PX
        and box[1] > window[1] + EDGE_PX
        and box[2] < window[2] - EDGE_PX
        and box[3] < window[3] - EDGE_PX
    )


def detect_tiled(
    detect: Callable[[np.ndarray], list[Detection]],
    frame: np.ndarray,
    windows: list[Window],
    nms_iou: float,
) -> list[Detection]:
    """Run `detect` on each window of the frame and merge the heads into frame coordinates."""
    h, w = frame.shape[:2]
    found: list[Detection] = []
    for window in windows:
        x1, y1, x2, y2 = window
        # A view, not a copy: the detector's letterbox reads it once.
        for det in detect(frame[y1:y2, x1:x2]):
            bx1, by1, bx2, by2 = det.box
            box = (bx1 + x1, by1 + y1, bx2 + x1, by2 + y1)
            if _cut_by_inner_edge(box, window, w, h) and any(
                _inside(box, other) for other in windows if other != window
            ):
                continue
            found.append(replace(det, box=box))
    if len(windows) == 1 or len(found) < 2:
        return found
    boxes = np.array([d.box for d in found], dtype=np.float32)
    scores = np.array([d.score for d in found], dtype=np.float32)
    keep = nms(boxes, scores, nms_iou, len(found))
    return [found[i] for i in keep]
