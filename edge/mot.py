"""`maskwatch track --mot`: the daemon's own tracker over MOTChallenge detections.

Reads a MOTChallenge detection file (`frame,id,x,y,w,h,score,...`, one box per line, frames
numbered from 1), runs edge.track.Tracker over it frame by frame at the given frame rate with
the same code and defaults as `maskwatch run`, and writes MOTChallenge result rows
(`frame,id,x,y,w,h,1,-1,-1,-1`) of confirmed tracks only. The ids written are the people the
daemon would have counted: a track that never got confirmed writes nothing.

A track's rows from before its confirmation are held back and written once it is confirmed
(the daemon, too, counts the person from its first look). A row's box is the tracker's sharp
box (TrackedHead.sharp_box): a result file is scored frame by frame against annotated boxes, so
it gets the tracker's best guess of each frame's box, the detection smoothed by the track's
past only as much as its detections have proven noisy (nearly unsmoothed for exact boxes such
as annotations, as smoothed as the daemon's box for a detector as noisy as measurement_noise).
`steady=True` (`--steady-boxes`) writes the filter's steadier estimate instead, the box the
daemon follows people by and plans where to look with. Frames on which a track was not detected
but found again within FILL_GAP_S seconds get a box interpolated between the detections either
side of the gap; longer gaps and frames after a track's last detection get none. This only
fills in boxes: which detection belongs to which person is exactly the tracker's online
decision.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from edge.config.tracker import TrackerConfig
from edge.detection import FACE_NOT_VISIBLE, Detection
from edge.track import Tracker

REPO_ROOT = Path(__file__).resolve().parent.parent
# The MOT15 training sequences of ../shared (evaluation only; the daemon never reads them).
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "tracking" / "MOT15" / "train"


class MotFormatError(ValueError):
    """A detection file line that is not a valid MOTChallenge detection row."""


# Builds the tracker track_mot runs from its settings: the Tracker class itself, or a variant
# (a subclass, a functools.partial of one) that a benchmark wants to compare.
TrackerFactory = Callable[[TrackerConfig], Tracker]


# Longest gap (s) between two detections of a track that is filled by interpolation. A person
# walks about a body height in a second: past that a straight line between the two ends misses
# the real path (and a long gap is more often a wrong re-identification), so the filled boxes
# would mostly be false positives.
FILL_GAP_S = 1.0

# MOTChallenge columns read from a detection row, with their index.
_FIELDS = (("frame", 0), ("x", 2), ("y", 3), ("w", 4), ("h", 5), ("score", 6))


def read_detections(det_path: Path, min_score: float = -math.inf) -> dict[int, list[Detection]]:
    """The detections of `det_path` grouped by frame number, those below min_score dropped.

    The tracker is class-agnostic; a whole-body box carries no face, so every detection gets
    the face_not_visible label with the row's score. min_score is in the file's own units.

    The tracker's high_score and low_score are probabilities, as the daemon's detector gives.
    Some public detections are not: DPM's (MOT16, MOT17) are SVM margins, negative for many
    real people. When any score in the file, dropped or not, lies outside [0, 1], every
    score is read as a logit and passed through the logistic function (margin 0 -> 0.5), so
    that with the default high_score and low_score a margin of about 0.41 or more may start a
    track and one above -2.2 may extend one, instead of every negative margin being ignored
    and most positive ones too weak to start a track.

    Raises:
        MotFormatError: naming the file, line and field of the first bad row.
        OSError: when the file cannot be read.
    """
    frames: dict[int, list[Detection]] = {}
    logits = False  # a score outside [0, 1] anywhere in the file, kept or not
    with det_path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            cells = text.split(",")
            if len(cells) < 7:
                raise MotFormatError(
                    f"{det_path}:{number}: expected at least 7 comma-separated fields "
                    f"(frame,id,x,y,w,h,score), got {len(cells)}"
                )
            values: dict[str, float] = {}
            for name, index in _FIELDS:
                try:
                    value = float(cells[index])
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise MotFormatError(
                        f"{det_path}:{number}: field {name!r} is not a finite number: "
                        f"{cells[index].strip()!r}"
                    )
                values[name] = value
            frame = values["frame"]
            if frame < 1 or frame != int(frame):
                raise MotFormatError(
                    f"{det_path}:{number}: field 'frame' must be a whole number >= 1, "
                    f"got {cells[0].strip()!r}"
                )
            if values["w"] <= 0 or values["h"] <= 0:
                bad = "w" if values["w"] <= 0 else "h"
                raise MotFormatError(
                    f"{det_path}:{number}: field {bad!r} must be positive, got {values[bad]:g}"
                )
            score = values["score"]
            logits |= not 0.0 <= score <= 1.0
            if score < min_score:
                continue
            x, y = values["x"], values["y"]
            box = (x, y, x + values["w"], y + values["h"])
            frames.setdefault(int(frame), []).append(
                Detection(box=box, label=FACE_NOT_VISIBLE, score=score, scores=(0.0, 0.0, score))
            )
    if logits:
        frames = {f: [_as_probability(d) for d in dets] for f, dets in frames.items()}
    return frames


def _as_probability(detection: Detection) -> Detection:
    """A detection whose score is a logit (a margin), with the logistic of it as its score."""
    p = 0.5 * (1.0 + math.tanh(0.5 * detection.score))  # logistic, without overflow
    return replace(detection, score=p, scores=(0.0, 0.0, p))


@dataclass(slots=True)
class _Pending:
    """What is held back of one track: rows not written yet, frames it was not detected on.

    Attributes:
        rows: (frame, box) rows to write once the track is confirmed.
        predicted: frames since its last detection, filled in if it is detected again.
        last: frame and box of its last detection.
    """

    rows: list[tuple[int, tuple[float, float, float, float]]] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    last: tuple[int, tuple[float, float, float, float]] | None = None


def track_mot(
    det_path: Path,
    fps: float,
    min_score: float,
    out: TextIO,
    config: TrackerConfig | None = None,
    fill_gap_s: float = FILL_GAP_S,
    *,
    make_tracker: TrackerFactory = Tracker,
    frame_size: tuple[float, float] | None = None,
    steady: bool = False,
) -> int:
    """Track the detections of `det_path` and write confirmed tracks as MOTChallenge rows.

    Args:
        det_path: MOTChallenge detection file.
        fps: the sequence's frame rate; frame k is at time (k - 1) / fps seconds.
        min_score: detections scoring below this (in the file's units) are dropped before
            tracking; scores outside [0, 1] are then read as logits (read_detections).
        out: where the rows go, sorted by frame then id.
        config: tracker settings; the daemon's defaults when None.
        fill_gap_s: longest gap (s) between two detections of a track filled by interpolation.
        make_tracker: builds the tracker from the settings; the daemon's Tracker by default.
        frame_size: the frame's (width, height), so that people who walk out of it end there
            (as the daemon's do); by default read from the sequence's seqinfo.ini
            (frame_size_of), unknown without one.
        steady: write the filter's steady boxes (TrackedHead.box) instead of the sharp ones.

    Returns:
        The number of distinct ids written: the people counted.

    Raises:
        MotFormatError: a bad line in det_path (file, line and field named).
        ValueError: fps not positive.
    """
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"--fps must be a positive number, got {fps!r}")
    frames = read_detections(det_path, min_score)
    tracker = make_tracker(config or TrackerConfig())
    if frame_size is None:
        frame_size = frame_size_of(det_path)
    rows: list[tuple[int, int, tuple[float, float, float, float]]] = []
    pending: dict[int, _Pending] = {}
    people: set[int] = set()
    last_frame = max(frames, default=0)
    for frame in range(1, last_frame + 1):
        update = tracker.update(frames.get(frame, []), (frame - 1) / fps, frame_size)
        for head in update.heads:
            held = pending.setdefault(head.track_id, _Pending())
            if head.detection is not None:
                box = head.box if steady else head.sharp_box
                # The track was there all along: fill the frames it was only predicted on by
                # interpolating between the detections before and after a short gap.
                last = held.last
                if held.predicted and last is not None and (frame - last[0]) / fps <= fill_gap_s:
                    f0, b0 = last
                    for f in held.predicted:
                        w = (f - f0) / (frame - f0)
                        filled = tuple(p + w * (q - p) for p, q in zip(b0, box, strict=True))
                        held.rows.append((f, filled))  # type: ignore[arg-type]
                held.predicted.clear()
                held.last = (frame, box)
                held.rows.append((frame, box))
            else:
                held.predicted.append(frame)
            if head.confirmed and held.rows:
                people.add(head.track_id)
                rows.extend((f, head.track_id, b) for f, b in held.rows)
                held.rows.clear()
        for ended in update.ended:
            pending.pop(ended.track_id, None)
    tracker.finish()
    rows.sort(key=lambda r: (r[0], r[1]))
    for frame, track_id, (x1, y1, x2, y2) in rows:
        out.write(f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
    return len(people)


@dataclass(slots=True)
class Sequence:
    """One MOTChallenge sequence: where it is, its frame rate and length."""

    name: str
    path: Path
    fps: float
    length: int
    frame_size: tuple[float, float] | None = None

    @property
    def det_path(self) -> Path:
        """Its public detections."""
        return self.path / "det" / "det.txt"

    @property
    def gt_path(self) -> Path:
        """Its ground truth."""
        return self.path / "gt" / "gt.txt"

    def people(self) -> int:
        """Distinct identities in the ground truth."""
        gt = np.loadtxt(self.gt_path, delimiter=",", ndmin=2)
        return len(np.unique(gt[:, 1]))


def load_sequences(root: Path) -> list[Sequence]:
    """Every sequence folder under root that has det, gt and seqinfo.ini."""
    sequences = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        info = folder / "seqinfo.ini"
        if not info.is_file():
            continue
        parser = configparser.ConfigParser()
        parser.read(info)
        section = parser["Sequence"]
        sequences.append(
            Sequence(
                folder.name,
                folder,
                float(section["frameRate"]),
                int(section["seqLength"]),
                frame_size_of(folder / "det" / "det.txt"),
            )
        )
    return sequences


def frame_size_of(det_path: Path) -> tuple[float, float] | None:
    """The frame's (width, height) from the seqinfo.ini of det_path's sequence, if it says.

    MOTChallenge keeps a sequence's detections in SEQ/det/det.txt and its image size as
    imWidth and imHeight in SEQ/seqinfo.ini; None when there is no such file or size.
    """
    info = det_path.parent.parent / "seqinfo.ini"
    if not info.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(info)
        section = parser["Sequence"]
        width, height = float(section["imWidth"]), float(section["imHeight"])
    except (configparser.Error, KeyError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None
