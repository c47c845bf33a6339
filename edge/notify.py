"""systemd notifications (READY, WATCHDOG, STATUS, STOPPING) with or without systemd-python.

With systemd-python installed its sd_notify is used; otherwise the datagram is sent to
$NOTIFY_SOCKET directly (the protocol is one line per field). Outside systemd both do nothing.
"""

from __future__ import annotations

import os
import socket


def _send_raw(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


try:
    from systemd import daemon as _systemd_daemon  # type: ignore[import-not-found,attr-defined,unused-ignore]

    def notify(message: str) -> bool:
        """Send one notification (e.g. "READY=1") to systemd; False when not under systemd."""
        return bool(_systemd_daemon.notify(message))

except ImportError:

    def notify(message: str) -> bool:
        """Send one notification (e.g. "READY=1") to systemd; False when not under systemd."""
        return _send_raw(message)


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec when systemd enabled the watchdog for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
