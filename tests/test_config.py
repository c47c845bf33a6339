"""Tests of edge.config: the YAML loader, its FILE:LINE messages, the sections' rules."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from edge.config.camera import CameraConfig, ZoneConfig, picamera2_number, redact_source
from edge.config.detector import DetectorConfig, default_model_path, models_dir
from edge.config.load import (
    EXIT_CONFIG,
    ConfigError,
    config_schema,
    config_to_yaml,
    load_config,
    parse_config,
)
from edge.config.mqtt import MqttConfig, resolve_password
from edge.config.root import Config, default_device_name
from edge.config.state import DEFAULT_STATE_DIRECTORY
from edge.config.totals import local_timezone_name

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SCHEMA_LINE = "# yaml-language-server: $schema=../docs/config-schema.json"
MESSAGE_RE = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+): (?P<rest>[^\n]+)$")


def write(tmp_path: Path, text: str, name: str = "maskwatch.yaml") -> Path:
    """Write dedented config text to tmp_path/name and return the path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    """The messages load_config raises for path (fails the test when it loads)."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for message in info.value.messages:
        assert MESSAGE_RE.match(message), message
    return info.value.messages


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no systemd variables unless they set them."""
    for name in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)


# --- examples and defaults ---------------------------------------------------------------


EXAMPLES = sorted(CONFIGS.glob("*.yaml"))


