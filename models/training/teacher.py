"""Label heads on fixed-camera video frames with MoveNet as a teacher.

MoveNet (single pose) gives 17 COCO keypoints with scores. The clips come from fixed cameras, so
people are found as foreground blobs against the clip's median background, plus a sliding-window
scan every few frames for people who sit or stand still (they are part of the median), plus the
people found on the previous labelled frames. MoveNet runs on a padded square crop around each
candidate, once more on a crop centred on the pose it found, and duplicates are merged.

The rule (`head_from_keypoints`): the left/right order of the shoulders tells which way a person
faces (MoveNet puts a confident nose and eyes on the back of a head, so the face keypoints alone
cannot). Shoulders far enough apart for the torso length and in "back" order:
`face_not_visible`; in "front" order with a confident nose and both eyes: `front_without_mask`
(nobody in the shared clips wears a mask). Anything in between (profiles, doubt, heads cut by the
frame border, persons whose shoulders leave the frame, heads under MIN_HEAD px) becomes an
`ignore` region, so the trainer never learns that head as background. Parts of foreground blobs
the size of a person that no pose explains get an ignore region over their top too.

Contact sheets (`--sheet`) hold frames of the footage: write them outside the repository.

    python -m models.training.teacher --clip ../shared/videos/X.mp4 --out labels.json \
        --sheet /tmp/sheet.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

MOVENET = "weights/movenet_single_pose_lightning_ptq.tflite"
YUNET = "weights/face_detection_yunet_2023mar.onnx"
YUNET_SIDE = 160  # px: the square YuNet is run at (a crop around a head or face)
NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH = range(7)
L_HIP, R_HIP = 11, 12
HEAD_POINTS = (NOSE, L_EYE, R_EYE, L_EAR, R_EAR)
LABEL_NAMES = ("front_without_mask", "face_not_visible", "ignore")
CONFIDENT = 0.35
MIN_HEAD = 10.0  # px: smaller heads are ignore regions
MAX_HEAD = 0.3  # fraction of the frame height: taller heads are misread poses
MIN_EMPTY = 5  # empty sampled frames needed to build the background from them alone
IGNORE_GROWTH = 1.4  # ignore regions from doubtful poses are widened, the box being unsure too
BLOB_MIN_AREA = 0.004  # fraction of the frame: smaller foreground blobs are noise
TRACK_PATIENCE = 3  # labelled frames a lost person keeps an ignore region (and a seed crop)
SCAN_EVERY = 5  # labelled frames between sliding-window scans
SCAN_SIZES = (0.9, 0.55, 0.35)  # window sides as fractions of the frame height


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


def _dist(kp: np.ndarray, a: int, b: int) -> float:
    """Pixel distance between keypoints a and b."""
    return float(np.hypot(*(kp[a, :2] - kp[b, :2])))


def head_box(kp: np.ndarray) -> tuple[float, float, float, float] | None:
    """Head box (x1, y1, x2, y2), unclipped, from (17, 3) keypoints (x, y, score); None if unsure.

    Width: the largest of the estimates from the ears, eyes and shoulders, since turning the head
    or body only ever shortens those distances in the image. Height is 1.2 x width; the eyes and
    ears sit a little above the middle of the head (hair above, chin below).
    """
    s = kp[:, 2]
    ok = s > CONFIDENT
    widths = []
    shoulder_w = _dist(kp, L_SH, R_SH) if ok[L_SH] and ok[R_SH] else 0.0
    if shoulder_w:
        widths.append(0.42 * shoulder_w)
    if ok[L_EAR] and ok[R_EAR]:
        widths.append(1.2 * _dist(kp, L_EAR, R_EAR))
    if ok[L_EYE] and ok[R_EYE]:
        widths.append(2.2 * _dist(kp, L_EYE, R_EYE))
    torso = torso_length(kp)
    if torso:  # a third of the torso: what is left when the body and head turn side-on
        widths.append(0.33 * torso)
    if not widths:
        return None
    w = max(widths)
    if shoulder_w or torso:  # one misplaced ear must not blow the box up
        w = min(w, 0.6 * max(shoulder_w, torso))
    h = 1.2 * w
    ears = [i for i in (L_EAR, R_EAR) if ok[i]]
    # From behind, MoveNet's eyes and nose are guesses on the hair: place the head by the ears.
    eyes = [i for i in (L_EYE, R_EYE) if ok[i]] if facing(kp) > -0.5 else []
    level = ears + eyes
    if level:
        cx = float(kp[ears or eyes, 0].mean())
        # Ears seen from behind sit about mid-head; eyes a little above the middle of the head.
        cy = float(kp[level, 1].mean()) + (0.04 * h if eyes else 0.0)
    elif ok[NOSE] and facing(kp) > -0.5:
        cx, cy = float(kp[NOSE, 0]), float(kp[NOSE, 1]) - 0.05 * h
    elif shoulder_w:  # only shoulders: the head sits above their midpoint
        mid = (kp[L_SH, :2] + kp[R_SH, :2]) / 2
        cx, cy = float(mid[0]), float(mid[1]) - 0.85 * h
    else:
        return None
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def torso_length(kp: np.ndarray) -> float:
    """Shoulder-midpoint to hip-midpoint distance in pixels, 0 when hips or shoulders are unsure.

    It shrinks little when a person turns, unlike the shoulder width.
    """
    if (kp[[L_SH, R_SH, L_HIP, R_HIP], 2] <= CONFIDENT).any():
        return 0.0
    mid_sh = (kp[L_SH, :2] + kp[R_SH, :2]) / 2
    mid_hip = (kp[L_HIP, :2] + kp[R_HIP, :2]) / 2
    return float(np.hypot(*(mid_sh - mid_hip)))


def facing(kp: np.ndarray) -> float:
    """+1 facing the camera, -1 facing away, near 0 side-on, unknown or contradictory.

    Seen from the front a person's left shoulder is on the image's right; from behind, on the
    image's left. The shoulders' x offset is divided by the torso length where the hips are
    seen (front and back views measured 0.6-0.9 of it, side-on 0.25-0.45 on the one-by-one
    clip), else by the shoulder distance. Ears in the opposite order to the shoulders make it 0
    (MoveNet mixes sides up on profiles).
    """
    s = kp[:, 2]
    if s[L_SH] <= CONFIDENT or s[R_SH] <= CONFIDENT:
        return 0.0
    dx = float(kp[L_SH, 0] - kp[R_SH, 0])
    vote = dx / max(_dist(kp, L_SH, R_SH), torso_length(kp), 1.0)
    if s[L_EAR] > CONFIDENT and s[R_EAR] > CONFIDENT and (kp[L_EAR, 0] - kp[R_EAR, 0]) * dx < 0:
        return 0.0
    return vote


def head_from_keypoints(kp: np.ndarray, width: int, height: int) -> HeadLabel | None:
    """The labelling rule: (17, 3) keypoints (x, y, score) in frame pixels -> a head or None.

    None means no person worth labelling (neither shoulders nor ears confident).
    """
    s = kp[:, 2]
    shoulders = sum(s[i] > CONFIDENT for i in (L_SH, R_SH))
    ears = sum(s[i] > CONFIDENT for i in (L_EAR, R_EAR))
    if shoulders == 0 and ears == 0:
        return None
    raw = head_box(kp)
    if raw is None:
        return None
    x1, y1, x2, y2 = raw
    box = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
    inside = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    if inside <= 0:
        return None
    # A head cut by the border, or a person whose shoulders leave the frame (close under the
    # camera, seen from above): the box cannot be trusted.
    margin = 0.01 * max(width, height)
    shoulders_out = any(
        s[i] > CONFIDENT and not (margin < kp[i, 0] < width - margin and kp[i, 1] < height - margin)
        for i in (L_SH, R_SH)
    )
    cut = inside < 0.9 * (x2 - x1) * (y2 - y1) or shoulders_out or shoulders == 0
    small = min(box[2] - box[0], box[3] - box[1]) < MIN_HEAD
    # MoveNet puts a nose and eyes on the back of a head with scores of 0.5-0.7 (seen on the
    # one-by-one clip), so the face keypoints alone cannot say "face visible": the body's
    # left/right order decides, the face keypoints only confirm a frontal face.
    face = s[NOSE] > CONFIDENT and s[L_EYE] > CONFIDENT and s[R_EYE] > CONFIDENT
    turn = facing(kp)
    if cut or small:
        label = "ignore"
    elif face and turn > 0.5:
        label = "front_without_mask"
    elif turn < -0.5:
        label = "face_not_visible"
    else:
        label = "ignore"
    return HeadLabel(box, label)


def square_warp(x0: float, y0: float, k: float) -> np.ndarray:
    """The affine map that crops from (x0, y0) and scales by k: crop, pad (black past the
    frame) and resize in one cv2.warpAffine, sub-pixel exact."""
    return np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)


class MoveNet:
    """The teacher model, run on square crops of a frame."""

    def __init__(self, path: Path) -> None:
        """Load the .tflite pose model."""
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(str(path), num_threads=2)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.size = int(self.inp["shape"][1])

    def on_crop(self, bgr: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        """(17, 3) keypoints (x, y, score) in frame pixels from the square crop around (cx, cy).

        Parts of the crop outside the frame are black, as in MoveNet's own cropping.
        """
        side = max(float(side), 16.0)
        x0, y0 = cx - side / 2, cy - side / 2
        scale = self.size / side
        crop = cv2.warpAffine(
            bgr, square_warp(x0, y0, scale), (self.size, self.size), flags=cv2.INTER_LINEAR
        )
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        self.interp.set_tensor(self.inp["index"], rgb[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self.out["index"])[0, 0]  # (17, 3) y, x, score
        return np.stack([x0 + raw[:, 1] * side, y0 + raw[:, 0] * side, raw[:, 2]], axis=1)


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a clip, BGR."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"{path}: cannot open video")
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    return frames


def read_frame(path: Path, frame_index: int) -> np.ndarray:
    """Frame frame_index of a clip, BGR (decoded sequentially: GIF seeking is unreliable)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"{path}: cannot open video")
    try:
        for index in range(frame_index + 1):
            ok, bgr = cap.read()
            if not ok:
                raise IndexError(f"{path}: no frame {frame_index} (clip has {index})")
    finally:
        cap.release()
    return bgr


