"""Publishing over MQTT: person events, hourly totals, the running hour and availability.

Topics under `<base>/<device>/` (base "maskwatch" by default):

- `availability`: retained `online` after every (re)connect; the last will and a clean stop
  leave a retained `offline`.
- `person`: one JSON object per decided person (PersonEvent.to_json_dict()), QoS `qos`.
- `totals/hourly`: retained, one JSON object per closed local hour (edge.totals.totals_payload).
- `totals/current`: retained, the running hour in the same shape, after each decision, at each
  hour change and after every reconnect.
- `stats` and `in_view`: retained diagnostics (edge.stats) given to `publish_state`; only the
  newest value of each is kept and it is sent again after every reconnect.

With `set_discovery` the publisher also keeps Home Assistant's discovery configs
(edge.discovery): sent retained after every (re)connect and whenever Home Assistant says
`online` on its status topic (it restarted, or its broker lost the retained configs).

Person events and hourly totals go through the durable outbox (edge.outbox): `Ledger.record`
and `Ledger.tick` write them to SQLite and wake the `Publisher`, which sends them in order and
deletes each row only when the broker has acknowledged it (QoS 1; QoS 0 rows when written to
the socket). Delivery is therefore at least once: a row whose acknowledgement was lost with the
connection is sent again, with the same payload and event_id.

The Publisher never blocks the caller on the broker. paho's network thread connects and
reconnects with capped exponential backoff; a sender thread of our own owns all publishing
state, and paho's callbacks only hand it events through a queue (paho calls on_publish while
holding its own message lock, so a callback must not wait for ours).
"""

from __future__ import annotations

import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from edge.events import PersonEvent
from edge.outbox import ClosedHour, Outbox, StateError, encode_json
from edge.totals import LocalHour, hour_of, totals_payload

log = logging.getLogger(__name__)


class _QuietAfterDisconnect(logging.Filter):
    """Drop paho 2.x's spurious "Client is not connected" error, logged by its network loop
    once more after every clean disconnect (it would put an error in the journal per stop)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except that one."""
        return not str(record.msg).startswith("Client is not connected")


_paho_log = log.getChild("paho")
_paho_log.addFilter(_QuietAfterDisconnect())


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's network loop swallows the exception before calling on_connect_fail, and "cannot
    reach the broker" is a poor message when the real cause is an untrusted certificate.
    """

    last_connect_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        """paho's reconnect, keeping the exception of a failed attempt."""
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise


ONLINE = b"online"
OFFLINE = b"offline"
_STATE_RETRY_S = 5.0  # how long the sender waits before retrying after a state-database error


def _taken(info: mqtt.MQTTMessageInfo, qos: int) -> bool:
    """Whether paho took a publish: sent, or (QoS>0) queued while offline, to go out after the
    reconnect. QoS 0 offline, a full queue and other errors were not taken."""
    return info.rc == mqtt.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == mqtt.MQTT_ERR_NO_CONN)