def test_the_four_examples_exist() -> None:
    """The documented examples are shipped."""
    names = {p.name for p in EXAMPLES}
    assert {"maskwatch.yaml", "usb-webcam.yaml", "rtsp-camera.yaml", "file-replay.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    """Every example validates and points editors at the schema on its first line."""
    assert path.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_LINE
    config = load_config(path)
    assert config.cameras
    assert config.mqtt.client_id == f"maskwatch-{config.device}"


def test_example_sources_have_the_expected_kinds() -> None:
    """Each example exercises one kind of source; the replay file resolves next to the repo."""
    assert load_config(CONFIGS / "usb-webcam.yaml").cameras[0].source_kind == "v4l2"
    assert load_config(CONFIGS / "maskwatch.yaml").cameras[0].source == "/dev/video0"
    rtsp = load_config(CONFIGS / "rtsp-camera.yaml")
    assert rtsp.cameras[0].source_kind == "url"
    assert rtsp.mqtt.port == 8883  # TLS on, no port given
    assert "viewer:viewer@" not in rtsp.cameras[0].source_redacted
    replay = load_config(CONFIGS / "file-replay.yaml").cameras[0]
    assert replay.source_kind == "file"
    expected = REPO.parent / "shared" / "videos" / "one-by-one-person-detection.mp4"
    assert Path(str(replay.source)) == expected


def test_empty_file_loads_with_defaults(tmp_path: Path) -> None:
    """An empty file gives one webcam and the documented defaults."""
    config = load_config(write(tmp_path, ""))
    assert [(c.name, c.source) for c in config.cameras] == [("cam0", "/dev/video0")]
    assert config.detector.score_threshold == 0.35
    assert config.mqtt.host == "localhost" and config.mqtt.port == 1883
    assert config.mqtt.qos == 1 and config.mqtt.base_topic == "maskwatch"
    assert config.state.directory == DEFAULT_STATE_DIRECTORY
    assert config.logging.level == "INFO" and config.logging.format == "text"
    assert re.fullmatch(r"[a-z0-9_-]{1,64}", config.device)


def test_minimal_camera_file_loads(tmp_path: Path) -> None:
    """The smallest useful file: one camera reading a video file next to the config."""
    config = load_config(write(tmp_path, "cameras: [{name: a, source: x.mp4}]\n"))
    cam = config.cameras[0]
    assert cam.source == str(tmp_path / "x.mp4")
    assert cam.source_kind == "file"
    assert cam.file_pacing == "realtime" and cam.loop is False
    assert cam.zone.margin_left_pct == 5.0 and cam.zone.polygon is None


def test_sections_left_empty_take_their_defaults(tmp_path: Path) -> None:
    """A section whose keys are all commented out is null in YAML; it means "defaults"."""
    path = write(
        tmp_path,
        """
        state:
          # directory: /srv/x
        mqtt:
          tls:
        cameras:
          - name: a
            source: 0
            zone:
        """,
    )
    config = load_config(path)
    assert config.mqtt.tls.enabled is False
    assert config.cameras[0].zone == ZoneConfig()


def test_source_kinds() -> None:
    """Indices and /dev paths are V4L2, schemes are URLs, anything else is a file."""
    kinds = {
        0: "v4l2",
        "/dev/video2": "v4l2",
        "/dev/v4l/by-id/usb-cam-video-index0": "v4l2",
        "rtsp://cam/stream": "url",
        "https://cam/mjpeg": "url",
        "clip.mp4": "file",
        "/srv/videos/clip.mkv": "file",
    }
    for source, kind in kinds.items():
        assert CameraConfig(name="c", source=source).source_kind == kind, source


def test_url_password_is_redacted() -> None:
    """Logs and MQTT get the camera URL without its password."""
    assert (
        redact_source("rtsp://admin:s3cret@10.0.0.5:554/h264")
        == "rtsp://admin:***@10.0.0.5:554/h264"
    )
    assert redact_source("rtsp://10.0.0.5/h264") == "rtsp://10.0.0.5/h264"
    assert redact_source(3) == "3"


def test_camera_rules() -> None:
    """Sources that can never open and contradictory settings are rejected."""
    bad: list[dict[str, Any]] = [
        {"name": "a/b", "source": 0},
        {"name": "a", "source": -1},
        {"name": "a", "source": True},
        {"name": "a", "source": ""},
        {"name": "a", "source": "ftp://host/x"},
        {"name": "a", "source": 0, "reconnect_initial_s": 5, "reconnect_max_s": 2},
        {"name": "a", "source": 0, "detect_every_n_frames": 0},
        {"name": "a", "source": 0, "file_pacing": "fast"},
        {"name": "a", "source": 0, "zone": {"polygon": [[0, 0], [1, 1]]}},
        {"name": "a", "source": 0, "zone": {"polygon": [[0, 0], [0.5, 0.5], [1, 1]]}},
        {"name": "a", "source": 0, "zone": {"polygon": [[0, 0], [1.5, 0], [1, 1]]}},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            CameraConfig(**fields)


def test_zone_geometry() -> None:
    """Margins and polygon scale to pixels of the actual frame."""
    zone = ZoneConfig(
        margin_left_pct=10,
        margin_right_pct=20,
        margin_top_pct=0,
        margin_bottom_pct=25,
        polygon=[(0, 0), (1, 0), (0.5, 1)],
    )
    assert zone.margin_box(200, 100) == (20.0, 0.0, 160.0, 75.0)
    assert zone.polygon_px(200, 100) == [(0.0, 0.0), (200.0, 0.0), (100.0, 100.0)]


def test_device_name_is_made_topic_safe() -> None:
    """Host names become one lower-case topic level."""
    assert default_device_name("Kiosk Pi.local") == "kiosk-pi"
    assert default_device_name("CAM_01") == "cam_01"
    assert default_device_name("...") == "maskwatch"
    assert default_device_name("x" * 100) == "x" * 64


def test_tls_switches_the_default_port_only(tmp_path: Path) -> None:
    """TLS without a port means 8883; a port given explicitly is kept."""
    assert load_config(write(tmp_path, "mqtt: {tls: {enabled: true}}\n")).mqtt.port == 8883
    config = load_config(write(tmp_path, "mqtt: {port: 1884, tls: {enabled: true}}\n"))
    assert config.mqtt.port == 1884


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """Model, its companions, certificates, password file and state folder follow the file."""
    path = write(
        tmp_path,
        """
        detector:
          model: models/custom.tflite
        mqtt:
          password_file: secret.txt
          tls: {enabled: true, ca_file: ca.pem}
        state:
          directory: ./state
        """,
    )
    config = load_config(path)
    assert config.detector.model == tmp_path / "models" / "custom.tflite"
    assert config.detector.edgetpu_model == tmp_path / "models" / "custom_edgetpu.tflite"
    assert config.detector.labels_path == tmp_path / "models" / "labels.txt"
    assert config.mqtt.password_file == tmp_path / "secret.txt"
    assert config.mqtt.tls.ca_file == tmp_path / "ca.pem"
    assert config.state.directory == tmp_path / "state"


def test_edgetpu_model_can_be_switched_off(tmp_path: Path) -> None:
    """An explicit null means no Edge TPU model, unlike leaving the key out."""
    config = load_config(write(tmp_path, "detector: {edgetpu_model: null}\n"))
    assert config.detector.edgetpu_model is None


def test_default_model_lives_in_models_dir() -> None:
    """The default model is the shipped one, found next to the package or system-wide."""
    assert default_model_path() == models_dir() / "head_detector_int8.tflite"
    assert DetectorConfig().model == default_model_path()
    assert DetectorConfig().edgetpu_model == models_dir() / "head_detector_int8_edgetpu.tflite"


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    """The effective config printed by check-config loads back to the same config."""
    original = load_config(CONFIGS / "rtsp-camera.yaml")
    again = load_config(write(tmp_path, config_to_yaml(original)))
    assert again == original


def test_exit_code_is_ex_config() -> None:
    """sysexits EX_CONFIG, so systemd can tell a bad config from a crash."""
    assert EXIT_CONFIG == 78


# --- error messages: FILE:LINE: path: message --------------------------------------------


def test_out_of_range_names_file_line_and_field(tmp_path: Path) -> None:
    """The example from the documentation, word for word."""
    path = write(
        tmp_path,
        """
        cameras:
          - name: door
            source: 0
            zone:
              margin_left_pct: 60
        """,
    )
    assert errors_of(path) == [
        f"{path}:5: cameras.0.zone.margin_left_pct: "
        "Input should be less than or equal to 49 (got 60)"
    ]


def test_unknown_key_reports_its_line_and_a_suggestion(tmp_path: Path) -> None:
    """A typo is reported where it is, with the field that was probably meant."""
    path = write(
        tmp_path,
        """
        device: door
        detector:
          accelerator: cpu
          score_treshold: 0.5
        """,
    )
    assert errors_of(path) == [
        f"{path}:4: detector.score_treshold: Extra inputs are not permitted "
        "(did you mean 'score_threshold'?)"
    ]


def test_unknown_top_level_section(tmp_path: Path) -> None:
    """Unknown sections are errors too, not silently ignored."""
    path = write(tmp_path, "device: a\n\ncamera:\n  - name: x\n")
    assert errors_of(path) == [
        f"{path}:3: camera: Extra inputs are not permitted (did you mean 'cameras'?)"
    ]


def test_wrong_types(tmp_path: Path) -> None:
    """Wrong types name the field and line; several errors come in file order."""
    path = write(
        tmp_path,
        """
        mqtt:
          port: "eighteen"
        cameras:
          - name: a
            source: 1.5
            loop: sometimes
        detector:
          accelerator: gpu
        """,
    )
    messages = errors_of(path)
    assert [int(MESSAGE_RE.match(m)["line"]) for m in messages] == [2, 5, 6, 8]  # type: ignore[index]
    assert messages[0].startswith(f"{path}:2: mqtt.port: Input should be a valid integer")
    assert messages[1].startswith(f"{path}:5: cameras.0.source: must be a V4L2 device index")
    assert messages[2].startswith(f"{path}:6: cameras.0.loop: Input should be a valid boolean")
    assert messages[3] == (
        f"{path}:8: detector.accelerator: Input should be 'auto', 'cpu' or 'edgetpu' (got 'gpu')"
    )


def test_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    """A required key that is absent is reported at the item that lacks it."""
    path = write(tmp_path, "cameras:\n  - name: a\n    source: 0\n  - name: b\n")
    assert errors_of(path) == [f"{path}:4: cameras.1.source: Field required"]


def test_duplicate_camera_names(tmp_path: Path) -> None:
    """The repeated name is reported at its own line, naming the first camera."""
    path = write(
        tmp_path,
        """
        cameras:
          - name: door
            source: 0
          - name: yard
            source: 1
          - name: door
            source: 2
        """,
    )
    assert errors_of(path) == [
        f"{path}:6: cameras.2.name: camera name 'door' is already used by cameras.0"
    ]


def test_no_cameras(tmp_path: Path) -> None:
    """An explicit empty list is a mistake, not a request for the default camera."""
    path = write(tmp_path, "device: x\ncameras: []\n")
    assert errors_of(path) == [
        f"{path}:2: cameras: List should have at least 1 item after validation, not 0"
    ]


def test_inline_password_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    """A password: key points to the safe alternatives and never repeats the password."""
    path = write(
        tmp_path,
        """
        mqtt:
          host: broker
          username: u
          password: hunter2
        """,
    )
    messages = errors_of(path)
    assert len(messages) == 1
    assert messages[0].startswith(f"{path}:4: mqtt.password: inline passwords are not allowed")
    assert "password_file" in messages[0] and "LoadCredential" in messages[0]
    assert "hunter2" not in messages[0]


def test_malformed_yaml_reports_the_parser_line(tmp_path: Path) -> None:
    """One message, at the line where the parser gave up."""
    path = write(tmp_path, "device: a\ncameras:\n  - name: a\n    source: [0\nmqtt: {}\n")
    messages = errors_of(path)
    assert len(messages) == 1
    assert re.match(rf"^{re.escape(str(path))}:5: invalid YAML: ", messages[0]), messages


def test_bad_indentation(tmp_path: Path) -> None:
    """A classic indentation slip is reported at its line."""
    path = write(tmp_path, "mqtt:\n  host: a\n   port: 1\n")
    [message] = errors_of(path)
    assert message.startswith(f"{path}:3: invalid YAML: ")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    """Two mqtt: sections would silently drop the first; report the second one's line."""
    path = write(tmp_path, "mqtt:\n  host: a\ndevice: b\nmqtt:\n  host: c\n")
    assert errors_of(path) == [f"{path}:4: mqtt: duplicate key (first defined at line 1)"]


def test_value_that_yaml_cannot_build(tmp_path: Path) -> None:
    """Explicit tags with impossible values get a line instead of a traceback."""
    path = write(tmp_path, "device: a\nmqtt:\n  port: !!int abc\n")
    [message] = errors_of(path)
    assert message.startswith(f"{path}:3: invalid YAML: cannot read this value")


def test_unsafe_tags_are_refused(tmp_path: Path) -> None:
    """Python object tags are never constructed."""
    path = write(tmp_path, "device: !!python/object/apply:os.system ['true']\n")
    [message] = errors_of(path)
    assert message.startswith(f"{path}:1: invalid YAML: ")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A list at the top is explained in the user's terms."""
    path = write(tmp_path, "- name: a\n  source: 0\n")
    assert errors_of(path) == [
        f"{path}:1: the top level must be a mapping of sections "
        "(device:, cameras:, mqtt: ...), not a list"
    ]


def test_recursive_alias_and_alias_bomb(tmp_path: Path) -> None:
    """Self-referencing aliases and exponential alias expansion are refused with a line."""
    path = write(tmp_path, "device: a\nx: &x [*x]\n")
    [message] = errors_of(path)
    assert message.startswith(f"{path}:2: invalid YAML: an alias refers to the value")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    [message] = errors_of(path)
    assert "after expanding aliases" in message


def test_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    """Anchors are handy for cameras sharing settings; errors in them still get a line."""
    path = write(
        tmp_path,
        """
        x-zone: &zone {margin_left_pct: 10, margin_right_pct: 10}
        cameras:
          - name: a
            source: 0
            zone: *zone
          - name: b
            source: 1
            zone:
              <<: *zone
              margin_top_pct: 70
        """,
    )
    messages = errors_of(path)  # x-zone is not a known section, margin_top_pct out of range
    assert messages == [
        f"{path}:1: x-zone: Extra inputs are not permitted",
        f"{path}:10: cameras.1.zone.margin_top_pct: "
        "Input should be less than or equal to 49 (got 70)",
    ]


def test_deep_nesting_is_refused_not_crashed(tmp_path: Path) -> None:
    """PyYAML's recursive composer would overflow the stack; the loader stops first."""
    path = write(tmp_path, "device: " + "[" * 5000 + "]" * 5000 + "\n")
    [message] = errors_of(path)
    assert "nested more than" in message


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    """File problems name the file (and the line, for bad encoding)."""
    missing = tmp_path / "nope.yaml"
    assert errors_of_simple(missing) == [
        f"{missing}: cannot read config file: No such file or directory"
    ]
    assert errors_of_simple(tmp_path) == [f"{tmp_path}: cannot read config file: Is a directory"]
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"device: a\nmqtt:\n  host: \xff\xfe\n")
    [message] = errors_of_simple(binary)
    assert message.startswith(f"{binary}:3: config file is not UTF-8 text")
    nul = tmp_path / "nul.yaml"
    nul.write_text("device: a\nx: b\x00\n", encoding="utf-8")
    [message] = errors_of_simple(nul)
    assert message.startswith(f"{nul}:2: invalid YAML: character U+0000")


