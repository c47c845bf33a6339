"""Label every head of a photo set or clip with two teachers, for training the head detector.

    python -m models.training.headlabels --shared ../shared --source hardhat-heads \
        --model FIRST_MODEL [--out models/training/labels/hardhat-heads.json] \
        [--sheet /tmp/sheet.png]

The committed labels were made with the first shipped detector as FIRST_MODEL
(`git show 1eb2051:models/head_detector_int8.tflite > /tmp/first.tflite`).

Teachers (../shared/weights): YOLOX-Nano body/head/hand finds heads in any orientation; YuNet
finds faces with eye, nose and mouth landmarks. The shipped detector and a colour test read
mask or no mask; MoveNet's shoulder order tells a body facing away. The rule, per head
(`label_head`):

1. Head box: the source's own head box where it has one (hardhat-heads), else YOLOX's head box
   (score >= HEAD_SCORE). Photo sets that box only faces (street-masks-229, face-mask-853) keep
   their face labels; YOLOX heads that hold none of their faces become `head` (label unknown).
2. YuNet on a square crop of 1.6 head sides, letterboxed to 160 x 160. A face whose centre lies
   in the head box, score >= FRONT_SCORE, eye distance >= FRONTAL_EYES of its width and the nose
   between the eyes is *front*, boxed by YuNet's face box moved onto the face-mask photos'
   convention (`facebox.photo_box`: YuNet takes in the forehead, people drawing face boxes do
   not; the held-out scoring matches boxes drawn by people). Any other face there (score >=
   ANY_FACE_SCORE: a profile, a doubtful face) makes the head `head`: it teaches "a head is
   here", never which label.
3. No face at all: `face_not_visible` with the head box when the head is >= MIN_NOT_VISIBLE px
   tall (a face that small is too blurred for YuNet to promise it is absent) and, for a head
   the teacher found (not one the source drew), a YOLOX body holds it in its top 40 % (YOLOX
   boxes the odd floor tile as a head), else `head`.
   YuNet misses masked faces, in profile above all, so in sources where masks are common
   (MASKS_COMMON) the body under the head (YOLOX's body box that holds the head in its top 40 %)
   must also face away by MoveNet's shoulder order (teacher.facing < -0.5).
   In a clip whose people are all seen from behind (NOBODY_FACING), a face YuNet finds that is
   not frontal is taken for the back of a head it fired on: `face_not_visible`.
4. Mask or not, for front faces: the source's own knowledge where it has it (nobody in the Intel
   clips wears a mask); otherwise two signals must agree: the first shipped detector on the
   face (`--model`, zoomed so the face is ~40 model px, where it was trained) and the nose test
   (just below the nose tip differs in colour from the skin between the eyes when a mask
   covers it; a beard does not reach there). Disagreement: `head`. So is an agreed "mask" on a
   source where it was checked by eye and found mostly wrong (MASK_UNTRUSTED). Where masks are
   rare (MASKS_RARE), one signal saying bare while the other abstains is enough for no mask.

What was checked by eye, on contact sheets, is recorded in labels/README.md.

Labels are written as small JSON beside this file (`labels/<source>.json`, boxes in the image's
pixels); they are the project's own work. `--sheet` writes a contact sheet to look at (outside
the repository: it holds third-party pictures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.anchors import ANCHOR_SPEC, iou_matrix, make_anchors
from edge.postprocess import dequantize, select_heads
from models.training.data import write_labels
from models.training.facebox import photo_box
from models.training.teacher import MOVENET, YUNET, YUNET_SIDE, MoveNet, facing, square_warp

HERE = Path(__file__).resolve().parent
LABELS_DIR = HERE / "labels"
YOLOX = "weights/yolox_n_body_head_hand_256x320_float16.tflite"
BODY_CLASS, HEAD_CLASS = 0, 1
HEAD_SCORE = 0.4  # YOLOX head score for a head; weaker ones (>= 0.25) still become `head`
FRONT_SCORE = 0.6  # YuNet score for a front face
ANY_FACE_SCORE = 0.3  # YuNet score at which a face may be there: never face_not_visible
FRONTAL_EYES = 0.3  # eye distance / face-box width of a frontal face (../shared/README.md)
MIN_NOT_VISIBLE = 20.0  # px: smaller heads without a face are `head`, not face_not_visible
CROP = 1.6  # crop side around a head, in head sides
MASK_SCORE = 0.5  # the shipped detector's score for its reading to count
# Lab distance below the nose tip vs between the eyes: at or above NOSE_MASK the nose is
# covered, at or below NOSE_BARE it is skin, between the test abstains. On 1,385 frontal faces of
# face-mask-853's training split a single cut at 20 read 87 % of masks and 85 % of bare faces
# right; the band trades coverage for agreement with the second signal.
NOSE_MASK = 22.0
NOSE_BARE = 16.0
FACE_IN_MODEL = 40.0  # px of face in the 320 input when the shipped detector reads it

# The anchors of the first shipped detector (three levels, up to 150 px), whose mask reading
# made the committed labels (git show 1eb2051:models/head_detector_int8.tflite).
FIRST_LAYOUT = replace(ANCHOR_SPEC, levels=ANCHOR_SPEC.levels[:3])

SOURCES = {
    "hardhat-heads": "datasets/hardhat-heads",
    "carpark-frames": "videos/carpark-frames",
    "street-masks-229": "datasets/street-masks-229",
    "face-mask-853": "datasets/face-mask-853",
    "one-by-one-person-detection.mp4": "videos/one-by-one-person-detection.mp4",
    "classroom.gif": "videos/classroom.gif",
    # Held out: labelled for evaluation only, never trained on.
    "store-aisle-detection.gif": "videos/store-aisle-detection.gif",
    "face-demographics-walking.gif": "videos/face-demographics-walking.gif",
}
# Sources where most people wear masks (../shared/README.md), so YuNet finding no face is not
# enough to say the face is hidden.
MASKS_COMMON = {"carpark-frames", "street-masks-229"}
# Where the two mask signals' "mask" was checked by eye and found mostly wrong: on hard-hat
# photos 16 of 48 were masks; the rest were chin straps, face shields, hands, moustaches and
# shadowed faces under a hat brim. Those faces become `head`.
MASK_UNTRUSTED = {"hardhat-heads"}
# Where masks are rare (construction sites): one signal saying bare while the other is unsure
# is enough. Of the 1,945 faces this labels, 60 at random on a contact sheet: 57 bare, 3 too
# dark to tell, no mask (labels/README.md). 1,754 of them rest on the nose test alone.
MASKS_RARE = {"hardhat-heads"}
# Nobody in Intel's sample videos wears a mask (../shared/README.md).
NOBODY_MASKED = {
    "one-by-one-person-detection.mp4",
    "classroom.gif",
    "store-aisle-detection.gif",
    "face-demographics-walking.gif",
}
# Everyone in this clip is seen from behind, faces never visible (../shared/README.md).
NOBODY_FACING = {"one-by-one-person-detection.mp4"}
CLIP_EVERY_N = 3


@dataclass
class Head:
    """One labelled head: box (x1, y1, x2, y2) in image pixels and its label."""

    box: tuple[float, float, float, float]
    label: str  # front_with_mask | front_without_mask | face_not_visible | head
    why: str  # which rule gave the label, for contact sheets and counts


class Teachers:
    """YOLOX-Nano heads, YuNet faces, the shipped detector's mask reading."""

    def __init__(self, shared: Path, model: Path) -> None:
        """Load the three models (CPU)."""
        from ai_edge_litert.interpreter import Interpreter

        self.yolox = Interpreter(str(shared / YOLOX), num_threads=2)
        self.yolox.allocate_tensors()
        self._in = self.yolox.get_input_details()[0]["index"]
        self._out = self.yolox.get_output_details()[0]["index"]
        self.yunet = cv2.FaceDetectorYN.create(
            str(shared / YUNET), "", (YUNET_SIDE, YUNET_SIDE), ANY_FACE_SCORE, 0.3, 5000
        )
        self.movenet = MoveNet(shared / MOVENET)
        self.reader = Interpreter(str(model), num_threads=2)
        self.reader.allocate_tensors()
        outs = {o["shape"][-1]: o for o in self.reader.get_output_details()}
        self._scores, self._deltas = outs[3], outs[4]
        count = int(self._scores["shape"][1])
        layouts = [spec for spec in (ANCHOR_SPEC, FIRST_LAYOUT) if len(make_anchors(spec)) == count]
        if not layouts:
            raise ValueError(f"{model}: {count} anchors match no known layout")
        self.anchors = make_anchors(layouts[0])

    def detect(self, bgr: np.ndarray) -> None:
        """Run YOLOX on an image: fills self.found_heads (score, box) and self.bodies (boxes),
        score >= 0.25, x1y1x2y2 image pixels."""
        h, w = bgr.shape[:2]
        x = cv2.resize(bgr, (320, 256)).astype(np.float32)[None]
        self.yolox.set_tensor(self._in, x)
        self.yolox.invoke()
        rows = self.yolox.get_tensor(self._out)
        scale = np.array([w / 320, h / 256, w / 320, h / 256], np.float32)
        self.found_heads: list[tuple[float, np.ndarray]] = []
        bodies = []
        for row in rows:
            box = row[3:7] * scale
            if row[2] < 0.25 or min(box[2:] - box[:2]) < 4:
                continue
            if int(row[1]) == HEAD_CLASS:
                self.found_heads.append((float(row[2]), box))
            elif int(row[1]) == BODY_CLASS:
                bodies.append(box)
        self.bodies = np.array(bodies, np.float32).reshape(-1, 4)

    def body_under(self, head: np.ndarray) -> np.ndarray | None:
        """The smallest YOLOX body box that holds the head's centre in its top 40 %."""
        cx, cy = (head[0] + head[2]) / 2, (head[1] + head[3]) / 2
        b = self.bodies
        top = b[:, 1] + 0.4 * (b[:, 3] - b[:, 1])
        holds = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= top)
        if not holds.any():
            return None
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return b[np.flatnonzero(holds)[int(np.argmin(areas[holds]))]]

    def turned_away(self, bgr: np.ndarray, head: np.ndarray) -> bool:
        """Whether the body under a head faces away from the camera (MoveNet's shoulder order,
        teacher.facing < -0.5). False when no body holds the head or the pose is unsure."""
        body = self.body_under(head)
        if body is None:
            return False
        side = max(body[2] - body[0], body[3] - body[1]) * 1.15
        kp = self.movenet.on_crop(bgr, (body[0] + body[2]) / 2, (body[1] + body[3]) / 2, side)
        return facing(kp) < -0.5

    def faces(self, bgr: np.ndarray, head: np.ndarray) -> np.ndarray:
        """YuNet faces (K, 15) around a head, mapped to image pixels; centres inside the head."""
        cx, cy = (head[0] + head[2]) / 2, (head[1] + head[3]) / 2
        side = max(head[2] - head[0], head[3] - head[1]) * CROP
        k = YUNET_SIDE / side
        x0, y0 = cx - side / 2, cy - side / 2
        crop = cv2.warpAffine(bgr, square_warp(x0, y0, k), (YUNET_SIDE, YUNET_SIDE))
        _, found = self.yunet.detect(crop)
        if found is None:
            return np.zeros((0, 15), np.float32)
        found = found.copy()
        found[:, :14] /= k
        found[:, 0:14:2] += x0
        found[:, 1:14:2] += y0
        found[:, 2] -= x0  # width and height are sizes, not positions
        found[:, 3] -= y0
        centre_x = found[:, 0] + found[:, 2] / 2
        centre_y = found[:, 1] + found[:, 3] / 2
        inside_x = (centre_x > head[0]) & (centre_x < head[2])
        return found[inside_x & (centre_y > head[1]) & (centre_y < head[3])]

    def model_reading(self, bgr: np.ndarray, face: np.ndarray) -> tuple[float, float]:
        """The shipped detector's (mask, no-mask) scores for a face box, zoomed to ~40 px."""
        fw, fh = face[2] - face[0], face[3] - face[1]
        side = max(fw, fh) * 320 / FACE_IN_MODEL
        cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
        k = 320 / side
        x0, y0 = cx - side / 2, cy - side / 2
        crop = cv2.warpAffine(bgr, square_warp(x0, y0, k), (320, 320), flags=cv2.INTER_AREA)
        self.reader.set_tensor(
            self.reader.get_input_details()[0]["index"], crop[None, ..., ::-1].copy()
        )
        self.reader.invoke()
        probs = dequantize(
            self.reader.get_tensor(self._scores["index"])[0], self._scores["quantization"]
        )
        deltas = dequantize(
            self.reader.get_tensor(self._deltas["index"])[0], self._deltas["quantization"]
        )
        boxes, _, scores = select_heads(probs, deltas, self.anchors, 0.05, 0.45, 100)
        target = (face - np.array([x0, y0, x0, y0])) * k
        if not len(boxes):
            return 0.0, 0.0
        ious = iou_matrix(boxes, target[None])[:, 0]
        best = int(np.argmax(ious))
        if ious[best] < 0.3:
            return 0.0, 0.0
        return float(scores[best, 0]), float(scores[best, 1])


