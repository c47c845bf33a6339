"""Train the three-label head detector; resumable, checkpoints every epoch.

    python -m models.training.train --shared ../shared --run models/training/runs/main

Writes <run>/last.weights.h5 and <run>/best.weights.h5 (by mean validation AP50 of the labels
the validation images carry; when --train-levels names only the stride-32 and 64 levels, on
views of them zoomed onto one head), <run>/state.json and <run>/log.txt. Re-running the same
command resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf
from tensorflow import keras

from edge.anchors import (
    ANCHOR_SPEC,
    INPUT_MULTIPLE,
    iou_matrix,
)
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITHOUT_MASK, LABELS
from edge.postprocess import select_heads
from models.training.augment import ZOOM_HEAD_PX, augment, clip_boxes, letterbox, zoom_on_head
from models.training.data import (
    IGNORE,
    LABELLED_SOURCES,
    UNKNOWN,
    Sample,
    face_mask_split,
    labelled_samples,
    unboxed_heads,
    video_samples,
    write_split,
)
from models.training.graft import level_layers
from models.training.metrics import ImageResult, average_precision
from models.training.model import build_detector, load_imagenet_weights, load_tflite_weights
from models.training.targets import Layout, encode_targets, front_halo

NUM_CLASSES = len(LABELS)
# front_without_mask faces are 1 in 5 of the front faces in face-mask-853.
LABEL_WEIGHTS = tf.constant([1.0, 3.0, 1.0])
# Video clips the teacher may label for training (--clips picks among them); store-aisle and
# face-demographics are never trained on: they are the held-out validation clips.
TRAIN_CLIPS = ("one-by-one-person-detection.mp4", "classroom.gif")


def mosaic(
    layout: Layout,
    quarter: list[Sample],
    rng: np.random.Generator,
    halo_classes: tuple[int, ...] = (),
) -> tuple[np.ndarray, ...]:
    """Four samples, each augmented at half size into one quadrant of the input: heads half as
    big as the plain view gives them, as far-away people on a street camera are.

    Each quadrant keeps its own sample's background classes (a face-mask-853 photo never
    teaches face_not_visible as background, also inside a mosaic).
    """
    half = layout.size // 2
    canvas = np.zeros((layout.size, layout.size, 3), np.uint8)
    boxes, labels = [], []
    for q, s in enumerate(quarter):
        ox, oy = half * (q % 2), half * (q // 2)
        img, b, lab = augment(s.load_rgb(), s.boxes, s.labels, half, rng, IGNORE, 0.0)
        canvas[oy : oy + half, ox : ox + half] = img
        boxes.append(b + np.array([ox, oy, ox, oy], np.float32))
        labels.append(lab)
    b, lab = np.concatenate(boxes), np.concatenate(labels)
    cls_t, cls_w, box_t, box_w, any_w = encode_targets(
        layout, b, lab, tuple(range(NUM_CLASSES))
    )
    centres = layout.anchors[:, :2]
    quadrant = (centres[:, 0] >= half).astype(int) + 2 * (centres[:, 1] >= half).astype(int)
    negative = (cls_t.sum(axis=1) == 0) & (any_w == 0)
    for q, s in enumerate(quarter):
        for c in set(range(NUM_CLASSES)) - set(s.background_classes):
            cls_w[(quadrant == q) & negative, c] = 0.0
        for c in s.absent_classes:
            cls_w[(quadrant == q) & (cls_t.sum(axis=1) == 0), c] = 1.0
    if halo_classes:
        # After the per-quadrant rule: around a labelled face, also in a face-only photo.
        halo = front_halo(layout, b, lab) & negative
        cls_w[np.ix_(np.flatnonzero(halo), np.array(halo_classes))] = 1.0
    return canvas, cls_t, cls_w, box_t, box_w, any_w


@dataclass(frozen=True)
class HeadCrop:
    """A teacher-labelled back of a head with its surroundings, for pasting into photos."""

    image: np.ndarray  # RGB
    box: np.ndarray  # the head inside image, x1, y1, x2, y2


def head_bank(videos: list[Sample], limit: int, rng: np.random.Generator) -> list[HeadCrop]:
    """Up to `limit` face_not_visible heads from the clips, each with half a head of context."""
    found = [(s, b) for s in videos for b, lab in zip(s.boxes, s.labels, strict=True)
             if lab == FACE_NOT_VISIBLE]
    out = []
    for i in rng.permutation(len(found))[:limit]:
        s, b = found[i]
        image = s.load_rgb()
        w, h = b[2] - b[0], b[3] - b[1]
        x1, y1 = max(0, int(b[0] - w / 2)), max(0, int(b[1] - h / 2))
        x2 = min(image.shape[1], int(b[2] + w / 2))
        y2 = min(image.shape[0], int(b[3] + h / 2))
        out.append(HeadCrop(image[y1:y2, x1:x2].copy(), b - np.array([x1, y1, x1, y1])))
    return out


def paste_heads(s: Sample, bank: list[HeadCrop], rng: np.random.Generator) -> Sample:
    """The photo with one or two backs of heads pasted in (soft-edged), labelled as such.

    The clips hold the only backs of heads, all in two rooms: pasted onto street and crowd
    photos they are seen against other backgrounds, so the label cannot lean on the room.
    """
    image = s.load_rgb().copy()
    ih, iw = image.shape[:2]
    boxes, labels = [s.boxes], [s.labels]
    taken = list(s.boxes)
    for _ in range(int(rng.integers(1, 3))):
        crop = bank[int(rng.integers(len(bank)))]
        head_h = crop.box[3] - crop.box[1]
        scale = rng.uniform(0.05, 0.25) * ih / max(head_h, 1.0)
        ch, cw = (max(2, round(v * scale)) for v in crop.image.shape[:2])
        if ch >= ih or cw >= iw:
            continue
        head = crop.box * scale
        # A few tries for a place clear of every labelled face (a face under a pasted head
        # would keep its label while no longer visible).
        for _ in range(5):
            x, y = int(rng.integers(0, iw - cw)), int(rng.integers(0, ih - ch))
            placed = head + np.array([x, y, x, y])
            if not taken or iou_matrix(placed[None], np.array(taken)).max() == 0:
                break
        else:
            continue
        patch = cv2.resize(crop.image, (cw, ch), interpolation=cv2.INTER_AREA)
        # Soft ellipse a little larger than the head: the hair edge comes along, the room's
        # wall mostly does not.
        alpha = np.zeros((ch, cw), np.float32)
        centre = (round((head[0] + head[2]) / 2), round((head[1] + head[3]) / 2))
        axes = (round((head[2] - head[0]) * 0.6), round((head[3] - head[1]) * 0.6))
        cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, min(axes) / 4))[..., None]
        region = image[y : y + ch, x : x + cw].astype(np.float32)
        image[y : y + ch, x : x + cw] = (alpha * patch + (1 - alpha) * region).astype(np.uint8)
        boxes.append(placed[None].astype(np.float32))
        labels.append(np.array([FACE_NOT_VISIBLE]))
        taken.append(placed)
    return replace(
        s, boxes=np.concatenate(boxes), labels=np.concatenate(labels), image=image
    )


def batches(
    layout: Layout,
    samples: list[Sample],
    batch: int,
    steps: int,
    seed: int,
    mosaic_share: float = 0.0,
    bank: list[HeadCrop] | None = None,
    paste_share: float = 0.0,
    zoom_share: float = 0.0,
    zoom_backs: float = 0.0,
    zoom_unmasked: float = 0.0,
    zoom_px: tuple[float, float] = ZOOM_HEAD_PX,
    halo_classes: tuple[int, ...] = (),
) -> queue.Queue[tuple[np.ndarray, ...] | None]:
    """Produce augmented, encoded batches on a background thread (OpenCV releases the GIL).

    A mosaic_share of the batch items are 2x2 mosaics of four samples (see mosaic()); a
    zoom_share of the others zoom onto one head (augment.zoom_on_head), a back of a head
    (face_not_visible) in a zoom_backs share of them and an unmasked face in a zoom_unmasked
    share, where the sample has one; the zoomed head's longer side is drawn from zoom_px.
    halo_classes are taught as 0 around every labelled frontal face (targets.front_halo).
    """
    out: queue.Queue[tuple[np.ndarray, ...] | None] = queue.Queue(maxsize=4)

    def work() -> None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(samples))
        pos = 0

        def take() -> Sample:
            nonlocal order, pos
            if pos >= len(order):
                order, pos = rng.permutation(len(samples)), 0
            pos += 1
            s = samples[order[pos - 1]]
            # Photos only: their background never teaches face_not_visible.
            if bank and FACE_NOT_VISIBLE not in s.background_classes and rng.random() < paste_share:
                s = paste_heads(s, bank, rng)
            return s

        for _ in range(steps):
            items = []
            for _ in range(batch):
                if rng.random() < mosaic_share:
                    items.append(
                        mosaic(layout, [take() for _ in range(4)], rng, halo_classes)
                    )
                    continue
                s = take()
                img, b, lab = augment(
                    s.load_rgb(),
                    s.boxes,
                    s.labels,
                    layout.size,
                    rng,
                    IGNORE,
                    zoom_share,
                    ((FACE_NOT_VISIBLE, zoom_backs), (FRONT_WITHOUT_MASK, zoom_unmasked)),
                    zoom_px,
                )
                items.append(
                    (
                        img,
                        *encode_targets(
                            layout, b, lab, s.background_classes, s.absent_classes, halo_classes
                        ),
                    )
                )
            out.put(tuple(np.stack(col) for col in zip(*items, strict=True)))
        out.put(None)

    threading.Thread(target=work, daemon=True).start()
    return out


def with_unknown_heads(s: Sample, heads: np.ndarray | None) -> Sample:
    """A face-set photo with the teacher's unboxed heads added as heads of unknown label."""
    if heads is None or len(heads) == 0:
        return s
    return replace(
        s,
        boxes=np.concatenate([s.boxes, heads]),
        labels=np.concatenate([s.labels, np.full(len(heads), UNKNOWN)]),
    )