def errors_of_simple(path: Path) -> list[str]:
    """Messages for problems found before any line is known (file-level)."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.messages


def test_config_error_str_is_all_messages() -> None:
    """str(ConfigError) prints one problem per line; odd characters cannot break lines."""
    error = ConfigError(["a:1: x: one", "a:2: y: two\nthree"])
    assert str(error) == "a:1: x: one\na:2: y: two\\nthree"


# --- MQTT password -------------------------------------------------------------------------


def test_password_from_file(tmp_path: Path) -> None:
    """The trailing newline editors add is not part of the password."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret pass\n", encoding="utf-8")
    config = load_config(write(tmp_path, "mqtt: {username: u, password_file: pw}\n"))
    assert resolve_password(config.mqtt) == "s3cret pass"
    assert "s3cret" not in repr(config) and "s3cret" not in config.model_dump_json()
    secret.write_text("crlf\r\n", encoding="utf-8")
    assert resolve_password(config.mqtt) == "crlf"


def test_password_file_problems_name_the_file(tmp_path: Path) -> None:
    """A missing or empty password file is a config error naming it."""
    cfg = MqttConfig(password_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "absent"))):
        resolve_password(cfg)
    (tmp_path / "empty").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        resolve_password(MqttConfig(password_file=tmp_path / "empty"))


