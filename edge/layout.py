"""Where each part of a frame goes in the model's square input, and back again.

A model input shows one or more windows of the frame (rectangles in frame pixels). The whole
frame or one tile fills the input letterboxed (top-left, aspect kept, zero padding, exactly as
`letterbox_into`); regions share it as a mosaic of grid x grid square cells, each window resized
into the top-left of its cell. A head the model finds belongs to the cell that holds its box's
centre and is mapped back into that window's frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.letterbox import letterbox_into

Window = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Placement:
    """One window of the frame inside the model input.

    Attributes:
        window: (x1, y1, x2, y2) in frame pixels.
        cell: (x1, y1, x2, y2) in input pixels: the square slot the window was given.
        scale: input pixels per frame pixel.
    """

    window: Window
    cell: tuple[int, int, int, int]
    scale: float


def letterboxed(window: Window, size: int) -> list[Placement]:
    """One window filling a size x size input, letterboxed as `letterbox_into` does it."""
    x1, y1, x2, y2 = window
    scale = size / max(x2 - x1, y2 - y1)
    return [Placement(window, (0, 0, size, size), scale)]


def mosaic(windows: Sequence[Window], size: int, grid: int) -> list[Placement]:
    """Up to grid x grid windows in one size x size input, row by row, each in its own cell."""
    if len(windows) > grid * grid:
        raise ValueError(f"{len(windows)} windows do not fit a {grid} x {grid} mosaic")
    side = size // grid
    placements = []
    for i, window in enumerate(windows):
        row, col = divmod(i, grid)
        x1, y1, x2, y2 = window
        scale = side / max(x2 - x1, y2 - y1)
        cell = (col * side, row * side, (col + 1) * side, (row + 1) * side)
        placements.append(Placement(window, cell, scale))
    return placements


def compose_into(frame: np.ndarray, placements: Sequence[Placement], target: np.ndarray) -> None:
    """Draw each placement's window of a BGR frame into target (RGB, size x size x 3).

    A single placement is `letterbox_into` of its window (the same pixels as before mosaics
    existed); several are resized into their cells, the rest of the input left black.
    """
    if len(placements) == 1 and placements[0].cell == (0, 0, target.shape[1], target.shape[0]):
        x1, y1, x2, y2 = placements[0].window
        letterbox_into(frame[y1:y2, x1:x2], target)
        return
    target.fill(0)
    for p in placements:
        x1, y1, x2, y2 = p.window
        cx, cy = p.cell[0], p.cell[1]
        w = max(1, min(p.cell[2] - cx, round((x2 - x1) * p.scale)))
        h = max(1, min(p.cell[3] - cy, round((y2 - y1) * p.scale)))
        view = target[cy : cy + h, cx : cx + w]
        cv2.resize(frame[y1:y2, x1:x2], (w, h), dst=view, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(view, cv2.COLOR_BGR2RGB, dst=view)


def to_frame(boxes: np.ndarray, placements: Sequence[Placement]) -> tuple[np.ndarray, np.ndarray]:
    """Input-pixel boxes (K, 4) as frame-pixel boxes, and the placement each belongs to.

    With one placement every box is its own (as a whole-frame letterbox always was); with
    several, a box belongs to the cell that holds its centre and is clipped to that cell first
    (a box reaching into a neighbouring cell would describe two different places). A box whose
    centre lies in no cell gets placement -1. Frame boxes are clipped to their window.
    """
    owner = np.zeros(len(boxes), dtype=np.int64)
    if len(placements) > 1:
        owner[:] = -1
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        for i, p in enumerate(placements):
            inside = (cx >= p.cell[0]) & (cx < p.cell[2]) & (cy >= p.cell[1]) & (cy < p.cell[3])
            owner[inside & (owner < 0)] = i
    out = np.zeros_like(boxes, dtype=np.float32)
    for i, p in enumerate(placements):
        rows = owner == i
        if not rows.any():
            continue
        cell = np.array(p.cell, dtype=np.float32)
        b = boxes[rows]
        if len(placements) > 1:
            b = np.clip(b, cell[[0, 1, 0, 1]], cell[[2, 3, 2, 3]])
        x1, y1, x2, y2 = p.window
        origin = np.array([x1, y1, x1, y1], dtype=np.float32)
        b = (b - cell[[0, 1, 0, 1]]) / np.float32(p.scale) + origin
        out[rows] = np.clip(b, origin, [x2, y2, x2, y2])
    return out, owner
