"""One face-box convention: YuNet's face boxes moved onto face-mask-853's.

    python -m models.training.facebox --shared ../shared     # refit and print the edges

The front classes learn face boxes from two kinds of labels: the face-mask photos' own boxes,
drawn by people (face-mask-853; the held-out scoring, like the peers, also matches boxes drawn
by people), and YuNet's face boxes on every face the teachers labelled (hard-hat photos, car
park frames, the clips: most of the unmasked faces). The two disagree: YuNet's box starts
about a fifth of the face higher (it takes in the forehead) and ends lower, so its median IoU
with the face-mask-853 box of the same face is only 0.66 (masked) and 0.71 (bare), and a
model taught both draws boxes between them. `photo_box` moves each edge of a YuNet box by the
median offset measured on face-mask-853's training split (in units of the YuNet box's width or
height, per label); on its validation split that raises the median IoU to 0.82 and 0.80
(`main` reprints the fit and those figures).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.anchors import iou_matrix
from edge.detection import FRONT_WITH_MASK, FRONT_WITHOUT_MASK, LABELS
from models.training.data import Sample, face_mask_split
from models.training.teacher import YUNET, YUNET_SIDE, square_warp

FIT_MIN_PX = 24.0  # faces smaller than this are too blurred for YuNet to box them reliably
FIT_CROP = 2.5  # crop side around a face, in face sides, for YuNet
FIT_MIN_IOU = 0.3  # a YuNet face this far off the drawn one is another face

# Offsets of the x1, y1, x2, y2 edges, as fractions of the YuNet box's width (x) or height (y),
# that take a YuNet face box onto face-mask-853's convention (fit by `fit`, printed by `main`).
EDGE_SHIFT: dict[str, tuple[float, float, float, float]] = {
    "front_with_mask": (0.005, 0.194, 0.036, 0.091),
    "front_without_mask": (0.006, 0.174, 0.029, 0.033),
}


def photo_box(box: Sequence[float], label: str) -> tuple[float, float, float, float]:
    """A YuNet face box (x1, y1, x2, y2) moved onto face-mask-853's convention for `label`."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx1, dy1, dx2, dy2 = EDGE_SHIFT[label]
    w, h = x2 - x1, y2 - y1
    return (x1 + dx1 * w, y1 + dy1 * h, x2 + dx2 * w, y2 + dy2 * h)


def yunet_pairs(
    shared: Path, samples: Iterable[Sample]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, drawn box, YuNet box) for every mask / no-mask face YuNet finds again."""
    net = cv2.FaceDetectorYN.create(
        str(shared / YUNET), "", (YUNET_SIDE, YUNET_SIDE), 0.5, 0.3, 5000
    )
    out = []
    for s in samples:
        img = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"{s.image_path}: cannot read image")
        for b, label in zip(s.boxes.astype(float), s.labels.tolist(), strict=True):
            side = max(b[2] - b[0], b[3] - b[1])
            if label not in (FRONT_WITH_MASK, FRONT_WITHOUT_MASK) or side < FIT_MIN_PX:
                continue
            crop_side = side * FIT_CROP
            x0, y0 = (b[0] + b[2] - crop_side) / 2, (b[1] + b[3] - crop_side) / 2
            k = YUNET_SIDE / crop_side
            crop = cv2.warpAffine(img, square_warp(x0, y0, k), (YUNET_SIDE, YUNET_SIDE))
            _, found = net.detect(crop)
            if found is None:
                continue
            faces = np.c_[found[:, :2], found[:, :2] + found[:, 2:4]] / k + [x0, y0, x0, y0]
            iou = iou_matrix(b[None], faces.astype(float))[0]
            j = int(np.argmax(iou))
            if iou[j] >= FIT_MIN_IOU:
                out.append((LABELS[label], b, faces[j].astype(float)))
    return out


def fit(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, tuple[float, ...]]:
    """Median edge offsets per label, in units of the YuNet box's width and height."""
    out = {}
    for label in EDGE_SHIFT:
        rows = []
        for lab, drawn, yunet in pairs:
            if lab != label:
                continue
            w, h = yunet[2] - yunet[0], yunet[3] - yunet[1]
            rows.append((drawn - yunet) / [w, h, w, h])
        out[label] = tuple(float(v) for v in np.median(np.array(rows), axis=0))
    return out


def median_iou(
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], label: str, moved: bool
) -> float:
    """Median IoU of the drawn boxes of one label with YuNet's, as found or moved."""
    ious = [
        iou_matrix(drawn[None], np.array(photo_box(y.tolist(), lab) if moved else y)[None])[0, 0]
        for lab, drawn, y in pairs
        if lab == label
    ]
    return float(np.median(ious))


def main(argv: list[str] | None = None) -> int:
    """Refit EDGE_SHIFT on face-mask-853's training split; print it and the validation IoUs."""
    ap = argparse.ArgumentParser(prog="python -m models.training.facebox", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    args = ap.parse_args(argv)
    dataset = args.shared / "datasets" / "face-mask-853"
    if not (dataset / "annotations").is_dir() or not (args.shared / YUNET).is_file():
        print(f"facebox: {dataset} or {args.shared / YUNET} not found", file=sys.stderr)
        return 66
    train, val = face_mask_split(dataset)
    fitted = fit(yunet_pairs(args.shared, train))
    val_pairs = yunet_pairs(args.shared, val)
    for label, edges in fitted.items():
        print(f"{label}: edges {tuple(round(v, 3) for v in edges)} (in EDGE_SHIFT: "
              f"{EDGE_SHIFT[label]}); validation median IoU as found "
              f"{median_iou(val_pairs, label, False):.2f}, moved "
              f"{median_iou(val_pairs, label, True):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
