"""Evaluate the head detector beside two published face-mask detectors, on the same images.

    python -m models.training.evaluate --shared ../shared [--model models/head_detector_int8.tflite]
        [--all-images] [--out /tmp/eval_model.md] [--threads 2]

Prints a markdown report (and writes it to --out):

1. AP50 per class (IoU 0.5, `mask_weared_incorrect` boxes are ignore regions) on the 128
   validation images of face-mask-853 (models.training.data.face_mask_split) for this model,
   AIZOO FaceMaskDetection and SSDLite MobileDet mask; with --all-images also on all 853 images,
   where both peers have published figures that check their decoders here. Our model counts
   twice: one pass over the whole image, as the daemon runs it on a frame, and "maskwatch
   detect", the whole image and finer tiles (edge.tiling.detect_still), as photos are run.
2. Mask / no-mask confusion on the validation faces at each model's operating threshold.
3. Beard check: the bearded no-mask faces listed in bearded_val.json, read as mask or not.
4. Close-ups: every validation face cropped so it fills 35 % or 60 % of a 480 px picture; AP50
   and how many unmasked close-ups read as mask at the operating threshold.
5. Per labelled source (models.training.eval_sources): AP50 per class on the validation split
   of every source labelled by headlabels.py and on the held-out clips; AP50 by head size;
   face_not_visible precision and recall on a held-out clip and on photos kept out of
   training; the confusion at the operating threshold; and whole-pipeline checks (people
   decided on the one-by-one, face-demographics and store-aisle clips; the PETS09-S2L1 count
   through configs/street-camera.yaml).

Only the runtime venv is needed (ai_edge_litert, no TensorFlow). Our model runs through
edge.detect.Detector, the code the appliance runs; each peer gets its own preprocessing (a plain
resize to its input, as its authors do). Nothing is written but the report.

Exit codes: 0 done; 66 an input (../shared, a model, bearded_val.json) is missing or unusable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.anchors import iou_matrix
from edge.config.detector import DetectorConfig
from edge.detect import Detector, ModelError
from edge.detection import Detection
from edge.postprocess import nms
from edge.tiling import detect_still
from models.training import eval_sources
from models.training.data import IGNORE, Sample, face_mask_split
from models.training.metrics import ImageResult, average_precision, inside_regions

EXIT_NO_INPUT = 66
HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE.parent / "head_detector_int8.tflite"
BEARDED_FILE = HERE / "bearded_val.json"

# What any model's box may say, in one label space: ours uses the first three (LABELS order),
# MobileDet the first two and poor_mask. Classes 0 and 1 match face-mask-853's label indices.
PRED_LABELS = ("mask", "no_mask", "face_not_visible", "poor_mask")
MASK, NO_MASK, NOT_VISIBLE, POOR_MASK = range(4)
GT_CLASSES = (MASK, NO_MASK)

# Low enough that AP sees (nearly) the whole precision-recall curve of every model.
AP_SCORE_THRESHOLD = 0.01

AIZOO_PATH = Path("peers/aizoo/models/face_mask_detection.tflite")
AIZOO_INPUT = 260
AIZOO_FEATURE_MAPS = (33, 17, 9, 5, 3)
AIZOO_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
AIZOO_RATIOS = (1.0, 0.62, 0.42)
AIZOO_VARIANCES = np.array([0.1, 0.1, 0.2, 0.2], dtype=np.float32)
# The authors' inference defaults (tflite_infer.py): conf_thresh 0.5, NMS IoU 0.4.
AIZOO_THRESHOLD = 0.5
AIZOO_NMS_IOU = 0.4
AIZOO_MAX_CANDIDATES = 400
AIZOO_MAX_DETECTIONS = 100

MOBILEDET_PATH = Path("peers/mobiledet-mask/ssdlite_mobiledet_mask.tflite")
# The authors' THRESHOLD in detect_mask_from_rpicam.py.
MOBILEDET_THRESHOLD = 0.5
MOBILEDET_LABELS = {0: MASK, 1: NO_MASK, 2: POOR_MASK}

# Published AP50 on all 853 images (../shared/README.md), to check the peer decoders.
KNOWN_AP_ALL = {"AIZOO": (0.395, 0.489), "MobileDet": (0.725, 0.560)}


class InputError(RuntimeError):
    """A file or folder the evaluation reads is missing or unusable."""


@dataclass
class Dets:
    """One model's boxes on one image, in the common label space.

    boxes (N, 4) x1y1x2y2 image pixels; labels (N,) into PRED_LABELS; scores (N,) the score of
    that label; p_mask (N,) with / (with + without), nan where the model gives no such pair.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    p_mask: np.ndarray

    def above(self, threshold: float) -> Dets:
        """Only the boxes scoring at least threshold."""
        keep = self.scores >= threshold
        return Dets(self.boxes[keep], self.labels[keep], self.scores[keep], self.p_mask[keep])


