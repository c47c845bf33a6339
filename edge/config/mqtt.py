"""Configuration of the MQTT connection (edge.publish): broker, TLS, credentials, topics, QoS.

There is deliberately no inline password: config files get copied, pasted into tickets and
committed. The password comes from a file (password_file) or a systemd credential
(LoadCredential=/SetCredentialEncrypted=, read from $CREDENTIALS_DIRECTORY) and is only read,
by resolve_password(), when connecting; it is never kept on the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from edge.config.checks import cap_not_below_initial, topic_usable
from edge.config.errors import ConfigError
from edge.config.paths import relative_to_config

DEFAULT_PASSWORD_CREDENTIAL = "mqtt_password"
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883

INLINE_PASSWORD_MESSAGE = (
    "inline passwords are not allowed: put the password in a file readable only by maskwatch "
    "and set password_file, or pass it with systemd LoadCredential=mqtt_password:/path "
    "(see password_credential)"
)


class TlsConfig(BaseModel):
    """TLS for the broker connection."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        False, description="Connect with TLS (the port then defaults to 8883 instead of 1883)."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the broker's certificate; "
        "the system's CAs when unset.",
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate for mutual TLS; needs key_file."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file for mutual TLS; needs cert_file."
    )
    insecure: bool = Field(
        False,
        description="Skip checking that the broker's certificate matches host. "
        "Only for testing: it allows man-in-the-middle attacks.",
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """Relative certificate paths point next to the config file."""
        return None if path is None else relative_to_config(path, info)

    @model_validator(mode="after")
    def _client_cert_pairs(self) -> TlsConfig:
        """A client certificate without its key (or the reverse) cannot authenticate."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(BaseModel):
    """The MQTT broker this device publishes to, and how."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    host: str = Field("localhost", min_length=1, description="Broker host name or IP address.")
    port: int = Field(
        DEFAULT_PORT,
        ge=1,
        le=65535,
        description="Broker TCP port; defaults to 1883, or 8883 when tls.enabled.",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")
    username: str | None = Field(
        None, min_length=1, description="User name for the broker; anonymous when unset."
    )
    password_file: Path | None = Field(
        None,
        description=(
            "File holding the broker password (one line; the trailing newline is ignored). "
            "Relative paths are relative to this config file."
        ),
    )
    password_credential: str | None = Field(
        DEFAULT_PASSWORD_CREDENTIAL,
        pattern=r"^[A-Za-z0-9_.@-]+$",
        description=(
            "Name of a systemd credential holding the password, read from "
            "$CREDENTIALS_DIRECTORY/<name> (LoadCredential= in the unit). With the default "
            "name it is used only when that file exists; a name set here must exist. "
            "null disables it."
        ),
    )
    base_topic: str = Field(
        "maskwatch",
        min_length=1,
        description=(
            "First topic level(s); messages go to <base_topic>/<device>/...; "
            "no wildcards (+, #) and no leading or trailing '/'."
        ),
    )
    qos: int = Field(1, ge=0, le=2, description="MQTT QoS of published messages (0, 1 or 2).")
    keepalive: int = Field(
        60, ge=5, le=65535, description="Seconds between keepalive pings to the broker."
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id; 'maskwatch-<device>' when unset. Must be unique per broker.",
    )
    reconnect_initial_s: float = Field(
        1.0, gt=0, description="First wait before reconnecting to the broker; doubles each time."
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, description="Longest wait between reconnection attempts."
    )
    retain_totals: bool = Field(
        True,
        description="Publish hourly totals retained so that a new subscriber sees the latest.",
    )
    stop_flush_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description=(
            "When the daemon stops, how long it waits for the broker to acknowledge what is "
            "still queued (the people decided at the stop included) before it disconnects; "
            "whatever is not acknowledged by then stays in the state file and is sent at the "
            "next start. It returns as soon as everything is acknowledged, and at once when "
            "the broker is unreachable. Keep it under the unit's TimeoutStopSec (30 s)."
        ),
    )
    status_interval_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Seconds between diagnostics messages on <base_topic>/<device>/stats (fps, "
            "inference ms, accelerator, dropped frames, outbox depth, uptime, CPU temperature)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        """Reject a password key with a pointer to the safe alternatives.

        Raised as a ValidationError located at "password" so that the loader reports the line
        of the password itself, not of the mqtt section.
        """
        if isinstance(data, dict) and "password" in data:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("inline_password", INLINE_PASSWORD_MESSAGE),
                        loc=("password",),
                        input="<hidden>",
                    )
                ],
            )
        return data

    @field_validator("password_file")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        """A relative password file points next to the config file."""
        return None if path is None else relative_to_config(path, info)

    _topic_usable = field_validator("base_topic")(topic_usable)

    _max_not_below_initial = field_validator("reconnect_max_s")(cap_not_below_initial)

    @model_validator(mode="after")
    def _defaults_from_other_fields(self) -> MqttConfig:
        """Pick the TLS port when TLS is on and no port is given; check password sources."""
        if "port" not in self.model_fields_set and self.tls.enabled:
            self.port = DEFAULT_TLS_PORT
        if self.password_file is not None and self._credential_explicit():
            raise ValueError("set only one of password_file and password_credential")
        return self

    def _credential_explicit(self) -> bool:
        """Whether the config names a credential itself (rather than inheriting the default)."""
        return (
            "password_credential" in self.model_fields_set and self.password_credential is not None
        )

    def topic(self, device: str, *levels: str) -> str:
        """The topic <base_topic>/<device>/<levels...>."""
        return "/".join((self.base_topic, device, *levels))


def resolve_password(cfg: MqttConfig, environ: dict[str, str] | None = None) -> str | None:
    """Read the broker password from password_file or the systemd credential, or None.

    Order: password_file, then $CREDENTIALS_DIRECTORY/<password_credential>. The default
    credential name is optional (absent file -> None); a file or credential named in the config
    must be readable. One trailing newline ("\\n" or "\\r\\n") is stripped, as editors add one.
    Raises ConfigError naming the file when it cannot be read.
    """
    env = os.environ if environ is None else environ
    if cfg.password_file is not None:
        return _read_secret(cfg.password_file, ConfigError, "mqtt.password_file")
    if cfg.password_credential is None:
        return None
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        if cfg._credential_explicit():
            raise ConfigError(
                [
                    f"mqtt.password_credential: credential {cfg.password_credential!r} is "
                    "configured but $CREDENTIALS_DIRECTORY is not set (add "
                    f"LoadCredential={cfg.password_credential}:/path/to/file to the unit)"
                ]
            )
        return None
    path = Path(cred_dir) / cfg.password_credential
    if not cfg._credential_explicit():
        # The unit sets a blank default (SetCredential=mqtt_password:\n) for when the password
        # file is absent, so that systemd starts an anonymous install instead of failing it.
        try:
            if not path.exists() or path.read_text(encoding="utf-8").strip() == "":
                return None
        except (OSError, UnicodeDecodeError):
            pass  # _read_secret reports it with the file's name
    return _read_secret(path, ConfigError, "mqtt.password_credential")


def _read_secret(path: Path, error: type[Exception], field: str) -> str:
    """Read a one-line secret file, stripping one trailing newline; error names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error([f"{path}: {field}: cannot read the MQTT password: {reason}"]) from exc
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise error([f"{path}: {field}: the MQTT password file is empty"])
    return text
