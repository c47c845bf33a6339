"""Tests of `maskwatch run`: the real daemon process with real parts.

Each test starts `python -m edge run --config FILE` as a subprocess reading a video file written
at test time (looping, paced at its frame rate) through the committed model, with a real SQLite
state folder and a real mosquitto on a free loopback port (tests/conftest.py). systemd is played
by a datagram socket at $NOTIFY_SOCKET that collects READY=1, WATCHDOG=1, STATUS= and
STOPPING=1. Every wait polls against a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import Mosquitto, Subscriber, free_port

from edge.outbox import STATE_FILE_NAME

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "head_detector_int8.tflite"
DEVICE = "testdev"
AVAILABILITY = f"maskwatch/{DEVICE}/availability"
# Generous: the daemon loads a model and may share two cores with a training job.
DEADLINE_S = 60.0

EXIT_SOFTWARE, EXIT_CANT_CREATE, EXIT_CONFIG = 70, 73, 78


# -- helpers ----------------------------------------------------------------------------------


def write_clip(path: Path, frames: int = 30, fps: float = 10.0) -> Path:
    """A short mp4v clip: a skin-coloured disc crossing a grey background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(frames):
        image = np.full((240, 320, 3), 80, np.uint8)
        cv2.circle(image, (40 + 8 * i, 120), 25, (120, 150, 200), -1)
        writer.write(image)
    writer.release()
    return path


class NotifySocket:
    """What systemd's $NOTIFY_SOCKET receives: one datagram per notify() call, collected."""

    def __init__(self, directory: Path) -> None:
        """Bind a datagram socket in directory and collect datagrams in a thread."""
        self.path = directory / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._messages: list[str] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        """Receive until closed."""
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.extend(data.decode().splitlines())

    @property
    def messages(self) -> list[str]:
        """Every line received so far, in order."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, prefix: str, proc: subprocess.Popen[bytes], count: int = 1) -> list[str]:
        """Poll until `count` lines start with prefix; fail if the daemon exits first."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            found = [m for m in self.messages if m.startswith(prefix)]
            if len(found) >= count:
                return found
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode} before {prefix!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {prefix!r} in {DEADLINE_S}s: {self.messages}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop collecting and close the socket."""
        self._closed.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    """A NOTIFY_SOCKET in a short private folder (AF_UNIX paths are limited to 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="mw-notify-"))
    sock = NotifySocket(directory)
    yield sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def write_config(tmp_path: Path, port: int, **sections: str) -> Path:
    """A daemon config in tmp_path: the clip, the committed model, the test broker, state in
    tmp_path/state; a keyword replaces a whole top-level section with its YAML text."""
    write_clip(tmp_path / "clip.mp4")
    parts = {
        "device": f"device: {DEVICE}\n",
        "cameras": (
            "cameras:\n"
            "  - name: door\n"
            "    source: clip.mp4\n"
            "    loop: true\n"
            "    file_pacing: realtime\n"
        ),
        "detector": f"detector:\n  model: {MODEL}\n  accelerator: cpu\n  threads: 1\n",
        "mqtt": (
            "mqtt:\n"
            "  host: 127.0.0.1\n"
            f"  port: {port}\n"
            "  reconnect_initial_s: 0.2\n"
            "  reconnect_max_s: 1.0\n"
        ),
        "state": "state:\n  directory: state\n",
        "logging": "logging:\n  level: INFO\n  format: text\n",
    }
    parts.update(sections)
    config = tmp_path / "maskwatch.yaml"
    config.write_text("".join(parts.values()))
    return config


class Daemon:
    """A `maskwatch run` subprocess; its stderr goes to a file (a pipe could fill and block)."""

    def __init__(self, config: Path, workdir: Path, notify: NotifySocket | None) -> None:
        """Start the daemon with a systemd-like environment."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY")
        }
        if notify is not None:
            env["NOTIFY_SOCKET"] = str(notify.path)
            env["WATCHDOG_USEC"] = "2000000"  # pings every second
        self.log = workdir / "daemon.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(config)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stderr(self) -> str:
        """What the daemon logged so far."""
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        """Its exit code; fails the test (with the log) if it does not exit in time."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout_s}s:\n{self.stderr()}"
            ) from None

    def kill(self) -> None:
        """Teardown: kill the process if a failed test left it running."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(config, notify=None) -> a running Daemon; killed at teardown if alive."""
    daemons: list[Daemon] = []

    def start(config: Path, notify: NotifySocket | None = None) -> Daemon:
        daemon = Daemon(config, tmp_path, notify)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.kill()


def payloads(sub: Subscriber, topic: str) -> list[bytes]:
    """Payloads received on topic, in order."""
    return [m.payload for m in sub.on(topic)]


def error_lines(text: str) -> list[str]:
    """Log lines at ERROR level."""
    return [ln for ln in text.splitlines() if " ERROR " in ln]


