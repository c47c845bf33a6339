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
