"""Home Assistant MQTT discovery: the retained configs that make this device appear by itself.

Every entity reads a topic the daemon already publishes, through a value_template into its
JSON payload (Home Assistant's Jinja2, `value_json` being the decoded payload):

- per camera, from `totals/current`: people, with mask, without mask and undecided this hour,
  and the mask ratio in %; from `in_view`: people in view now; from `stats` (diagnostics):
  frame rate and camera state; from `person`: an event entity "person without mask".
- per device, from `stats` (diagnostics): inference time, accelerator, outbox depth, CPU
  temperature.

All of them sit under one device and are available while `<base>/<device>/availability` says
`online` (the last will makes it `offline`). A template renders "None" where a value is
missing (no person of that camera this hour yet, a thermal zone that cannot be read): Home
Assistant's MQTT sensor shows that as "unknown" rather than as a wrong 0.

Configs go to `<prefix>/<component>/maskwatch_<device>/<object id>/config`. Object ids are
`<camera>_<key>` or, for the device's own entities, `<key>`: no key ends with "_" + another
key, so no camera name can make two of them collide. Unique ids separate the parts with ".",
which neither device nor camera names may contain, so they are unique across devices too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, get_args

from edge import __version__
from edge.capture import CaptureState
from edge.config.root import Config
from edge.outbox import encode_json
from edge.publish import OFFLINE, ONLINE, Topics

ACCELERATORS = ("edgetpu", "cpu")
DIAGNOSTIC = "diagnostic"
# A counter of the running hour drops to 0 when the hour changes. Home Assistant reads a
# decrease of a total_increasing sensor as a meter reset (a new cycle), which is exactly what
# an hourly counter does, so its long-term statistics sum the hours correctly. (A drop of less
# than 10 % would read as a glitch instead, but the drop here is always to 0.)
COUNTER = {"state_class": "total_increasing", "unit_of_measurement": "people"}

CAMERA_KEYS = (
    "people",
    "with_mask",
    "without_mask",
    "undecided",
    "mask_ratio",
    "in_view",
    "fps",
    "state",
    "no_mask_event",
)
DEVICE_KEYS = ("inference_ms", "accelerator", "outbox_depth", "cpu_temperature")


@dataclass(frozen=True, slots=True)
class Entity:
    """One discovered entity before it is tied to the device.

    Attributes:
        component: Home Assistant's platform: "sensor" or "event".
        key: the object id without the camera (unique per camera, or per device).
        name: the entity's name (Home Assistant puts the device's name before it).
        state_topic: the topic the daemon publishes its value on.
        value_template: Jinja2 that turns that topic's payload into the value.
        options: further discovery fields (state_class, unit_of_measurement, ...).
    """

    component: str
    key: str
    name: str
    state_topic: str
    value_template: str
    options: dict[str, Any] = field(default_factory=dict)


def node_id(device: str) -> str:
    """The discovery node id of a device: its level in the discovery topics."""
    return f"maskwatch_{device}"


def status_topic(prefix: str) -> str:
    """Where Home Assistant says `online` when it starts (its birth message)."""
    return f"{prefix}/status"


def _quoted(name: str) -> str:
    """A Jinja2 string literal (names are [A-Za-z0-9_-], so json quoting is exact)."""
    return json.dumps(name)


def camera_entities(camera: str, topics: Topics) -> list[Entity]:
    """The entities of one camera."""
    cam = _quoted(camera)
    # totals/current and stats both carry a per-camera object under "cameras".
    per_camera = f"value_json.cameras.get({cam}, {{}})"

    def counter(key: str, name: str, count: str, icon: str) -> Entity:
        # A camera nobody passed this hour is absent from the payload: 0 people, not unknown.
        return Entity(
            "sensor",
            key,
            f"{camera} {name}",
            topics.current,
            f"{{{{ {per_camera}.get({_quoted(count)}, 0) }}}}",
            {**COUNTER, "icon": icon},
        )

    return [
        counter("people", "people this hour", "people", "mdi:account-multiple"),
        counter("with_mask", "with mask this hour", "mask", "mdi:face-mask"),
        counter("without_mask", "without mask this hour", "no_mask", "mdi:face-mask-outline"),
        counter("undecided", "undecided this hour", "undecided", "mdi:account-question"),
        Entity(
            "sensor",
            "mask_ratio",
            f"{camera} mask ratio this hour",
            topics.current,
            # mask / (mask + no_mask) is null until someone was decided either way.
            f"{{% set r = {per_camera}.get('mask_ratio') %}}"
            "{{ (r * 100) | round(1) if r is not none else 'None' }}",
            {
                "state_class": "measurement",
                "unit_of_measurement": "%",
                "suggested_display_precision": 0,
                "icon": "mdi:percent",
            },
        ),
        Entity(
            "sensor",
            "in_view",
            f"{camera} people in view",
            topics.in_view,
            f"{{{{ value_json.cameras.get({cam}, 0) }}}}",
            {"state_class": "measurement", "unit_of_measurement": "people", "icon": "mdi:eye"},
        ),
        Entity(
            "sensor",
            "fps",
            f"{camera} frame rate",
            topics.stats,
            f"{{{{ {per_camera}.get('fps', 'None') }}}}",
            {
                "state_class": "measurement",
                "unit_of_measurement": "fps",
                "entity_category": DIAGNOSTIC,
                "icon": "mdi:camera-timer",
            },
        ),
        Entity(
            "sensor",
            "state",
            f"{camera} camera state",
            topics.stats,
            f"{{{{ {per_camera}.get('state', 'None') }}}}",
            {
                "device_class": "enum",
                "options": list(get_args(CaptureState)),
                "entity_category": DIAGNOSTIC,
                "icon": "mdi:cctv",
            },
        ),
        Entity(
            "event",
            "no_mask_event",
            f"{camera} person without mask",
            topics.person,
            # Every camera's people share one topic: other cameras and other decisions render
            # nothing, which Home Assistant's MQTT event ignores.
            f"{{% if value_json.camera == {cam} and value_json.decision == 'no_mask' %}}"
            "{{ {'event_type': 'no_mask', 'event_id': value_json.event_id,"
            " 'track_id': value_json.track_id, 'first_seen': value_json.first_seen,"
            " 'last_seen': value_json.last_seen, 'votes_no_mask': value_json.votes_no_mask,"
            " 'looks': value_json.looks} | tojson }}"
            "{% endif %}",
            {"event_types": ["no_mask"], "icon": "mdi:face-mask-outline"},
        ),
    ]


def device_entities(topics: Topics) -> list[Entity]:
    """The device's own diagnostics (one detector and one outbox serve every camera)."""
    diagnostic = {"state_class": "measurement", "entity_category": DIAGNOSTIC}
    return [
        Entity(
            "sensor",
            "inference_ms",
            "inference time (mean)",
            topics.stats,
            "{{ value_json.inference_ms if value_json.inference_ms is not none else 'None' }}",
            {
                **diagnostic,
                "device_class": "duration",
                "unit_of_measurement": "ms",
                "suggested_display_precision": 1,
            },
        ),
        Entity(
            "sensor",
            "accelerator",
            "accelerator",
            topics.stats,
            "{{ value_json.accelerator }}",
            {
                "device_class": "enum",
                "options": list(ACCELERATORS),
                "entity_category": DIAGNOSTIC,
                "icon": "mdi:chip",
            },
        ),
        Entity(
            "sensor",
            "outbox_depth",
            "outbox depth",
            topics.stats,
            # outbox is null while the state database cannot be read.
            "{{ value_json.outbox.pending if value_json.outbox is not none else 'None' }}",
            {**diagnostic, "unit_of_measurement": "messages", "icon": "mdi:tray-full"},
        ),
        Entity(
            "sensor",
            "cpu_temperature",
            "CPU temperature",
            topics.stats,
            "{{ value_json.cpu_temperature_c if value_json.cpu_temperature_c is not none"
            " else 'None' }}",
            {**diagnostic, "device_class": "temperature", "unit_of_measurement": "°C"},
        ),
    ]