def nose_distance(bgr: np.ndarray, face: np.ndarray) -> float:
    """Lab colour distance between the nose tip and the skin between the eyes (a YuNet face row).

    A mask covers the nose tip but not the bridge between the eyes; a beard covers neither.
    """
    eyes = (face[4:6] + face[6:8]) / 2
    nose = face[8:10]
    eye_dist = float(np.hypot(*(face[4:6] - face[6:8])))
    r = max(1, round(eye_dist * 0.18))
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).astype(np.float32)

    def patch(p: np.ndarray, down: float = 0.0) -> np.ndarray:
        x, y = round(float(p[0])), round(float(p[1] + down))
        y0, y1 = max(0, y - r), min(lab.shape[0], y + r + 1)
        x0, x1 = max(0, x - r), min(lab.shape[1], x + r + 1)
        region = lab[y0:y1, x0:x1].reshape(-1, 3)
        return region.mean(axis=0) if len(region) else np.zeros(3, np.float32)

    # Just below the nose tip, where a mask's fabric is and a beard is not yet.
    below = patch(nose, eye_dist * 0.15)
    between = patch(eyes)
    # Lightness differs with shadows under the nose: count it half.
    d = below - between
    return float(np.sqrt(0.25 * d[0] ** 2 + d[1] ** 2 + d[2] ** 2))


