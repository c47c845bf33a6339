"""Harder copies of MOTChallenge sequences, to check tracker settings beyond the three we have.

    python -m edge.tools.mot_variants OUT_DIR [--data ../shared/tracking/MOT15/train]
    python -m edge.tools.eval_tracking --no-peers --data OUT_DIR

For every sequence it writes the original and these variants (`--kinds` picks some):

- `-noisy`: the public detections with 15 % dropped, boxes jittered by 4 % of their height and
  3 % false alarms of score 0.5-0.8 added;
- `-clean`: the ground truth fed back as detections (score 1): perfect detections, so every
  error left is the tracker's association;
- `-clean-noisy`: the ground truth with the same noise as `-noisy`;
- `-heads`: a head-sized box derived from each ground-truth body box (HEAD_HEIGHT of the body's
  height, HEAD_ASPECT as wide as high, at the top of the body, centred), with the same noise as
  `-noisy`, scored against the head boxes of the ground truth: small boxes that two people
  walking side by side barely share, as maskwatch's own head detector gives;
- `-every2` / `-every3`, for sequences faster than 10 fps: every 2nd / 3rd frame only (a slower
  camera), ground truth subsampled alike;
- `-crowd`: twice as many people, the ground truth and a copy of it played backwards (new
  identities), fed back as detections (score 1): the copy's people walk against the
  original's on paths beside theirs (CROWD_SIDESTEP), so people meet and pass close far more
  often than in the original, and every error left is the tracker's association in a crowd;
- `-crowd-close` / `-crowd-apart`: the same with the copy's paths closer beside the original's
  or further apart (CROWD_SIDESTEPS): a denser crowd, whose boxes overlap more, and a looser
  one, so that a tracker setting is judged on more than one way of meeting;
- `-pan` / `-clean-pan`: a camera that sways: the view is a window of the frame, PAN_MARGIN of
  its width in from each side, swinging across that margin left and right (and over 0.3 of it
  up and down) with a period of PAN_PERIOD_S, for the public detections and for the ground
  truth as detections; boxes whose centre leaves the window are left out. A fixed camera on a
  pole in the wind, a pan-tilt camera, or footage from a moving one: everybody's box moves
  with the camera, which no one's own motion predicts.

Seeded, so the same variants come out every time. Ground truth is kept unless said otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.mot import DEFAULT_DATA, load_sequences
from edge.mot import Sequence as MotSequence

SEED = 1
# Every kind of variant, in the order they are written.
KINDS = (
    "noisy", "clean", "clean-noisy", "heads", "every2", "every3", "crowd", "crowd-close",
    "crowd-apart", "pan", "clean-pan",
)
# A head's height as a fraction of the standing body's (adults are 7 to 8 heads tall), and its
# width as a fraction of its height.
HEAD_HEIGHT = 1 / 7.5
HEAD_ASPECT = 0.8
# How far beside the original's path the crowd variant's copy walks, in box heights (a body box
# is about 0.4 of its height wide: 0.3 leaves the two boxes overlapping by a quarter).
CROWD_SIDESTEP = 0.3
# The sidestep of each crowd kind: 0.15 leaves passing boxes overlapping by nearly two thirds,
# 0.5 clear of each other (a tenth of a box height apart).
CROWD_SIDESTEPS = {"crowd": CROWD_SIDESTEP, "crowd-close": 0.15, "crowd-apart": 0.5}
# The panning kinds' sway: how far the view swings each way, as a share of the frame's width
# (100 px of PETS09-S2L1's 768), and in how long one swing left and right takes (its speed peaks
# at 2 pi x the margin / the period: 79 px a second there, 11 px a frame at its 7 fps); the
# vertical sway is 0.3 as wide, at 0.7 of the period, so the path never repeats exactly.
PAN_MARGIN = 0.13
PAN_PERIOD_S = 8.0


def _write(
    out: Path, seq: MotSequence, name: str, fps: float, length: int, det: np.ndarray,
    gt: np.ndarray, frame_size: tuple[float, float] | None = None,
) -> None:
    """One sequence folder in MOTChallenge layout, the frame size that of seq unless given."""
    folder = out / name
    (folder / "det").mkdir(parents=True)
    (folder / "gt").mkdir()
    np.savetxt(folder / "det" / "det.txt", det, delimiter=",", fmt="%.2f")
    np.savetxt(folder / "gt" / "gt.txt", gt, delimiter=",", fmt="%.2f")
    frame_size = frame_size or seq.frame_size
    size = "" if frame_size is None else (
        f"imWidth={frame_size[0]:g}\nimHeight={frame_size[1]:g}\n"
    )
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={name}\nframeRate={fps:g}\nseqLength={length}\n{size}",
        encoding="utf-8",
    )


def noisy(det: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Detections with 15 % dropped, boxes jittered by 4 % of their height, 3 % false alarms."""
    kept = det[rng.random(len(det)) > 0.15].copy()
    jitter = rng.normal(0, 0.04, size=(len(kept), 4)) * kept[:, 5:6]
    kept[:, 2:4] += jitter[:, :2]
    kept[:, 4:6] = np.maximum(kept[:, 4:6] + jitter[:, 2:], 5)
    false = det[rng.choice(len(det), size=len(det) // 30)].copy()
    false[:, 0] = rng.integers(1, length + 1, size=len(false))
    false[:, 2] += rng.normal(0, 100, len(false))
    false[:, 6] = rng.uniform(0.5, 0.8, len(false))
    both = np.concatenate([kept, false])
    return both[np.argsort(both[:, 0], kind="stable")]


def as_detections(gt: np.ndarray) -> np.ndarray:
    """Ground-truth rows as MOTChallenge detection rows: id -1, score 1, in frame order."""
    det = np.full((len(gt), 10), -1.0)
    det[:, 0] = gt[:, 0]
    det[:, 2:6] = gt[:, 2:6]
    det[:, 6] = 1.0
    return det[np.argsort(det[:, 0], kind="stable")]


def head_boxes(rows: np.ndarray) -> np.ndarray:
    """The same rows with each body box (x, y, w, h) replaced by the head box at its top."""
    out = rows.copy()
    h = rows[:, 5] * HEAD_HEIGHT
    w = h * HEAD_ASPECT
    out[:, 2] = rows[:, 2] + (rows[:, 4] - w) / 2
    out[:, 4] = w
    out[:, 5] = h
    return out


def every_nth(rows: np.ndarray, k: int) -> np.ndarray:
    """The rows of every k-th frame, renumbered 1, 2, 3 ..."""
    out = rows[(rows[:, 0] - 1) % k == 0].copy()
    out[:, 0] = (out[:, 0] - 1) // k + 1
    return out


def crowd(
    gt: np.ndarray, length: int, width: float, sidestep: float = CROWD_SIDESTEP
) -> np.ndarray:
    """The ground truth and a copy of it played backwards, under new identities.

    The copy's frame f is the original's frame length + 1 - f, each box moved right by
    `sidestep` of its height: walking backwards in time is walking the other way, so its
    people move as people do, enter and leave about where the original's leave and enter, and
    walk against the original's on paths beside theirs, each passing their own copy shoulder
    to shoulder once (unshifted, the two would coincide exactly on the middle frame). A copied
    box whose centre the step takes past the frame's right edge (`width`) is left out: that
    person has walked out.
    """
    copy = gt.copy()
    copy[:, 0] = length + 1 - gt[:, 0]
    copy[:, 1] = gt[:, 1] + gt[:, 1].max() + 1
    copy[:, 2] += sidestep * gt[:, 5]
    copy = copy[copy[:, 2] + copy[:, 4] / 2 < width]
    both = np.concatenate([gt, copy])
    return both[np.lexsort((both[:, 1], both[:, 0]))]


def pan(
    rows: np.ndarray, fps: float, frame_size: tuple[float, float],
    margin: float = PAN_MARGIN, period_s: float = PAN_PERIOD_S,
) -> tuple[np.ndarray, tuple[float, float]]:
    """The rows as a swaying camera sees them, and the size of its view.

    The view is the frame less `margin` x its width on the left and right and 0.3 of that at
    the top and bottom; its corner swings over those margins (at frame t, by (1 + sin) of
    each), so every box moves with it. A box whose centre then lies outside the view is left
    out: the camera has turned away from that person.
    """
    sway = margin * frame_size[0]
    view = (frame_size[0] - 2 * sway, frame_size[1] - 0.6 * sway)
    t = rows[:, 0] / fps
    out = rows.copy()
    out[:, 2] -= sway * (1 + np.sin(2 * np.pi * t / period_s))
    out[:, 3] -= 0.3 * sway * (1 + np.sin(2 * np.pi * t / (0.7 * period_s)))
    cx = out[:, 2] + out[:, 4] / 2
    cy = out[:, 3] + out[:, 5] / 2
    inside = (cx >= 0) & (cx <= view[0]) & (cy >= 0) & (cy <= view[1])
    return out[inside], view


def kind_of(name: str) -> str:
    """The variant kind a sequence name ends with ("" for an original sequence)."""
    for kind in sorted(KINDS, key=len, reverse=True):  # "clean-noisy" before "noisy"
        if name.endswith(f"-{kind}"):
            return kind
    return ""


def write_variants(data: Path, out: Path, kinds: Sequence[str] = KINDS) -> list[str]:
    """Write the originals and the given kinds of variants under out; the sequence names.

    Every kind draws from a random generator of its own (seeded by SEED and the sequence), so a
    variant is the same whichever other kinds are written beside it.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown variant kinds: {', '.join(sorted(unknown))}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for index, seq in enumerate(load_sequences(data)):
        det = np.loadtxt(seq.det_path, delimiter=",", ndmin=2)
        gt = np.loadtxt(seq.gt_path, delimiter=",", ndmin=2)
        shutil.copytree(seq.path, out / seq.name)  # unchanged: re-saving would round the boxes

        def rng(kind: str, index: int = index) -> np.random.Generator:
            """The generator of one kind of variant of this sequence."""
            return np.random.default_rng([SEED, index, KINDS.index(kind)])

        if "noisy" in kinds:
            _write(out, seq, f"{seq.name}-noisy", seq.fps, seq.length,
                   noisy(det, seq.length, rng("noisy")), gt)
        if "clean" in kinds:
            _write(out, seq, f"{seq.name}-clean", seq.fps, seq.length, as_detections(gt), gt)
        if "clean-noisy" in kinds:
            _write(out, seq, f"{seq.name}-clean-noisy", seq.fps, seq.length,
                   noisy(as_detections(gt), seq.length, rng("clean-noisy")), gt)
        if "heads" in kinds:
            heads = head_boxes(gt)
            _write(out, seq, f"{seq.name}-heads", seq.fps, seq.length,
                   noisy(as_detections(heads), seq.length, rng("heads")), heads)
        width = (
            seq.frame_size[0] if seq.frame_size is not None
            else float((gt[:, 2] + gt[:, 4]).max())
        )
        for kind, sidestep in CROWD_SIDESTEPS.items():
            if kind in kinds:
                both = crowd(gt, seq.length, width, sidestep)
                _write(out, seq, f"{seq.name}-{kind}", seq.fps, seq.length, as_detections(both),
                       both)
        size = seq.frame_size or (width, float((gt[:, 3] + gt[:, 5]).max()))
        panned_gt, view = pan(gt, seq.fps, size)
        for kind, rows in (("pan", det), ("clean-pan", as_detections(gt))):
            if kind in kinds:
                _write(out, seq, f"{seq.name}-{kind}", seq.fps, seq.length,
                       pan(rows, seq.fps, size)[0], panned_gt, view)
        if seq.fps > 10:
            for k in (2, 3):
                if f"every{k}" in kinds:
                    _write(out, seq, f"{seq.name}-every{k}", seq.fps / k, (seq.length - 1) // k + 1,
                           every_nth(det, k), every_nth(gt, k))
    return sorted(p.name for p in out.iterdir())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.tools.mot_variants`."""
    parser = argparse.ArgumentParser(prog="python -m edge.tools.mot_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (replaced)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                        help="which variants to write (default: all)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"mot-variants: no MOT data at {args.data}", file=sys.stderr)
        return 66
    print("\n".join(write_variants(args.data, args.out, args.kinds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
