#!/usr/bin/python3
"""maskwatch-firstboot: apply the set-up files a user put on the SD card's FAT boot partition.

Installed in the Raspberry Pi image as /usr/lib/maskwatch-image/firstboot.py and run by
maskwatch-firstboot.service early at every boot (before the network and SSH). It reads
/boot/firmware (the partition any PC can edit) and applies what is there:

    hostname            one line: the host name (also written to /etc/hosts)
    userconf.txt        "name:hash" as Raspberry Pi OS reads it (hash from `openssl passwd -6`):
                        creates that user (groups sudo, video, adm, systemd-journal) or sets
                        its password
    authorized_keys     SSH public keys for that user, or for root when there is no user
    wpa_supplicant.conf Wi-Fi networks for wlan0 (wpa_supplicant's own format)

Raspberry Pi Imager's "OS customisation" is made for Raspberry Pi OS: it writes firstrun.sh and
boots once into systemd.run=/boot/firstrun.sh with systemd.unit=kernel-command-line.target,
which here would leave the device without its services. Those arguments are taken out of
cmdline.txt again, firstrun.sh (it holds a password hash and the Wi-Fi key) is deleted, the
journal says to use the files below instead, and a boot started that way is rebooted.

Each file is deleted once applied, so a password hash or Wi-Fi key does not stay on the
card's open partition; dropping a file there again later applies it at the next boot.
maskwatch.yaml is left alone: the service reads it there at every start.

It also grows the root partition (the last one) to the end of the card and its ext4 file
system with it, while mounted, and makes SSH host keys when there are none (the image ships
without, so no two cards share them). Uses the Python standard library only: this runs
before maskwatch is configured and must not depend on it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
MBR_TABLE = 0x1BE  # the four 16-byte partition entries start here in sector 0
MBR_SIGNATURE = b"\x55\xaa"
# Growing by less than this is not worth a resize (SD cards differ by a few sectors).
MIN_GROWTH_SECTORS = 16 * 1024 * 1024 // SECTOR
HOSTNAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USER_GROUPS = ("sudo", "video", "adm", "systemd-journal", "plugdev")
# What Raspberry Pi Imager appends to cmdline.txt to run its firstrun.sh once.
IMAGER_ARGS = re.compile(r"\s+systemd\.(run|run_success_action|run_failure_action|unit)=\S+")


class SetupError(ValueError):
    """A set-up file is malformed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Partition:
    """One primary MBR partition entry (number 1..4), in 512-byte sectors."""

    number: int
    type_id: int
    start: int
    size: int

    @property
    def end(self) -> int:
        """The first sector after the partition."""
        return self.start + self.size


def read_mbr(disk: Path) -> list[Partition]:
    """The non-empty primary partitions of an MBR-partitioned disk or image file."""
    with disk.open("rb") as f:
        sector = f.read(SECTOR)
    if len(sector) < SECTOR or sector[510:512] != MBR_SIGNATURE:
        raise SetupError(f"{disk}: no MBR partition table")
    parts = []
    for i in range(4):
        entry = sector[MBR_TABLE + 16 * i : MBR_TABLE + 16 * (i + 1)]
        type_id = entry[4]
        start, size = struct.unpack_from("<II", entry, 8)
        if type_id != 0 and size > 0:
            parts.append(Partition(i + 1, type_id, start, size))
    return parts


def write_mbr(disk: Path, parts: list[Partition], disk_id: int, boot: int = 1) -> None:
    """Write sector 0 of disk as a DOS table with these partitions (CHS fields unused: LBA only).

    Only the table and signature are written; the rest of sector 0 (no boot code on a Pi)
    is zero. `boot` is the number of the partition flagged active.
    """
    sector = bytearray(SECTOR)
    struct.pack_into("<I", sector, 440, disk_id)
    for p in parts:
        # CHS 0xFFFFFE: "use LBA", as partitioning tools write for large disks.
        entry = struct.pack(
            "<B3sB3sII", 0x80 if p.number == boot else 0, b"\xfe\xff\xff", p.type_id,
            b"\xfe\xff\xff", p.start, p.size,
        )  # fmt: skip
        sector[MBR_TABLE + 16 * (p.number - 1) : MBR_TABLE + 16 * p.number] = entry
    sector[510:512] = MBR_SIGNATURE
    fd = os.open(disk, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(sector), 0)
        os.fsync(fd)  # the table must be on the card before the kernel is told
    finally:
        os.close(fd)


def grown_partition(parts: list[Partition], number: int, disk_sectors: int) -> Partition | None:
    """Partition `number` grown to the end of the disk, or None when it already nearly is or
    is not the last partition (then growing it would overwrite another)."""
    target = next((p for p in parts if p.number == number), None)
    if target is None or any(p.start > target.start for p in parts):
        return None
    if disk_sectors - target.end < MIN_GROWTH_SECTORS:
        return None
    return Partition(target.number, target.type_id, target.start, disk_sectors - target.start)