def frontal(face: np.ndarray) -> bool:
    """A YuNet face seen from the front: confident, eyes far apart, nose between them."""
    right_eye, left_eye, nose = face[4:6], face[6:8], face[8:10]
    eye_dist = float(np.hypot(*(right_eye - left_eye)))
    lo, hi = sorted((float(right_eye[0]), float(left_eye[0])))
    return bool(
        face[14] >= FRONT_SCORE
        and eye_dist >= FRONTAL_EYES * face[2]
        and lo < nose[0] < hi
    )


def mask_label(
    teachers: Teachers, bgr: np.ndarray, face: np.ndarray, source: str
) -> tuple[str, str]:
    """front_with_mask / front_without_mask / head for a front face, and why."""
    if source in NOBODY_MASKED:
        return "front_without_mask", "clip: nobody masked"
    box = np.array([face[0], face[1], face[0] + face[2], face[1] + face[3]], np.float32)
    m, n = teachers.model_reading(bgr, box)
    model_says = "mask" if m >= MASK_SCORE and m > n else "no_mask" if n >= MASK_SCORE else "?"
    nose = nose_distance(bgr, face)
    nose_says = "mask" if nose >= NOSE_MASK else "no_mask" if nose <= NOSE_BARE else "?"
    if model_says == nose_says == "mask":
        if source in MASK_UNTRUSTED:
            return "head", "mask untrusted here"
        return "front_with_mask", "model+nose agree: mask"
    if model_says == nose_says == "no_mask":
        return "front_without_mask", "model+nose agree: no mask"
    says = {model_says, nose_says}
    if source in MASKS_RARE and says == {"no_mask", "?"}:
        return "front_without_mask", f"masks rare: model {model_says}, nose {nose_says}"
    return "head", f"mask signals disagree (model {model_says}, nose {nose_says})"


