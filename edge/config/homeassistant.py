"""Configuration of Home Assistant MQTT discovery (edge.discovery)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.config.checks import topic_usable

DEFAULT_DISCOVERY_PREFIX = "homeassistant"


class HomeAssistantConfig(BaseModel):
    """Whether and where this device announces its sensors to Home Assistant."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    discovery: bool = Field(
        True,
        description=(
            "Publish retained MQTT discovery configs so that Home Assistant shows this device "
            "and its sensors by itself. With false nothing is published under discovery_prefix."
        ),
    )
    discovery_prefix: str = Field(
        DEFAULT_DISCOVERY_PREFIX,
        min_length=1,
        description=(
            "Home Assistant's discovery prefix (its MQTT integration setting, 'homeassistant' "
            "by default). Configs go to <prefix>/<component>/maskwatch_<device>/<id>/config; "
            "an 'online' on <prefix>/status (Home Assistant starting) makes the device "
            "announce itself again."
        ),
    )
    device_name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The device's name in Home Assistant. Default: 'maskwatch <device>'.",
    )

    _prefix_usable = field_validator("discovery_prefix")(topic_usable)