def empty_dets() -> Dets:
    """No boxes."""
    return Dets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


class Contender(Protocol):
    """A detector under evaluation: a name, its operating threshold and detect()."""

    name: str
    labels: tuple[int, ...]  # which PRED_LABELS its boxes can carry
    operating_threshold: float
    operating_source: str

    def detect(self, bgr: np.ndarray) -> Dets:
        """Boxes on one BGR image, scores down to AP_SCORE_THRESHOLD."""
        ...


def tflite_interpreter(path: Path, threads: int):
    """An allocated LiteRT interpreter for a peer model."""
    from ai_edge_litert.interpreter import Interpreter

    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    return interp


class OurModel:
    """maskwatch's head detector, run by the runtime's own Detector."""

    name = "maskwatch"
    labels: tuple[int, ...] = (MASK, NO_MASK, NOT_VISIBLE)

    def __init__(self, model: Path, threads: int) -> None:
        """Build the Detector as the appliance would, but with a low threshold for AP."""
        self.config = DetectorConfig(
            model=model,
            edgetpu_model=None,
            accelerator="cpu",
            score_threshold=AP_SCORE_THRESHOLD,
            threads=threads,
        )
        self.detector = Detector(self.config)
        self.input_size = int(self.detector.interpreter.get_input_details()[0]["shape"][1])
        # The threshold the appliance runs at: the config default, read, not copied.
        self.operating_threshold = float(DetectorConfig.model_fields["score_threshold"].default)
        self.operating_source = "DetectorConfig.score_threshold default"

    def detect(self, bgr: np.ndarray) -> Dets:
        """Detector.detect: one pass over the whole image."""
        return as_dets(self.detector.detect(bgr))


def as_dets(found: Sequence[Detection]) -> Dets:
    """The runtime's detections as Dets; labels are already in PRED_LABELS order (first three)."""
    if not found:
        return empty_dets()
    scores = np.array([d.scores for d in found], np.float64)
    return Dets(
        boxes=np.array([d.box for d in found], np.float32),
        labels=np.array([d.label for d in found], np.int64),
        scores=np.array([d.score for d in found], np.float64),
        p_mask=scores[:, 0] / np.maximum(scores[:, 0] + scores[:, 1], 1e-9),
    )


class OurModelOnStills:
    """maskwatch as `maskwatch detect` runs it on photos: the whole image, then finer tiles."""

    name = "maskwatch detect"
    labels: tuple[int, ...] = (MASK, NO_MASK, NOT_VISIBLE)

    def __init__(self, ours: OurModel) -> None:
        """Ours with the config's default photo settings (its own Detector: the photo cap)."""
        cap = int(DetectorConfig.model_fields["photo_max_detections"].default)
        # The command's own floor, not AP_SCORE_THRESHOLD: scored as `maskwatch detect` lists.
        floor = float(DetectorConfig.model_fields["photo_score_threshold"].default)
        self.config = ours.config.model_copy(
            update={"max_detections": cap, "score_threshold": floor}
        )
        self.detector = Detector(self.config)
        self.input_size = ours.input_size
        self.scales = int(DetectorConfig.model_fields["photo_scales"].default)
        self.mirror = bool(DetectorConfig.model_fields["photo_mirror"].default)
        self.box_vote = float(DetectorConfig.model_fields["photo_box_vote"].default)
        self.operating_threshold = ours.operating_threshold
        self.operating_source = ours.operating_source

    def detect(self, bgr: np.ndarray) -> Dets:
        """edge.tiling.detect_still, capped at max_detections as the command is."""
        config, detector = self.config, self.detector
        return as_dets(
            detect_still(
                detector.detect,
                bgr,
                self.scales,
                self.input_size,
                config.nms_iou,
                config.max_detections,
                mirror=self.mirror,
                box_vote=self.box_vote,
            )
        )


