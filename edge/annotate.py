"""Annotated video for replays: head boxes by label, track ids, vote balance, shaded margins.

Only written when the user asks for it (`replay --annotate OUT.mp4`, or one frame with
`replay --snapshot OUT.png`): frames never reach the disk otherwise.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.decide import Decider
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK
from edge.track import TrackedHead

COLOURS = {FRONT_WITH_MASK: (0, 200, 0), FACE_NOT_VISIBLE: (200, 120, 0)}
NO_MASK_COLOUR = (0, 0, 230)
PREDICTED_COLOUR = (160, 160, 160)


def draw(frame: np.ndarray, heads: list[TrackedHead], decider: Decider, people: int) -> None:
    """Draw in place on a BGR frame."""
    h, w = frame.shape[:2]
    zone = decider.zone_for(w, h)
    x1, y1, x2, y2 = (int(v) for v in zone.box)
    shade = frame.copy()
    shade[:, :x1] = shade[:, x2:] = shade[:y1] = shade[y2:] = 0
    cv2.addWeighted(frame, 0.6, shade, 0.4, 0, dst=frame)
    if zone.polygon is not None:
        cv2.polylines(frame, [zone.polygon.astype(np.int32)], True, (0, 255, 255), 1)
    for head in heads:
        if not head.confirmed:
            continue
        b = [int(v) for v in head.box]
        det = head.detection
        colour = PREDICTED_COLOUR if det is None else COLOURS.get(det.label, NO_MASK_COLOUR)
        cv2.rectangle(frame, (b[0], b[1]), (b[2], b[3]), colour, 2)
        if det is not None and det.label != FACE_NOT_VISIBLE:
            # The track follows the head around a seen face; the face's own box, thin inside.
            f = [int(v) for v in det.box]
            cv2.rectangle(frame, (f[0], f[1]), (f[2], f[3]), colour, 1)
        ballot = decider.ballots.get(head.track_id)
        balance = 0 if ballot is None else ballot.balance
        cv2.putText(
            frame, f"#{head.track_id} {balance:+d}", (b[0], max(10, b[1] - 4)),
            cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA,
        )
    cv2.putText(
        frame, f"people {people}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
        (255, 255, 255), 2, cv2.LINE_AA,
    )


def open_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An mp4v writer (OpenCV's pip wheels cannot write H.264)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write video")
    return writer
