"""Label heads on video frames with MoveNet as a teacher: face visible or not, and the head box.

MoveNet (single pose) gives 17 COCO keypoints with scores. A person whose ears or shoulders are
confident while the eyes and nose are not is seen from behind: `face_not_visible`. Confident
nose and both eyes: a frontal face (`front_without_mask` — nobody in the shared clips wears a
mask). Anything in between (profiles, doubt) becomes an ignore region, so the trainer never
learns that head as background. The head box is built from the head keypoints, sized from the
ear or shoulder distance.

    python -m models.training.teacher --clip ../shared/videos/X.mp4 --sheet /tmp/sheet.png
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MOVENET = "weights/movenet_single_pose_lightning_ptq.tflite"
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH = range(7)
CONFIDENT, DOUBTFUL = 0.35, 0.2


@dataclass
class HeadLabel:
    """One head: box (x1, y1, x2, y2) in frame pixels and its label (or "ignore")."""

    box: tuple[float, float, float, float]
    label: str


@dataclass
class FrameLabels:
    """The heads the teacher found on one frame of a clip."""

    clip: str
    frame_index: int
    width: int
    height: int
    heads: list[HeadLabel]


def head_from_keypoints(kp: np.ndarray, width: int, height: int) -> HeadLabel | None:
    """The labelling rule: (17, 3) keypoints (x, y, score) in frame pixels -> a head or None.

    None means no person worth labelling (shoulders not found at all).
    """
    s = kp[:, 2]
    shoulders_ok = s[L_SH] > CONFIDENT and s[R_SH] > CONFIDENT
    ears = [i for i in (L_EAR, R_EAR) if s[i] > CONFIDENT]
    if not shoulders_ok and not ears:
        return None
    face_pts = [i for i in (NOSE, L_EYE, R_EYE, L_EAR, R_EAR) if s[i] > DOUBTFUL]
    shoulder_w = float(np.hypot(*(kp[L_SH, :2] - kp[R_SH, :2]))) if shoulders_ok else 0.0
    ear_w = float(np.hypot(*(kp[L_EAR, :2] - kp[R_EAR, :2]))) if len(ears) == 2 else 0.0
    w = max(0.5 * shoulder_w, 1.5 * ear_w)
    if w < 6:
        return None
    h = 1.2 * w
    if face_pts:
        cx, cy = kp[face_pts, 0].mean(), kp[face_pts, 1].mean()
    else:  # only shoulders: the head sits above their midpoint
        mid = (kp[L_SH, :2] + kp[R_SH, :2]) / 2
        cx, cy = mid[0], mid[1] - 0.9 * w
    box = (
        float(max(0.0, cx - w / 2)),
        float(max(0.0, cy - h / 2)),
        float(min(width, cx + w / 2)),
        float(min(height, cy + h / 2)),
    )
    # Left/right order of the shoulders tells which way the body faces: seen from the front the
    # person's left shoulder is on the image's right. MoveNet invents a nose and eyes on the back
    # of a head with fair confidence, so the face keypoints alone cannot tell (seen on the sheets).
    facing = float(kp[L_SH, 0] - kp[R_SH, 0]) / max(shoulder_w, 1.0) if shoulders_ok else 0.0
    face_ok = s[NOSE] > CONFIDENT and s[L_EYE] > CONFIDENT and s[R_EYE] > CONFIDENT
    cut = cx - w / 2 < 0 or cy - h / 2 < 0 or cx + w / 2 > width
    if cut:
        label = "ignore"
    elif facing > 0.5 and face_ok:
        label = "front_without_mask"
    elif facing < -0.5:
        label = "face_not_visible"
    else:
        label = "ignore"
    return HeadLabel(box, label)


class MoveNet:
    """The teacher model, run on a square letterbox of the frame."""

    def __init__(self, path: Path) -> None:
        """Load the .tflite pose model."""
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(str(path), num_threads=2)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.size = int(self.inp["shape"][1])

    def keypoints(self, bgr: np.ndarray) -> np.ndarray:
        """(17, 3) keypoints (x, y, score) in frame pixels."""
        h, w = bgr.shape[:2]
        side = max(h, w)
        canvas = np.zeros((side, side, 3), np.uint8)
        canvas[:h, :w] = bgr
        rgb = cv2.cvtColor(cv2.resize(canvas, (self.size, self.size)), cv2.COLOR_BGR2RGB)
        self.interp.set_tensor(self.inp["index"], rgb[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self.out["index"])[0, 0]  # (17, 3) y, x, score
        return np.stack([raw[:, 1] * side, raw[:, 0] * side, raw[:, 2]], axis=1)


def shared_dir_of(clip: Path) -> Path:
    """../shared from a clip inside ../shared/videos."""
    return clip.resolve().parent.parent


def label_clip(path: Path, every_n: int = 3) -> list[FrameLabels]:
    """Teacher labels for every every_n-th frame on which it found a person (deterministic)."""
    net = MoveNet(shared_dir_of(path) / MOVENET)
    cap = cv2.VideoCapture(str(path))
    out: list[FrameLabels] = []
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if index % every_n == 0:
            h, w = bgr.shape[:2]
            head = head_from_keypoints(net.keypoints(bgr), w, h)
            if head is not None:
                out.append(FrameLabels(path.name, index, w, h, [head]))
        index += 1
    cap.release()
    return out


def contact_sheet(path: Path, labels: list[FrameLabels], out: Path, n: int = 24) -> None:
    """A grid of labelled frames (for a person to check the rule), written as PNG."""
    colours = {"front_without_mask": (0, 0, 255), "face_not_visible": (255, 0, 0)}
    spread = np.linspace(0, len(labels) - 1, n).astype(int)
    pick = {labels[i].frame_index: labels[i] for i in spread}
    cap = cv2.VideoCapture(str(path))
    tiles, index = [], 0
    while pick:
        ok, bgr = cap.read()
        if not ok:
            break
        fl = pick.pop(index, None)
        index += 1
        if fl is None:
            continue
        for head in fl.heads:
            b = [int(v) for v in head.box]
            colour = colours.get(head.label, (0, 255, 255))
            cv2.rectangle(bgr, (b[0], b[1]), (b[2], b[3]), colour, 2)
        tiles.append(cv2.resize(bgr, (320, int(320 * bgr.shape[0] / bgr.shape[1]))))
    rows = [np.hstack(tiles[i : i + 6]) for i in range(0, len(tiles) - len(tiles) % 6, 6)]
    cv2.imwrite(str(out), np.vstack(rows))


def main() -> None:
    """Label one clip and print the label counts; optionally write a contact sheet."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--every-n", type=int, default=3)
    ap.add_argument("--sheet", type=Path)
    args = ap.parse_args()
    labels = label_clip(args.clip, args.every_n)
    counts: dict[str, int] = {}
    for fl in labels:
        for head in fl.heads:
            counts[head.label] = counts.get(head.label, 0) + 1
    print(args.clip.name, len(labels), "frames", counts)
    if args.sheet:
        contact_sheet(args.clip, labels, args.sheet)


if __name__ == "__main__":
    main()
