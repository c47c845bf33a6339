"""The whole configuration: one YAML file, one Config assembling every section."""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from edge.config.camera import CameraConfig
from edge.config.decide import DecideConfig
from edge.config.detector import DetectorConfig
from edge.config.homeassistant import HomeAssistantConfig
from edge.config.logging import LoggingConfig
from edge.config.mqtt import MqttConfig
from edge.config.state import StateConfig
from edge.config.totals import TotalsConfig
from edge.config.tracker import TrackerConfig

DEVICE_PATTERN = r"^[a-z0-9_-]{1,64}$"
FALLBACK_DEVICE = "maskwatch"


def default_device_name(hostname: str | None = None) -> str:
    """The host's short name made safe for an MQTT topic level: lower case, [a-z0-9_-], <= 64.

    "Kiosk Pi.local" -> "kiosk-pi"; "maskwatch" when nothing usable is left.
    """
    name = (socket.gethostname() if hostname is None else hostname).split(".", 1)[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-")[:64].strip("-")
    return name or FALLBACK_DEVICE


def _default_cameras() -> list[CameraConfig]:
    """One USB webcam at /dev/video0: what a fresh appliance most likely has."""
    return [CameraConfig(name="cam0", source="/dev/video0")]


class Config(BaseModel):
    """maskwatch's configuration (normally /etc/maskwatch/maskwatch.yaml)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="maskwatch configuration")

    device: str = Field(
        default_factory=default_device_name,
        pattern=DEVICE_PATTERN,
        description=(
            "This appliance's name, the <device> level of its MQTT topics: lower-case letters, "
            "digits, '_' and '-'. Default: the host name made topic-safe."
        ),
    )
    cameras: list[CameraConfig] = Field(
        default_factory=_default_cameras,
        min_length=1,
        description="The cameras to watch, at least one, with unique names. "
        "Default: one camera 'cam0' at /dev/video0.",
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig, description="The head detector model and thresholds."
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="How detections are linked into tracks."
    )
    decide: DecideConfig = Field(
        default_factory=DecideConfig, description="How a track's looks become one decision."
    )
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig, description="The MQTT broker results are published to."
    )
    totals: TotalsConfig = Field(
        default_factory=TotalsConfig, description="How decisions are summed per hour."
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant MQTT discovery of this device's sensors.",
    )
    state: StateConfig = Field(
        default_factory=StateConfig, description="Where persistent state is kept."
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="Log level and format."
    )

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        """Names are topic levels: two cameras with one name would publish into each other.

        Each repeat is reported at its own name (cameras.<i>.name) so the loader points at it.
        """
        first_index: dict[str, int] = {}
        errors: list[InitErrorDetails] = []
        for i, cam in enumerate(cameras):
            if cam.name in first_index:
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "duplicate_camera",
                            "camera name '{name}' is already used by cameras.{first}",
                            {"name": cam.name, "first": first_index[cam.name]},
                        ),
                        loc=(i, "name"),
                        input=cam.name,
                    )
                )
            else:
                first_index[cam.name] = i
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return cameras

    @model_validator(mode="after")
    def _client_id_from_device(self) -> Config:
        """The default MQTT client id names the device, so the broker's log says who it is."""
        if self.mqtt.client_id is None:
            self.mqtt.client_id = f"maskwatch-{self.device}"
        return self

    def camera(self, name: str) -> CameraConfig:
        """The camera called name; KeyError when there is none."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(name)
