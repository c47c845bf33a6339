"""What the daemon and the replay share: logging setup, and the ledger with its publisher."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from edge.config.logging import LoggingConfig
from edge.config.mqtt import resolve_password
from edge.config.root import Config
from edge.outbox import STATE_FILE_NAME, Outbox, OutboxStats
from edge.publish import Ledger, Publisher, TlsOptions

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 65  # EX_DATAERR: an input file (detections, video) is malformed
EXIT_NO_INPUT = 66  # EX_NOINPUT: an input file is missing or unreadable
EXIT_SOFTWARE = 70  # EX_SOFTWARE: the model is unusable, or an internal error
EXIT_CANT_CREATE = 73  # EX_CANTCREAT: the state directory cannot be written
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: events wait in the state directory for a broker that is away
EXIT_CONFIG = 78  # EX_CONFIG: the configuration is invalid (systemd: no restart loop)

# A person is decided up to the tracker's max age after their last look; an hour is closed
# this long after it ends so late decisions still land in it.
HOUR_CLOSE_DELAY_S = 30.0
# How long `maskwatch replay` waits at its end for the broker to acknowledge everything, unless
# told otherwise (--drain-timeout).
REPLAY_DRAIN_TIMEOUT_S = 10.0


def setup_logging(config: LoggingConfig) -> None:
    """Log to stderr: journald adds time and unit itself, so the journal format omits them."""
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "journal":
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)


class _JournalFormatter(logging.Formatter):
    """Prefix each line with its syslog priority (<3> error ... <7> debug) for journald."""

    PRIORITY: ClassVar[dict[int, int]] = {50: 2, 40: 3, 30: 4, 20: 6, 10: 7}

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{record.name}: {record.getMessage()}" + (
            "\n" + self.formatException(record.exc_info) if record.exc_info else ""
        )


@dataclass
class Reporting:
    """The durable ledger and the MQTT publisher behind it."""

    outbox: Outbox
    publisher: Publisher
    ledger: Ledger

    def close(self, timeout_s: float) -> bool:
        """Flush to the broker for at most timeout_s, disconnect, close the database."""
        delivered = self.publisher.stop(timeout_s)
        self.outbox.close()
        return delivered

    def drain(self, timeout_s: float) -> OutboxStats:
        """Wait up to timeout_s for the broker to acknowledge every outbox row, also while it
        is unreachable (it may come back meanwhile); disconnect and close the database.

        Returns:
            what is still waiting in the state file for the next start on it.
        """
        self.publisher.stop(timeout_s, wait_for_broker=True)
        waiting = self.outbox.stats()
        self.outbox.close()
        return waiting


def open_reporting(
    config: Config,
    state_dir: Path,
    clock: Callable[[], datetime] | None = None,
) -> Reporting:
    """Open the state database and start the publisher (it connects in the background)."""
    mqtt = config.mqtt
    password = resolve_password(mqtt)  # ConfigError propagates to the caller (exit 78)
    outbox = Outbox(
        state_dir / STATE_FILE_NAME,
        tz=config.totals.zoneinfo,
        max_events=config.state.outbox_max_events,
        close_delay_s=HOUR_CLOSE_DELAY_S,
    )
    tls = None
    if mqtt.tls.enabled:
        tls = TlsOptions(
            ca_file=mqtt.tls.ca_file,
            cert_file=mqtt.tls.cert_file,
            key_file=mqtt.tls.key_file,
            insecure=mqtt.tls.insecure,
        )
    publisher = Publisher(
        outbox,
        device=config.device,
        host=mqtt.host,
        port=mqtt.port,
        base_topic=mqtt.base_topic,
        qos=mqtt.qos,
        retain_current=mqtt.retain_totals,
        keepalive=mqtt.keepalive,
        client_id=mqtt.client_id,
        username=mqtt.username,
        password=password,
        tls=tls,
        reconnect_initial_s=mqtt.reconnect_initial_s,
        reconnect_max_s=mqtt.reconnect_max_s,
    )
    kwargs = {} if clock is None else {"clock": clock}
    ledger = Ledger(
        outbox,
        publisher.topics,
        publisher=publisher,
        qos=mqtt.qos,
        retain_totals=mqtt.retain_totals,
        **kwargs,
    )
    publisher.start()
    return Reporting(outbox, publisher, ledger)