def label_head(
    teachers: Teachers, bgr: np.ndarray, head: np.ndarray, source: str, drawn: bool
) -> Head:
    """The rule of the module docstring for one head box (drawn: the source's own box, not the
    teacher's)."""
    faces = teachers.faces(bgr, head)
    h = float(head[3] - head[1])
    as_tuple = tuple(round(float(v), 1) for v in head)
    if len(faces):
        best = faces[int(np.argmax(faces[:, 14]))]
        if frontal(best):
            label, why = mask_label(teachers, bgr, best, source)
            if label == "head":
                return Head(as_tuple, "head", why)  # type: ignore[arg-type]
            x, y, w, fh = (float(v) for v in best[:4])
            # YuNet's box, moved onto the face-mask photos' convention (facebox.py).
            face_box = tuple(round(v, 1) for v in photo_box((x, y, x + w, y + fh), label))
            return Head(face_box, label, why)  # type: ignore[arg-type]
        seen_from_behind = source in NOBODY_FACING and teachers.body_under(head) is not None
        if seen_from_behind and h >= MIN_NOT_VISIBLE:
            # YuNet fires weakly on some backs of heads; this clip shows no face at all.
            return Head(as_tuple, "face_not_visible", "clip: no face seen")  # type: ignore[arg-type]
        return Head(as_tuple, "head", "face not frontal")  # type: ignore[arg-type]
    if h < MIN_NOT_VISIBLE:
        return Head(as_tuple, "head", "small, no face")  # type: ignore[arg-type]
    # YOLOX boxes the odd floor tile or chair as a head: a head of its own needs a body under it.
    if not drawn and teachers.body_under(head) is None:
        return Head(as_tuple, "head", "no face, no body")  # type: ignore[arg-type]
    # YuNet misses masked faces, in profile above all: where masks are common, the body under
    # the head must face away too.
    if source not in MASKS_COMMON:
        return Head(as_tuple, "face_not_visible", "no face")  # type: ignore[arg-type]
    if teachers.turned_away(bgr, head):
        return Head(as_tuple, "face_not_visible", "no face, body away")  # type: ignore[arg-type]
    return Head(as_tuple, "head", "no face, body not away")  # type: ignore[arg-type]


