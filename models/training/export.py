"""Convert trained weights into the full-integer int8 .tflite the appliance runs.

    python -m models.training.export --weights models/training/runs/main/best.weights.h5

uint8 input (the camera's RGB bytes, no float preprocessing on the device), int8 everywhere
inside, uint8 outputs (scores and box offsets; the runtime reads their quantisation).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from edge.anchors import ANCHOR_SPEC, INPUT_MULTIPLE
from models.training.augment import letterbox
from models.training.data import (
    LABELLED_SOURCES,
    LABELS_DIR,
    Sample,
    face_mask_split,
    labelled_samples,
    video_samples,
)
from models.training.model import build_detector


def representative(samples: list[Sample], n: int, size: int) -> Iterator[list[np.ndarray]]:
    """Calibration inputs: letterboxed like the runtime, spread over the training images."""
    pick = np.random.default_rng(0).permutation(len(samples))[:n]
    for i in pick:
        img, _ = letterbox(samples[i].load_rgb(), size)
        yield [img[None].astype(np.float32)]


def export(
    weights: Path,
    out: Path,
    shared: Path,
    n_calibration: int = 200,
    size: int = ANCHOR_SPEC.input_size,
) -> None:
    """Load weights, quantise with calibration data, write the .tflite for a size x size input.

    The network is fully convolutional, so the same weights export at any multiple of 64;
    the runtime reads the size from the model's input tensor.
    """
    train_model, export_model, _ = build_detector(size, for_export=True)
    train_model.load_weights(weights)
    train, _ = face_mask_split(shared / "datasets/face-mask-853")
    calib = list(train)
    # Calibrate on every scene the model trained on: the value ranges of backs of heads on a
    # construction site or a car park are not those of face-mask-853's crowds.
    for source in LABELLED_SOURCES:
        if (LABELS_DIR / f"{source}.json").exists():
            calib += labelled_samples(shared, source)[0]
    if len(calib) == len(train):
        calib += video_samples(shared / "videos/one-by-one-person-detection.mp4", every_n=15)
    conv = tf.lite.TFLiteConverter.from_keras_model(export_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: representative(calib, n_calibration, size)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    out.write_bytes(conv.convert())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--weights", type=Path, default=Path("models/training/runs/main/best.weights.h5")
    )
    ap.add_argument("--out", type=Path, default=Path("models/head_detector_int8.tflite"))
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--calibration", type=int, default=200, help="calibration images")
    ap.add_argument(
        "--size",
        type=int,
        default=ANCHOR_SPEC.input_size,
        help="square input side, a multiple of 64 (smaller is faster on a CPU-only Pi and less "
        "accurate on small faces; see MODEL_CARD.md)",
    )
    args = ap.parse_args()
    if args.size % INPUT_MULTIPLE:
        ap.error(f"--size: {args.size} is not a multiple of {INPUT_MULTIPLE}")
    export(args.weights, args.out, args.shared, args.calibration, args.size)


if __name__ == "__main__":
    main()