def aizoo_anchors() -> np.ndarray:
    """AIZOO's 5,972 anchors as (N, 4) cx, cy, w, h in 0..1, in the model's output order.

    Per level row-major over cells (y outer, x inner); per cell every size at ratio 1, then the
    first size at each other ratio; width = size * sqrt(ratio), height = size / sqrt(ratio)
    (utils/anchor_generator.py of AIZOOTech/FaceMaskDetection).
    """
    out = []
    for cells, sizes in zip(AIZOO_FEATURE_MAPS, AIZOO_SIZES, strict=True):
        centres = (np.arange(cells, dtype=np.float64) + 0.5) / cells
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        shapes = [(s, AIZOO_RATIOS[0]) for s in sizes]
        shapes += [(sizes[0], r) for r in AIZOO_RATIOS[1:]]
        per_shape = [
            np.stack(
                [cx, cy, np.full_like(cx, s * np.sqrt(r)), np.full_like(cy, s / np.sqrt(r))],
                axis=-1,
            )
            for s, r in shapes
        ]
        out.append(np.stack(per_shape, axis=2).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decode_centre_size(
    deltas: np.ndarray, anchors: np.ndarray, variances: np.ndarray
) -> np.ndarray:
    """SSD centre-size decoding: (N, 4) dx, dy, dw, dh on (N, 4) cx, cy, w, h -> x1y1x2y2."""
    d = deltas * variances
    cx = anchors[:, 0] + d[:, 0] * anchors[:, 2]
    cy = anchors[:, 1] + d[:, 1] * anchors[:, 3]
    w = anchors[:, 2] * np.exp(d[:, 2])
    h = anchors[:, 3] * np.exp(d[:, 3])
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


class Aizoo:
    """AIZOO FaceMaskDetection: float SSD, raw anchor outputs decoded and NMS'd here."""

    name = "AIZOO"
    labels: tuple[int, ...] = (MASK, NO_MASK)
    operating_threshold = AIZOO_THRESHOLD
    operating_source = "authors' conf_thresh"

    def __init__(self, shared: Path, threads: int) -> None:
        """Load the model and check its outputs against the anchor layout."""
        self.interp = tflite_interpreter(shared / AIZOO_PATH, threads)
        self.anchors = aizoo_anchors()
        outs = self.interp.get_output_details()
        by_width = {int(o["shape"][-1]): o["index"] for o in outs}
        n = {int(o["shape"][1]) for o in outs}
        if set(by_width) != {2, 4} or n != {len(self.anchors)}:
            raise InputError(
                f"{shared / AIZOO_PATH}: expected outputs [1,{len(self.anchors)},4] and "
                f"[1,{len(self.anchors)},2]"
            )
        self.loc_index, self.cls_index = by_width[4], by_width[2]
        self.input_index = self.interp.get_input_details()[0]["index"]

    def detect(self, bgr: np.ndarray) -> Dets:
        """RGB resized to 260x260, 0..1; class-agnostic NMS over the best class, as the authors."""
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(bgr, (AIZOO_INPUT, AIZOO_INPUT)), cv2.COLOR_BGR2RGB)
        self.interp.set_tensor(self.input_index, (rgb.astype(np.float32) / 255.0)[None])
        self.interp.invoke()
        loc = self.interp.get_tensor(self.loc_index)[0]
        cls = self.interp.get_tensor(self.cls_index)[0]
        best = cls.max(axis=1)
        cand = np.flatnonzero(best >= AP_SCORE_THRESHOLD)
        if len(cand) > AIZOO_MAX_CANDIDATES:
            cand = cand[np.argpartition(-best[cand], AIZOO_MAX_CANDIDATES)[:AIZOO_MAX_CANDIDATES]]
        if len(cand) == 0:
            return empty_dets()
        boxes = decode_centre_size(loc[cand], self.anchors[cand], AIZOO_VARIANCES)
        keep = cand[nms(boxes, best[cand], AIZOO_NMS_IOU, AIZOO_MAX_DETECTIONS)]
        boxes = decode_centre_size(loc[keep], self.anchors[keep], AIZOO_VARIANCES)
        boxes = np.clip(boxes * [w, h, w, h], 0, [w, h, w, h]).astype(np.float32)
        scores = cls[keep].astype(np.float64)
        return Dets(
            boxes=boxes,
            labels=scores.argmax(axis=1).astype(np.int64),  # 0 Mask, 1 NoMask
            scores=scores.max(axis=1),
            p_mask=scores[:, 0] / np.maximum(scores.sum(axis=1), 1e-9),
        )


class MobileDet:
    """SSDLite MobileDet mask: the model's own TFLite_Detection_PostProcess (at most 10 boxes)."""

    name = "MobileDet"
    labels: tuple[int, ...] = (MASK, NO_MASK, POOR_MASK)
    operating_threshold = MOBILEDET_THRESHOLD
    operating_source = "authors' THRESHOLD"

    def __init__(self, shared: Path, threads: int) -> None:
        """Load the model; outputs are boxes, classes, scores, count in name order."""
        path = shared / MOBILEDET_PATH
        self.interp = tflite_interpreter(path, threads)
        inp = self.interp.get_input_details()[0]
        self.input_index = inp["index"]
        self.size = int(inp["shape"][1])
        outs = sorted(self.interp.get_output_details(), key=lambda o: o["name"])
        if len(outs) != 4 or len(outs[0]["shape"]) != 3:
            raise InputError(f"{path}: expected TFLite_Detection_PostProcess's four outputs")
        self.out = [o["index"] for o in outs]
        self.max_detections = int(outs[0]["shape"][1])

    def detect(self, bgr: np.ndarray) -> Dets:
        """RGB resized to 320x320 uint8; boxes come back ymin, xmin, ymax, xmax in 0..1."""
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(bgr, (self.size, self.size)), cv2.COLOR_BGR2RGB)
        self.interp.set_tensor(self.input_index, rgb[None])
        self.interp.invoke()
        boxes, classes, scores, count = (self.interp.get_tensor(i)[0] for i in self.out)
        n = int(np.asarray(count).reshape(-1)[0]) if np.ndim(count) else int(count)
        boxes, classes, scores = boxes[:n], classes[:n].astype(int), scores[:n]
        keep = scores >= AP_SCORE_THRESHOLD
        xyxy = boxes[keep][:, [1, 0, 3, 2]] * [w, h, w, h]
        labels = np.array([MOBILEDET_LABELS.get(int(c), POOR_MASK) for c in classes[keep]])
        return Dets(
            boxes=np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32),
            labels=labels.astype(np.int64).reshape(-1),
            scores=scores[keep].astype(np.float64),
            p_mask=np.full(int(keep.sum()), np.nan),
        )