def images_of(shared: Path, source: str) -> Iterator[tuple[str, np.ndarray, list[dict]]]:
    """(image key, BGR image, the source's own boxes) of every image of a source."""
    root = shared / SOURCES[source]
    if source == "hardhat-heads":
        for item in json.loads((root / "annotations.json").read_text()):
            own = [{"box": b, "label": "head_box"} for b in item["heads"]]
            yield item["image"], _read(root / item["image"]), own
    elif source == "street-masks-229":
        names = {"mask": "front_with_mask", "no_mask": "front_without_mask"}
        for item in json.loads((root / "annotations.json").read_text()):
            own = [{"box": f["box"], "label": names[f["label"]]} for f in item["faces"]]
            yield item["image"], _read(root / item["image"]), own
    elif source == "face-mask-853":
        from models.training.data import read_voc

        for xml in sorted((root / "annotations").glob("*.xml")):
            s = read_voc(xml, root / "images")
            own = [{"box": b.tolist(), "label": "voc"} for b in s.boxes]
            assert s.image_path is not None
            yield s.name, _read(s.image_path), own
    elif source == "carpark-frames":
        for path in sorted(root.glob("*.jpg")):
            yield path.name, _read(path), []
    else:
        cap = cv2.VideoCapture(str(root))
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % CLIP_EVERY_N == 0:
                yield f"{index}", bgr, []
            index += 1
        cap.release()