def _changed(bgr: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the background (uint8 0/1).

    The background is first shifted to the frame's exposure, channel by channel: the one-by-one
    camera re-exposes while a dark-clad person stands close, and the whole wall lit up as
    foreground.
    """
    # The change is an offset of about the same size on wall and floor (measured +22 and +23 on
    # blue at frame 300); the median per-pixel difference estimates it, people being a minority.
    offset = np.median((bgr.astype(np.int16) - background).reshape(-1, 3), axis=0)
    matched = np.clip(background + offset, 0, 255).astype(np.uint8)
    diff = cv2.absdiff(bgr, matched).max(axis=2)
    return (cv2.GaussianBlur(diff, (5, 5), 0) > 28).astype(np.uint8)


def median_background(frames: list[np.ndarray], net: MoveNet, samples: int = 60) -> np.ndarray:
    """The scene without passers-by: a per-pixel median over the clip's empty frames.

    A plain median over the clip fails where people stand most of the time (on the one-by-one
    clip someone hides the table in most frames, and the median is a blend of them), so the
    median is taken over the sampled frames on which MoveNet, run on the whole frame, sees
    nobody. With fewer than MIN_EMPTY such frames (people present throughout, as on the
    classroom clip) it is the median over all of them; still people then belong to the
    background and the sliding-window scan finds them.
    """
    idx = np.linspace(0, len(frames) - 1, min(samples, len(frames))).astype(int)
    height, width = frames[0].shape[:2]
    empty = [
        i
        for i in idx
        if upper_score(net.on_crop(frames[i], width / 2, height / 2, max(width, height))) < 0.15
    ]
    pick = empty if len(empty) >= MIN_EMPTY else idx
    return np.median(np.stack([frames[i] for i in pick]), axis=0).astype(np.uint8)


def upper_score(kp: np.ndarray) -> float:
    """Best of the mean head and mean shoulder scores: is anyone there at all."""
    return float(max(kp[list(HEAD_POINTS), 2].mean(), kp[[L_SH, R_SH], 2].mean()))


@dataclass
class Blob:
    """One foreground blob: its box (x1, y1, x2, y2) and its mask inside that box."""

    box: tuple[int, int, int, int]
    mask: np.ndarray


def foreground_blobs(bgr: np.ndarray, background: np.ndarray) -> list[Blob]:
    """The blobs that differ from the background."""
    h, w = bgr.shape[:2]
    mask = _changed(bgr, background)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Close generously: a person whose shirt matches the wall falls apart into pieces.
    k = max(5, int(0.03 * h)) | 1
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, ellipse)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area >= BLOB_MIN_AREA * w * h:
            box = (int(x), int(y), int(x + bw), int(y + bh))
            out.append(Blob(box, comp[y : y + bh, x : x + bw] == i))
    return out


def person_columns(kp: np.ndarray) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) around a pose's confident keypoints, widened by half a head each side."""
    ok = kp[:, 2] > CONFIDENT
    xs, ys = kp[ok, 0], kp[ok, 1]
    hb = head_box(kp)
    pad = (hb[2] - hb[0]) / 2 if hb else 0.0
    top = min(ys.min(), hb[1]) if hb else ys.min()
    return (float(xs.min() - pad), float(top), float(xs.max() + pad), float(ys.max()))


def unexplained_tops(
    blob: Blob, poses: list[np.ndarray], frame_w: int, frame_h: int
) -> list[HeadLabel]:
    """Ignore regions on the tops of the parts of a blob that no pose accounts for.

    A blob can hold several people (they merge when they overlap); the columns a found person
    covers are explained, and any person-sized rest gets an ignore region over its top, where
    a head would be. The teacher cannot read everyone (a woman cut by the bottom border on the
    store-aisle clip), and such a head must not become background. A blob on the frame's
    border counts whatever its height: a person walking in shows a sliver of hair first.
    """
    x1, y1, x2, y2 = blob.box
    on_border = x1 <= 1 or y1 <= 1 or x2 >= frame_w - 1 or y2 >= frame_h - 1
    free: np.ndarray = np.asarray(blob.mask.any(axis=0))
    for kp in poses:
        if (kp[:, 2] > CONFIDENT).sum() < 2:
            continue
        px1, py1, px2, py2 = person_columns(kp)
        if py2 < y1 or py1 > y2:
            continue
        free[max(0, int(px1) - x1) : max(0, int(np.ceil(px2)) - x1)] = False
    heights = np.where(free, blob.mask.sum(axis=0), 0)
    out = []
    min_w = max(6, int(0.04 * frame_h))
    col = 0
    while col < len(free):
        if not free[col]:
            col += 1
            continue
        end = col
        while end < len(free) and free[end]:
            end += 1
        tall = heights[col:end].max() >= 0.15 * frame_h
        if end - col >= min_w and (tall or on_border):
            rows = np.nonzero(blob.mask[:, col:end].any(axis=1))[0]
            top, bottom = y1 + int(rows[0]), y1 + int(rows[-1]) + 1
            band = min(1.2 * (end - col), 0.5 * (bottom - top))
            box = (float(x1 + col), float(top), float(x1 + end), float(top + band))
            out.append(HeadLabel(box, "ignore"))
        col = end
    return out


def scan_windows(width: int, height: int) -> list[tuple[float, float, float]]:
    """(cx, cy, side) of overlapping square windows at a few scales, covering the frame."""
    out = []
    for frac in SCAN_SIZES:
        side = frac * height
        nx = max(1, int(np.ceil((width - side) / (side / 2))) + 1)
        ny = max(1, int(np.ceil((height - side) / (side / 2))) + 1)
        for cx in np.linspace(side / 2, width - side / 2, nx):
            for cy in np.linspace(side / 2, height - side / 2, ny):
                out.append((float(cx), float(cy), side))
    return out


def pose_extent(kp: np.ndarray) -> tuple[float, float, float] | None:
    """(cx, cy, side) of a square crop around the confident keypoints, padded; None if too few."""
    ok = kp[:, 2] > CONFIDENT
    if ok.sum() < 3:
        return None
    xs, ys = kp[ok, 0], kp[ok, 1]
    side = max(xs.max() - xs.min(), ys.max() - ys.min())
    # Upper-body-only poses get room below: MoveNet wants the whole person in view.
    return (float((xs.min() + xs.max()) / 2), float((ys.min() + ys.max()) / 2), 1.5 * side + 16)


def pose_quality(kp: np.ndarray) -> float:
    """Mean score of the head and shoulder keypoints: how sure MoveNet is of this upper body."""
    return float(kp[[*HEAD_POINTS, L_SH, R_SH], 2].mean())


def is_person(kp: np.ndarray) -> bool:
    """Enough confident upper-body keypoints to trust the pose at all."""
    s = kp[:, 2]
    upper = int((s[[*HEAD_POINTS, L_SH, R_SH]] > CONFIDENT).sum())
    return upper >= 3 and (s[L_SH] > CONFIDENT or s[R_SH] > CONFIDENT)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two poses are one person found twice (their head boxes overlap or nearly touch)."""
    ba, bb = head_box(a), head_box(b)
    if ba is None or bb is None:
        return False
    if box_iou(ba, bb) > 0.1:
        return True
    gap = np.hypot((ba[0] + ba[2] - bb[0] - bb[2]) / 2, (ba[1] + ba[3] - bb[1] - bb[3]) / 2)
    return bool(gap < 0.6 * max(ba[2] - ba[0], bb[2] - bb[0]))


class _PoseFinder:
    """MoveNet on seed crops, re-centred on the pose found, one pose per distinct person."""

    def __init__(self, net: MoveNet, bgr: np.ndarray) -> None:
        """Start on one frame."""
        self.net, self.bgr = net, bgr
        self.poses: list[tuple[float, np.ndarray]] = []

    def covered(self, cx: float, cy: float) -> bool:
        """Whether (cx, cy) lies in the crop of a person already found."""
        for _, kp in self.poses:
            ext = pose_extent(kp)
            if ext and abs(cx - ext[0]) < ext[2] / 2 and abs(cy - ext[1]) < ext[2] / 2:
                return True
        return False

    def seed(self, cx: float, cy: float, side: float) -> None:
        """Look for a person in the square crop of this side centred on (cx, cy)."""
        kp = self.net.on_crop(self.bgr, cx, cy, side)
        ext = pose_extent(kp)
        if ext is None:
            return
        # Second pass on a crop that fits this person: MoveNet is far surer on a snug crop.
        kp2 = self.net.on_crop(self.bgr, *ext)
        hb = head_box(kp2)
        # A head a third of the frame high is two people read as one (store-aisle).
        if not is_person(kp2) or hb is None or hb[3] - hb[1] > MAX_HEAD * self.bgr.shape[0]:
            return
        q = pose_quality(kp2)
        for i, (q_old, old) in enumerate(self.poses):
            if same_person(kp2, old):
                if q > q_old:
                    self.poses[i] = (q, kp2)
                return
        self.poses.append((q, kp2))

    def result(self) -> list[np.ndarray]:
        """The distinct poses, best first."""
        return [kp for _, kp in sorted(self.poses, key=lambda p: -p[0])]


def _grow(head: HeadLabel, factor: float, width: int, height: int) -> HeadLabel:
    """The head with its box scaled about its centre, clipped to the frame."""
    x1, y1, x2, y2 = head.box
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, factor * (x2 - x1) / 2, factor * (y2 - y1) / 2
    box = (
        max(0.0, cx - hw),
        max(0.0, cy - hh),
        min(float(width), cx + hw),
        min(float(height), cy + hh),
    )
    return HeadLabel(box, head.label)


def _overlaps(box: tuple[float, ...], others: list[HeadLabel]) -> bool:
    """Whether box overlaps one of the labelled heads (an ignore there would erase a positive)."""
    for other in others:
        o = other.box
        iw = max(0.0, min(box[2], o[2]) - max(box[0], o[0]))
        ih = max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
        if iw * ih > 0.2 * (o[2] - o[0]) * (o[3] - o[1]):
            return True
    return False


def nearby(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether pose b could be pose a a few frames later: heads within 3 head widths.

    People walking across the one-by-one clip move more than a head width between labelled
    frames, so same_person is too strict to tell "moved" from "lost".
    """
    ba, bb = head_box(a), head_box(b)
    if ba is None or bb is None:
        return False
    gap = np.hypot((ba[0] + ba[2] - bb[0] - bb[2]) / 2, (ba[1] + ba[3] - bb[1] - bb[3]) / 2)
    return bool(gap < 3 * max(ba[2] - ba[0], bb[2] - bb[0]))


@dataclass
class Track:
    """A person found on an earlier labelled frame: their pose and how many frames since."""

    pose: np.ndarray
    missed: int = 0


def label_frame(
    net: MoveNet,
    bgr: np.ndarray,
    background: np.ndarray,
    tracks: list[Track],
    scan: bool,
) -> tuple[list[HeadLabel], list[Track]]:
    """Heads on one frame, and the people to look for on the next labelled frame."""
    height, width = bgr.shape[:2]
    finder = _PoseFinder(net, bgr)
    for track in tracks:
        if (ext := pose_extent(track.pose)) is not None:
            finder.seed(*ext)
    blobs = foreground_blobs(bgr, background)
    for blob in blobs:
        x1, y1, x2, y2 = blob.box
        finder.seed((x1 + x2) / 2, (y1 + y2) / 2, 1.2 * max(x2 - x1, y2 - y1))
    if scan:
        for cx, cy, side in scan_windows(width, height):
            if not finder.covered(cx, cy):
                finder.seed(cx, cy, side)
    poses = finder.result()
    heads = [h for kp in poses if (h := head_from_keypoints(kp, width, height)) is not None]
    labelled = [h for h in heads if h.label != "ignore"]
    doubtful = [_grow(h, IGNORE_GROWTH, width, height) for h in heads if h.label == "ignore"]
    # Someone found just before and not now has probably not gone (the classroom's seated
    # people drop out for a frame when they turn their head): an ignore region where they were.
    lost = [t for t in tracks if not any(nearby(t.pose, kp) for kp in poses)]
    for track in lost:
        if (box := head_box(track.pose)) is not None:
            doubtful.append(_grow(HeadLabel(box, "ignore"), IGNORE_GROWTH, width, height))
    heads = labelled + [h for h in doubtful if not _overlaps(h.box, labelled)]
    for blob in blobs:
        heads += [
            h
            for h in unexplained_tops(blob, poses, width, height)
            if not _overlaps(h.box, labelled)
        ]
    kept = [Track(t.pose, t.missed + 1) for t in lost if t.missed + 1 < TRACK_PATIENCE]
    return heads, [Track(kp) for kp in poses] + kept


def label_clip(path: Path, every_n: int = 3) -> list[FrameLabels]:
    """Teacher labels for frames 0, every_n, 2 * every_n, ... of a clip (deterministic).

    Every such frame is returned, with an empty head list where nobody is there.
    """
    path = Path(path)
    if every_n < 1:
        raise ValueError(f"every_n must be >= 1, got {every_n}")
    net = MoveNet(shared_dir_of(path) / MOVENET)
    frames = read_frames(path)
    if not frames:
        raise ValueError(f"{path}: no frames")
    background = median_background(frames, net)
    height, width = frames[0].shape[:2]
    out: list[FrameLabels] = []
    tracks: list[Track] = []
    for n, index in enumerate(range(0, len(frames), every_n)):
        heads, tracks = label_frame(net, frames[index], background, tracks, n % SCAN_EVERY == 0)
        out.append(FrameLabels(path.name, index, width, height, heads))
    return out


def shared_dir_of(clip: Path) -> Path:
    """../shared from a clip inside ../shared/videos."""
    return Path(clip).resolve().parent.parent


def save_labels(labels: list[FrameLabels], out: Path) -> None:
    """Write labels as JSON (a list of frames, each with its heads)."""
    Path(out).write_text(json.dumps([asdict(fl) for fl in labels], indent=1) + "\n")


def load_labels(path: Path) -> list[FrameLabels]:
    """Read labels written by save_labels; a malformed entry raises ValueError naming it."""
    raw = json.loads(Path(path).read_text())
    out = []
    for i, fl in enumerate(raw):
        try:
            heads = []
            for h in fl["heads"]:
                x1, y1, x2, y2 = (float(v) for v in h["box"])
                if h["label"] not in LABEL_NAMES:
                    raise ValueError(f"bad head label {h['label']!r}")
                heads.append(HeadLabel((x1, y1, x2, y2), str(h["label"])))
            out.append(
                FrameLabels(
                    str(fl["clip"]),
                    int(fl["frame_index"]),
                    int(fl["width"]),
                    int(fl["height"]),
                    heads,
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: entry {i}: {e}") from e
    return out


COLOURS = {
    "front_without_mask": (0, 0, 255),
    "face_not_visible": (255, 128, 0),
    "ignore": (0, 255, 255),
}


def contact_sheet(
    path: Path, labels: list[FrameLabels], out: Path, n: int = 24, cols: int = 6
) -> None:
    """A grid of labelled frames for a person to check the rule, written as PNG.

    Red front_without_mask, blue face_not_visible, yellow ignore; n frames spread over those
    with heads (all frames if none has). The sheet holds frames of the clip: write it outside
    the repository.
    """
    with_heads = [fl for fl in labels if fl.heads] or labels
    spread = sorted({int(i) for i in np.linspace(0, len(with_heads) - 1, n)})
    pick = [with_heads[i] for i in spread]
    frames = read_frames(path)
    tiles = []
    for fl in pick:
        bgr = frames[fl.frame_index].copy()
        scale = 320 / bgr.shape[1]
        bgr = cv2.resize(bgr, (320, int(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        for head in fl.heads:
            b = [round(v * scale) for v in head.box]
            cv2.rectangle(bgr, (b[0], b[1]), (b[2], b[3]), COLOURS[head.label], 1)
        cv2.putText(bgr, str(fl.frame_index), (4, 14), 0, 0.45, (255, 255, 255), 1)
        tiles.append(bgr)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    cv2.imwrite(str(out), np.vstack(rows))


def count_labels(labels: list[FrameLabels]) -> dict[str, int]:
    """Number of heads per label."""
    counts = dict.fromkeys(LABEL_NAMES, 0)
    for fl in labels:
        for head in fl.heads:
            counts[head.label] += 1
    return counts


def main() -> None:
    """Label one clip, print the label counts; write JSON and optionally a contact sheet.

    Exit codes: 0 done, 2 bad arguments (argparse), 66 the clip does not exist.
    """
    ap = argparse.ArgumentParser(description="Label heads on a fixed-camera clip with MoveNet.")
    ap.add_argument("--clip", type=Path, required=True, help="video or GIF inside ../shared/videos")
    ap.add_argument("--every-n", type=int, default=3, help="label every n-th frame")
    ap.add_argument("--out", type=Path, required=True, help="labels JSON to write")
    ap.add_argument("--sheet", type=Path, help="contact sheet PNG to write (outside the repo)")
    args = ap.parse_args()
    if not args.clip.is_file():
        print(f"{args.clip}: no such clip", file=sys.stderr)
        sys.exit(66)
    t0 = time.perf_counter()
    labels = label_clip(args.clip, args.every_n)
    seconds = time.perf_counter() - t0
    print(f"{args.clip.name}: {len(labels)} frames, {count_labels(labels)}, {seconds:.1f} s")
    save_labels(labels, args.out)
    if args.sheet:
        contact_sheet(args.clip, labels, args.sheet)


if __name__ == "__main__":
    main()