def test_password_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LoadCredential=mqtt_password:... is picked up without any config."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-systemd\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(write(tmp_path, ""))
    assert resolve_password(config.mqtt) == "from-systemd"
    (creds / "broker").write_text("named", encoding="utf-8")
    named = load_config(write(tmp_path, "mqtt: {password_credential: broker}\n"))
    assert resolve_password(named.mqtt) == "named"


def test_default_credential_is_optional_but_a_named_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No credential file under the default name: anonymous. A configured name must exist."""
    assert resolve_password(MqttConfig()) is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_password(MqttConfig()) is None
    # The unit's empty SetCredential= fallback, used when /etc/maskwatch/mqtt_password is absent.
    (tmp_path / "mqtt_password").write_text("\n", encoding="utf-8")
    assert resolve_password(MqttConfig()) is None
    named = MqttConfig(password_credential="broker")
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "broker"))):
        resolve_password(named)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY is not set"):
        resolve_password(named)
    assert resolve_password(MqttConfig(password_credential=None)) is None


def test_password_file_and_named_credential_conflict(tmp_path: Path) -> None:
    """Two password sources are ambiguous."""
    path = write(tmp_path, "mqtt:\n  password_file: pw\n  password_credential: broker\n")
    [message] = errors_of(path)
    assert message == (f"{path}:1: mqtt: set only one of password_file and password_credential")


# --- other sections ------------------------------------------------------------------------


def test_state_directory_from_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """StateDirectory= sets $STATE_DIRECTORY; the first of several is ours; the file wins."""
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/maskwatch-test")
    assert load_config(write(tmp_path, "")).state.directory == Path("/var/lib/maskwatch-test")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/one:/var/lib/two")
    assert load_config(write(tmp_path, "")).state.directory == Path("/var/lib/one")
    config = load_config(write(tmp_path, "state: {directory: /srv/mw}\n"))
    assert config.state.directory == Path("/srv/mw")


def test_timezone_validation_and_local_default(tmp_path: Path) -> None:
    """Unknown zones are rejected; the default follows $TZ, /etc/localtime, /etc/timezone."""
    path = write(tmp_path, "totals:\n  timezone: Mars/Olympus\n")
    [message] = errors_of(path)
    assert message.startswith(f"{path}:2: totals.timezone: unknown time zone 'Mars/Olympus'")
    assert load_config(write(tmp_path, "totals: {timezone: Asia/Tokyo}\n")).totals.timezone == (
        "Asia/Tokyo"
    )
    etc = tmp_path / "etc"
    etc.mkdir()
    assert local_timezone_name({}, etc) == "UTC"
    (etc / "timezone").write_text("Europe/Paris\n", encoding="utf-8")
    assert local_timezone_name({}, etc) == "Europe/Paris"
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/America/Chicago")
    assert local_timezone_name({}, etc) == "America/Chicago"
    assert local_timezone_name({"TZ": ":Asia/Kolkata"}, etc) == "Asia/Kolkata"
    assert local_timezone_name({"TZ": "Nowhere/Else"}, etc) == "America/Chicago"


def test_logging_level_is_case_insensitive_and_format_follows_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'debug' is accepted; under systemd the default format is journal."""
    assert load_config(write(tmp_path, "logging: {level: debug}\n")).logging.level == "DEBUG"
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert load_config(write(tmp_path, "")).logging.format == "journal"