def discovery_configs(
    config: Config, topics: Topics, version: str = __version__
) -> list[tuple[str, dict[str, Any]]]:
    """(discovery topic, config) of every entity of this device, device entities first."""
    ha = config.homeassistant
    device = config.device
    node = node_id(device)
    device_block = {
        "identifiers": [node],
        "name": ha.device_name or f"maskwatch {device}",
        "model": "maskwatch",
        "manufacturer": "maskwatch",
        "sw_version": version,
    }
    common = {
        "availability_topic": topics.availability,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "device": device_block,
        "origin": {"name": "maskwatch", "sw_version": version},
    }
    entities: list[tuple[str, str, Entity]] = [("", e.key, e) for e in device_entities(topics)]
    for cam in config.cameras:
        entities += [
            (cam.name, f"{cam.name}_{e.key}", e) for e in camera_entities(cam.name, topics)
        ]
    out: list[tuple[str, dict[str, Any]]] = []
    for camera, object_id, e in entities:
        unique_id = ".".join(p for p in ("maskwatch", device, camera, e.key) if p)
        payload = {
            "name": e.name,
            "unique_id": unique_id,
            "state_topic": e.state_topic,
            "value_template": e.value_template,
            **e.options,
            **common,
        }
        out.append((f"{ha.discovery_prefix}/{e.component}/{node}/{object_id}/config", payload))
    return out


def discovery_messages(
    config: Config, topics: Topics, version: str = __version__
) -> list[tuple[str, bytes]]:
    """discovery_configs encoded as the MQTT payloads (compact UTF-8 JSON)."""
    configs = discovery_configs(config, topics, version)
    return [(topic, encode_json(payload)) for topic, payload in configs]
