"""Tests of edge.detect and edge.interpreter with the committed model and a real interpreter.

The committed `models/head_detector_int8.tflite` is run by the real LiteRT interpreter on real
frames (a frame of Intel's sample footage from ../shared when present, generated pictures
otherwise). Nothing here depends on how accurate the model is: only on what any detector must
do (boxes inside the frame, scores in [0, 1], its output layout, Edge TPU-mappable operators).
Bad models are real files too: missing, random bytes, and other real .tflite models from
../shared.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.anchors import ANCHOR_SPEC, make_anchors
from edge.config.detector import DetectorConfig
from edge.detect import Detector, ModelError, read_labels
from edge.detection import LABELS, Detection
from edge.interpreter import load_cpu

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "head_detector_int8.tflite"
LABELS_FILE = REPO / "models" / "labels.txt"
SHARED = REPO.parent / "shared"
VIDEO = SHARED / "videos" / "one-by-one-person-detection.mp4"
EDGETPU_MODEL = SHARED / "weights" / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
CLASSIFIER_MODEL = SHARED / "weights" / "mobilenet_v1_0.5_160_quant.tflite"
# A real 1x320x320x3 uint8 detector with the wrong outputs (TFLite_Detection_PostProcess).
AIZOO_MODEL = SHARED / "peers" / "aizoo" / "models" / "face_mask_detection.tflite"
PEER_DETECTOR = SHARED / "peers" / "mobiledet-mask" / "ssdlite_mobiledet_mask.tflite"

# Operators the Edge TPU compiler maps to the TPU; anything else would run on the Pi's CPU and
# split the model into slow segments.
EDGETPU_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "CONCATENATION",
        "RESHAPE",
        "LOGISTIC",
        "RELU",
        "RELU6",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "RESIZE_NEAREST_NEIGHBOR",
        "RESIZE_BILINEAR",
        "QUANTIZE",
        "DEQUANTIZE",
        "MUL",
        "SUB",
        "MEAN",
        "PAD",
        "SOFTMAX",
        "FULLY_CONNECTED",
    }
)
# Operand positions where an int32 tensor is legitimate: biases of the weighted ops, and the
# constant shape/size/axis/padding operand of the others.
INT32_OPERANDS = {
    "CONV_2D": {2},
    "DEPTHWISE_CONV_2D": {2},
    "FULLY_CONNECTED": {2},
    "RESHAPE": {1},
    "RESIZE_NEAREST_NEIGHBOR": {1},
    "RESIZE_BILINEAR": {1},
    "MEAN": {1},
    "PAD": {1},
}
# The Edge TPU's on-chip memory is 8 MB; half of it leaves room for the compiler's caching.
MAX_MODEL_BYTES = 4 * 1024 * 1024


def needs(path: Path) -> Path:
    """Skip the test when a third-party file from ../shared is absent (a fresh clone)."""
    if not path.exists():
        pytest.skip(f"{path} is absent (third-party data kept in ../shared)")
    return path


def cpu_config(**fields: object) -> DetectorConfig:
    """The committed model on the CPU, one thread, other fields from the arguments."""
    values: dict[str, object] = {"model": MODEL, "accelerator": "cpu", "threads": 1}
    values.update(fields)
    return DetectorConfig(**values)


@pytest.fixture(scope="module")
def detector() -> Detector:
    """One CPU detector for the module, keeping even the weakest heads (threshold 0).

    With no threshold any model returns candidates, so the box and score checks below always
    have detections to check, whatever the model has learnt.
    """
    return Detector(cpu_config(score_threshold=0.0, max_detections=20))


@pytest.fixture(scope="module")
def real_frame() -> np.ndarray:
    """A BGR frame of real street footage (a person walking in), or a generated street-ish
    picture when ../shared is absent."""
    if VIDEO.exists():
        cap = cv2.VideoCapture(str(VIDEO))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 120)
        ok, frame = cap.read()
        cap.release()
        assert ok and frame is not None, f"cannot read a frame of {VIDEO}"
        return frame
    return generated_frame(432, 768)


def generated_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR picture with texture and a few skin-coloured ellipses (head-like blobs)."""
    rng = np.random.default_rng(seed)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (9, 9), 0)
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (max(2, width // 20), max(3, height // 12))
        cv2.ellipse(frame, centre, axes, 0, 0, 360, (120, 150, 200), -1)
    return frame


def assert_sane(detections: list[Detection], width: int, height: int, threshold: float) -> None:
    """What any detector's output must satisfy on a width x height frame."""
    for d in detections:
        x1, y1, x2, y2 = d.box
        # Strictly: a box of no width or height (one wholly in the letterbox's padding,
        # clipped to the frame's edge) is no place in the frame.
        assert 0 <= x1 < x2 <= width, d
        assert 0 <= y1 < y2 <= height, d
        assert d.label in (0, 1, 2), d
        assert all(0.0 <= s <= 1.0 for s in d.scores), d
        assert d.score == d.scores[d.label], d
        assert d.score == max(d.scores), d  # the label is the best class
        assert d.score >= threshold, d
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True), "detections are not strongest first"


# -- the committed model ---------------------------------------------------------------------


def test_committed_model_loads_with_the_real_interpreter() -> None:
    assert MODEL.is_file(), f"{MODEL} is missing: the model is part of the repository"
    loaded = load_cpu(MODEL, threads=1)
    assert loaded.accelerator == "cpu"
    assert loaded.runtime in ("ai_edge_litert", "tflite_runtime")
    (inp,) = loaded.interpreter.get_input_details()
    assert tuple(inp["shape"]) == (1, ANCHOR_SPEC.input_size, ANCHOR_SPEC.input_size, 3)
    assert inp["dtype"] == np.uint8
    outputs = loaded.interpreter.get_output_details()
    assert len(outputs) == 2
    n = len(make_anchors())
    assert sorted(tuple(o["shape"]) for o in outputs) == [(1, n, len(LABELS)), (1, n, 4)]
    for out in outputs:
        assert out["dtype"] in (np.uint8, np.int8)
        assert out["quantization"][0] > 0, f"{out['name']} carries no quantisation scale"


def _model_graph() -> tuple[list[dict], dict[int, dict]]:
    """The committed model's operators and tensors as the plain LiteRT interpreter sees them.

    Without the default XNNPACK delegate: it would fold the graph into DELEGATE nodes.
    """
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interp = litert.Interpreter(
        model_path=str(MODEL),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return interp._get_ops_details(), tensors


def test_committed_model_uses_only_edgetpu_mappable_ops() -> None:
    ops, _ = _model_graph()
    assert ops, "the model has no operators"
    names = {op["op_name"] for op in ops}
    assert names <= EDGETPU_OPS, f"not mappable to the Edge TPU: {sorted(names - EDGETPU_OPS)}"


def test_committed_model_is_fully_integer() -> None:
    ops, tensors = _model_graph()
    allowed_int32 = {
        int(op["inputs"][i])
        for op in ops
        for i in INT32_OPERANDS.get(op["op_name"], ())
        if i < len(op["inputs"])
    }
    wrong = []
    for index, tensor in tensors.items():
        dtype = np.dtype(tensor["dtype"])
        if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            continue
        if dtype == np.dtype(np.int32) and index in allowed_int32:
            continue
        wrong.append(f"{tensor['name']} ({dtype})")
    assert not wrong, f"{len(wrong)} tensors are neither int8/uint8 nor int32 biases/shapes: " + (
        ", ".join(wrong[:10])
    )


def test_committed_model_fits_the_edgetpu_budget() -> None:
    size = MODEL.stat().st_size
    assert 0 < size <= MAX_MODEL_BYTES, f"{MODEL} is {size} bytes"


def test_labels_file_lists_the_three_labels_in_model_order() -> None:
    assert read_labels(LABELS_FILE) == list(LABELS)
    assert LABELS == ("front_with_mask", "front_without_mask", "face_not_visible")


def test_labels_in_another_order_are_refused(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("front_without_mask\nfront_with_mask\nface_not_visible\n")
    with pytest.raises(ModelError, match=rf"^{labels}: expected labels front_with_mask, "):
        read_labels(labels)


# -- detections on real frames ---------------------------------------------------------------


def test_detector_on_a_real_frame(detector: Detector, real_frame: np.ndarray) -> None:
    height, width = real_frame.shape[:2]
    detections = detector.detect(real_frame)
    assert 1 <= len(detections) <= 20
    assert all(isinstance(d, Detection) for d in detections)
    assert_sane(detections, width, height, threshold=0.0)
    assert detector.accelerator == "cpu"
    assert detector.last_invoke_ms > 0


def test_detector_is_deterministic(detector: Detector, real_frame: np.ndarray) -> None:
    assert detector.detect(real_frame) == detector.detect(real_frame.copy())


def test_detector_leaves_the_frame_alone(detector: Detector, real_frame: np.ndarray) -> None:
    before = real_frame.copy()
    detector.detect(real_frame)
    assert np.array_equal(real_frame, before)


@pytest.mark.parametrize(
    ("height", "width"), [(480, 640), (640, 200), (100, 1000), (320, 320), (37, 53), (1, 1)]
)
def test_boxes_stay_inside_frames_of_any_shape(detector: Detector, height: int, width: int) -> None:
    frame = generated_frame(height, width, seed=height * 7 + width)
    assert_sane(detector.detect(frame), width, height, threshold=0.0)


def test_score_threshold_and_max_detections_hold(real_frame: np.ndarray) -> None:
    height, width = real_frame.shape[:2]
    strict = Detector(cpu_config(score_threshold=0.5, max_detections=3))
    detections = strict.detect(real_frame)
    assert len(detections) <= 3
    assert_sane(detections, width, height, threshold=0.5)


def test_a_black_frame_gives_no_confident_heads() -> None:
    # Sanity of any trained detector: nothing at all in the picture is no head at 0.5.
    strict = Detector(cpu_config(score_threshold=0.5))
    assert strict.detect(np.zeros((240, 320, 3), np.uint8)) == []


# -- frames of other formats -----------------------------------------------------------------


def test_grayscale_frames_are_converted(detector: Detector, real_frame: np.ndarray) -> None:
    gray = cv2.cvtColor(real_frame, cv2.COLOR_BGR2GRAY)
    expected = detector.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert detector.detect(gray) == expected
    assert detector.detect(gray[:, :, None]) == expected


def test_bgra_frames_are_converted(detector: Detector, real_frame: np.ndarray) -> None:
    bgra = cv2.cvtColor(real_frame, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 17  # alpha must not matter
    assert detector.detect(bgra) == detector.detect(real_frame)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((48, 64, 2), np.uint8), "got 2 channels"),
        (np.zeros((48, 64, 5), np.uint8), "got 5 channels"),
        (np.zeros((48, 64, 3), np.float32), "expected a uint8 image, got float32"),
        (np.zeros((0, 64, 3), np.uint8), "got shape"),
        (np.zeros((2, 48, 64, 3), np.uint8), "got shape"),
        (np.zeros(64, np.uint8), "got shape"),
    ],
    ids=["2-channels", "5-channels", "float", "empty", "batch", "1-d"],
)
def test_unusable_frames_raise_a_clear_value_error(
    detector: Detector, frame: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detector.detect(frame)


# -- the Edge TPU path -----------------------------------------------------------------------


def test_edgetpu_model_without_an_edgetpu_falls_back_to_cpu_with_one_warning(
    caplog: pytest.LogCaptureFixture, real_frame: np.ndarray
) -> None:
    config = DetectorConfig(
        model=MODEL, edgetpu_model=needs(EDGETPU_MODEL), accelerator="auto", threads=1
    )
    with caplog.at_level(logging.WARNING):
        fallback = Detector(config)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Edge TPU" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert fallback.accelerator == "cpu"
    assert fallback.model_path == MODEL
    assert_sane(fallback.detect(real_frame), real_frame.shape[1], real_frame.shape[0], 0.35)


def test_auto_without_an_edgetpu_model_uses_cpu_silently(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = DetectorConfig(
        model=MODEL, edgetpu_model=tmp_path / "absent_edgetpu.tflite", threads=1
    )
    with caplog.at_level(logging.WARNING):
        assert Detector(config).accelerator == "cpu"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_accelerator_edgetpu_fails_loudly_without_an_edgetpu() -> None:
    # "'edgetpu' requires a Coral Edge TPU (fails if none)": no silent CPU fallback.
    config = DetectorConfig(
        model=MODEL, edgetpu_model=needs(EDGETPU_MODEL), accelerator="edgetpu", threads=1
    )
    with pytest.raises(ModelError, match=rf"^{EDGETPU_MODEL}: accelerator is edgetpu") as info:
        Detector(config)
    assert "\n" not in str(info.value)


def test_accelerator_edgetpu_without_the_edgetpu_model_fails(tmp_path: Path) -> None:
    absent = tmp_path / "head_detector_int8_edgetpu.tflite"
    config = DetectorConfig(model=MODEL, edgetpu_model=absent, accelerator="edgetpu")
    with pytest.raises(ModelError, match=rf"^{absent}: "):
        Detector(config)


# -- unusable models -------------------------------------------------------------------------


def _assert_model_error(config: DetectorConfig, path: Path, message: str) -> None:
    """Loading fails with a one-line ModelError that starts with the model's path."""
    with pytest.raises(ModelError) as info:
        Detector(config)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text, text


def test_missing_model_file(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere.tflite"
    _assert_model_error(cpu_config(model=absent, labels=LABELS_FILE), absent, "not found")


def test_corrupt_model_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    _assert_model_error(cpu_config(model=corrupt, labels=LABELS_FILE), corrupt, "not a usable")


def test_empty_model_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    _assert_model_error(cpu_config(model=empty, labels=LABELS_FILE), empty, "not a usable")


def test_a_classifier_is_not_the_detector() -> None:
    # 160 x 160 is no multiple of the 64 px coarsest stride: refused by its input (the peer
    # detector below, 320 x 320, is refused by its outputs).
    model = needs(CLASSIFIER_MODEL)
    _assert_model_error(
        cpu_config(model=model, labels=LABELS_FILE), model, "input must be [1,N,N,3]"
    )


def test_an_input_the_anchors_cannot_tile_is_refused() -> None:
    # AIZOO's 260 x 260 float input is no multiple of the 64 px stride.
    model = needs(AIZOO_MODEL)
    _assert_model_error(
        cpu_config(model=model, labels=LABELS_FILE), model, "input must be [1,N,N,3]"
    )


def test_a_detector_with_other_outputs_is_refused() -> None:
    model = needs(PEER_DETECTOR)
    _assert_model_error(cpu_config(model=model, labels=LABELS_FILE), model, "outputs must be")


def test_an_edgetpu_model_cannot_run_on_the_cpu() -> None:
    model = needs(EDGETPU_MODEL)
    _assert_model_error(cpu_config(model=model, labels=LABELS_FILE), model, "not a usable")


def test_missing_labels_file(tmp_path: Path) -> None:
    absent = tmp_path / "labels.txt"
    with pytest.raises(ModelError, match=rf"^{absent}: cannot read labels"):
        Detector(cpu_config(labels=absent))
