"""`make demo`: a local broker, a subscriber printing what it receives, and a replay.

    python -m edge.tools.demo --video demo-out/vtest.avi --config configs/street-camera.yaml \
        --annotate demo-out/annotated.mp4
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.__main__ import main as maskwatch


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, deadline_s: float = 10.0) -> None:
    """Block until something accepts on 127.0.0.1:port."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def main() -> int:
    """Start mosquitto and mosquitto_sub, replay the video, stop both."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--annotate", type=Path)
    ap.add_argument("--config", type=Path, help="maskwatch config for the replay")
    args = ap.parse_args()
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        procs = [subprocess.Popen([broker, "-c", str(conf)], stderr=subprocess.DEVNULL)]
        try:
            wait_for_port(port)
            procs.append(
                subprocess.Popen(["mosquitto_sub", "-p", str(port), "-v", "-t", "maskwatch/#"])
            )
            time.sleep(0.3)
            # The demo's broker lives as long as the demo: so does the replay's state.
            argv = ["replay", str(args.video), "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port),
                    "--state-dir", str(Path(tmp) / "state")]
            if args.annotate:
                argv += ["--annotate", str(args.annotate)]
            if args.config:
                argv += ["--config", str(args.config)]
            code = maskwatch(argv)
            time.sleep(0.5)  # let the subscriber print the last messages
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait(5)
    if args.annotate:
        print(f"annotated video: {args.annotate}")
    return code


if __name__ == "__main__":
    sys.exit(main())
