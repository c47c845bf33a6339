"""Configuration of the head detector (edge.detect): which model, which accelerator, thresholds."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from edge.config.paths import relative_to_config

MODEL_FILE = "head_detector_int8.tflite"
LABELS_FILE = "labels.txt"
# Where a wheel carries the models: package data of `edge` (setup.py copies models/ there).
PACKAGE_MODELS = "models"
# Where a Debian package installs the models.
SYSTEM_MODELS_DIR = Path("/usr/share/maskwatch/models")


def packaged_models_dir() -> Path | None:
    """The models folder inside the installed `edge` package (a wheel's package data), found
    with importlib.resources; None when the package has none (a checkout, the Debian package)
    or is not on a file system (the interpreter needs a file path)."""
    folder = importlib.resources.files("edge") / PACKAGE_MODELS
    return folder if isinstance(folder, Path) and folder.is_dir() else None


def models_dir() -> Path:
    """The folder holding the shipped models.

    The installed package's own (pip install) wins, then models/ next to the edge package (a
    source checkout or an editable install), then /usr/share/maskwatch/models (the Debian
    package). When none holds the model, the checkout folder is returned so that the
    detector's "file not found" error names a sensible place.
    """
    beside_package = Path(__file__).resolve().parent.parent.parent / "models"
    for candidate in (packaged_models_dir(), beside_package, SYSTEM_MODELS_DIR):
        if candidate is not None and (candidate / MODEL_FILE).is_file():
            return candidate
    return beside_package


def default_model_path() -> Path:
    """The shipped CPU model: <models>/head_detector_int8.tflite (see models_dir())."""
    return models_dir() / MODEL_FILE


def edgetpu_model_for(model: Path) -> Path:
    """The Edge TPU build of a model: "<stem>_edgetpu.tflite" beside it (as edgetpu_compiler)."""
    return model.with_name(f"{model.stem}_edgetpu{model.suffix}")


class DetectorConfig(BaseModel):
    """The head detector: model files, accelerator choice and detection thresholds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())

    model: Path = Field(
        default_factory=default_model_path,
        description=(
            "Quantized .tflite model run on the CPU (relative paths are relative to this config "
            "file). Default: the shipped head_detector_int8.tflite, inside the installed "
            "package (pip), in the checkout's models/ folder, or in /usr/share/maskwatch/models "
            "(Debian package)."
        ),
    )
    edgetpu_model: Path | None = Field(
        None,
        description=(
            "The same model compiled for the Coral Edge TPU. Default when not given: "
            "<model stem>_edgetpu.tflite beside model. null disables the Edge TPU."
        ),
    )
    labels: Path | None = Field(
        None,
        description="Label file, one name per line. Default when not given: labels.txt beside "
        "model.",
    )
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto",
        description=(
            "'edgetpu' requires a Coral Edge TPU (fails if none), 'cpu' never uses one, 'auto' "
            "uses the Edge TPU when one and edgetpu_model are present, else the CPU."
        ),
    )
    score_threshold: float = Field(
        0.35,
        ge=0,
        le=1,
        description=(
            "Detections whose best head score is below this are dropped (camera frames; "
            "`maskwatch detect` lists photos down to photo_score_threshold)."
        ),
    )
    nms_iou: float = Field(
        0.45,
        gt=0,
        le=1,
        description="Non-maximum suppression: of two boxes overlapping more than this IoU, "
        "the weaker is dropped.",
    )
    max_detections: int = Field(
        50, ge=1, description="At most this many heads are kept per frame (strongest first)."
    )
    photo_scales: int = Field(
        4,
        ge=1,
        le=4,
        description=(
            "Still photos only (`maskwatch detect`; the daemon uses cameras[].tiles or "
            "regions): how many scales each photo is detected at. 1 is one pass over the whole "
            "photo; n adds grids of 2 x 2 up to n x n overlapping tiles, each keeping only "
            "faces under 96 px in the model's input (from 64 px, not those lying inside a face "
            "three times their area that a coarser view found: pieces of a close-up face), for "
            "the small faces of a crowd or street photo, and the whole photo zoomed out 2x and "
            "4x, for faces over 160 px in the "
            "model's input (a portrait, a door camera), which the model reads better smaller. "
            "The default 4 takes 32 inferences a photo, 35 with photo_mirror: its 4 x 4 "
            "tiles find small faces that 3 x 3 tiles miss (model card)."
        ),
    )
    photo_score_threshold: float = Field(
        0.05,
        ge=0,
        le=1,
        description=(
            "Still photos only (`maskwatch detect`): faces scoring at least this are listed, "
            "each with its score, best first, in place of score_threshold. A list of photos "
            "is read by rank (average precision) or cut by whoever reads it where they need, "
            "so it keeps the faces under the camera's operating threshold that a camera "
            "drops: cut at the camera's 0.35 its precision-recall curves end early "
            "(street-masks-229 AP50 0.699 / 0.586 listed down to 0.05, 0.671 / 0.514 with "
            "--score-threshold 0.35; model card)."
        ),
    )
    photo_max_detections: int = Field(
        300,
        ge=1,
        description=(
            "Still photos only (`maskwatch detect`): at most this many faces are kept per "
            "photo, and per view of it, in place of max_detections. A crowd photo holds more "
            "faces than a camera frame (face-mask-853 has photos of 50-115); capped at 50, its "
            "least confident faces are dropped (7 photos of over 30 faces: AP50 0.689 / 0.518 "
            "at 50, 0.823 / 0.636 at 300)."
        ),
    )
    photo_mirror: bool = Field(
        True,
        description=(
            "Still photos only (`maskwatch detect`): also detect the whole photo and its "
            "zoomed-out views flipped left to right, and keep the more confident reading of "
            "each face: the two readings differ most where the model is least sure. Three "
            "more inferences a photo (at photo_scales 4: 35 in all); tiles are not mirrored, "
            "since a second look at a crowd's small faces adds more false alarms than faces."
        ),
    )
    photo_box_vote: float = Field(
        0.55,
        ge=0,
        le=1,
        description=(
            "Still photos only (`maskwatch detect`): each face's box is the score-weighted "
            "mean of the boxes its views found for it (those overlapping the most confident "
            "one by this IoU or more, with its label, and at least half as confident), not "
            "the most confident box alone: the views place a face's box differently, and on "
            "the validation photos more voted boxes meet their face at IoU 0.5 (box voting). "
            "0 keeps the most confident box. Scores and labels are not changed (model card)."
        ),
    )
    threads: int = Field(
        2,
        ge=1,
        le=64,
        description="CPU threads the interpreter may use (leave cores for capture and tracking).",
    )
    stuck_inference_s: float = Field(
        10.0,
        gt=0,
        description=(
            "One inference taking longer than this many seconds is reported as a stuck "
            "detector (a hung Edge TPU, for example) and the daemon exits for systemd to restart."
        ),
    )

    @field_validator("model", "edgetpu_model", "labels")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """Relative model paths point next to the config file, not to the working directory."""
        return None if path is None else relative_to_config(path, info)

    @model_validator(mode="after")
    def _derive_companion_files(self) -> DetectorConfig:
        """Fill edgetpu_model and labels from model when the file leaves them out.

        Deriving them from model (rather than from the shipped models) keeps a custom model
        from being paired with the shipped model's Edge TPU build. An explicit null for
        edgetpu_model stays None: the user asked for no Edge TPU model.
        """
        if "edgetpu_model" not in self.model_fields_set:
            self.edgetpu_model = edgetpu_model_for(self.model)
        if self.labels is None:
            self.labels = self.model.with_name(LABELS_FILE)
        return self

    @property
    def labels_path(self) -> Path:
        """The label file (always set after validation; typed non-optional for callers)."""
        assert self.labels is not None  # filled by _derive_companion_files
        return self.labels