# -- a running daemon ------------------------------------------------------------------------


def test_ready_online_watchdog_then_clean_stop(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    notify_socket: NotifySocket,
    start_daemon: Callable[..., Daemon],
) -> None:
    sub = subscribe(mosquitto.host, mosquitto.port, f"maskwatch/{DEVICE}/#")
    daemon = start_daemon(write_config(tmp_path, mosquitto.port), notify_socket)

    notify_socket.wait_for("READY=1", daemon.proc)
    sub.wait_for(lambda _: b"online" in payloads(sub, AVAILABILITY), DEADLINE_S, "online")
    # Watchdog pings come only while frames flow through the pipeline: the model is running.
    notify_socket.wait_for("WATCHDOG=1", daemon.proc, count=2)
    (status, *_) = notify_socket.wait_for("STATUS=", daemon.proc)
    assert "fps" in status and "cpu" in status, status
    assert (tmp_path / "state" / STATE_FILE_NAME).is_file()

    # A new subscriber sees `online` retained.
    late = subscribe(mosquitto.host, mosquitto.port, AVAILABILITY)
    late.wait_for(lambda ms: any(m.retain for m in ms), DEADLINE_S, "retained availability")
    assert [m.payload for m in late.messages if m.retain] == [b"online"]

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    assert "STOPPING=1" in notify_socket.messages
    sub.wait_for(
        lambda _: payloads(sub, AVAILABILITY)[-1:] == [b"offline"], DEADLINE_S, "offline"
    )
    assert error_lines(daemon.stderr()) == []
    assert "Traceback" not in daemon.stderr()

    # The offline state is left behind retained for whoever subscribes next.
    after = subscribe(mosquitto.host, mosquitto.port, AVAILABILITY)
    after.wait_for(lambda ms: any(m.retain for m in ms), DEADLINE_S, "retained offline")
    assert [m.payload for m in after.messages if m.retain] == [b"offline"]


def test_sigint_stops_cleanly_too(
    tmp_path: Path,
    mosquitto: Mosquitto,
    notify_socket: NotifySocket,
    start_daemon: Callable[..., Daemon],
) -> None:
    daemon = start_daemon(write_config(tmp_path, mosquitto.port), notify_socket)
    notify_socket.wait_for("READY=1", daemon.proc)
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait() == 0, daemon.stderr()
    assert "STOPPING=1" in notify_socket.messages


def test_starts_without_a_broker_and_connects_when_it_comes(
    tmp_path: Path,
    mosquitto: Mosquitto,
    subscribe: Callable[..., Subscriber],
    notify_socket: NotifySocket,
    start_daemon: Callable[..., Daemon],
) -> None:
    mosquitto.stop()  # the port stays reserved for the broker's return
    daemon = start_daemon(write_config(tmp_path, mosquitto.port), notify_socket)

    notify_socket.wait_for("READY=1", daemon.proc)
    # Still counting: the watchdog pings need frames going through the detector.
    notify_socket.wait_for("WATCHDOG=1", daemon.proc, count=3)
    assert daemon.proc.poll() is None, daemon.stderr()

    mosquitto.start()
    sub = subscribe(mosquitto.host, mosquitto.port, AVAILABILITY)
    sub.wait_for(lambda _: b"online" in payloads(sub, AVAILABILITY), DEADLINE_S, "online")
    assert daemon.proc.poll() is None, daemon.stderr()

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()
    sub.wait_for(
        lambda _: payloads(sub, AVAILABILITY)[-1:] == [b"offline"], DEADLINE_S, "offline"
    )


def test_sigterm_without_a_broker_still_exits_zero(
    tmp_path: Path,
    mosquitto: Mosquitto,
    notify_socket: NotifySocket,
    start_daemon: Callable[..., Daemon],
) -> None:
    mosquitto.stop()
    daemon = start_daemon(write_config(tmp_path, mosquitto.port), notify_socket)
    notify_socket.wait_for("READY=1", daemon.proc)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


# -- startup failures ------------------------------------------------------------------------


def test_bad_config_exits_78_with_file_line_field(
    tmp_path: Path, notify_socket: NotifySocket, start_daemon: Callable[..., Daemon]
) -> None:
    config = write_config(
        tmp_path, free_port(), detector=f"detector:\n  model: {MODEL}\n  treshold: 0.5\n"
    )
    daemon = start_daemon(config, notify_socket)
    assert daemon.wait() == EXIT_CONFIG
    lines = [ln for ln in daemon.stderr().splitlines() if ln.strip()]
    # device, 5 camera lines, then detector: and model: -> treshold is on line 9.
    assert lines == [f"{config}:9: detector.treshold: Extra inputs are not permitted"], lines
    assert "READY=1" not in notify_socket.messages
    assert not (tmp_path / "state").exists(), "a bad config must not touch the state"