def grow_in_table(disk: Path, number: int, disk_sectors: int) -> Partition | None:
    """Rewrite the MBR so partition `number` reaches the end of the disk; the grown entry, or
    None when nothing changed."""
    parts = read_mbr(disk)
    grown = grown_partition(parts, number, disk_sectors)
    if grown is None:
        return None
    with disk.open("rb") as f:
        disk_id = struct.unpack("<I", f.read(SECTOR)[440:444])[0]
    boot = next((p.number for p in parts if p.number == 1), 1)
    write_mbr(disk, [grown if p.number == number else p for p in parts], disk_id, boot)
    return grown


def parse_hostname(text: str, name: str = "hostname") -> str:
    """The host name in a `hostname` file: one RFC 1123 label, folded to lower case."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise SetupError(f"{name}: expected one line with the host name, got {len(lines)}")
    host = lines[0].lower()
    if not HOSTNAME_RE.fullmatch(host):
        raise SetupError(f"{name}:1: {lines[0]!r} is not a host name (a-z, 0-9, '-', <= 63)")
    return host


def parse_userconf(text: str, name: str = "userconf.txt") -> tuple[str, str]:
    """(user, password hash) from Raspberry Pi OS's userconf.txt format `name:hash`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1 or ":" not in lines[0]:
        raise SetupError(f"{name}: expected one line 'name:hash' (hash: openssl passwd -6)")
    user, pw_hash = lines[0].split(":", 1)
    if not USER_RE.fullmatch(user) or user == "root":
        raise SetupError(f"{name}:1: {user!r} is not a user name this image creates")
    # crypt(3) hashes start with $id$; "*" or "!" leaves the password locked (keys only).
    if not (pw_hash.startswith("$") or pw_hash in ("*", "!")) or ":" in pw_hash:
        raise SetupError(f"{name}:1: the password must be a crypt hash, e.g. openssl passwd -6")
    return user, pw_hash


def parse_authorized_keys(text: str, name: str = "authorized_keys") -> list[str]:
    """The key lines of an authorized_keys file (comments and blanks dropped)."""
    keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for number, key in enumerate(keys, 1):
        if not re.search(r"(^|\s)(ssh-|ecdsa-|sk-)\S+ [A-Za-z0-9+/=]+", key):
            raise SetupError(f"{name}:{number}: not an SSH public key line")
    if not keys:
        raise SetupError(f"{name}: no key in the file")
    return keys


def strip_imager_args(cmdline: str) -> str:
    """cmdline.txt without the systemd.run / systemd.unit arguments Imager adds."""
    return IMAGER_ARGS.sub("", " " + cmdline.strip()).strip() + "\n"