def _check_topic_level(value: str, what: str) -> None:
    """Refuse names that would change the topic tree (empty, wildcards, level separators)."""
    if not value or any(c in value for c in "+#/\0"):
        raise ValueError(f"{what} {value!r} must be non-empty and contain none of + # / NUL")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one device."""

    availability: str
    person: str
    hourly: str
    current: str
    stats: str
    in_view: str

    @classmethod
    def for_device(cls, base_topic: str, device: str) -> Topics:
        """Topics under `<base_topic>/<device>/`.

        Raises:
            ValueError: the device name is empty or contains + # / (base_topic may contain /
                to nest the tree, but no wildcards).
        """
        _check_topic_level(device, "device name")
        if not base_topic or any(c in base_topic for c in "+#\0"):
            raise ValueError(f"base topic {base_topic!r} must be non-empty, without + # NUL")
        prefix = f"{base_topic.rstrip('/')}/{device}"
        return cls(
            availability=f"{prefix}/availability",
            person=f"{prefix}/person",
            hourly=f"{prefix}/totals/hourly",
            current=f"{prefix}/totals/current",
            stats=f"{prefix}/stats",
            in_view=f"{prefix}/in_view",
        )


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker.

    Attributes:
        ca_file: CA certificate(s) that sign the broker's certificate; None uses the system's.
        cert_file: client certificate, for brokers that require one.
        key_file: the client certificate's private key (None when it is inside cert_file).
        insecure: skip checking that the broker's certificate names the host (test setups).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class Publisher:
    """Sends the outbox to an MQTT broker in the background (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        device: str,
        host: str,
        port: int = 1883,
        base_topic: str = "maskwatch",
        qos: int = 1,
        retain_current: bool = True,
        keepalive: int = 60,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TlsOptions | None = None,
        reconnect_initial_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        max_inflight: int = 20,
    ) -> None:
        """Prepare the client; nothing connects before start().

        Args:
            outbox: where the rows to send wait.
            device: this device's name, the topic level after base_topic.
            host, port: the broker.
            base_topic: the first topic level(s).
            qos: QoS of totals/current (rows carry their own; availability is always QoS 1).
            retain_current: publish totals/current retained (mqtt.retain_totals).
            keepalive: MQTT keepalive in seconds.
            client_id: MQTT client id; default "maskwatch-<device>".
            username, password: broker credentials (password resolved by the caller).
            tls: TLS settings; None for plain TCP.
            reconnect_initial_s, reconnect_max_s: reconnect backoff, doubling from the first
                wait up to the cap (whole seconds, at least 1: paho's resolution).
            max_inflight: rows handed to the client without acknowledgement at most; bounds
                memory however long the backlog is.

        Raises:
            ValueError: bad names or limits, or TLS files that cannot be loaded.
        """
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        self._outbox = outbox
        self._topics = Topics.for_device(base_topic, device)
        self._host, self._port, self._keepalive = host, port, keepalive
        self._qos = qos
        self._retain_current = retain_current
        self._max_inflight = max_inflight

        self._client = _Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"maskwatch-{device}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self._client.enable_logger(_paho_log)
        # Room for our window plus availability/current, so those never queue behind rows.
        self._client.max_inflight_messages_set(max_inflight + 4)
        self._client.reconnect_delay_set(
            min_delay=max(1, math.ceil(reconnect_initial_s)),
            max_delay=max(1, math.ceil(reconnect_max_s), math.ceil(reconnect_initial_s)),
        )
        self._client.will_set(self._topics.availability, OFFLINE, qos=1, retain=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._configure_tls(tls)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message

        # Shared with paho's thread: written there, read anywhere (single assignments).
        self._connected = False
        self._outage_reason: str | None = None  # the connect failure last logged
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._flushed = False

        # Sender-thread state: only _run and the methods it calls touch these.
        self._link_up = False
        self._hello_due = False
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (row id, qos)
        self._stop_deadline: float | None = None
        self._stop_waits_for_broker = False  # stop(wait_for_broker=True): an outage is no end
        self._offline_mid: int | None = None
        self._offline_acked = False
        # Latest-value topics (totals/current and publish_state): only the newest payload of
        # each is kept, sent when due and again after every (re)connect.
        self._states: dict[str, tuple[bytes, bool]] = {}  # topic -> (payload, retain)
        self._states_due: set[str] = set()
        self._state_mids: dict[int, str] = {}  # mid in flight -> its topic
        # Discovery (set_discovery).
        self._discovery: list[tuple[str, bytes]] = []
        self._discovery_status: str | None = None
        self._announce_due = False
        self._subscribe_due = False

    def _configure_tls(self, tls: TlsOptions) -> None:
        """Load the CA and client certificate; failures name the file."""
        for what, path in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {what} {path}: no such file")
        try:
            self._client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError) as exc:
            files = ", ".join(
                str(p) for p in (tls.ca_file, tls.cert_file, tls.key_file) if p is not None
            )
            raise ValueError(
                f"TLS files {files or '(system CAs)'} cannot be loaded: {exc}"
            ) from exc
        self._client.tls_insecure_set(tls.insecure)

    # -- public API ----------------------------------------------------------------------------

    @property
    def topics(self) -> Topics:
        """This device's topics."""
        return self._topics

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the connection and it has not dropped since."""
        return self._connected

    @property
    def in_flight(self) -> int:
        """Outbox rows sent and not yet acknowledged (at most max_inflight)."""
        return len(self._inflight)

    def start(self) -> None:
        """Start connecting in the background and the sender thread; returns at once."""
        if self._sender is not None:
            raise RuntimeError("Publisher already started")
        self._sender = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        self._client.loop_start()

    def notify(self) -> None:
        """New rows are in the outbox: send them when the link allows."""
        self._events.put(("notify", None))

    def publish_current(self, payload: dict[str, Any]) -> None:
        """Make `payload` the retained totals/current; kept and re-sent after reconnects."""
        self.publish_state(self._topics.current, payload, retain=self._retain_current)

    def publish_state(self, topic: str, payload: dict[str, Any], retain: bool = True) -> None:
        """Make `payload` the newest value of `topic` (stats, in_view, totals/current): sent
        when the link allows, an older unsent value replaced, and sent again after every
        reconnect."""
        self._events.put(("state", (topic, encode_json(payload), retain)))

    def set_discovery(self, configs: list[tuple[str, bytes]], status_topic: str) -> None:
        """Announce `configs` (topic, payload) retained now and after every reconnect, and
        again whenever `status_topic` receives `online` (Home Assistant's birth message)."""
        self._events.put(("discovery", (list(configs), status_topic)))

    def stop(self, timeout_s: float = 5.0, *, wait_for_broker: bool = False) -> bool:
        """Flush what the broker takes within `timeout_s`, publish `offline`, disconnect.

        Rows not acknowledged by then stay in the outbox for the next start. When the broker
        is unreachable this returns without waiting, unless `wait_for_broker`: then the whole
        `timeout_s` is given to reconnecting (the client keeps retrying with its backoff) and
        flushing, as a replay that must not end with its events unsent does.

        Returns:
            True when every row was acknowledged and `offline` was delivered.
        """
        if self._sender is None:
            return False
        deadline = time.monotonic() + max(0.0, timeout_s)
        self._events.put(("stop", (deadline, wait_for_broker)))
        # The sender gives up at the deadline; the margin covers one last disconnect.
        self._sender.join(timeout=max(0.0, timeout_s) + 5.0)
        self._client.loop_stop()
        self._connected = False
        return self._flushed

    # -- paho callbacks (paho's network thread: hand over and return) --------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        """The broker answered CONNECT."""
        if reason_code.is_failure:
            reason = f"refused: {reason_code}"
            if reason != self._outage_reason:  # once, not at every retry
                self._outage_reason = reason
                log.error(
                    "MQTT broker %s:%d refused the connection: %s",
                    self._host,
                    self._port,
                    reason_code,
                )
            return
        log.info("connected to MQTT broker %s:%d", self._host, self._port)
        self._connected = True
        self._outage_reason = None
        self._events.put(("connected", None))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        """The connection is gone (paho reconnects by itself unless we stopped)."""
        was_connected, self._connected = self._connected, False
        if was_connected and self._stop_deadline is None:
            log.warning(
                "lost MQTT broker %s:%d (%s); retrying in the background",
                self._host,
                self._port,
                reason_code,
            )
        self._events.put(("disconnected", None))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """A connection attempt failed at the TCP/TLS level: log it once per outage, and again
        only when the reason changes (refused -> certificate rejected, say)."""
        error = self._client.last_connect_error
        reason = str(error) if error is not None else "unknown error"
        if reason != self._outage_reason:
            self._outage_reason = reason
            log.warning(
                "cannot connect to MQTT broker %s:%d: %s; retrying in the background",
                self._host,
                self._port,
                reason,
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        """PUBACK for QoS 1 (or written, for QoS 0)."""
        self._events.put(("ack", mid))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A message on a subscribed topic (only the discovery status topic is subscribed).

        A retained birth message is skipped: every connect announces anyway.
        """
        if not msg.retain:
            self._events.put(("message", (msg.topic, bytes(msg.payload))))

    # -- sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Sender loop: apply events, acknowledge rows, keep the in-flight window full."""
        retry_at: float | None = None
        while True:
            timeout = math.inf
            if self._stop_deadline is not None:
                timeout = self._stop_deadline - time.monotonic()
            if retry_at is not None:
                timeout = min(timeout, retry_at - time.monotonic())
            events = self._take_events(None if math.isinf(timeout) else max(0.0, timeout))
            acked = self._apply(events)
            try:
                if acked:
                    self._outbox.ack_many(acked)
                if self._link_up:
                    self._greet()
                    self._fill_window()
                retry_at = None
            except StateError as exc:
                # Keep running: the rows stay in the outbox and are sent again later.
                log.error("%s", exc)
                retry_at = time.monotonic() + _STATE_RETRY_S
            except Exception:
                log.exception("MQTT sender failed; retrying")
                retry_at = time.monotonic() + _STATE_RETRY_S
            if self._stop_deadline is not None and self._stop_done():
                self._finish()
                return

    def _take_events(self, timeout: float | None) -> list[tuple[str, Any]]:
        """Wait for at least one event (or the timeout), then take all that are queued."""
        events: list[tuple[str, Any]] = []
        try:
            events.append(self._events.get(timeout=timeout))
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _apply(self, events: list[tuple[str, Any]]) -> list[int]:
        """Update the sender state from events; returns the acknowledged row ids."""
        acked: list[int] = []
        for kind, value in events:
            if kind == "connected":
                self._link_up = True
                self._hello_due = True
            elif kind == "disconnected":
                self._link_up = False
                # paho re-sends its unacknowledged QoS>0 messages after reconnecting, so those
                # stay in flight; a QoS 0 row that was not written yet may never be reported.
                self._inflight = {m: rq for m, rq in self._inflight.items() if rq[1] > 0}
                # States likewise; a QoS>0 one stays in flight so that no newer value of its
                # topic can go out before paho's re-send and leave the older one retained.
                if self._qos == 0:
                    self._state_mids.clear()
            elif kind == "ack":
                entry = self._inflight.pop(value, None)
                if entry is not None:
                    acked.append(entry[0])
                if value == self._offline_mid:
                    self._offline_acked = True
                self._state_mids.pop(value, None)
            elif kind == "state":
                topic, payload, retain = value
                self._states[topic] = (payload, retain)
                self._states_due.add(topic)
            elif kind == "discovery":
                self._discovery, self._discovery_status = value
                self._announce_due = self._subscribe_due = True
            elif kind == "message":
                topic, payload = value
                if topic == self._discovery_status and payload.strip() == ONLINE:
                    # Home Assistant (re)started: configs first, then every state it will
                    # subscribe to, as its discovery documentation asks.
                    self._announce_due = True
                    self._states_due.update(self._states)
            elif kind == "stop":
                self._stop_deadline, self._stop_waits_for_broker = value
        return acked

    def _greet(self) -> None:
        """After a (re)connect: online, then discovery and every state; later, state updates."""
        if self._hello_due:
            self._hello_due = False
            self._client.publish(self._topics.availability, ONLINE, qos=1, retain=True)
            # A clean session forgets subscriptions, and the broker may have lost retained ones.
            self._subscribe_due = self._announce_due = bool(self._discovery)
            self._states_due.update(self._states)
        self._send_discovery_and_states()

    def _send_discovery_and_states(self) -> None:
        """Subscribe to the discovery status topic, announce, and send the due states.

        At most one message per state topic is in flight: values that come faster than the
        broker acknowledges collapse into the newest, so a slow link cannot pile them up in
        memory. States go out in topic order (in_view, stats, totals/current).
        """
        if self._subscribe_due and self._discovery_status is not None:
            self._subscribe_due = False
            self._client.subscribe(self._discovery_status, qos=1)
        if self._announce_due:
            self._announce_due = False
            for topic, payload in self._discovery:
                self._client.publish(topic, payload, qos=1, retain=True)
        busy = set(self._state_mids.values())
        for topic in sorted(self._states_due - busy):
            payload, retain = self._states[topic]
            info = self._client.publish(topic, payload, qos=self._qos, retain=retain)
            # Anything paho did not take stays due and is tried again later, so no topic waits
            # for an acknowledgement that cannot come.
            if _taken(info, self._qos):
                self._state_mids[info.mid] = topic
                self._states_due.discard(topic)

    def _fill_window(self) -> None:
        """Hand the oldest rows not yet in flight to paho, up to max_inflight in flight."""
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return
        busy = {row_id for row_id, _ in self._inflight.values()}
        for row in self._outbox.pending(room + len(busy)):
            if room == 0:
                break
            if row.id in busy:
                continue
            info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            # Anything paho did not take is retried from the outbox.
            if _taken(info, row.qos):
                self._inflight[info.mid] = (row.id, row.qos)
                room -= 1
            else:
                break

    def _stop_done(self) -> bool:
        """Whether stop() can finish now: flushed and offline delivered, late, or unreachable
        (unless stop was asked to wait for the broker)."""
        assert self._stop_deadline is not None
        if time.monotonic() >= self._stop_deadline:
            return True
        if not self._link_up:
            return not self._stop_waits_for_broker
        try:
            drained = not self._inflight and not self._outbox.pending(1)
        except StateError:
            return True
        if not drained:
            return False
        if self._offline_mid is None:
            self._offline_mid = self._client.publish(
                self._topics.availability, OFFLINE, qos=1, retain=True
            ).mid
            return False
        if self._offline_acked:
            self._flushed = True
            return True
        return False

    def _finish(self) -> None:
        """Leave `offline` behind (queued before DISCONNECT) and disconnect."""
        if self._link_up and self._offline_mid is None:
            self._client.publish(self._topics.availability, OFFLINE, qos=1, retain=True)
        self._client.disconnect()
        log.info("disconnected from MQTT broker %s:%d", self._host, self._port)


class CurrentSink(Protocol):
    """What the Ledger needs from a publisher (Publisher fits; tests may pass a recorder)."""

    def notify(self) -> None:
        """New outbox rows were recorded."""

    def publish_current(self, payload: dict[str, Any]) -> None:
        """The running hour's totals changed."""


def _utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(timezone.utc)


class Ledger:
    """What the pipeline calls: record decided people, close hours, keep the totals current.

    `record` stores the event durably and counts it (one transaction), then updates
    totals/current and wakes the publisher. `tick` closes the hours that are due and publishes
    the running hour when it changes; call it regularly (every frame or every second is fine:
    ticks that have nothing to do touch neither disk nor network).
    """

    def __init__(
        self,
        outbox: Outbox,
        topics: Topics,
        *,
        publisher: CurrentSink | None = None,
        qos: int = 1,
        retain_totals: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Wire the outbox to the publisher.

        Args:
            outbox: the durable state.
            topics: the device's topics (Publisher.topics or Topics.for_device).
            publisher: where to announce new rows and the running hour; None records only.
            qos: QoS of the person and hourly rows.
            retain_totals: publish hourly totals retained (mqtt.retain_totals).
            clock: the time source (timezone-aware); replays pass the footage clock.
        """
        self._outbox = outbox
        self._topics = topics
        self._publisher = publisher
        self._qos = qos
        self._retain_totals = retain_totals
        self._clock = clock
        self._current_hour: LocalHour | None = None

    def record(self, event: PersonEvent) -> int:
        """Store and count one decided person; returns its outbox row id.

        Raises:
            StateError: the state database cannot be written (e.g. the disk is full).
        """
        row_id = self._outbox.record_person(
            event, self._topics.person, encode_json(event.to_json_dict()), self._qos
        )
        self._publish_current(self._clock())
        if self._publisher is not None:
            self._publisher.notify()
        return row_id

    def tick(self, now: datetime | None = None) -> list[ClosedHour]:
        """Close the hours that are due (also those that ended while the daemon was down)."""
        now = self._clock() if now is None else now
        closed = self._outbox.close_hours(
            now, self._topics.hourly, self._qos, retain=self._retain_totals
        )
        for c in closed:
            log.info(
                "hour %s closed%s: %d people",
                c.hour.start_local.isoformat(),
                " again after late events" if c.revision else "",
                c.payload["people"],
            )
        if closed and self._publisher is not None:
            self._publisher.notify()
        if self._current_hour is None or not self._current_hour.contains(now):
            self._publish_current(now)
        return closed

    def current_payload(self, now: datetime | None = None) -> dict[str, Any]:
        """The totals/current payload for the hour containing `now` (default: the clock)."""
        hour = hour_of(self._clock() if now is None else now, self._outbox.tz)
        return totals_payload(hour, self._outbox.hour_counts(hour))

    def _publish_current(self, now: datetime) -> None:
        """Hand the running hour's totals to the publisher."""
        hour = hour_of(now, self._outbox.tz)
        self._current_hour = hour
        if self._publisher is not None:
            self._publisher.publish_current(totals_payload(hour, self._outbox.hour_counts(hour)))
