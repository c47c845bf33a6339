"""The shipped unit file passes `systemd-analyze verify` and carries what the daemon relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "maskwatch.service"


def test_unit_declares_notify_watchdog_and_no_restart_on_config_errors() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StateDirectory=maskwatch",
        "ConfigurationDirectory=maskwatch",
        "LoadCredential=mqtt_password:",
        "ExecStartPre=/usr/bin/maskwatch check-config",
        "SupplementaryGroups=video",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
    ):
        assert line in text, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this environment's script.
    script = Path(sys.executable).with_name("maskwatch")
    if not script.exists():
        pytest.skip("the maskwatch console script is not installed in this environment")
    unit = tmp_path / "maskwatch.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/maskwatch", str(script)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "maskwatch.service" not in done.stderr, done.stderr
