"""Configuration of one camera (edge.capture): where frames come from and which part counts."""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from edge.config.checks import cap_not_below_initial
from edge.config.motion import MotionConfig
from edge.config.paths import relative_to_config
from edge.config.regions import RegionsConfig
from edge.config.tiling import TilingConfig

SourceKind = Literal["v4l2", "url", "file", "picamera2"]

# Schemes OpenCV's FFmpeg backend opens as network streams; anything else with "://" is a typo.
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

# Topic-safe: no "/", "+", "#" or spaces, which would break the MQTT topic tree.
TOPIC_SAFE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# A Raspberry Pi camera (CSI) through libcamera's picamera2: "picamera2" or "picamera2:<number>".
PICAMERA2 = "picamera2"
_PICAMERA2_RE = re.compile(r"^picamera2(?::(\d{1,2}))?$")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Margin = Annotated[float, Field(ge=0.0, le=49.0)]


def source_kind(source: int | str) -> SourceKind:
    """Tell how a camera source is opened: a V4L2 device, a URL, a Pi camera or a video file."""
    if isinstance(source, int) or source.startswith("/dev/"):
        return "v4l2"
    if _PICAMERA2_RE.match(source):
        return "picamera2"
    if _URL_RE.match(source):
        return "url"
    return "file"


def picamera2_number(source: str) -> int:
    """The camera number of a picamera2 source: 0 for "picamera2", n for "picamera2:n"."""
    m = _PICAMERA2_RE.match(source)
    if m is None:
        raise ValueError(f"not a picamera2 source: {source!r}")
    return int(m.group(1) or 0)


def redact_source(source: int | str) -> str:
    """The source as it may appear in logs and MQTT: a URL's password replaced by "***"."""
    if isinstance(source, int) or source_kind(source) != "url":
        return str(source)
    parts = urlsplit(source)
    if parts.password is None:
        return source
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def _int_or_str(value: object) -> object:
    """One clear type error for a source that is neither an index nor a path/URL."""
    if isinstance(value, PurePath):  # convenient for code building configs from Path objects
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            "must be a V4L2 device index (integer) or a device path, URL or file path (string)"
        )
    return value


class ZoneConfig(BaseModel):
    """The part of the frame where heads count: margins cut off the edges, a polygon refines it.

    A head votes when its whole box lies inside the margins and, if a polygon is given, its box
    centre inside the polygon too. Margins keep half-visible heads entering or leaving the frame
    from voting. Where faces fill most of the frame (a door camera a step from the face), keep
    the margins small: a face filling 85 % of a frame touches 5 % margins.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    margin_left_pct: Margin = Field(
        5.0, description="Percent of the frame width on the left where heads do not count."
    )
    margin_right_pct: Margin = Field(
        5.0, description="Percent of the frame width on the right where heads do not count."
    )
    margin_top_pct: Margin = Field(
        5.0, description="Percent of the frame height at the top where heads do not count."
    )
    margin_bottom_pct: Margin = Field(
        5.0, description="Percent of the frame height at the bottom where heads do not count."
    )
    polygon: list[tuple[Fraction, Fraction]] | None = Field(
        None,
        min_length=3,
        description=(
            "Optional counting area as [x, y] points, each a fraction (0..1) of the frame width "
            "and height, at least 3 points; heads count only when their centre is inside it."
        ),
    )

    @field_validator("polygon")
    @classmethod
    def _polygon_has_area(
        cls, pts: list[tuple[float, float]] | None
    ) -> list[tuple[float, float]] | None:
        """Reject polygons whose points all lie on one line: no head could ever count."""
        if pts is not None:
            twice_area = sum(
                x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True)
            )
            if abs(twice_area) < 1e-9:
                raise ValueError("polygon encloses no area (its points lie on one line)")
        return pts

    def margin_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The counting rectangle inside the margins, (x1, y1, x2, y2) in pixels."""
        return (
            width * self.margin_left_pct / 100.0,
            height * self.margin_top_pct / 100.0,
            width * (1.0 - self.margin_right_pct / 100.0),
            height * (1.0 - self.margin_bottom_pct / 100.0),
        )

    def polygon_px(self, width: int, height: int) -> list[tuple[float, float]] | None:
        """The polygon scaled to pixels of a width x height frame, or None without one."""
        if self.polygon is None:
            return None
        return [(x * width, y * height) for x, y in self.polygon]


