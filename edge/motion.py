"""Motion gating: tell, for almost nothing per frame, whether anything in the picture moves.

As Frigate does it: each frame is shrunk to a small greyscale thumbnail and compared with a
running average of the previous thumbnails. A frame "moves" when enough thumbnail pixels
differ from that background by more than a threshold. The running average (rather than the
previous frame alone) lets slow walkers add up to motion, and lets lighting drift fade in.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.config.motion import MotionConfig

Box = tuple[float, float, float, float]

# Thumbnail width in pixels (height keeps the frame's aspect). 64 x 48 for a 4:3 camera: a
# person a tenth of the frame tall still covers a few dozen pixels, and shrinking a 1280 x 720
# frame to it costs about 0.05 ms.
THUMBNAIL_WIDTH = 64
# Weight of the newest thumbnail in the running-average background.
BACKGROUND_ALPHA = 0.2


def thumbnail(frame: np.ndarray, width: int = THUMBNAIL_WIDTH) -> np.ndarray:
    """A BGR, BGRA or grey uint8 frame as a width-pixel-wide greyscale float32 thumbnail.

    INTER_LINEAR samples few source pixels (INTER_AREA would cost 50 times as much); the
    3 x 3 blur afterwards evens out the sensor noise that this lets through.
    """
    h, w = frame.shape[:2]
    size = (width, max(1, round(h * width / w)))
    small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
    if small.ndim == 3 and small.shape[2] == 4:
        small = cv2.cvtColor(small, cv2.COLOR_BGRA2GRAY)
    elif small.ndim == 3 and small.shape[2] == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    elif small.ndim == 3:
        small = small[:, :, 0]
    return cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)


class MotionGate:
    """Decides frame by frame whether anything moved, against a running-average background."""

    def __init__(self, config: MotionConfig, width: int = THUMBNAIL_WIDTH) -> None:
        """Start with no background: the first frame always counts as motion."""
        self.config = config
        self.width = width
        self._background: np.ndarray | None = None
        # Share of thumbnail pixels (percent) that changed on the last frame, for diagnostics.
        self.changed_pct = 0.0

    def moved(self, frame: np.ndarray) -> bool:
        """True when enough of the frame changed; every call also updates the background."""
        changed = self._changed(frame)
        return changed is None or self._enough(changed)

    def moving_areas(self, frame: np.ndarray) -> tuple[bool, list[Box]]:
        """`moved`, and the boxes (frame pixels) around what moved, largest areas first.

        A box is a connected group of changed thumbnail pixels, grown by one thumbnail pixel
        so that the parts of one walking person join; the first frame has no background to
        compare with, so it moves everywhere (one box, the whole frame).
        """
        h, w = frame.shape[:2]
        changed = self._changed(frame)
        if changed is None:
            return True, [(0.0, 0.0, float(w), float(h))]
        if not changed.any():
            return False, []
        grown = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8))
        _, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        sx = w / changed.shape[1]
        sy = h / changed.shape[0]
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable") + 1
        boxes = []
        for i in order.tolist():
            x, y, bw, bh = stats[i, :4].tolist()
            boxes.append((x * sx, y * sy, min(w, (x + bw) * sx), min(h, (y + bh) * sy)))
        return self._enough(changed), boxes

    def _changed(self, frame: np.ndarray) -> np.ndarray | None:
        """Thumbnail pixels that differ from the background (None on the first frame)."""
        thumb = thumbnail(frame, self.width)
        if self._background is None or self._background.shape != thumb.shape:
            # First frame, or the camera changed resolution: nothing to compare with yet.
            self._background = thumb
            self.changed_pct = 100.0
            return None
        changed = cv2.absdiff(thumb, self._background) > self.config.threshold
        cv2.accumulateWeighted(thumb, self._background, BACKGROUND_ALPHA)
        return changed

    def _enough(self, changed: np.ndarray) -> bool:
        """Whether the changed share reaches min_area_pct; keeps it in changed_pct."""
        self.changed_pct = 100.0 * np.count_nonzero(changed) / changed.size
        return bool(self.changed_pct >= self.config.min_area_pct)
