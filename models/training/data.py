"""Training and validation samples: face-mask-853 (VOC) and teacher-labelled video frames.

Every sample carries, besides boxes and labels, which classes it may teach as *background*:
face-mask-853 labels only frontal faces, so heads seen from behind in its photos are unlabelled;
for those images the `face_not_visible` score is never pushed down on unlabelled anchors
(it is only trained where a labelled frontal face says "this is not a hidden face").
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK, LABELS

IGNORE = -1
# A head whose label nobody could decide (a profile, a hard-hat head the teachers disagree on, an
# unboxed face in the background): it teaches "a head is here" and its box, never which label,
# and never background.
UNKNOWN = -2
# The same where the teacher saw a face (a profile, a frontal face whose mask signals disagree):
# its head box does not teach the box either. Front classes are boxed by the face; a head box
# on a face taught the model boxes between the two, and held-out scoring wants the face.
UNKNOWN_FACE = -3
# headlabels.py rules (label "head") under which the teacher saw a face on the head.
FACE_SEEN_RULES = ("face not frontal", "mask signals disagree", "mask untrusted here")
VOC_LABELS = {
    "with_mask": FRONT_WITH_MASK,
    "without_mask": FRONT_WITHOUT_MASK,
    # A mask worn under the nose is neither class: an ignore region (see MODEL_CARD.md).
    "mask_weared_incorrect": IGNORE,
}
SPLIT_SEED = 20261121
VAL_FRACTION = 0.15


@dataclass
class Sample:
    """One training image with its head boxes (x1, y1, x2, y2 pixels) and label indices.

    label IGNORE marks a region that is neither positive nor background.
    background_classes: classes whose scores unlabelled anchors of this image teach as 0.
    absent_classes: classes nobody in the image carries, taught as 0 on every anchor that is
    not a positive, ignore regions and the margins of labelled heads included.
    """

    name: str
    boxes: np.ndarray
    labels: np.ndarray
    background_classes: tuple[int, ...]
    image_path: Path | None = None
    absent_classes: tuple[int, ...] = ()
    image: np.ndarray | None = field(default=None, repr=False)

    def load_rgb(self) -> np.ndarray:
        """The image as RGB uint8."""
        if self.image is not None:
            return self.image
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(self.image_path)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_voc(xml_path: Path, images_dir: Path) -> Sample:
    """Parse one Pascal VOC annotation of face-mask-853."""
    root = ET.parse(xml_path).getroot()
    boxes, labels = [], []
    for obj in root.findall("object"):
        name = obj.findtext("name", "")
        bb = obj.find("bndbox")
        if bb is None or name not in VOC_LABELS:
            continue
        boxes.append([float(bb.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(VOC_LABELS[name])
    filename = root.findtext("filename", xml_path.stem + ".jpg")
    return Sample(
        name=xml_path.stem,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        background_classes=(FRONT_WITH_MASK, FRONT_WITHOUT_MASK),
        image_path=images_dir / filename,
    )


def face_mask_split(dataset_dir: Path) -> tuple[list[Sample], list[Sample]]:
    """Train / validation split of face-mask-853, fixed by SPLIT_SEED over sorted file names."""
    xmls = sorted((dataset_dir / "annotations").glob("*.xml"), key=lambda p: p.name)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(xmls))
    n_val = round(len(xmls) * VAL_FRACTION)
    val_idx = set(order[:n_val].tolist())
    train: list[Sample] = []
    val: list[Sample] = []
    for i, xml in enumerate(xmls):
        (val if i in val_idx else train).append(read_voc(xml, dataset_dir / "images"))
    return train, val


def write_split(path: Path, train: list[Sample], val: list[Sample]) -> None:
    """Record the split (file stems) so the model card and evaluation can cite it."""
    path.write_text(
        json.dumps(
            {
                "seed": SPLIT_SEED,
                "val_fraction": VAL_FRACTION,
                "train": [s.name for s in train],
                "val": [s.name for s in val],
            },
            indent=1,
        )
        + "\n"
    )


def video_samples(clip: Path, every_n: int, mask_absent: bool = False) -> list[Sample]:
    """Teacher-labelled frames of one clip (see teacher.py), decoded into memory once.

    mask_absent: nobody in the clip wears a mask (true of every clip in ../shared/videos), so
    front_with_mask is taught as 0 even on the teacher's ignore regions.
    """
    from models.training.teacher import label_clip

    frames = label_clip(clip, every_n=every_n)
    wanted = {f.frame_index: f for f in frames}
    out: list[Sample] = []
    cap = cv2.VideoCapture(str(clip))
    index = 0
    while wanted:
        ok, bgr = cap.read()
        if not ok:
            break
        fl = wanted.pop(index, None)
        index += 1
        if fl is None:
            continue
        boxes, labels = [], []
        for head in fl.heads:
            boxes.append(list(head.box))
            labels.append(IGNORE if head.label == "ignore" else LABELS.index(head.label))
        out.append(
            Sample(
                name=f"{clip.stem}#{fl.frame_index}",
                boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.array(labels, dtype=np.int64),
                # The teacher finds every moving person, so background is background for all
                # classes here; nobody in these clips wears a mask.
                background_classes=(FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE),
                image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                # So a head the teacher could not label (cut by the frame edge, turned side-on)
                # is still no mask: dark, blurred backs of heads were read as masks otherwise.
                absent_classes=(FRONT_WITH_MASK,) if mask_absent else (),
            )
        )
    cap.release()
    return out


# Sources labelled by models.training.headlabels (labels/<source>.json), with the classes their
# unlabelled background may teach as 0 and the classes nobody in them carries.
LABELLED_SOURCES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # Every head is boxed (by the set or the teacher): background is background for all labels.
    "hardhat-heads": ((FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE), ()),
    "carpark-frames": ((FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE), ()),
    # Small background faces are often unboxed there: only the front classes, as face-mask-853.
    "street-masks-229": ((FRONT_WITH_MASK, FRONT_WITHOUT_MASK), ()),
    "one-by-one-person-detection.mp4": (
        (FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE), (FRONT_WITH_MASK,)
    ),
    "classroom.gif": ((FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE), (FRONT_WITH_MASK,)),
}
LABEL_CODES = {
    "front_with_mask": FRONT_WITH_MASK,
    "front_without_mask": FRONT_WITHOUT_MASK,
    "face_not_visible": FACE_NOT_VISIBLE,
    "head": UNKNOWN,
}
LABELS_DIR = Path(__file__).resolve().parent / "labels"


def read_labels(path: Path) -> dict:
    """A labels file of headlabels.py, heads expanded to {"box", "label", "why"} dicts.

    On disk each head is [x1, y1, x2, y2, label, rule]: label and rule index the file's
    "labels" and "rules" lists (the files stay small enough to commit and to diff).
    """
    doc = json.loads(path.read_text())
    names, rules = doc["labels"], doc["rules"]
    for im in doc["images"]:
        im["heads"] = [
            {"box": h[:4], "label": names[h[4]], "why": rules[h[5]]} for h in im["heads"]
        ]
    return doc


def write_labels(path: Path, source: str, images: list[dict]) -> dict[str, int]:
    """Write the labels of one source (heads as read_labels returns them); the label counts."""
    from collections import Counter

    counts = Counter(h["label"] for im in images for h in im["heads"])
    rules = Counter(h["why"] for im in images for h in im["heads"])
    names, rule_names = sorted(LABEL_CODES), sorted(rules)
    compact = [
        {
            "image": im["image"],
            "heads": [
                [*(round(float(v), 1) for v in h["box"]), names.index(h["label"]),
                 rule_names.index(h["why"])]
                for h in im["heads"]
            ],
        }
        for im in images
    ]
    doc = {
        "source": source,
        "rule": "models/training/headlabels.py (module docstring); checks: labels/README.md",
        "counts": dict(sorted(counts.items())),
        "rule_counts": dict(sorted(rules.items())),
        "labels": names,
        "rules": rule_names,
        "images": compact,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, separators=(",", ":"))
    # One image per line: a relabelling shows in a diff as the images it changed.
    text = text.replace(',{"image"', ',\n{"image"')
    path.write_text(text + "\n")
    return dict(counts)


def in_validation(key: str) -> bool:
    """Whether an image of a labelled source belongs to its fixed validation split (15 %, by a
    hash of its key, so adding images never moves others between the splits)."""
    import zlib

    return zlib.crc32(f"{SPLIT_SEED}:{key}".encode()) % 100 < round(VAL_FRACTION * 100)


def labelled_samples(
    shared: Path, source: str, labels_dir: Path = LABELS_DIR
) -> tuple[list[Sample], list[Sample]]:
    """Train and validation samples of a source labelled by headlabels.py.

    Clips keep their frame index as key; their frames are decoded into memory once.
    """
    from models.training.headlabels import SOURCES

    doc = read_labels(labels_dir / f"{source}.json")
    # Held-out sources (evaluation only) are never trained on: no background rule needed.
    background, absent = LABELLED_SOURCES.get(source, ((), ()))
    root = shared / SOURCES[source]
    frames: dict[int, np.ndarray] = {}
    if root.is_file():  # a clip
        wanted = {int(im["image"]) for im in doc["images"]}
        cap = cv2.VideoCapture(str(root))
        index = 0
        while index <= max(wanted, default=-1):
            ok, bgr = cap.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        cap.release()
    train: list[Sample] = []
    val: list[Sample] = []
    for im in doc["images"]:
        boxes = np.array([h["box"] for h in im["heads"]], np.float32).reshape(-1, 4)
        labels = np.array([label_code(h) for h in im["heads"]], np.int64)
        key = f"{source}/{im['image']}"
        sample = Sample(
            name=key,
            boxes=boxes,
            labels=labels,
            background_classes=background,
            absent_classes=absent,
            image_path=None if frames else root / im["image"],
            image=frames.get(int(im["image"])) if frames else None,
        )
        (val if in_validation(key) else train).append(sample)
    return train, val


def label_code(head: dict) -> int:
    """A head's label index (read_labels form): UNKNOWN_FACE for a head of unknown label on
    which the teacher saw a face."""
    code = LABEL_CODES[head["label"]]
    if code == UNKNOWN and head["why"].startswith(FACE_SEEN_RULES):
        return UNKNOWN_FACE
    return code


def unboxed_heads(source: str, labels_dir: Path = LABELS_DIR) -> dict[str, np.ndarray]:
    """Head boxes the teacher found beside a face set's own boxes (face-mask-853), by image."""
    doc = read_labels(labels_dir / f"{source}.json")
    return {
        im["image"]: np.array([h["box"] for h in im["heads"]], np.float32).reshape(-1, 4)
        for im in doc["images"]
    }
