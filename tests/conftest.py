"""Shared fixtures and helpers: a real mosquitto broker on a free loopback port (optionally
persisting sessions), MQTT subscribers, cuts of real footage, a read-only look into a state
file's outbox, a camera pipeline around a given detector, and a private $XDG_STATE_HOME."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import paho.mqtt.client as mqtt
import pytest

from edge.config.camera import CameraConfig
from edge.config.decide import DecideConfig
from edge.config.tracker import TrackerConfig
from edge.detect import Detector
from edge.detection import Detection
from edge.pipeline import CameraPipeline, footage_clock

MOSQUITTO = Path("/usr/sbin/mosquitto")


def camera_pipeline(detector: Detector, **camera: Any) -> CameraPipeline:
    """The pipeline of camera `door` (other camera fields from the arguments) with the default
    tracker and vote; decided people are dropped, footage starts at 2026-01-01 UTC."""
    return CameraPipeline(
        CameraConfig(name="door", source="clip.mp4", **camera),
        detector, TrackerConfig(), DecideConfig(), lambda event: None,
        footage_clock(datetime(2026, 1, 1, tzinfo=timezone.utc)),
    )


def one_label(box: tuple[float, float, float, float], label: int, score: float) -> Detection:
    """A detection of one label at `score` (the other labels' scores zero)."""
    scores = [0.0, 0.0, 0.0]
    scores[label] = score
    return Detection(box, label, score, (scores[0], scores[1], scores[2]))


@pytest.fixture(autouse=True)
def private_user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                       ) -> Path:
    """$XDG_STATE_HOME in a temporary folder of each test's own: a replay without --state-dir
    keeps its outbox there (and subprocesses inherit it), never in the real user's home."""
    state_home = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    return state_home


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto process in the foreground; stop() kills it, start() brings it back on the
    same port (state is in memory, so retained messages and sessions are lost: a real crash)."""

    host = "127.0.0.1"

    def __init__(
        self, workdir: Path, extra_config: list[str] | None = None, anonymous: bool = True
    ) -> None:
        """Write the config: one listener on a free loopback port (extra_config lines come
        after it, so listener options such as certfile apply to it); does not start."""
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to files under the test's private tmp dir
        self.config.write_text("\n".join([*lines, *(extra_config or [])]) + "\n")
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        assert self._proc is None, "already running"
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.host, self.port):
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"mosquitto exited at start:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not listen in {timeout_s}s:\n{self.log.read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the broker (SIGKILL: no clean shutdown) and wait for it to exit."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._proc = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start brokers with extra config lines; all are killed at teardown."""
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (apt-get install mosquitto)")
    brokers: list[Mosquitto] = []

    def make(extra_config: list[str] | None = None, anonymous: bool = True) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(brokers)}"
        workdir.mkdir()
        broker = Mosquitto(workdir, extra_config, anonymous)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A running broker: plain TCP on a free loopback port, anonymous access."""
    return mosquitto_factory()


@dataclass(frozen=True)
class Message:
    """One received MQTT message."""

    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """An MQTT client that subscribes to a filter and collects what arrives.

    With `session_file` (the persistence file of a broker from persistent_broker) it keeps a
    persistent session (clean session off, QoS 1) and reconnects every second: a restarted
    broker then queues for it what is published while it is away, so nothing is missed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        timeout_s: float = 15.0,
        *,
        session_file: Path | None = None,
    ) -> None:
        """Connect and subscribe; returns once the broker has acknowledged the subscription
        (so retained messages and everything published afterwards will arrive) and, for a
        persistent session, has saved it to session_file."""
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self.connects = 0
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:12]}",
            clean_session=session_file is None,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self._messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

        def on_connect(*args: object) -> None:
            with self._lock:
                self.connects += 1

        self.client.on_message = on_message
        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        if not subscribed.wait(timeout_s):
            self.close()
            raise RuntimeError(f"no SUBACK for {topic_filter} from {host}:{port}")
        if session_file is not None:
            acked_at = time.time_ns()
            deadline = time.monotonic() + 30
            while not (session_file.exists() and session_file.stat().st_mtime_ns > acked_at):
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"mosquitto did not save {session_file}")
                time.sleep(0.1)

    @property
    def messages(self) -> list[Message]:
        """A copy of everything received so far, in arrival order."""
        with self._lock:
            return list(self._messages)

    def on(self, topic: str) -> list[Message]:
        """The messages received on exactly `topic`."""
        return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout_s: float = 30.0, what: str = ""
    ) -> list[Message]:
        """Poll until predicate(messages) holds; fail the test with a summary at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self.messages
            if predicate(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what or 'messages'}; "
                    f"got {len(messages)}: {messages[-5:]}"
                )
            time.sleep(0.05)

    def wait_connected(self, connects: int, timeout_s: float = 90.0) -> None:
        """Poll until the client has connected `connects` times in all."""
        deadline = time.monotonic() + timeout_s
        while self.connects < connects:
            assert time.monotonic() < deadline, f"the subscriber did not connect {connects} times"
            time.sleep(0.05)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """subscribe(host, port, topic_filter, session_file=None) -> a connected Subscriber (see
    Subscriber); closed at teardown."""
    subscribers: list[Subscriber] = []

    def make(
        host: str, port: int, topic_filter: str = "#", session_file: Path | None = None
    ) -> Subscriber:
        sub = Subscriber(host, port, topic_filter, session_file=session_file)
        subscribers.append(sub)
        return sub

    yield make
    for sub in subscribers:
        sub.close()


def persistent_broker(
    mosquitto_factory: Callable[..., Mosquitto], directory: Path
) -> tuple[Mosquitto, Path]:
    """A running broker that saves sessions and queued messages to a file in `directory`
    every second, so that a restart (even after SIGKILL) keeps a persistent subscriber's
    subscription and what was published for it meanwhile; and that file."""
    directory.mkdir()
    broker = mosquitto_factory(
        ["persistence true", f"persistence_location {directory}/", "autosave_interval 1"]
    )
    return broker, directory / "mosquitto.db"


def write_cut(
    footage: Path, path: Path, windows: tuple[tuple[float, float], ...], before_s: float,
    after_s: float,
) -> Path:
    """Write the frames of `footage` inside `windows` (seconds, each widened by before_s and
    after_s) as an mp4v clip at the footage's frame rate; written to a temporary name and
    renamed, so it appears complete."""
    source = cv2.VideoCapture(str(footage))
    fps = source.get(cv2.CAP_PROP_FPS)
    size = (int(source.get(cv2.CAP_PROP_FRAME_WIDTH)), int(source.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    ranges = [(round((a - before_s) * fps), round((b + after_s) * fps)) for a, b in windows]
    partial = path.with_name(f".{path.name}.partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    index = 0
    while index < ranges[-1][1]:
        ok, image = source.read()
        if not ok:
            break
        if any(start <= index < end for start, end in ranges):
            writer.write(image)
        index += 1
    writer.release()
    source.release()
    partial.rename(path)
    return path


def outbox_rows(db: Path) -> list[tuple[str, bytes]]:
    """(kind, payload) of every row waiting in a state file's outbox, oldest first, read
    read-only (no checkpoint, no recovery written back); [] before the file or its schema
    exists."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            rows = conn.execute("SELECT kind, payload FROM outbox ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # killed before the schema was created
                return []
            raise
    return [(str(kind), bytes(payload)) for kind, payload in rows]
