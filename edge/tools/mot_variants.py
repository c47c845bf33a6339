"""Harder copies of MOTChallenge sequences, to check tracker settings beyond the three we have.

    python -m edge.tools.mot_variants OUT_DIR [--data ../shared/tracking/MOT15/train]
    python -m edge.tools.eval_tracking --no-peers --data OUT_DIR

For every sequence it writes the original and: `-noisy` (15 % of detections dropped, boxes
jittered by 4 % of their height, 3 % false alarms of score 0.5-0.8 added) and, for sequences
faster than 10 fps, `-every2` / `-every3` (every 2nd / 3rd frame only: a slower camera).
Seeded, so the same variants come out every time. Ground truth is kept (subsampled alike).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from edge.tools.eval_tracking import DEFAULT_DATA, load_sequences

SEED = 1


def _write(out: Path, name: str, fps: float, length: int, det: np.ndarray, gt: np.ndarray) -> None:
    """One sequence folder in MOTChallenge layout."""
    folder = out / name
    (folder / "det").mkdir(parents=True)
    (folder / "gt").mkdir()
    np.savetxt(folder / "det" / "det.txt", det, delimiter=",", fmt="%.2f")
    np.savetxt(folder / "gt" / "gt.txt", gt, delimiter=",", fmt="%.2f")
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={name}\nframeRate={fps:g}\nseqLength={length}\n", encoding="utf-8"
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


def every_nth(rows: np.ndarray, k: int) -> np.ndarray:
    """The rows of every k-th frame, renumbered 1, 2, 3 ..."""
    out = rows[(rows[:, 0] - 1) % k == 0].copy()
    out[:, 0] = (out[:, 0] - 1) // k + 1
    return out


def write_variants(data: Path, out: Path) -> list[str]:
    """Write the originals and their variants under out; returns the sequence names."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    for seq in load_sequences(data):
        det = np.loadtxt(seq.det_path, delimiter=",", ndmin=2)
        gt = np.loadtxt(seq.gt_path, delimiter=",", ndmin=2)
        shutil.copytree(seq.path, out / seq.name)  # unchanged: re-saving would round the boxes
        _write(out, f"{seq.name}-noisy", seq.fps, seq.length, noisy(det, seq.length, rng), gt)
        if seq.fps > 10:
            for k in (2, 3):
                _write(out, f"{seq.name}-every{k}", seq.fps / k, (seq.length - 1) // k + 1,
                       every_nth(det, k), every_nth(gt, k))
    return sorted(p.name for p in out.iterdir())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.tools.mot_variants`."""
    parser = argparse.ArgumentParser(prog="python -m edge.tools.mot_variants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (replaced)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"mot-variants: no MOT data at {args.data}", file=sys.stderr)
        return 66
    print("\n".join(write_variants(args.data, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