class CameraConfig(BaseModel):
    """One camera: its source, wanted capture settings, counting zone and recovery timings."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(
        ...,
        pattern=TOPIC_SAFE_PATTERN,
        description=(
            "Camera name, unique on this device; used in MQTT topics, so only letters, digits, "
            "'_' and '-' (at most 64)."
        ),
    )
    source: Annotated[Union[StrictInt, StrictStr], BeforeValidator(_int_or_str)] = Field(
        ...,
        description=(
            "Where frames come from: a V4L2 device index (0) or path (/dev/video0), a stream URL "
            "(rtsp://, rtsps://, http(s)://, rtmp://, udp://, tcp://, srt://), 'picamera2' or "
            "'picamera2:N' for a Raspberry Pi camera through the picamera2 library (camera "
            "number N, default 0), or a video file path."
        ),
    )
    width: int | None = Field(
        None, gt=0, description="Wanted capture width in pixels; the camera's default when unset."
    )
    height: int | None = Field(
        None, gt=0, description="Wanted capture height in pixels; the camera's default when unset."
    )
    fps: float | None = Field(
        None, gt=0, description="Wanted capture frame rate; the camera's default when unset."
    )
    zone: ZoneConfig = Field(
        default_factory=ZoneConfig,
        description="The part of the frame where heads count.",
    )
    tiles: TilingConfig = Field(
        default_factory=TilingConfig,
        description=(
            "Detect on a grid of overlapping tiles instead of the whole frame, for small heads "
            "on large frames (see edge/config/tiling.py)."
        ),
    )
    regions: RegionsConfig = Field(
        default_factory=RegionsConfig,
        description=(
            "Detect in small regions around tracks, motion and a rotating sweep, several "
            "regions per inference, instead of the whole frame or tiles (see "
            "edge/config/regions.py)."
        ),
    )
    detect_every_n_frames: int = Field(
        1,
        ge=1,
        description="Run the detector on every n-th captured frame (1 = every frame).",
    )
    zoom_out_large_heads: bool = Field(
        True,
        description=(
            "Whole-frame detection only (no tiles, no regions): while the detector's last box "
            "of a tracked head (a face's own box) is 80 px or more in the model's input (a "
            "door camera, someone walking up close), each "
            "frame is also detected shrunk 2x into a corner of the input, and heads of 96 px "
            "or more in the input are read from that view. The model reads large faces better "
            "smaller: unmasked faces filling most of the picture read as masks far more often "
            "in one pass (models/MODEL_CARD.md, \"Close-ups\"). One more inference on those "
            "frames only; false spends one inference a frame whatever the heads' size."
        ),
    )
    motion: MotionConfig = Field(
        default_factory=MotionConfig,
        description="Motion gating: skip the detector on frames where nothing moves.",
    )
    reconnect_initial_s: float = Field(
        1.0,
        gt=0,
        description="First wait before reopening a failed source; doubles after each failure.",
    )
    reconnect_max_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait between attempts to reopen a failed source.",
    )
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        description="No new frame for this many seconds means the source is stalled: reconnect.",
    )
    frozen_after_s: float = Field(
        30.0,
        gt=0,
        description="Identical frames for this many seconds are reported as a frozen camera.",
    )
    file_pacing: Literal["asap", "realtime"] = Field(
        "realtime",
        description=(
            "For file sources: 'realtime' reads frames at the file's frame rate, 'asap' as fast "
            "as the pipeline goes (replay uses asap)."
        ),
    )
    loop: bool = Field(
        False, description="For file sources: restart the file at its end instead of stopping."
    )
    end_track_gap_s: float = Field(
        5.0,
        gt=0,
        description=(
            "After a capture gap (reconnect, stall) this long, open tracks are finalised: "
            "the people in them are decided with the votes they have."
        ),
    )

    @field_validator("source")
    @classmethod
    def _source_can_open(cls, src: int | str, info: ValidationInfo) -> int | str:
        """Reject sources that can never open; resolve a relative file path like other paths."""
        if isinstance(src, int):
            if src < 0:
                raise ValueError("a V4L2 device index must be >= 0")
            return src
        if not src.strip():
            raise ValueError("must not be empty")
        if src.startswith(PICAMERA2 + ":") and not _PICAMERA2_RE.match(src):
            raise ValueError("a Raspberry Pi camera is 'picamera2' or 'picamera2:N' (N its number)")
        m = _URL_RE.match(src)
        if m and m.group(1).lower() not in URL_SCHEMES:
            raise ValueError(
                f"unsupported URL scheme {m.group(1)!r} "
                f"(use one of {', '.join(URL_SCHEMES)}, or a plain file path)"
            )
        if source_kind(src) == "file":
            return str(relative_to_config(Path(src), info))
        return src

    _max_not_below_initial = field_validator("reconnect_max_s")(cap_not_below_initial)

    @field_validator("regions")
    @classmethod
    def _regions_or_tiles(cls, regions: RegionsConfig, info: ValidationInfo) -> RegionsConfig:
        """Regions replace tiles: a camera detects one way, so both at once is a mistake."""
        tiles = info.data.get("tiles")
        if regions.enabled and isinstance(tiles, TilingConfig) and tiles.columns * tiles.rows > 1:
            raise ValueError(
                "regions and tiles cannot both be used: set tiles to 1 x 1 or disable regions"
            )
        return regions

    @property
    def source_kind(self) -> SourceKind:
        """How this source is opened: "v4l2" (index or /dev path), "url", "picamera2" or "file"."""
        return source_kind(self.source)

    @property
    def source_redacted(self) -> str:
        """The source safe to log or publish: any password in a URL replaced by "***"."""
        return redact_source(self.source)
