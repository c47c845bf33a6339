"""End-to-end counting on real frames: detector -> tracker -> count, against MOT ground truth.

    python -m edge.tools.eval_video --config configs/street-camera.yaml
    python -m edge.tools.eval_video --compare     # the street config beside 4 x 3 and 3 x 2 tiles
    python -m edge.tools.eval_video --compare --starts 4   # each also started 1, 2, 3 frames in

Runs the daemon's own pipeline (the config's first camera, detector, tracker and vote) over a
video whose people have MOTChallenge ground truth (default: PETS09-S2L1, 795 frames, 19
people, from ../shared/tracking) and scores the people it counted. The ground truth boxes
whole bodies and maskwatch tracks heads, so a head box belongs to a person when its centre
lies in the top quarter of that person's body box (horizontally in its middle 70 %). A counted
person (a confirmed track) is matched to the ground-truth person its head boxes fall in most
often; it is a **false count** when fewer than half of its boxes fall in any, and a
**duplicate** when an earlier counted person already took that ground-truth person.

One run is one draw: which frame first shows a person to which region, and so every track,
moves with the frame the clip starts on (on PETS09-S2L1 the street config's duplicates read
9, 13, 15 and 12 from frames 0 to 3, before the tracker followed heads around faces; tiles
read the same from every start). `--starts N` also scores the clip started 1 to N-1 frames
in, and sums the N runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edge.capture import Capture, Frame
from edge.config.load import ConfigError, load_config_or_defaults
from edge.config.root import Config
from edge.detect import Detector
from edge.mot import DEFAULT_DATA
from edge.pipeline import CameraPipeline, footage_clock
from edge.threaded import FrameSource, ThreadedPipeline

DEFAULT_VIDEO = DEFAULT_DATA.parents[1] / "PETS09-S2L1-vtest.avi"
DEFAULT_GT = DEFAULT_DATA / "PETS09-S2L1" / "gt" / "gt.txt"
STREET_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "street-camera.yaml"


@dataclass(slots=True)
class VideoScore:
    """What the pipeline counted on one video, against its ground truth."""

    frames: int
    people: int
    counted: int
    matched: int
    duplicates: int
    false_counts: int
    seconds: float
    inferences: int = 0

    def __add__(self, other: VideoScore) -> VideoScore:
        """Two runs' scores summed (people, counts and time alike)."""
        return VideoScore(
            frames=self.frames + other.frames,
            people=self.people + other.people,
            counted=self.counted + other.counted,
            matched=self.matched + other.matched,
            duplicates=self.duplicates + other.duplicates,
            false_counts=self.false_counts + other.false_counts,
            seconds=self.seconds + other.seconds,
            inferences=self.inferences + other.inferences,
        )

    def table(self) -> str:
        """The score as a Markdown table row block."""
        fps = self.frames / self.seconds if self.seconds else 0.0
        return (
            "| people (ground truth) | counted | matched people | duplicates | false counts "
            "| fps |\n|---|---|---|---|---|---|\n"
            f"| {self.people} | {self.counted} | {self.matched} | {self.duplicates} "
            f"| {self.false_counts} | {fps:.1f} |\n"
        )


