"""Head detection: letterbox a frame into the model's input, run it, decode boxes, NMS.

One Detector serves every camera (calls are serialised by a lock: one interpreter, one input
tensor). It picks the Edge TPU model when an Edge TPU is present and falls back to the CPU
model, with one warning, on any failure to use it.

An inference shows the model one or more windows of a frame (edge.layout: the whole frame,
a tile, or a mosaic of regions). `detect_placed` does it in one call; `prepare`, `invoke` and
`decode` are the same three steps apart, so that edge.threaded can draw the next input and
decode the last one while the interpreter runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.anchors import INPUT_MULTIPLE, make_anchors, with_input_size
from edge.config.detector import DetectorConfig
from edge.detection import LABELS, Detection
from edge.interpreter import LoadedInterpreter, load_cpu, load_edgetpu
from edge.layout import Placement, compose_into, letterboxed, to_frame
from edge.postprocess import HeadSelector

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """The model file is missing, corrupt or not the detector maskwatch expects."""


def _one_line(exc: BaseException) -> str:
    """An interpreter's error text on one line (some span several), for a one-line message."""
    return " ".join(str(exc).split()) or type(exc).__name__


def read_labels(path: Path) -> list[str]:
    """Labels, one a line; they must be the three maskwatch labels in model order."""
    try:
        labels = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise ModelError(f"{path}: cannot read labels: {exc.strerror}") from exc
    if tuple(labels) != LABELS:
        raise ModelError(f"{path}: expected labels {', '.join(LABELS)}, found {', '.join(labels)}")
    return labels


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """The frame as HxWx3 uint8 BGR: gray and BGRA converted, anything else a ValueError."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        kind = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"expected a uint8 image, got {kind}")
    if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {frame.shape}")
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels == 3:
        return frame
    if channels == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    raise ValueError(
        f"expected a BGR (3), BGRA (4) or grayscale (1) image, got {channels} channels"
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A model input drawn from windows of a frame, waiting for its inference.

    Attributes:
        tensor: the input, (1, N, N, 3) uint8 RGB.
        placements: where each window of the frame lies in it.
        preprocess_ms: how long drawing it took.
    """

    tensor: np.ndarray
    placements: tuple[Placement, ...]
    preprocess_ms: float


@dataclass(frozen=True, slots=True)
class RawOutput:
    """One inference's raw quantised outputs (copies) and its invoke time."""

    scores: np.ndarray
    deltas: np.ndarray
    invoke_ms: float


