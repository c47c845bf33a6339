"""The SD-card image's parts that need no image build: the MBR the builder writes and the
first-boot step grows, the first-boot set-up files applied to a scratch root, and the files the
image adds to the system (units, drop-in, journald cap, fstab). The image itself is booted in a
VM by tests/test_image_vm.py (`make test-image`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO / "packaging" / "image"
sys.path.insert(0, str(IMAGE_DIR))
sys.path.insert(0, str(REPO / "packaging"))

import build_image  # noqa: E402
import firstboot  # noqa: E402
from firstboot import SECTOR, FirstBoot, Partition, SetupError  # noqa: E402

MIB = 2**20


def sfdisk_partitions(image: Path) -> list[dict[str, object]]:
    """The partition table as util-linux's sfdisk reads it: an independent check."""
    done = subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return list(json.loads(done.stdout)["partitiontable"]["partitions"])


def test_assembled_image_has_both_file_systems_where_its_mbr_says(tmp_path: Path) -> None:
    fat = tmp_path / "boot.vfat"
    ext4 = tmp_path / "root.ext4"
    fat.write_bytes(b"F" * 3 * MIB)
    ext4.write_bytes(b"\0" * MIB + b"E" * 5 * MIB)  # a zero block is skipped, not lost
    image = tmp_path / "disk.img"
    boot, root = build_image.assemble(fat, ext4, image, disk_id=0x1234ABCD)

    assert boot == Partition(1, 0x0C, 4 * MIB // SECTOR, 3 * MIB // SECTOR)
    assert root == Partition(2, 0x83, boot.end, 6 * MIB // SECTOR)
    assert image.stat().st_size == root.end * SECTOR
    assert firstboot.read_mbr(image) == [boot, root]
    data = image.read_bytes()
    assert data[440:444] == (0x1234ABCD).to_bytes(4, "little")
    assert data[0x1BE] == 0x80 and data[0x1BE + 16] == 0  # partition 1 is the active one
    assert data[boot.start * SECTOR : boot.end * SECTOR] == fat.read_bytes()
    assert data[root.start * SECTOR : root.end * SECTOR] == ext4.read_bytes()
    if shutil.which("sfdisk"):
        parts = sfdisk_partitions(image)
        assert [(p["start"], p["size"], p["type"]) for p in parts] == [
            (boot.start, boot.size, "c"), (root.start, root.size, "83")]  # fmt: skip


def test_grow_moves_the_last_partition_end_to_the_end_of_the_disk(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    boot = Partition(1, 0x0C, 8192, 8192)
    root = Partition(2, 0x83, 16384, 20480)
    with image.open("wb") as f:
        f.truncate(root.end * SECTOR)
    firstboot.write_mbr(image, [boot, root], disk_id=7)
    # Nothing to gain on a card the size of the image.
    assert firstboot.grow_in_table(image, 2, root.end) is None
    # A bigger card: partition 2 reaches its end; partition 1 and the disk id are kept.
    card_sectors = root.end + 64 * MIB // SECTOR
    with image.open("r+b") as f:
        f.truncate(card_sectors * SECTOR)
    grown = firstboot.grow_in_table(image, 2, card_sectors)
    assert grown == Partition(2, 0x83, root.start, card_sectors - root.start)
    assert firstboot.read_mbr(image) == [boot, grown]
    assert image.read_bytes()[440:444] == (7).to_bytes(4, "little")
    # Again: already at the end. And partition 1 is never grown over partition 2.
    assert firstboot.grow_in_table(image, 2, card_sectors) is None
    assert firstboot.grow_in_table(image, 1, card_sectors) is None
    if shutil.which("sfdisk"):
        assert [p["size"] for p in sfdisk_partitions(image)] == [boot.size, grown.size]


def test_read_mbr_refuses_a_disk_without_a_table(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4096))
    with pytest.raises(SetupError, match="no MBR"):
        firstboot.read_mbr(blank)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "one line"), ("a\nb\n", "one line"), ("bad_name\n", "hostname:1:"),
     ("-x\n", "hostname:1:"), ("x" * 64, "hostname:1:")],
)  # fmt: skip
def test_bad_hostname_files_name_file_and_line(text: str, problem: str) -> None:
    with pytest.raises(SetupError, match=re.escape(problem)):
        firstboot.parse_hostname(text)


def test_setup_files_parse_as_raspberry_pi_os_writes_them() -> None:
    assert firstboot.parse_hostname("# comment\r\nEntrance-Pi\r\n") == "entrance-pi"
    hashed = "$6$salt$" + "a" * 86
    assert firstboot.parse_userconf(f"pi:{hashed}\n") == ("pi", hashed)
    for bad in ("pi\n", "root:$6$x$y\n", "pi:plaintext\n", "Pi User:$6$x$y\n"):
        with pytest.raises(SetupError, match=r"userconf\.txt"):
            firstboot.parse_userconf(bad)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 me@laptop"
    assert firstboot.parse_authorized_keys(f"# mine\n{key}\n\n") == [key]
    with pytest.raises(SetupError, match="authorized_keys:2:"):
        firstboot.parse_authorized_keys(f"{key}\nnot a key\n")


def scratch_root(tmp_path: Path) -> tuple[Path, Path]:
    """A boot folder and a root folder with the /etc files first boot edits."""
    boot = tmp_path / "boot"
    root = tmp_path / "root"
    boot.mkdir()
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("maskwatch\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmaskwatch\n")
    return boot, root