def compare_table(rows: list[tuple[str, VideoScore]]) -> str:
    """Several configs' scores side by side, with their inferences per frame and fps."""
    lines = [
        "| detection | inferences/frame | fps | counted | found (of people) | counted twice "
        "| invented |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        fps = s.frames / s.seconds if s.seconds else 0.0
        per_frame = s.inferences / s.frames if s.frames else 0.0
        lines.append(
            f"| {name} | {per_frame:.2f} | {fps:.1f} | {s.counted} | {s.matched} of {s.people} "
            f"| {s.duplicates} | {s.false_counts} |"
        )
    return "\n".join(lines) + "\n"


def variants(config: Config) -> list[tuple[str, Config]]:
    """The config as it is, and with 4 x 3 and 3 x 2 tiles instead of its own detection.

    The tiles overlap by 0.2, as the street config's 4 x 3 tiles did before regions.
    """
    out = [(describe(config), config)]
    for columns, rows in ((4, 3), (3, 2)):
        camera = config.cameras[0]
        tiles = camera.tiles.model_copy(update={"columns": columns, "rows": rows, "overlap": 0.2})
        regions = camera.regions.model_copy(update={"enabled": False})
        tiled = camera.model_copy(update={"tiles": tiles, "regions": regions})
        out.append((f"{columns} x {rows} tiles", config.model_copy(update={"cameras": [tiled]})))
    return out


def describe(config: Config) -> str:
    """How the config's first camera detects, in a few words."""
    camera = config.cameras[0]
    if camera.regions.enabled:
        r = camera.regions
        return f"regions (grid {r.grid}, zoom {r.zoom:g})"
    if camera.tiles.columns * camera.tiles.rows > 1:
        return f"{camera.tiles.columns} x {camera.tiles.rows} tiles"
    return "whole frame"


def head_owner(box: tuple[float, ...], bodies: np.ndarray) -> int | None:
    """The ground-truth id whose body box holds this head box's centre in its head region."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x, y, w, h = bodies[:, 2], bodies[:, 3], bodies[:, 4], bodies[:, 5]
    inside = (
        (cx >= x + 0.15 * w) & (cx <= x + 0.85 * w) & (cy >= y - 0.05 * h) & (cy <= y + 0.25 * h)
    )
    if not inside.any():
        return None
    # Several (people overlapping): the one whose head region's centre is nearest.
    candidates = np.flatnonzero(inside)
    d = np.hypot(x[candidates] + w[candidates] / 2 - cx, y[candidates] + 0.12 * h[candidates] - cy)
    return int(bodies[candidates[int(d.argmin())], 1])


class _StartingAt:
    """A frame source that drops a file's frames before index `first`: the clip started later.

    Frames keep their index and timestamp, so the ground truth's frame numbers still apply.
    """

    def __init__(self, source: FrameSource, first: int) -> None:
        self.source = source
        self.first = first

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame at or after `first` (None on timeout or at the end)."""
        while True:
            frame = self.source.read(timeout)
            if frame is None or frame.index >= self.first:
                return frame

    @property
    def ended(self) -> bool:
        """True once the file has ended and its last frame has been read."""
        return self.source.ended


def score_video(video: Path, gt_path: Path, config: Config, first_frame: int = 0) -> VideoScore:
    """Run the pipeline of config's first camera over the video and score what it counted.

    first_frame: frames before it (counting from 0) are not shown to the pipeline.
    """
    gt = np.loadtxt(gt_path, delimiter=",", ndmin=2)
    gt = gt[gt[:, 6] != 0] if gt.shape[1] > 6 else gt  # MOT marks ignored boxes with 0
    gt = gt[gt[:, 0] > first_frame]  # MOTChallenge frames count from 1
    by_frame = {int(f): gt[gt[:, 0] == f] for f in np.unique(gt[:, 0])}
    probe = cv2.VideoCapture(str(video))
    opened = probe.isOpened()
    probe.release()
    if not opened:  # a Capture would keep retrying a file it cannot open
        raise FileNotFoundError(f"{video}: cannot open video")
    camera = config.cameras[0].model_copy(
        update={"source": str(video), "file_pacing": "asap", "loop": False}
    )
    counted: list[int] = []
    pipeline = CameraPipeline(
        camera,
        Detector(config.detector),
        config.tracker,
        config.decide,
        lambda event: counted.append(event.track_id),
        footage_clock(datetime(2026, 1, 1, tzinfo=timezone.utc)),
    )
    owners: dict[int, Counter[int | None]] = {}
    frame = inferences = 0
    start = time.perf_counter()
    # As `maskwatch replay` runs it: decoding, preparing and inferring on threads of their own.
    with Capture(camera, pacing="asap") as capture:
        source = _StartingAt(capture, first_frame) if first_frame else capture
        for captured, result in ThreadedPipeline(pipeline, source).run():
            frame = captured.index + 1  # MOTChallenge frames count from 1
            inferences += len(result.inference_ms)
            bodies = by_frame.get(frame)
            for head in result.heads:
                if head.detection is None:
                    continue
                owner = head_owner(head.detection.box, bodies) if bodies is not None else None
                owners.setdefault(head.track_id, Counter())[owner] += 1
    pipeline.finish()
    seconds = time.perf_counter() - start
    taken: set[int] = set()
    duplicates = false_counts = 0
    for track_id in counted:
        votes = owners.get(track_id, Counter())
        total = sum(votes.values())
        best = max((k for k in votes if k is not None), key=lambda k: votes[k], default=None)
        if best is None or votes[best] * 2 < total:
            false_counts += 1
        elif best in taken:
            duplicates += 1
        else:
            taken.add(best)
    return VideoScore(
        frames=frame - first_frame,
        people=len(np.unique(gt[:, 1])),
        counted=len(counted),
        matched=len(taken),
        duplicates=duplicates,
        false_counts=false_counts,
        seconds=seconds,
        inferences=inferences,
    )


def score_starts(
    video: Path, gt_path: Path, config: Config, starts: int
) -> tuple[list[VideoScore], VideoScore]:
    """The clip scored as it is and started 1 to starts - 1 frames in, and those runs summed."""
    runs = [score_video(video, gt_path, config, first) for first in range(starts)]
    return runs, sum(runs[1:], runs[0])


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.tools.eval_video`."""
    parser = argparse.ArgumentParser(prog="python -m edge.tools.eval_video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--gt", type=Path, default=DEFAULT_GT, help="MOTChallenge gt.txt")
    parser.add_argument("--config", type=Path, help="maskwatch config (default: built-in; "
                        "with --compare, configs/street-camera.yaml)")
    parser.add_argument("--compare", action="store_true",
                        help="score the config and the same config with 4 x 3 and 3 x 2 tiles, "
                        "side by side with inferences per frame and fps")
    parser.add_argument("--starts", type=int, default=1, metavar="N",
                        help="also score the clip started 1 to N-1 frames in, and the sum of "
                        "the N runs (default 1: the clip as it is)")
    args = parser.parse_args(argv)
    for path in (args.video, args.gt):
        if not path.exists():
            print(f"eval-video: {path}: no such file", file=sys.stderr)
            return 66
    if args.compare and args.config is None:
        args.config = STREET_CONFIG
    try:
        config = load_config_or_defaults(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 78
    if args.starts < 1:
        print(f"eval-video: --starts {args.starts}: must be 1 or more", file=sys.stderr)
        return 64
    configs = variants(config) if args.compare else [(describe(config), config)]
    rows = []
    for name, c in configs:
        runs, total = score_starts(args.video, args.gt, c, args.starts)
        if args.starts == 1:
            rows.append((name, total))
            continue
        rows += [(f"{name}, from frame {first}", r) for first, r in enumerate(runs)]
        rows.append((f"{name}, sum of {args.starts}", total))
    if args.compare or args.starts > 1:
        print(compare_table(rows), end="")
    else:
        print(rows[0][1].table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