class Detector:
    """The head detector behind one interpreter."""

    def __init__(self, config: DetectorConfig) -> None:
        """Load the model (Edge TPU when asked for or available, else CPU) and check it."""
        self.config = config
        read_labels(config.labels_path)
        self.loaded = self._load(config)
        self.interpreter = self.loaded.interpreter
        inp = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        stride = INPUT_MULTIPLE
        size = int(inp[0]["shape"][1]) if len(inp) == 1 and len(inp[0]["shape"]) == 4 else 0
        if size <= 0 or size % stride or tuple(inp[0]["shape"]) != (1, size, size, 3):
            found = ", ".join(str(list(i["shape"])) for i in inp)
            raise ModelError(
                f"{self.model_path}: input must be [1,N,N,3] with N a multiple of {stride}, "
                f"found {found}"
            )
        if inp[0]["dtype"] != np.uint8:
            raise ModelError(f"{self.model_path}: input must be uint8")
        self.anchors = make_anchors(with_input_size(size))
        n = len(self.anchors)
        by_width = {
            int(o["shape"][-1]): o for o in outs if len(o["shape"]) == 3 and o["shape"][1] == n
        }
        if set(by_width) != {len(LABELS), 4} or len(outs) != 2:
            shapes = ", ".join(str(list(o["shape"])) for o in outs)
            raise ModelError(
                f"{self.model_path}: outputs must be [1,{n},{len(LABELS)}] scores and [1,{n},4] "
                f"boxes, found {shapes}"
            )
        self._input_index = inp[0]["index"]
        self._size = size
        self._scores = by_width[len(LABELS)]
        self._boxes = by_width[4]
        self._select = HeadSelector(
            self._scores["quantization"],
            self._boxes["quantization"],
            self._scores["dtype"],
            self.anchors,
            config.score_threshold,
            config.nms_iou,
            config.max_detections,
        )
        self._lock = threading.Lock()
        # Where the last detect() spent its time (ms), for edge.tools.bench and the daemon's
        # status: letterbox (with any colour conversion), invoke, and box decoding with NMS.
        self.last_preprocess_ms = 0.0
        self.last_invoke_ms = 0.0
        self.last_postprocess_ms = 0.0
        # perf_counter() when the running inference began, None between inferences: the
        # daemon's stuck-inference monitor reads it from another thread.
        self.invoke_started: float | None = None

    @property
    def accelerator(self) -> str:
        """'edgetpu' or 'cpu': what inference runs on now."""
        return self.loaded.accelerator

    @property
    def runtime(self) -> str:
        """Which interpreter package runs the model."""
        return self.loaded.runtime

    def _load(self, config: DetectorConfig) -> LoadedInterpreter:
        """The Edge TPU interpreter when wanted and usable, else the CPU one; sets model_path."""
        tpu_model = config.edgetpu_model
        if config.accelerator != "cpu" and tpu_model is not None and tpu_model.exists():
            try:
                loaded = load_edgetpu(tpu_model)
                self.model_path = tpu_model
                log.info("detector on the Edge TPU: %s", tpu_model)
                return loaded
            except (OSError, ValueError, RuntimeError) as exc:
                # accelerator: edgetpu is documented to fail when the Coral is missing.
                if config.accelerator == "edgetpu":
                    raise ModelError(
                        f"{tpu_model}: accelerator is edgetpu but the Edge TPU is unusable: "
                        f"{_one_line(exc)}"
                    ) from exc
                log.warning("no usable Edge TPU (%s); using the CPU model", _one_line(exc))
        elif config.accelerator == "edgetpu":
            if tpu_model is None:
                raise ModelError("detector: accelerator is edgetpu but edgetpu_model is null")
            raise ModelError(f"{tpu_model}: accelerator is edgetpu but this model file is missing")
        self.model_path = config.model
        if not config.model.exists():
            raise ModelError(f"{config.model}: model file not found")
        try:
            loaded = load_cpu(config.model, config.threads)
        except (ValueError, RuntimeError) as exc:
            reason = _one_line(exc)
            raise ModelError(f"{config.model}: not a usable TFLite model: {reason}") from exc
        log.info("detector on the CPU (%s): %s", loaded.runtime, config.model)
        return loaded

    @property
    def input_size(self) -> int:
        """Side of the model's square input, in pixels."""
        return self._size  # read from the input tensor once, at load

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Heads in one BGR frame, boxes in the frame's pixels.

        Grayscale (HxW or HxWx1) and BGRA (HxWx4) frames are converted to BGR first: some
        cameras deliver them, and the daemon should keep counting rather than stop.
        Raises ValueError for anything else (other channel counts, non-uint8, empty frames).
        """
        begin = time.perf_counter()
        frame = as_bgr(frame)  # first: an empty frame must be a ValueError, not a zero scale
        converted = time.perf_counter()
        h, w = frame.shape[:2]
        found = self.detect_placed(frame, letterboxed((0, 0, w, h), self._size))[0]
        self.last_preprocess_ms += (converted - begin) * 1000
        return found

    def detect_placed(
        self, frame: np.ndarray, placements: Sequence[Placement]
    ) -> list[list[Detection]]:
        """One inference over windows of a frame placed in the input; heads per placement.

        The serial path: the windows are drawn straight into the interpreter's input buffer,
        so no input-sized array is allocated per inference. Boxes are in frame pixels.
        """
        begin = time.perf_counter()
        frame = as_bgr(frame)
        converted = time.perf_counter()
        with self._lock:
            locked = time.perf_counter()
            target = self.interpreter.tensor(self._input_index)()[0]
            compose_into(frame, placements, target)
            del target  # the interpreter refuses to invoke while a view of its buffers lives
            start = time.perf_counter()
            raw = self._invoke_locked()
            invoked = time.perf_counter()
        found = self.decode(raw, placements)
        self.last_preprocess_ms = ((converted - begin) + (start - locked)) * 1000
        self.last_invoke_ms = raw.invoke_ms
        self.last_postprocess_ms = (time.perf_counter() - invoked) * 1000
        return found

    # -- the same inference in three steps, for a pipeline that overlaps them ---------------

    def prepare(self, frame: np.ndarray, placements: Sequence[Placement]) -> Prepared:
        """Windows of a BGR frame drawn into an input of its own (not the interpreter's).

        Runs on any thread, while another input is being inferred.
        """
        begin = time.perf_counter()
        tensor = np.empty((1, self._size, self._size, 3), dtype=np.uint8)
        compose_into(as_bgr(frame), placements, tensor[0])
        return Prepared(tensor, tuple(placements), (time.perf_counter() - begin) * 1000)

    def invoke(self, prepared: Prepared) -> RawOutput:
        """Run the model on a prepared input: the only step that needs the interpreter."""
        with self._lock:
            self.interpreter.set_tensor(self._input_index, prepared.tensor)
            raw = self._invoke_locked()
        self.last_invoke_ms = raw.invoke_ms
        return raw

    def _invoke_locked(self) -> RawOutput:
        """Invoke on the input as it is and copy the outputs; the caller holds the lock."""
        start = self.invoke_started = time.perf_counter()
        self.interpreter.invoke()
        invoked = time.perf_counter()
        self.invoke_started = None
        # Raw quantised outputs (small copies): only anchors above the threshold are
        # dequantised, by HeadSelector.
        scores = self.interpreter.get_tensor(self._scores["index"])[0]
        deltas = self.interpreter.get_tensor(self._boxes["index"])[0]
        return RawOutput(scores, deltas, (invoked - start) * 1000)

    def decode(self, raw: RawOutput, placements: Sequence[Placement]) -> list[list[Detection]]:
        """Heads from one inference's raw outputs, in frame pixels, one list per placement."""
        boxes, labels, class_scores = self._select(raw.scores, raw.deltas)
        found: list[list[Detection]] = [[] for _ in placements]
        if not len(boxes):  # the usual frame: nothing above the threshold
            return found
        frame_boxes, owner = to_frame(boxes, placements)
        for b, lab, s, i in zip(frame_boxes, labels, class_scores, owner.tolist(), strict=True):
            # i < 0: centred in no cell; no width or height: a box wholly in the letterbox's
            # padding, clipped to the window's edge, is no place in the frame.
            if i < 0 or b[2] <= b[0] or b[3] <= b[1]:
                continue
            found[i].append(
                Detection(
                    box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                    label=int(lab),
                    score=float(s[lab]),
                    scores=(float(s[0]), float(s[1]), float(s[2])),
                )
            )
        return found