@dataclass
class Run:
    """One model's boxes on a list of images, and how long it took."""

    dets: list[Dets]
    seconds: float


def run_images(model: Contender, samples: Sequence[Sample]) -> Run:
    """Detect on every sample's image (read as BGR, as a camera frame would be)."""
    out: list[Dets] = []
    spent = 0.0
    for s in samples:
        bgr = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{s.image_path}: cannot read image")
        start = time.perf_counter()
        out.append(model.detect(bgr))
        spent += time.perf_counter() - start
    return Run(out, spent)


def image_results(samples: Sequence[Sample], dets: Sequence[Dets]) -> list[ImageResult]:
    """Ground truth beside one model's boxes, for metrics.average_precision."""
    return [
        ImageResult(s.boxes, s.labels, d.boxes, d.labels, d.scores)
        for s, d in zip(samples, dets, strict=True)
    ]


def ap_per_class(samples: Sequence[Sample], dets: Sequence[Dets]) -> tuple[float, float]:
    """AP50 of mask and of no-mask (ignore regions from GT label -1)."""
    results = image_results(samples, dets)
    return average_precision(results, MASK), average_precision(results, NO_MASK)


def match_one_to_one(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float
) -> list[tuple[int, int]]:
    """Greedy (gt, det) pairs by IoU, highest first, each box used once, IoU >= min_iou."""
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return []
    ious = iou_matrix(np.asarray(gt_boxes, np.float64), np.asarray(det_boxes, np.float64))
    pairs: list[tuple[int, int]] = []
    used_gt: set[int] = set()
    used_det: set[int] = set()
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        g, d = np.unravel_index(flat, ious.shape)
        if ious[g, d] < min_iou:
            break
        if g in used_gt or d in used_det:
            continue
        used_gt.add(int(g))
        used_det.add(int(d))
        pairs.append((int(g), int(d)))
    return pairs


@dataclass
class Confusion:
    """GT mask / no-mask faces against what the model said at its operating threshold."""

    counts: dict[tuple[int, int], int] = field(default_factory=dict)  # (gt, pred label) -> n
    missed: dict[int, int] = field(default_factory=dict)  # gt -> n
    # mask / no_mask boxes matching no GT face and no ignore region: false alarms.
    unmatched_front: int = 0

    def add(self, gt: int, pred: int | None) -> None:
        """Count one GT face; pred None means no box matched it."""
        if pred is None:
            self.missed[gt] = self.missed.get(gt, 0) + 1
        else:
            self.counts[(gt, pred)] = self.counts.get((gt, pred), 0) + 1

    def total(self, gt: int) -> int:
        """GT faces of one class, matched or not."""
        return sum(v for k, v in self.counts.items() if k[0] == gt) + self.missed.get(gt, 0)


def confusion(
    samples: Sequence[Sample], dets: Sequence[Dets], threshold: float, min_iou: float = 0.5
) -> Confusion:
    """Confusion of labelled faces (0/1) with boxes at or above threshold, one-to-one at IoU."""
    out = Confusion()
    for s, d_all in zip(samples, dets, strict=True):
        d = d_all.above(threshold)
        face = np.flatnonzero(np.isin(s.labels, GT_CLASSES))
        pairs = match_one_to_one(s.boxes[face], d.boxes, min_iou)
        got = {g: k for g, k in pairs}
        for i, g in enumerate(face):
            out.add(int(s.labels[g]), int(d.labels[got[i]]) if i in got else None)
        matched = {k for _, k in pairs}
        ignore = s.boxes[s.labels == IGNORE]
        for k in range(len(d.boxes)):
            if k in matched or d.labels[k] not in GT_CLASSES:
                continue
            if inside_regions(d.boxes[k : k + 1], ignore)[0]:
                continue
            out.unmatched_front += 1
    return out