def test_malformed_yaml_exits_78(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    config = tmp_path / "maskwatch.yaml"
    config.write_text("device: testdev\ncameras: [\n")
    daemon = start_daemon(config)
    assert daemon.wait() == EXIT_CONFIG
    (line,) = [ln for ln in daemon.stderr().splitlines() if ln.strip()]
    assert line.startswith(f"{config}:") and "invalid YAML" in line, line


def test_missing_config_file_exits_78(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    absent = tmp_path / "absent.yaml"
    daemon = start_daemon(absent)
    assert daemon.wait() == EXIT_CONFIG
    (line,) = [ln for ln in daemon.stderr().splitlines() if ln.strip()]
    assert line.startswith(f"{absent}: cannot read config file"), line


def test_missing_model_exits_70_with_one_line(
    tmp_path: Path, notify_socket: NotifySocket, start_daemon: Callable[..., Daemon]
) -> None:
    absent = tmp_path / "models" / "head_detector_int8.tflite"
    absent.parent.mkdir()
    (absent.parent / "labels.txt").write_text((REPO / "models" / "labels.txt").read_text())
    config = write_config(
        tmp_path, free_port(), detector="detector:\n  model: models/head_detector_int8.tflite\n"
    )
    daemon = start_daemon(config, notify_socket)
    assert daemon.wait() == EXIT_SOFTWARE, daemon.stderr()
    log = daemon.stderr()
    (line,) = error_lines(log)
    assert line.endswith(f"{absent}: model file not found"), line
    assert "Traceback" not in log
    assert "READY=1" not in notify_socket.messages


def test_corrupt_model_exits_70(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> None:
    model = tmp_path / "models" / "head_detector_int8.tflite"
    model.parent.mkdir()
    model.write_bytes(b"\x13garbage" * 512)
    (model.parent / "labels.txt").write_text((REPO / "models" / "labels.txt").read_text())
    config = write_config(tmp_path, free_port(), detector=f"detector:\n  model: {model}\n")
    daemon = start_daemon(config)
    assert daemon.wait() == EXIT_SOFTWARE, daemon.stderr()
    (line,) = error_lines(daemon.stderr())
    assert f"{model}: not a usable TFLite model" in line, line


def test_unwritable_state_directory_exits_73(
    tmp_path: Path, notify_socket: NotifySocket, start_daemon: Callable[..., Daemon]
) -> None:
    # Root may write anywhere, but nobody can create a folder under a regular file.
    (tmp_path / "file").write_text("not a folder\n")
    state = tmp_path / "file" / "sub"
    config = write_config(tmp_path, free_port(), state=f"state:\n  directory: {state}\n")
    daemon = start_daemon(config, notify_socket)
    assert daemon.wait() == EXIT_CANT_CREATE, daemon.stderr()
    log = daemon.stderr()
    (line,) = error_lines(log)
    assert str(state) in line and "state directory" in line, line
    assert "Traceback" not in log
    assert "READY=1" not in notify_socket.messages


def test_watchdog_keeps_pinging_while_a_lost_camera_reconnects(
    tmp_path: Path,
    mosquitto: Mosquitto,
    notify_socket: NotifySocket,
    start_daemon: Callable[..., Daemon],
) -> None:
    """A camera that is gone is the capture thread's job (backoff, state on MQTT): a restart
    cannot bring it back, and restarts every WatchdogSec would hit the unit's start limit."""
    config = write_config(tmp_path, mosquitto.port)
    (tmp_path / "clip.mp4").unlink()  # the camera is unplugged before the daemon starts
    daemon = start_daemon(config, notify_socket)

    notify_socket.wait_for("READY=1", daemon.proc)
    pings = notify_socket.wait_for("WATCHDOG=1", daemon.proc, count=3)
    assert len(pings) >= 3
    assert "reconnecting" in daemon.stderr() or "not found" in daemon.stderr()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()


def test_a_reconnect_that_stops_making_attempts_stops_counting_as_alive() -> None:
    """An open that hangs (no new attempt) must let the watchdog fire; attempts keep it alive.

    A unit test of the decision only, with a stand-in for the capture's two read-outs.
    """
    from types import SimpleNamespace

    from edge.daemon import Daemon

    capture = SimpleNamespace(running=True, state="reconnecting", last_retry_at=100.0)
    camera = SimpleNamespace(reconnect_max_s=2.0, stall_timeout_s=1.0)  # window: 5 s
    daemon = SimpleNamespace(config=SimpleNamespace(camera=lambda _: camera))

    def alive(now: float) -> bool:
        return Daemon._reconnecting(daemon, "door", capture, now)  # type: ignore[arg-type]

    assert alive(100.0)
    assert alive(104.9)  # no new attempt yet, still within two backoff caps + stall timeout
    assert not alive(105.1)  # hung: the pings stop
    capture.last_retry_at = 106.0  # a new attempt was made
    assert alive(106.0)
    capture.state = "streaming"
    assert not alive(106.5)  # not reconnecting: only frames count then