def focal_loss(logits: tf.Tensor, target: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2), summed over weighted entries."""
    p = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    p_t = target * p + (1 - target) * (1 - p)
    alpha = target * 0.25 + (1 - target) * 0.75
    return tf.reduce_sum(weight * alpha * tf.pow(1 - p_t, 2.0) * ce)


def any_head_loss(logits: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """Focal loss that *some* label is present, for anchors of heads of unknown label.

    With independent sigmoid scores, P(some label) = 1 - prod(1 - p_c); -log of it is
    -log(1 - exp(-S)) with S = sum softplus(logit_c), computed without forming the product.
    No label is pushed down, so the head can keep whichever label its looks say.
    """
    total = tf.reduce_sum(tf.nn.softplus(logits), axis=-1)
    p_any = -tf.math.expm1(-total)
    ce = -tf.math.log(tf.maximum(p_any, 1e-7))
    return tf.reduce_sum(weight * 0.25 * tf.square(1.0 - p_any) * ce)


def zoomed_views(
    samples: list[Sample], size: int, prefer: tuple[tuple[int, float], ...], seed: int = 0
) -> list[Sample]:
    """One size x size view of each sample zoomed onto one of its heads (60-300 px, as the
    training's zoom-in views), for ranking a fine-tune of the large-head levels alone: at the
    photos' own scale few heads are large enough for those levels, and the small heads, which
    the frozen levels detect, would hide any change. Heads cut by the view's edge are ignore
    regions; the same views every time (seeded).
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        zoomed = zoom_on_head(s.load_rgb(), s.boxes, s.labels, size, rng, prefer)
        if zoomed is None:
            continue
        view, boxes = zoomed
        boxes, labels = clip_boxes(boxes, s.labels, size, IGNORE, min_visible=0.9)
        out.append(replace(s, boxes=boxes, labels=labels, image=view, image_path=None))
    return out


def evaluate(model: keras.Model, layout: Layout, samples: list[Sample]) -> dict[str, float]:
    """Validation AP50 per class of the float model (letterboxed like the runtime); nan for a
    class without ground truth in the samples."""
    results = []
    for s in samples:
        img, scale = letterbox(s.load_rgb(), layout.size)
        probs, deltas = model(img[None].astype(np.float32), training=False)
        boxes, labels, scores = select_heads(
            probs[0].numpy(), deltas[0].numpy(), layout.anchors, 0.01, 0.45, 100
        )
        results.append(
            ImageResult(
                s.boxes * scale, s.labels, boxes, labels, scores[np.arange(len(labels)), labels]
            )
        )
    return {LABELS[c]: average_precision(results, c) for c in range(NUM_CLASSES)}


def main() -> None:
    """Parse arguments, build data and model, train with resume."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--run", type=Path, default=Path("models/training/runs/main"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--video-every-n", type=int, default=3)
    ap.add_argument("--video-per-epoch", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument(
        "--init", type=Path, help="start from these weights instead of ImageNet (fine-tuning)"
    )
    ap.add_argument(
        "--clips",
        default=TRAIN_CLIPS[0],
        help=f"comma-separated teacher-labelled clips to train on, among {', '.join(TRAIN_CLIPS)}",
    )
    ap.add_argument(
        "--no-mask-repeat",
        type=int,
        default=1,
        help="photos with an unmasked face appear this many times per epoch (the rarer class)",
    )
    ap.add_argument(
        "--mosaic", type=float, default=0.0, help="share of training views that are 2x2 mosaics"
    )
    ap.add_argument(
        "--paste-heads",
        type=float,
        default=0.0,
        help="share of photo views that get backs of heads from the clips pasted in",
    )
    ap.add_argument(
        "--mask-absent",
        action="store_true",
        help="teach front_with_mask as 0 on the clips' ignore regions too (nobody in them wears "
        "a mask)",
    )
    ap.add_argument(
        "--labelled",
        default="",
        help="comma-separated sources labelled by headlabels.py (labels/<source>.json) to train "
        f"on, among {', '.join(LABELLED_SOURCES)}; face-mask-853 adds its unboxed heads as "
        "heads of unknown label",
    )
    ap.add_argument(
        "--labelled-per-epoch",
        type=int,
        default=800,
        help="at most this many images of each labelled source per epoch (a new draw each epoch)",
    )
    ap.add_argument(
        "--zoom",
        type=float,
        default=0.0,
        help="share of plain views that zoom onto one head (60-300 px in the input)",
    )
    ap.add_argument(
        "--zoom-backs",
        type=float,
        default=0.0,
        help="share of zoomed views that pick a back of a head (face_not_visible) where the "
        "image has one, so large backs of heads are taught as heads without a mask",
    )
    ap.add_argument(
        "--zoom-unmasked",
        type=float,
        default=0.0,
        help="share of zoomed views that pick an unmasked face where the image has one, so "
        "large unmasked faces (a door camera, a portrait) are not read as masks",
    )
    ap.add_argument(
        "--init-tflite",
        type=Path,
        help="start from an earlier int8 export's weights (dequantized; new layers fresh)",
    )
    ap.add_argument(
        "--size",
        type=int,
        default=ANCHOR_SPEC.input_size,
        help="square input side in pixels, a multiple of 32 (the shipped model's is the default)",
    )
    ap.add_argument(
        "--zoom-px",
        default=",".join(f"{x:g}" for x in ZOOM_HEAD_PX),
        help="MIN,MAX: the range of a zoomed head's longer side in the input, log-uniform",
    )
    ap.add_argument(
        "--train-levels",
        default="",
        help="comma-separated anchor levels (0 = stride 8 ... 3 = stride 64) whose own head "
        "layers alone learn; the backbone, the top-down path and the other levels stay frozen, "
        "so what the model does on heads of the other levels' sizes cannot change (default: all)",
    )
    ap.add_argument(
        "--train-boxes",
        action="store_true",
        help="only the box predictors learn (of the --train-levels levels, else of all four): "
        "every score the model gives stays as it was",
    )
    ap.add_argument(
        "--front-halo",
        action="store_true",
        help="teach face_not_visible as 0 on the anchors around every labelled frontal face "
        "(its head box included), which the overlap rule otherwise leaves untaught",
    )
    args = ap.parse_args()
    if args.size % INPUT_MULTIPLE:
        ap.error(f"--size: {args.size} is not a multiple of {INPUT_MULTIPLE}")
    try:
        lo, hi = (float(x) for x in args.zoom_px.split(","))
    except ValueError:
        ap.error(f"--zoom-px: {args.zoom_px!r} is not MIN,MAX")
    if not 0 < lo <= hi:
        ap.error(f"--zoom-px: {args.zoom_px!r} needs 0 < MIN <= MAX")
    zoom_px = (lo, hi)
    levels = (
        {int(x) for x in args.train_levels.split(",")}
        if args.train_levels
        else set(range(len(ANCHOR_SPEC.levels)))
    )
    if min(args.zoom_backs, args.zoom_unmasked) < 0 or args.zoom_backs + args.zoom_unmasked > 1:
        ap.error("--zoom-backs and --zoom-unmasked are shares of the same views: 0 or more, "
                 "at most 1 in all")
    args.run.mkdir(parents=True, exist_ok=True)
    log = (args.run / "log.txt").open("a")

    def say(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    train, val = face_mask_split(args.shared / "datasets/face-mask-853")
    write_split(Path(__file__).with_name("split.json"), train, val)
    sources = [x for x in args.labelled.split(",") if x]
    if "face-mask-853" in sources:
        unboxed = unboxed_heads("face-mask-853")
        train = [with_unknown_heads(s, unboxed.get(s.name)) for s in train]
        val = [with_unknown_heads(s, unboxed.get(s.name)) for s in val]
        sources.remove("face-mask-853")
    labelled: dict[str, list[Sample]] = {}
    for source in sources:
        if source not in LABELLED_SOURCES:
            known = ", ".join(LABELLED_SOURCES)
            ap.error(f"--labelled: {source} is not a labelled source ({known})")
        source_train, source_val = labelled_samples(args.shared, source)
        labelled[source] = source_train
        # Hard-hat validation is large: 150 images are enough to rank checkpoints.
        val += source_val[:150]
        say(f"{source}: train {len(source_train)} val {len(source_val)}")
    videos: list[Sample] = []
    for clip in (c for c in args.clips.split(",") if c):
        if clip not in TRAIN_CLIPS:
            ap.error(f"--clips: {clip} is not a training clip ({', '.join(TRAIN_CLIPS)})")
        videos += video_samples(args.shared / "videos" / clip, args.video_every_n, args.mask_absent)
    bank = head_bank(videos, 600, np.random.default_rng(7)) if args.paste_heads > 0 else []
    unmasked = [s for s in train if (s.labels == FRONT_WITHOUT_MASK).any()]
    photos = train + unmasked * (args.no_mask_repeat - 1)
    say(
        f"face-mask-853 train {len(train)} ({len(unmasked)} with an unmasked face, "
        f"{len(photos)} per epoch) val {len(val)}; video frames {len(videos)} ({args.clips})"
    )

    layout = Layout.of(args.size)
    # The large-head levels trained alone are ranked on zoomed views, where their heads are
    # (few heads reach them at their own scale); the same views whatever the training's own
    # zoom shares, so runs compare.
    zoomed_val = (
        zoomed_views(val, args.size, ((FACE_NOT_VISIBLE, 1 / 3), (FRONT_WITHOUT_MASK, 1 / 3)))
        if min(levels) >= 2 and not args.train_boxes
        else []
    )
    if zoomed_val:
        say(f"ranking epochs on {len(zoomed_val)} zoomed validation views")
    train_model, export_model, backbone = build_detector(args.size)
    state_path = args.run / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"epoch": 0, "best": -1}
    if state["epoch"] > 0:
        train_model.load_weights(args.run / "last.weights.h5")
        say(f"resumed after epoch {state['epoch']}")
    elif args.init is not None:
        # skip_mismatch: a model with a new level keeps that level's fresh layers.
        train_model.load_weights(args.init, skip_mismatch=True)
        say(f"initialised from {args.init}")
    elif args.init_tflite is not None:
        n = load_tflite_weights(train_model, backbone, args.init_tflite)
        say(f"initialised {n} layers from {args.init_tflite}")
    else:
        load_imagenet_weights(backbone, args.shared / "weights/tf2_mobilenet_v2_1.0_224_ptq.tflite")
    # The folded ImageNet statistics are exact; batches of 16 would only make them noisy.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False

    if args.train_levels or args.train_boxes:
        learning = level_layers(levels, args.train_boxes)
        for layer in train_model.layers:
            layer.trainable = layer.name in learning
        say(f"only levels {sorted(levels)} learn: {', '.join(sorted(learning))}")

    per_source = {k: min(args.labelled_per_epoch, len(v)) for k, v in labelled.items()}
    steps_per_epoch = (
        len(photos) + min(args.video_per_epoch, len(videos)) + sum(per_source.values())
    ) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    # Adam at the head's rate wipes out the pretrained stride-16/32 features within a few
    # epochs (measured: their variance across images fell to ~0), so the backbone learns 10x
    # slower than the new layers.
    opt = keras.optimizers.Adam(args.lr, clipnorm=5.0)
    opt_backbone = keras.optimizers.Adam(args.lr * 0.1, clipnorm=5.0)
    backbone_ids = {id(v) for v in backbone.trainable_variables}
    head_vars = [v for v in train_model.trainable_variables if id(v) not in backbone_ids]
    backbone_vars = [v for v in train_model.trainable_variables if id(v) in backbone_ids]
    variables = head_vars + backbone_vars

    @tf.function(reduce_retracing=True)
    def step(
        x: tf.Tensor,
        cls_t: tf.Tensor,
        cls_w: tf.Tensor,
        box_t: tf.Tensor,
        box_w: tf.Tensor,
        any_w: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            logits, deltas = train_model(x, training=True)
            # Positive anchors: any_w also marks those of unknown faces, whose box_w is 0.
            n_pos = tf.maximum(tf.reduce_sum(tf.maximum(box_w, any_w)), 1.0)
            cls_loss = (focal_loss(logits, cls_t, cls_w) + any_head_loss(logits, any_w)) / n_pos
            diff = tf.abs(deltas - box_t)
            smooth = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
            box_loss = tf.reduce_sum(tf.reduce_sum(smooth, -1) * box_w) / n_pos
            # Focal loss shrinks the gradient of a moderately wrong label to almost nothing, so
            # with it alone the model told mask from no mask by ratio 0.69 vs 0.67 after 8 epochs
            # (measured). A softmax cross-entropy among the three labels at positive anchors,
            # weighted for the rarer no-mask faces, teaches the distinction.
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=cls_t, logits=logits)
            # label_weight is 0 at unknown heads' anchors (their cls_t row is all zero).
            label_weight = tf.reduce_sum(cls_t * LABEL_WEIGHTS, -1)
            ce_loss = tf.reduce_sum(ce * box_w * label_weight) / n_pos
            loss = cls_loss + box_loss + ce_loss
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads[: len(head_vars)], head_vars, strict=True))
        if backbone_vars:
            opt_backbone.apply_gradients(
                zip(grads[len(head_vars) :], backbone_vars, strict=True)
            )
        return cls_loss, box_loss

    rng = np.random.default_rng(state["epoch"])
    for epoch in range(state["epoch"], args.epochs):
        t0 = time.time()
        picked = [videos[i] for i in rng.permutation(len(videos))[: args.video_per_epoch]]
        for source, samples in labelled.items():
            picked += [samples[i] for i in rng.permutation(len(samples))[: per_source[source]]]
        q = batches(
            layout,
            photos + picked,
            args.batch,
            steps_per_epoch,
            1000 + epoch,
            args.mosaic,
            bank,
            args.paste_heads,
            args.zoom,
            args.zoom_backs,
            args.zoom_unmasked,
            zoom_px,
            (FACE_NOT_VISIBLE,) if args.front_halo else (),
        )
        losses = []
        for k in range(steps_per_epoch):
            item = q.get()
            if item is None:
                break
            lr = lr_at(epoch * steps_per_epoch + k)
            opt.learning_rate.assign(lr)
            opt_backbone.learning_rate.assign(lr * 0.1)
            c, b = step(*[tf.constant(v) for v in item])
            losses.append((float(c), float(b)))
        mean = np.mean(losses, axis=0)
        train_model.save_weights(args.run / "last.weights.h5")
        msg = f"epoch {epoch + 1}/{args.epochs} cls {mean[0]:.3f} box {mean[1]:.3f} "
        msg += f"{time.time() - t0:.0f}s"
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            ap50 = evaluate(export_model, layout, val)
            score = float(np.nanmean(list(ap50.values())))
            msg += " val AP50 " + " ".join(f"{k} {v:.3f}" for k, v in ap50.items())
            if zoomed_val:
                ap50 = evaluate(export_model, layout, zoomed_val)
                score = float(np.nanmean(list(ap50.values())))
                msg += " zoomed " + " ".join(f"{k} {v:.3f}" for k, v in ap50.items())
            if score > state["best"]:
                state["best"] = score
                state["best_epoch"] = epoch + 1
                train_model.save_weights(args.run / "best.weights.h5")
                msg += " (best)"
        state["epoch"] = epoch + 1
        state_path.write_text(json.dumps(state))
        say(msg)
    say(f"done; best mean AP50 {state['best']:.3f} at epoch {state.get('best_epoch')}")


if __name__ == "__main__":
    main()