def test_base_topic_rules(tmp_path: Path) -> None:
    """Wildcards and empty levels cannot be published to."""
    for topic in ("a/+", "a/#", "/a", "a/", "a//b"):
        with pytest.raises(ValidationError):
            MqttConfig(base_topic=topic)
    assert MqttConfig(base_topic="site/a").topic("dev", "cam", "events") == "site/a/dev/cam/events"


# --- schema and model rules ----------------------------------------------------------------


def _all_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """root and every model its fields hold, however deeply (through lists and Optional)."""
    seen: set[type[BaseModel]] = set()
    todo: list[Any] = [root]
    while todo:
        ann = todo.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann in seen:
                continue
            seen.add(ann)
            todo.extend(field.annotation for field in ann.model_fields.values())
        todo.extend(getattr(ann, "__args__", ()))
    return seen


def test_every_model_forbids_extra_keys_and_describes_fields() -> None:
    """The project rule, checked over the whole tree instead of by eye."""
    seen = _all_models(Config)
    assert {"CameraConfig", "ZoneConfig", "MqttConfig", "TlsConfig"} <= {m.__name__ for m in seen}
    for model in seen:
        assert model.model_config.get("extra") == "forbid", model
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_schema_is_json_and_closed() -> None:
    """The schema serialises, every object is closed, and there is no password property."""
    schema = config_schema()
    json.dumps(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    objects = [schema, *schema["$defs"].values()]
    for obj in objects:
        assert obj.get("additionalProperties") is False, obj.get("title")
    mqtt = schema["$defs"]["MqttConfig"]["properties"]
    assert "password" not in mqtt and "password_file" in mqtt


# --- fuzzing: the loader only ever raises ConfigError ------------------------------------

_YAMLISH = st.text(
    alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@`,?<= \n\t\\") + list("abcxyz019.~")),
    max_size=120,
)

_FIELD_NAMES: list[str] = sorted(
    {name for model in _all_models(Config) for name in model.model_fields}
)

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["0", "/dev/video0", "rtsp://u:p@h/x", "x.mp4", "UTC", "cpu", "~nobody/x"])
)
_KEYS = st.sampled_from(_FIELD_NAMES) | st.text(max_size=8)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)


def _check_outcome(text: str) -> None:
    """parse_config either returns a Config or raises ConfigError with located messages."""
    try:
        config = parse_config(text, "fuzz.yaml", config_dir=Path("/etc/maskwatch"))
    except ConfigError as exc:
        assert exc.messages
        for message in exc.messages:
            assert message.startswith("fuzz.yaml:"), message
            assert "\n" not in message
        return
    assert isinstance(config, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_YAMLISH)
def test_fuzz_yamlish_text(text: str) -> None:
    """Arbitrary YAML-looking text never escapes as anything but ConfigError."""
    _check_outcome(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_any_text(text: str) -> None:
    """Arbitrary unicode, control characters included."""
    _check_outcome(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _TREES, max_size=6))
def test_fuzz_nested_mappings(tree: dict[Any, Any]) -> None:
    """Nested data with real field names in odd places never crashes validation."""
    _check_outcome(yaml.safe_dump(tree))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "device": _SCALARS,
            "cameras": st.lists(st.dictionaries(_KEYS, _TREES, max_size=6), max_size=3),
            "detector": st.dictionaries(_KEYS, _SCALARS, max_size=4),
            "mqtt": st.dictionaries(_KEYS, _TREES, max_size=4),
            "totals": st.dictionaries(_KEYS, _SCALARS, max_size=2),
            "state": st.dictionaries(_KEYS, _SCALARS, max_size=2),
            "logging": st.dictionaries(_KEYS, _SCALARS, max_size=2),
        },
    )
)
def test_fuzz_config_shaped(tree: dict[str, Any]) -> None:
    """Config-shaped data reaches the validators of every section."""
    _check_outcome(yaml.safe_dump(tree))


def _example_data() -> list[Any]:
    """The example configs as plain data, to mutate into near-valid configs."""
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in EXAMPLES]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path (mapping keys, list indices) inside node, parents before children."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """data with the value at path replaced (the whole document when path is empty)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {**data, head: _mutate(data[head], rest, value)}
    copy = list(data)
    copy[head] = _mutate(copy[head], rest, value)
    return copy


@st.composite
def _mutated_examples(draw: st.DrawFn) -> Any:
    """A valid example with one to three values replaced by arbitrary data."""
    data = draw(st.sampled_from(_example_data()))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(data)))
        data = _mutate(data, path, draw(_TREES))
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated_examples())
def test_fuzz_mutated_examples(data: Any) -> None:
    """Near-valid configs reach every field validator; still only ConfigError escapes."""
    _check_outcome(yaml.safe_dump(data))


def test_infinite_and_nan_values_are_rejected(tmp_path: Path) -> None:
    """ ".inf" would silently disable a timeout; ".nan" compares false with every bound."""
    path = write(tmp_path, "cameras:\n  - name: a\n    source: 0\n    stall_timeout_s: .inf\n")
    assert errors_of(path) == [
        f"{path}:4: cameras.0.stall_timeout_s: Input should be a finite number (got .inf)"
    ]


# --- Raspberry Pi camera (picamera2) ------------------------------------------------------


def test_picamera2_sources(tmp_path: Path) -> None:
    """'picamera2' and 'picamera2:N' name a Pi camera, not a file beside the config."""
    for source, number in (("picamera2", 0), ("picamera2:1", 1)):
        cam = load_config(write(tmp_path, f"cameras:\n  - name: pi\n    source: {source}\n"))
        assert cam.cameras[0].source == source  # not resolved against the config's folder
        assert cam.cameras[0].source_kind == "picamera2"
        assert picamera2_number(source) == number
    (message,) = errors_of(write(tmp_path, "cameras:\n  - name: pi\n    source: picamera2:x\n"))
    assert message.endswith(
        ":3: cameras.0.source: a Raspberry Pi camera is 'picamera2' or 'picamera2:N' (N its number)"
    ), message
    # Only the exact name is special: a file that merely starts with it stays a file.
    other = load_config(write(tmp_path, "cameras:\n  - name: pi\n    source: picamera2.mp4\n"))
    assert other.cameras[0].source_kind == "file"


def test_raspberry_pi_example_reads_the_pi_camera() -> None:
    """The Raspberry Pi example uses the picamera2 source and passes validation."""
    path = CONFIGS / "raspberry-pi-camera.yaml"
    assert path.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_LINE
    cam = load_config(path).cameras[0]
    assert (cam.source, cam.source_kind) == ("picamera2", "picamera2")
    assert (cam.width, cam.height) == (1280, 720)