def _read(path: Path) -> np.ndarray:
    """A BGR image; FileNotFoundError names the file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: cannot read image")
    return bgr


def label_image(
    teachers: Teachers, bgr: np.ndarray, own: list[dict], source: str
) -> list[Head]:
    """Every head of one image under the rule."""
    teachers.detect(bgr)
    found = teachers.found_heads
    out: list[Head] = []
    if source == "hardhat-heads":
        boxes = np.array([o["box"] for o in own], np.float32).reshape(-1, 4)
        out = [label_head(teachers, bgr, b, source, drawn=True) for b in boxes]
        taken = boxes
    elif source in ("street-masks-229", "face-mask-853"):
        # The set's own face labels stay as they are (face-mask-853's are read by data.py).
        if source == "street-masks-229":
            out = [Head(tuple(o["box"]), o["label"], "source label") for o in own]
        faces = np.array([o["box"] for o in own], np.float32).reshape(-1, 4)
        taken = faces
        for _, head in found:
            centres = (faces[:, :2] + faces[:, 2:]) / 2
            holds = (
                (centres[:, 0] > head[0]) & (centres[:, 0] < head[2])
                & (centres[:, 1] > head[1]) & (centres[:, 1] < head[3])
            )
            if not holds.any():
                box = tuple(round(float(v), 1) for v in head)
                out.append(Head(box, "head", "unboxed head"))  # type: ignore[arg-type]
        return out
    else:
        taken = np.zeros((0, 4), np.float32)
    for score, head in found:
        if len(taken) and iou_matrix(head[None], taken).max() >= 0.3:
            continue
        if score >= HEAD_SCORE:
            out.append(label_head(teachers, bgr, head, source, drawn=False))
        else:
            box = tuple(round(float(v), 1) for v in head)
            out.append(Head(box, "head", "weak teacher head"))  # type: ignore[arg-type]
        taken = np.concatenate([taken, head[None]])
    return out


def contact_sheet(shared: Path, source: str, labelled: list[dict], out: Path, n: int = 40) -> None:
    """Crops of n random heads per label, each with its label colour and rule, as one PNG."""
    colours = {
        "front_with_mask": (0, 200, 0),
        "front_without_mask": (0, 0, 255),
        "face_not_visible": (255, 128, 0),
        "head": (160, 160, 160),
    }
    rng = np.random.default_rng(0)
    items = [(im["image"], h) for im in labelled for h in im["heads"]]
    rows = []
    wanted: dict[str, list[dict]] = {}
    for label in colours:
        pool = [it for it in items if it[1]["label"] == label]
        for i in rng.permutation(len(pool))[:n]:
            wanted.setdefault(pool[i][0], []).append(pool[i][1])
    tiles: dict[str, list[np.ndarray]] = {label: [] for label in colours}
    for key, bgr, _ in images_of(shared, source):
        for h in wanted.get(key, []):
            b = np.array(h["box"], np.float32)
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            side = max(b[2] - b[0], b[3] - b[1]) * 2.0
            k = 96 / max(side, 1.0)
            tile = cv2.warpAffine(bgr, square_warp(cx - side / 2, cy - side / 2, k), (96, 96))
            r = ((b - np.array([cx - side / 2, cy - side / 2] * 2)) * k).astype(int)
            colour = colours[h["label"]]
            cv2.rectangle(tile, (int(r[0]), int(r[1])), (int(r[2]), int(r[3])), colour, 1)
            cv2.putText(tile, h["why"][:16], (1, 92), 0, 0.28, (255, 255, 255), 1)
            tiles[h["label"]].append(tile)
    for label, ts in tiles.items():
        ts = ts[:n] + [np.zeros((96, 96, 3), np.uint8)] * (n - len(ts[:n]))
        bar = np.zeros((14, 96 * 10, 3), np.uint8)
        cv2.putText(bar, label, (2, 11), 0, 0.4, colours[label], 1)
        rows.append(bar)
        for i in range(0, n, 10):
            rows.append(np.hstack(ts[i : i + 10]))
    cv2.imwrite(str(out), np.vstack(rows))


def main(argv: list[str] | None = None) -> int:
    """Label one source and write its JSON (and a contact sheet)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--source", required=True, choices=sorted(SOURCES))
    ap.add_argument("--out", type=Path, help="default: models/training/labels/<source>.json")
    ap.add_argument(
        "--model",
        type=Path,
        default=HERE.parent / "head_detector_int8.tflite",
        help="the detector whose mask reading is one of the two mask signals",
    )
    ap.add_argument("--sheet", type=Path, help="write a contact sheet PNG here (not in the repo)")
    ap.add_argument("--limit", type=int, default=0, help="label only the first N images")
    args = ap.parse_args(argv)
    out = args.out or LABELS_DIR / f"{args.source}.json"
    teachers = Teachers(args.shared, args.model)
    started = time.time()
    labelled: list[dict[str, Any]] = []
    for i, (key, bgr, own) in enumerate(images_of(args.shared, args.source)):
        if args.limit and i >= args.limit:
            break
        heads = label_image(teachers, bgr, own, args.source)
        labelled.append(
            {
                "image": key,
                "heads": [{"box": list(h.box), "label": h.label, "why": h.why} for h in heads],
            }
        )
    counts = write_labels(out, args.source, labelled)
    whys = Counter(h["why"] for im in labelled for h in im["heads"])
    print(f"{args.source}: {len(labelled)} images, {dict(counts)} in {time.time() - started:.0f} s")
    print(dict(whys))
    if args.sheet:
        contact_sheet(args.shared, args.source, labelled, args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