class FirstBoot:
    """Applies the set-up files of `boot` to the system under `root` ("/" on the device)."""

    def __init__(self, boot: Path, root: Path = Path("/")) -> None:
        """Nothing is read or changed yet."""
        self.boot = boot
        self.root = root

    def log(self, message: str) -> None:
        """One line to the journal (stdout of the unit)."""
        print(f"maskwatch-firstboot: {message}", flush=True)

    def run(self, argv: list[str] | None = None) -> int:
        """Apply every step; a bad file is reported and skipped, the others still apply."""
        status = 0
        steps = (self.undo_imager, self.set_hostname, self.set_user, self.set_keys,
                 self.set_wifi, self.ssh_host_keys, self.grow_root)  # fmt: skip
        for step in steps:
            try:
                step()
            except (SetupError, OSError, subprocess.CalledProcessError) as exc:
                self.log(f"{step.__name__.replace('_', ' ')}: {exc}")
                status = 1
        return status

    def _take(self, name: str) -> str | None:
        """The text of a set-up file, or None when absent (not removed yet)."""
        path = self.boot / name
        if not path.is_file():
            return None
        return path.read_text(encoding="utf-8-sig", errors="replace")  # Notepad's BOM

    def _done(self, name: str) -> None:
        """Remove an applied set-up file from the boot partition."""
        (self.boot / name).unlink()
        self.log(f"applied and removed {self.boot / name}")

    def _run(self, *cmd: str, stdin: str | None = None) -> None:
        subprocess.run(list(cmd), check=True, input=stdin, text=True)

    def undo_imager(self) -> None:
        """Take Imager's Raspberry Pi OS customisation back out (see the module docstring)."""
        cmdline = self.boot / "cmdline.txt"
        text = cmdline.read_text() if cmdline.is_file() else ""
        stripped = strip_imager_args(text) if IMAGER_ARGS.search(" " + text) else text
        firstrun = self.boot / "firstrun.sh"
        if stripped == text and not firstrun.exists():
            return
        cmdline.write_text(stripped)
        firstrun.unlink(missing_ok=True)
        self.log("Raspberry Pi Imager's OS customisation is for Raspberry Pi OS and was not "
                 f"applied; put the set-up files on the boot partition instead (see "
                 f"{self.boot / 'maskwatch-setup.txt'})")  # fmt: skip
        if self.root == Path("/") and IMAGER_ARGS.search(" " + Path("/proc/cmdline").read_text()):
            self.log("rebooting into the normal boot")
            self._run("systemctl", "--no-block", "reboot")

    def set_hostname(self) -> None:
        """hostname -> /etc/hostname, /etc/hosts and the running kernel."""
        text = self._take("hostname")
        if text is None:
            return
        host = parse_hostname(text, str(self.boot / "hostname"))
        (self.root / "etc" / "hostname").write_text(host + "\n")
        hosts = self.root / "etc" / "hosts"
        lines = [ln for ln in hosts.read_text().splitlines() if not ln.startswith("127.0.1.1")]
        hosts.write_text("\n".join([*lines, f"127.0.1.1\t{host}"]) + "\n")
        if self.root == Path("/"):
            self._run("hostname", host)
        self._done("hostname")

    def set_user(self) -> None:
        """userconf.txt -> a login user in the admin groups, with that password hash."""
        text = self._take("userconf.txt")
        if text is None:
            return
        user, pw_hash = parse_userconf(text, str(self.boot / "userconf.txt"))
        if subprocess.run(["getent", "passwd", user], capture_output=True).returncode != 0:
            self._run("useradd", "--create-home", "--shell", "/bin/bash", user)
        groups = [g for g in USER_GROUPS
                  if subprocess.run(["getent", "group", g], capture_output=True).returncode == 0]
        self._run("usermod", "--append", "--groups", ",".join(groups), user)
        self._run("chpasswd", "--encrypted", stdin=f"{user}:{pw_hash}\n")
        (self.root / "var" / "lib" / "maskwatch-image").mkdir(parents=True, exist_ok=True)
        (self.root / "var" / "lib" / "maskwatch-image" / "user").write_text(user + "\n")
        self._done("userconf.txt")

    def _login_user(self) -> str:
        """The user made from userconf.txt (now or at an earlier boot), else root."""
        saved = self.root / "var" / "lib" / "maskwatch-image" / "user"
        return saved.read_text().strip() if saved.is_file() else "root"

    def set_keys(self) -> None:
        """authorized_keys -> ~/.ssh/authorized_keys of the login user (appended, no repeats)."""
        text = self._take("authorized_keys")
        if text is None:
            return
        keys = parse_authorized_keys(text, str(self.boot / "authorized_keys"))
        user = self._login_user()
        home = Path(subprocess.run(["getent", "passwd", user], capture_output=True, text=True,
                                   check=True).stdout.split(":")[5])  # fmt: skip
        ssh = self.root / home.relative_to("/") / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        target = ssh / "authorized_keys"
        old = target.read_text().splitlines() if target.is_file() else []
        target.write_text("\n".join([*old, *(k for k in keys if k not in old)]) + "\n")
        target.chmod(0o600)
        shutil.chown(ssh, user, user)
        shutil.chown(target, user, user)
        self._done("authorized_keys")

    def set_wifi(self) -> None:
        """wpa_supplicant.conf -> wpa_supplicant@wlan0, which systemd-networkd then uses."""
        text = self._take("wpa_supplicant.conf")
        if text is None:
            return
        if "network={" not in text.replace(" ", ""):
            raise SetupError(f"{self.boot / 'wpa_supplicant.conf'}: no network={{...}} block")
        conf = self.root / "etc" / "wpa_supplicant" / "wpa_supplicant-wlan0.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text.replace("\r\n", "\n"))
        conf.chmod(0o600)  # it holds the Wi-Fi key
        if self.root == Path("/"):
            self._run("systemctl", "enable", "--no-block", "--now", "wpa_supplicant@wlan0.service")
        self._done("wpa_supplicant.conf")

    def ssh_host_keys(self) -> None:
        """Host keys of this card's own, made once (the image has none)."""
        if not list((self.root / "etc" / "ssh").glob("ssh_host_*_key")) and self.root == Path("/"):
            self._run("ssh-keygen", "-A")
            self.log("made the SSH host keys")

    def grow_root(self) -> None:
        """Grow the root partition and its ext4 file system to the end of the card."""
        if self.root != Path("/"):
            return
        dev = os.stat("/").st_dev
        sys_part = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
        if not (sys_part / "partition").is_file():
            return  # not on a partition (a test VM booted some other way)
        number = int((sys_part / "partition").read_text())
        disk_name = sys_part.parent.name
        disk = Path("/dev") / disk_name
        disk_sectors = int((sys_part.parent / "size").read_text())
        grown = grow_in_table(disk, number, disk_sectors)
        if grown is None:
            return
        # BLKPG resize: the kernel takes the new size of a mounted partition as it is.
        self._run("partx", "--update", "--nr", str(number), str(disk))
        self._run("resize2fs", f"/dev/{sys_part.name}")
        self.log(f"grew /dev/{sys_part.name} to {grown.size * SECTOR // 2**20} MiB")


def main(argv: list[str] | None = None) -> int:
    """maskwatch-firstboot [BOOT_DIR]: apply the set-up files (default /boot/firmware)."""
    args = sys.argv[1:] if argv is None else argv
    boot = Path(args[0]) if args else Path("/boot/firmware")
    return FirstBoot(boot).run()


if __name__ == "__main__":
    sys.exit(main())