def test_first_boot_applies_hostname_and_wifi_then_removes_the_files(tmp_path: Path) -> None:
    boot, root = scratch_root(tmp_path)
    (boot / "hostname").write_text("\ufeffshop-door\r\n")  # as Windows Notepad saves it
    wifi = 'country=DE\r\nnetwork={\r\n    ssid="shop"\r\n    psk="secret123"\r\n}\r\n'
    (boot / "wpa_supplicant.conf").write_text(wifi)
    (boot / "maskwatch.yaml").write_text("cameras: []\n")

    assert FirstBoot(boot, root).run() == 0
    assert (root / "etc" / "hostname").read_text() == "shop-door\n"
    assert (root / "etc" / "hosts").read_text().splitlines() == [
        "127.0.0.1\tlocalhost", "127.0.1.1\tshop-door"]  # fmt: skip
    conf = root / "etc" / "wpa_supplicant" / "wpa_supplicant-wlan0.conf"
    assert conf.read_text() == wifi.replace("\r\n", "\n")
    assert conf.stat().st_mode & 0o777 == 0o600
    # Applied files leave the open partition; the config stays, the service reads it there.
    assert sorted(p.name for p in boot.iterdir()) == ["maskwatch.yaml"]


def test_a_bad_setup_file_is_reported_kept_and_the_others_still_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot, root = scratch_root(tmp_path)
    (boot / "hostname").write_text("no_underscores\n")
    (boot / "wpa_supplicant.conf").write_text("ssid=shop\n")
    assert FirstBoot(boot, root).run() == 1
    out = capsys.readouterr().out
    assert f"set hostname: {boot / 'hostname'}:1: 'no_underscores' is not a host name" in out
    assert f"set wifi: {boot / 'wpa_supplicant.conf'}: no network=" in out
    assert (root / "etc" / "hostname").read_text() == "maskwatch\n"
    assert sorted(p.name for p in boot.iterdir()) == ["hostname", "wpa_supplicant.conf"]


def test_image_runs_maskwatch_on_the_boot_partition_config() -> None:
    dropin = (IMAGE_DIR / "maskwatch-image.conf").read_text()
    unit = (REPO / "systemd" / "maskwatch.service").read_text()
    # The drop-in empties, then replaces, both commands of the packaged unit.
    for key in ("ExecStartPre", "ExecStart"):
        assert f"{key}=" in unit
        assert re.search(rf"^{key}=\n{key}=/usr/bin/maskwatch .*/boot/firmware/maskwatch\.yaml$",
                         dropin, re.M), key  # fmt: skip
    assert "RequiresMountsFor=/boot/firmware" in dropin
    customize = (IMAGE_DIR / "customize.sh").read_text()
    assert "maskwatch.service" in customize and "maskwatch-firstboot.service" in customize
    assert "/etc/maskwatch/maskwatch.yaml#/boot/firmware/maskwatch.yaml#" in customize


def test_journal_is_persistent_and_capped_and_fstab_mounts_by_label() -> None:
    journald = (IMAGE_DIR / "journald.conf").read_text()
    settings = dict(ln.split("=", 1) for ln in journald.splitlines() if "=" in ln
                    and not ln.startswith("#"))  # fmt: skip
    assert settings["Storage"] == "persistent"
    assert settings["SystemMaxUse"] == "64M"
    fstab = [ln.split() for ln in (IMAGE_DIR / "fstab").read_text().splitlines()
             if ln and not ln.startswith("#")]  # fmt: skip
    mounts = {fields[1]: fields for fields in fstab}
    assert mounts["/"][0] == "LABEL=RASPIROOT" and mounts["/"][2] == "ext4"
    assert mounts["/boot/firmware"][:3] == ["LABEL=RASPIFIRM", "/boot/firmware", "vfat"]
    assert "noatime" in mounts["/"][3]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_first_boot_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "maskwatch-firstboot.service"
    # verify wants the ExecStart binary to exist: this machine's python3 runs the script.
    text = (IMAGE_DIR / "maskwatch-firstboot.service").read_text()
    unit.write_text(text.replace("/usr/lib/maskwatch-image/firstboot.py",
                                 str(IMAGE_DIR / "firstboot.py")))  # fmt: skip
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "maskwatch-firstboot.service" not in done.stderr, done.stderr


def test_first_boot_takes_raspberry_pi_imager_customisation_back_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot, root = scratch_root(tmp_path)
    ours = "console=ttyS1,115200 console=tty0 root=LABEL=RASPIROOT rw fsck.repair=yes rootwait\n"
    # What Imager appends when its OS customisation is chosen for a custom image.
    imager = (ours.strip() + " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
              " systemd.unit=kernel-command-line.target\n")  # fmt: skip
    (boot / "cmdline.txt").write_text(imager)
    (boot / "firstrun.sh").write_text("#!/bin/bash\necho 'pi:$6$hash' | chpasswd -e\n")
    assert FirstBoot(boot, root).run() == 0
    assert (boot / "cmdline.txt").read_text() == ours
    assert not (boot / "firstrun.sh").exists()
    assert "OS customisation is for Raspberry Pi OS and was not applied" in capsys.readouterr().out
    # Without Imager's changes nothing is touched.
    assert FirstBoot(boot, root).run() == 0
    assert (boot / "cmdline.txt").read_text() == ours
    assert capsys.readouterr().out == ""