def reading(dets: Dets, box: np.ndarray, min_iou: float = 0.5) -> tuple[str, int | None]:
    """How a model reads one GT face: ("mask" | "no_mask" | "other" | "missed", box index).

    The highest-scoring box with IoU >= min_iou is the model's reading. It reads "mask" when
    labelled mask or its mask vote probability with / (with + without) is above 0.5.
    """
    if len(dets.boxes) == 0:
        return "missed", None
    ious = iou_matrix(box[None].astype(np.float64), dets.boxes.astype(np.float64))[0]
    hits = np.flatnonzero(ious >= min_iou)
    if len(hits) == 0:
        return "missed", None
    k = int(hits[np.argmax(dets.scores[hits])])
    label, p = int(dets.labels[k]), float(dets.p_mask[k])
    if label == MASK or (not np.isnan(p) and p > 0.5):
        return "mask", k
    if label == NO_MASK:
        return "no_mask", k
    return "other", k


@dataclass
class BeardedFace:
    """One bearded no-mask face of the validation split (bearded_val.json)."""

    image: str
    box: int
    clear: bool
    note: str


def load_bearded(path: Path, val: Sequence[Sample]) -> list[BeardedFace]:
    """Read and check the list: every entry must be a without_mask box of a validation image."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read bearded-face list: {exc}") from exc
    by_name = {s.name: s for s in val}
    out = []
    for n, entry in enumerate(raw.get("faces", [])):
        face = BeardedFace(
            str(entry["image"]), int(entry["box"]), bool(entry["clear"]), str(entry.get("note", ""))
        )
        s = by_name.get(face.image)
        if s is None or not 0 <= face.box < len(s.labels) or s.labels[face.box] != NO_MASK:
            raise InputError(
                f"{path}: faces[{n}]: {face.image} box {face.box} is not a validation "
                "without_mask box"
            )
        out.append(face)
    return out


def fmt(x: float) -> str:
    """Three decimals, or n/a."""
    return "n/a" if np.isnan(x) else f"{x:.3f}"


def pct(n: int, d: int) -> str:
    """n/d with a percentage."""
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "0/0"


def sha_of(path: Path) -> str:
    """Short sha256 of a file, so a report names the exact model it measured."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def report_confusion(model: Contender, c: Confusion) -> list[str]:
    """One model's confusion table in markdown: a column for every label it can give."""
    thr, preds = model.operating_threshold, model.labels
    lines = [
        f"**{model.name}** at score >= {thr:g} ({model.operating_source})",
        "",
        "| GT \\ predicted | " + " | ".join(PRED_LABELS[p] for p in preds) + " | missed |",
        "|---" * (len(preds) + 2) + "|",
    ]
    summary = []
    for gt in GT_CLASSES:
        cells = " | ".join(str(c.counts.get((gt, p), 0)) for p in preds)
        lines.append(f"| {PRED_LABELS[gt]} ({c.total(gt)}) | {cells} | {c.missed.get(gt, 0)} |")
        summary.append(
            f"{PRED_LABELS[gt]} read right {pct(c.counts.get((gt, gt), 0), c.total(gt))}"
        )
    summary.append(f"unmatched mask/no_mask boxes (false alarms) {c.unmatched_front}")
    lines += ["", "; ".join(summary) + ".", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement and print the report."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data folder")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="our .tflite model")
    ap.add_argument(
        "--all-images",
        action="store_true",
        help="also AP on all 853 images (checks the peer decoders; ~3x the time)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("/tmp/eval_model.md"),
        help="where the markdown report is also written",
    )
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads per model")
    args = ap.parse_args(argv)
    try:
        text = evaluate(args.shared, args.model, args.all_images, args.threads)
    except (InputError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    print(text)
    args.out.write_text(text + "\n")
    return 0


def evaluate(shared: Path, model_path: Path, all_images: bool, threads: int) -> str:
    """All measurements, as one markdown report."""
    started = time.perf_counter()
    dataset = shared / "datasets" / "face-mask-853"
    if not (dataset / "annotations").is_dir():
        raise InputError(f"{dataset}: face-mask-853 not found (is --shared right?)")
    if not model_path.is_file():
        raise InputError(f"{model_path}: model file not found")
    train, val = face_mask_split(dataset)
    bearded = load_bearded(BEARDED_FILE, val)
    ours = OurModel(model_path.resolve(), threads)
    stills = OurModelOnStills(ours)
    # The daemon's own settings (ours runs at a low threshold for AP) for the pipeline checks.
    threshold = {"score_threshold": ours.operating_threshold}
    appliance = Detector(ours.config.model_copy(update=threshold))
    models: list[Contender] = [ours, stills, Aizoo(shared, threads), MobileDet(shared, threads)]

    runs = {m.name: run_images(m, val) for m in models}
    ap_val = {m.name: ap_per_class(val, runs[m.name].dets) for m in models}
    ap_all: dict[str, tuple[float, float]] = {}
    seconds_all: dict[str, float] = {}
    if all_images:
        everything = train + val
        for m in models:
            r = run_images(m, train)
            dets = r.dets + runs[m.name].dets
            seconds_all[m.name] = r.seconds + runs[m.name].seconds
            ap_all[m.name] = ap_per_class(everything, dets)

    val_labels = np.concatenate([s.labels for s in val])
    stat = model_path.stat()
    when = datetime.fromtimestamp(stat.st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# maskwatch head detector: evaluation",
        "",
        f"Model `{model_path}` (sha256 {sha_of(model_path)}, {stat.st_size / 1e6:.2f} MB, "
        f"written {when}), run by edge.detect.Detector on the CPU "
        f"({ours.detector.runtime}, {threads} threads).",
        f"Validation: the fixed face-mask-853 split, {len(val)} images, "
        f"{int((val_labels == MASK).sum())} with_mask, {int((val_labels == NO_MASK).sum())} "
        f"without_mask, {int((val_labels == IGNORE).sum())} mask_weared_incorrect (ignored).",
        "",
        "## AP50 per class (IoU 0.5, incorrectly worn masks ignored)",
        "",
        "| model | input | mask AP50 (val) | no-mask AP50 (val) | mean (val) |"
        + (
            " mask AP50 (all 853) | no-mask AP50 (all 853) | published (all 853) |"
            if all_images
            else ""
        )
        + " ms / image |",
        "|---|---|---|---|---|" + ("---|---|---|" if all_images else "") + "---|",
    ]
    inputs = {
        ours.name: f"{ours.input_size} letterbox, uint8 (runtime code)",
        stills.name: f"whole image, 2x2 to {stills.scales}x{stills.scales} tiles, whole image "
        f"zoomed out{', whole and zoomed-out views mirrored' if stills.mirror else ''}, each "
        f"{ours.input_size} letterbox"
        f"{f', boxes voted at IoU {stills.box_vote:g}' if stills.box_vote else ''}"
        " (`maskwatch detect`)",
        "AIZOO": "260x260 resize, float 0..1",
        "MobileDet": "320x320 resize, uint8",
    }
    for m in models:
        a = ap_val[m.name]
        mean = (a[0] + a[1]) / 2
        row = f"| {m.name} | {inputs[m.name]} | {fmt(a[0])} | {fmt(a[1])} | {fmt(mean)} |"
        if all_images:
            b = ap_all[m.name]
            known = KNOWN_AP_ALL.get(m.name)
            row += f" {fmt(b[0])} | {fmt(b[1])} | " + (
                f"{known[0]:.3f} / {known[1]:.3f} |" if known else "— |"
            )
        row += f" {1000 * runs[m.name].seconds / len(val):.0f} |"
        lines.append(row)
    lines += [
        "",
        f"Boxes down to score {AP_SCORE_THRESHOLD} (maskwatch detect: down to its "
        f"{stills.config.score_threshold:g}, as the command lists them); "
        "each box counts for its best label "
        "(ours: argmax of the three heads, so face_not_visible boxes count for neither class; "
        "MobileDet's poor_mask boxes likewise). MobileDet returns at most 10 boxes per image "
        "(its built-in post-processing); it was probably trained on these images."
        + (
            f" maskwatch's all-853 figures include its own {len(train)} training images."
            if all_images
            else ""
        ),
        "",
        "## Mask / no-mask confusion on the validation faces",
        "",
        "Each with_mask / without_mask face is matched one-to-one (IoU >= 0.5, greedy by IoU) "
        "to a box at or above the model's operating threshold.",
        "",
    ]
    for m in models:
        c = confusion(val, runs[m.name].dets, m.operating_threshold)
        lines += report_confusion(m, c)

    lines += beard_section(models, val, runs, bearded)
    lines += closeup_section(models, val)
    street = eval_sources.evaluation_samples(shared, GREY_SOURCE)
    lines += greyscale_section(
        models,
        [
            ("face-mask-853", val, {m.name: runs[m.name].dets for m in models}),
            (GREY_SOURCE, street, None),
        ],
    )
    lines += door_section(appliance, val)
    lines += eval_sources.sections(shared, models, ours, model_path.resolve(), appliance)
    lines += [
        "",
        f"Evaluation time: {time.perf_counter() - started:.0f} s"
        + (
            f" (with all 853 images: {', '.join(f'{k} {v:.0f} s' for k, v in seconds_all.items())} "
            "of inference)"
            if all_images
            else ""
        )
        + ".",
    ]
    return "\n".join(lines)


# Close-ups: each validation face of at least CLOSEUP_MIN_PX, cropped square around it so it
# fills this share of the crop's side, and the crop scaled to CLOSEUP_SIDE px, as a portrait or
# a door camera sees a face.
CLOSEUP_FILLS = (0.35, 0.6, 0.85)
CLOSEUP_SIDE = 480
CLOSEUP_MIN_PX = 24


def closeups(val: Sequence[Sample], fill: float) -> list[tuple[Sample, np.ndarray]]:
    """Every mask / no-mask validation face as a close-up; the other faces in it are ignored."""
    out = []
    for s in val:
        bgr = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{s.image_path}: cannot read image")
        for k, (box, label) in enumerate(zip(s.boxes, s.labels, strict=True)):
            face = float(max(box[2] - box[0], box[3] - box[1]))
            if label not in GT_CLASSES or face < CLOSEUP_MIN_PX:
                continue
            side = face / fill
            x1 = round((box[0] + box[2]) / 2 - side / 2)
            y1 = round((box[1] + box[3]) / 2 - side / 2)
            pad = round(side)  # the crop may reach past the photo: its edge pixels repeated
            big = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            crop = big[y1 + pad : y1 + pad + round(side), x1 + pad : x1 + pad + round(side)]
            scale = CLOSEUP_SIDE / crop.shape[1]
            crop = cv2.resize(crop, (CLOSEUP_SIDE, CLOSEUP_SIDE), interpolation=cv2.INTER_CUBIC)
            labels = np.where(np.arange(len(s.labels)) == k, s.labels, IGNORE)
            boxes = ((s.boxes - [x1, y1, x1, y1]) * scale).astype(np.float32)
            out.append((Sample(f"{s.name}#{k}", boxes, labels, (), image=crop), crop))
    return out


def closeup_section(models: Sequence[Contender], val: Sequence[Sample]) -> list[str]:
    """AP50 on the validation faces shown close up, where tiles could only add pieces."""
    lines = [
        "## Close-ups",
        "",
        f"Each validation face of at least {CLOSEUP_MIN_PX} px, cropped square so that it fills "
        f"the given share of the crop, the crop scaled to {CLOSEUP_SIDE} x {CLOSEUP_SIDE} px "
        "(upscaled, so softer than a real portrait); other faces in the crop are ignored.",
        "",
        "| face fills | faces | " + " | ".join(f"{m.name} mask / no-mask" for m in models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    as_mask = []
    for fill in CLOSEUP_FILLS:
        shots = closeups(val, fill)
        samples = [sample for sample, _ in shots]
        unmasked = [k for k, s in enumerate(samples) if NO_MASK in s.labels]
        faces = {k: samples[k].boxes[samples[k].labels == NO_MASK][0] for k in unmasked}
        row = f"| {fill:.0%} | {len(shots)} |"
        counts = f"| {fill:.0%} | {len(unmasked)} |"
        for m in models:
            dets = [m.detect(image) for _, image in shots]
            mask, no_mask = ap_per_class(samples, dets)
            row += f" {fmt(mask)} / {fmt(no_mask)} |"
            readings = [
                reading(dets[k].above(m.operating_threshold), faces[k])[0]
                for k in unmasked
            ]
            read_mask = readings.count("mask")
            counts += f" {read_mask} |"
        lines.append(row)
        as_mask.append(counts)
    return [
        *lines,
        "",
        "Unmasked close-ups read as mask at each model's operating threshold:",
        "",
        "| face fills | unmasked faces | " + " | ".join(m.name for m in models) + " |",
        "|---|---|" + "---|" * len(models),
        *as_mask,
        "",
    ]


# Photos shown to every model in grey as well: face-mask-853's validation split and this
# source's (its faces are the street and crowd scenes a camera sees).
GREY_SOURCE = "street-masks-229"


def greyscale(bgr: np.ndarray) -> np.ndarray:
    """The image as a camera's infrared night mode shows it: no colour, three equal channels."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def greyscale_section(
    models: Sequence[Contender],
    sets: Sequence[tuple[str, Sequence[Sample], dict[str, list[Dets]] | None]],
) -> list[str]:
    """AP50 on the same photos in colour and in grey, every model; each set's colour boxes
    are given (already run) or run here."""
    lines = [
        "## Greyscale (a camera's night mode)",
        "",
        "The validation photos converted to grey (three equal channels, as a camera's infrared "
        "night mode shows a scene), against the same photos in colour. AP50 mask / no-mask.",
        "",
        "| photos | images | " + " | ".join(f"{m.name} colour | {m.name} grey" for m in models)
        + " |",
        "|---|---|" + "---|---|" * len(models),
    ]
    for name, samples, colour in sets:
        images = [eval_sources.bgr_of(s) for s in samples]
        row = f"| {name} | {len(samples)} |"
        for m in models:
            shown = colour[m.name] if colour is not None else [m.detect(i) for i in images]
            grey = [m.detect(greyscale(i)) for i in images]
            for dets in (shown, grey):
                mask, no_mask = ap_per_class(samples, dets)
                row += f" {fmt(mask)} / {fmt(no_mask)} |"
        lines.append(row)
    return [*lines, ""]


# A door camera: each close-up at this fill held before the camera pipeline.
DOOR_FILL = 0.85


def door_section(detector: Detector, val: Sequence[Sample]) -> list[str]:
    """Close-ups through the camera pipeline, with and without its zoomed-out view."""
    shots = closeups(val, DOOR_FILL)
    truths = {"mask": MASK, "no_mask": NO_MASK}
    rows = []
    for zoom in (True, False):
        tally: dict[int, Counter[str]] = {MASK: Counter(), NO_MASK: Counter()}
        inferences = 0
        for sample, image in shots:
            decided, spent = eval_sources.held_decisions(detector, image, zoom)
            inferences += sum(spent)
            truth = int(sample.labels[sample.labels != IGNORE][0])
            right = [d for d in decided if truths.get(d) == truth]
            wrong = [d for d in decided if d in truths and truths[d] != truth]
            tally[truth].update(
                {
                    "right": len(right) > 0 and not wrong,
                    "wrong": len(wrong) > 0,
                    "twice": len(decided) > 1,
                    "none": not decided,
                }
            )
        name = "zoomed-out view for large heads (default)" if zoom else "one pass a frame"
        per_frame = inferences / (len(shots) * eval_sources.HELD_FRAMES)
        for truth, label in ((MASK, "masked"), (NO_MASK, "unmasked")):
            t = tally[truth]
            n = sum(1 for s, _ in shots if s.labels[s.labels != IGNORE][0] == truth)
            rows.append(
                f"| {name} | {label} ({n}) | {t['right']} | {t['wrong']} | {t['twice']} "
                f"| {t['none']} | {per_frame:.2f} |"
            )
    return [
        "## Door camera: close-ups through the camera pipeline",
        "",
        f"Each close-up at {DOOR_FILL:.0%} (above) held for {eval_sources.HELD_FRAMES} frames "
        "at 10 fps "
        "before the daemon's camera pipeline (whole frame, default tracker and vote). Right: "
        "decided with its own label and never the other; wrong: decided with the other label "
        "at least once; twice: counted as more than one person; none: nobody counted.",
        "",
        "| camera | faces | right | wrong | twice | none | inferences / frame |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def beard_section(
    models: Sequence[Contender],
    val: Sequence[Sample],
    runs: dict[str, Run],
    bearded: Sequence[BeardedFace],
) -> list[str]:
    """Bearded no-mask faces (and, for contrast, the other no-mask faces) read as mask or not."""
    index = {s.name: i for i, s in enumerate(val)}
    listed = {(f.image, f.box) for f in bearded}
    groups = {
        "bearded (clear)": [(f.image, f.box) for f in bearded if f.clear],
        "bearded (borderline)": [(f.image, f.box) for f in bearded if not f.clear],
        "other no-mask faces": [
            (s.name, int(k))
            for s in val
            for k in np.flatnonzero(s.labels == NO_MASK)
            if (s.name, int(k)) not in listed
        ],
    }
    lines = [
        "## Beard check",
        "",
        f"{len(bearded)} of the {sum(len(v) for v in groups.values())} validation without_mask "
        "faces are bearded (models/training/bearded_val.json, picked by eye from a contact sheet; "
        f"{len(groups['bearded (clear)'])} clear, {len(groups['bearded (borderline)'])} "
        "borderline). A face's reading is the highest-scoring box with IoU >= 0.5 at the "
        "model's operating threshold; it reads as mask when labelled mask or when its mask vote "
        "probability with / (with + without) is above 0.5.",
        "",
        "| model | faces | read as mask | read as no mask | other label | missed |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        for group, faces in groups.items():
            tally = {"mask": 0, "no_mask": 0, "other": 0, "missed": 0}
            for name, k in faces:
                s = val[index[name]]
                r, _ = reading(
                    runs[m.name].dets[index[name]].above(m.operating_threshold), s.boxes[k]
                )
                tally[r] += 1
            n = len(faces)
            lines.append(
                f"| {m.name} | {group} ({n}) | {pct(tally['mask'], n)} | "
                f"{pct(tally['no_mask'], n)} | {pct(tally['other'], n)} | "
                f"{pct(tally['missed'], n)} |"
            )
    lines += [
        "",
        "Face by face (label, score; ours also p_mask):",
        "",
        "| face | note | " + " | ".join(m.name for m in models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for f in bearded:
        s = val[index[f.image]]
        cells = []
        for m in models:
            d = runs[m.name].dets[index[f.image]].above(m.operating_threshold)
            r, hit = reading(d, s.boxes[f.box])
            if hit is None:
                cells.append("missed")
                continue
            text = f"{PRED_LABELS[int(d.labels[hit])]} {d.scores[hit]:.2f}"
            if not np.isnan(d.p_mask[hit]):
                text += f" (p_mask {d.p_mask[hit]:.2f})"
            cells.append(f"**{r}**: {text}")
        lines.append(f"| {f.image}#{f.box} | {f.note} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


if __name__ == "__main__":
    sys.exit(main())
