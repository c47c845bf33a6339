"""Build dist/maskwatch-<version>-rpi-arm64.img.xz: a Raspberry Pi SD-card image with maskwatch.

Debian bookworm arm64, as Debian's own Raspberry Pi images (salsa raspi-team/image-specs) are
made, with Debian's packages only:

    mmdebstrap (arm64, run through qemu-user-static and binfmt_misc) installs
        linux-image-arm64 + raspi-firmware (boots a Pi 4 / Pi 400 / CM4: see README),
        firmware-brcm80211 + wpasupplicant (the Pi's Wi-Fi), openssh-server,
        systemd-networkd/resolved/timesyncd, python3, mosquitto (unless --no-mosquitto)
        and the maskwatch .deb (packaging/build_deb.py --arch arm64);
    packaging/image/customize.sh adds the first-boot step, the journald cap, fstab and the
        config on the boot partition, and enables the services;
    the FAT boot partition is made by mkfs.vfat + mcopy, the ext4 root by `mkfs.ext4 -d`, and
        both are written into one image file behind an MBR written here: no loop devices,
        no mounts, no kpartx.

Layout: MBR, partition 1 FAT32 "RASPIFIRM" (/boot/firmware: firmware, kernel, initrd,
config.txt, cmdline.txt, maskwatch.yaml) from 4 MiB, partition 2 ext4 "RASPIROOT" right after
it, sized to its contents plus some room; it grows to the card's size at first boot.

Usage: python packaging/image/build_image.py [--deb DEB] [--out dist] [--work build/image]
Needs root, mmdebstrap, qemu-user-static with binfmt_misc (mounted here when it is not),
dosfstools, mtools, e2fsprogs, xz-utils, and a Debian mirror.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import build_deb  # noqa: E402  (packaging/build_deb.py: the .deb and the version)
from firstboot import SECTOR, Partition, write_mbr  # noqa: E402

SUITE = "bookworm"
# Unset: mmdebstrap uses deb.debian.org and, for a stable suite, adds -updates and -security
# (the image gets the current kernel and fixes). Set: that mirror alone, e.g. a local cache.
MIRROR = os.environ.get("MASKWATCH_DEBIAN_MIRROR", "")
MIB = 2**20
FIRST_PARTITION_MIB = 4  # as Debian's raspi images: room for the MBR, aligned for SD cards
BOOT_MIB = 256  # firmware ~20 MiB, kernel ~30 MiB, initrd ~30 MiB; room for one upgrade's copy
ROOT_SLACK = 1.15  # ext4 metadata and a little room before the first-boot grow
ROOT_EXTRA_MIB = 96
FAT_TYPE = 0x0C  # W95 FAT32 (LBA): what the Pi's boot ROM looks for
LINUX_TYPE = 0x83
BINFMT = Path("/proc/sys/fs/binfmt_misc")
PACKAGES = [
    "systemd-sysv", "udev", "kmod", "dbus", "iproute2", "tzdata", "ca-certificates", "less",
    "sudo", "linux-image-arm64", "raspi-firmware", "firmware-brcm80211", "wireless-regdb",
    "wpasupplicant", "openssh-server", "systemd-timesyncd", "systemd-resolved", "dosfstools",
    "python3", "adduser",
]  # fmt: skip
# Size: no manual pages, translations or documentation beyond the copyright files.
DPKG_OPTS = [
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias", "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/info/*",
    # maskwatch's own README and model card: the unit's Documentation= points there.
    "path-include=/usr/share/doc/maskwatch/*",
]  # fmt: skip


class BuildError(RuntimeError):
    """The image cannot be built; the message says why."""


def run(cmd: list[str], **kwargs: object) -> None:
    """Run a build step, echoing it."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def need_tools() -> None:
    """Fail early, naming the Debian packages that provide what is missing."""
    tools = {"mmdebstrap": "mmdebstrap", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
             "mkfs.ext4": "e2fsprogs", "xz": "xz-utils", "dpkg-deb": "dpkg"}  # fmt: skip
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if missing:
        raise BuildError(f"missing tools: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        raise BuildError("needs root (mmdebstrap --mode=root, chroot)")


def ensure_arm64_binfmt() -> None:
    """Make arm64 binaries run here through qemu-user-static, mounting binfmt_misc if needed.

    The F (fix binary) flag of Debian's qemu-user-static registration makes it work inside
    the chroot too, where the interpreter's path does not exist.
    """
    if os.uname().machine == "aarch64":
        return  # an arm64 build machine runs them natively
    if not (BINFMT / "status").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if not (BINFMT / "qemu-aarch64").exists() and shutil.which("update-binfmts"):
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or "enabled" not in entry.read_text():
        raise BuildError(
            "arm64 binaries cannot run here: apt-get install qemu-user-static binfmt-support"
        )


def mmdebstrap(root: Path, deb: Path, mosquitto: bool) -> None:
    """Install the image's Debian root (packages, the .deb, customize.sh) into root."""
    packages = PACKAGES + (["mosquitto"] if mosquitto else [])
    env = dict(os.environ, MASKWATCH_IMAGE_MOSQUITTO="1" if mosquitto else "0")
    cmd = [
        "mmdebstrap", "--mode=root", "--arch=arm64", "--variant=minbase",
        "--components=main non-free-firmware",
        f"--include={','.join(packages)}",
        f"--include={deb.resolve()}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount",
        *(f"--dpkgopt={opt}" for opt in DPKG_OPTS),
        # raspi-firmware fills /boot/firmware, the FAT partition's contents.
        '--setup-hook=mkdir -p "$1/boot/firmware"',
        # Under qemu-user one initramfs takes minutes, and the kernel's postinst and
        # initramfs-tools' trigger would each make one: a stub stands in for update-initramfs
        # until customize.sh puts the real one back and makes the initramfs once.
        '--essential-hook=chroot "$1" dpkg-divert --quiet --local --rename '
        '--divert /usr/sbin/update-initramfs.real --add /usr/sbin/update-initramfs',
        '--essential-hook=printf "#!/bin/sh\\nexit 0\\n" > "$1/usr/sbin/update-initramfs"'
        ' && chmod 755 "$1/usr/sbin/update-initramfs"',
        f'--customize-hook={HERE / "customize.sh"} "$1"',
        SUITE, str(root), *([MIRROR] if MIRROR else []),
    ]  # fmt: skip
    run(cmd, env=env)


def tree_bytes(path: Path) -> int:
    """Bytes the files below path take, counted in 4 KiB blocks as ext4 stores them."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*filenames, *dirnames]:
            st = os.lstat(os.path.join(dirpath, name))
            total += (st.st_size + 4095) // 4096 * 4096
    return total


def make_fat(content: Path, image: Path, size_mib: int) -> None:
    """A FAT32 file system labelled RASPIFIRM holding content's files."""
    image.unlink(missing_ok=True)
    run(["mkfs.vfat", "-F", "32", "-n", "RASPIFIRM", "-C", str(image), str(size_mib * 1024)])
    entries = sorted(str(p) for p in content.iterdir())
    run(["mcopy", "-s", "-p", "-m", "-i", str(image), *entries, "::/"])


def make_ext4(root: Path, image: Path) -> int:
    """An ext4 file system labelled RASPIROOT made from root's tree; its size in MiB."""
    size_mib = int(tree_bytes(root) * ROOT_SLACK / MIB) + ROOT_EXTRA_MIB
    image.unlink(missing_ok=True)
    # 1 % reserved blocks (not 5 %): the card is the device's own; the grow adds plenty.
    run(["mkfs.ext4", "-q", "-F", "-L", "RASPIROOT", "-m", "1", "-d", str(root), str(image),
         f"{size_mib}M"])  # fmt: skip
    return size_mib


def copy_sparse(src: Path, dst_fd: int, offset: int) -> None:
    """Copy src into dst_fd at offset, skipping all-zero blocks so the image stays sparse."""
    block = 1 * MIB
    zero = bytes(block)
    with src.open("rb") as f:
        position = offset
        while chunk := f.read(block):
            if chunk != zero[: len(chunk)]:
                os.pwrite(dst_fd, chunk, position)
            position += len(chunk)


def assemble(fat: Path, ext4: Path, image: Path, disk_id: int) -> list[Partition]:
    """The disk image: MBR, the FAT partition at 4 MiB, the ext4 partition after it."""
    fat_sectors = fat.stat().st_size // SECTOR
    root_sectors = ext4.stat().st_size // SECTOR
    boot = Partition(1, FAT_TYPE, FIRST_PARTITION_MIB * MIB // SECTOR, fat_sectors)
    root = Partition(2, LINUX_TYPE, boot.end, root_sectors)
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(root.end * SECTOR)
    write_mbr(image, [boot, root], disk_id, boot=1)
    fd = os.open(image, os.O_WRONLY)
    try:
        copy_sparse(fat, fd, boot.start * SECTOR)
        copy_sparse(ext4, fd, root.start * SECTOR)
        os.fsync(fd)
    finally:
        os.close(fd)
    return [boot, root]


def build(deb: Path | None, out: Path, work: Path, mosquitto: bool, compress: bool) -> Path:
    """Build the image; returns the .img.xz path (or the .img with compress=False)."""
    need_tools()
    ensure_arm64_binfmt()
    version = build_deb.project_version()
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if deb is None:
        deb = build_deb.build("arm64", work / "deb-out", work / "deb")
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    mmdebstrap(root, deb, mosquitto)
    fat_content = work / "firmware"
    shutil.rmtree(fat_content, ignore_errors=True)
    (root / "boot" / "firmware").rename(fat_content)
    (root / "boot" / "firmware").mkdir()  # the mount point stays in the root
    fat = work / "boot.vfat"
    make_fat(fat_content, fat, BOOT_MIB)
    ext4 = work / "root.ext4"
    root_mib = make_ext4(root, ext4)
    name = f"maskwatch-{version}-rpi-arm64.img"
    image = work / name
    # A disk id of this build's own: raspi-firmware and fstab use labels, not PARTUUIDs.
    disk_id = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    assemble(fat, ext4, image, disk_id)
    fat.unlink()
    ext4.unlink()
    shutil.rmtree(fat_content)
    print(f"image: {image} ({image.stat().st_size // MIB} MiB: boot {BOOT_MIB} MiB, "
          f"root {root_mib} MiB)", flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if not compress:
        result = out / name
        shutil.copyfile(image, result)
    else:
        result = out / f"{name}.xz"
        with result.open("wb") as dst:
            run(["xz", "-T2", "-6", "-c", str(image)], stdout=dst)
    minutes = (time.monotonic() - started) / 60
    print(f"{result}: {result.stat().st_size // MIB} MiB, built in {minutes:.1f} min", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: build the image."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help="an arm64 maskwatch .deb (default: build one)")
    parser.add_argument("--out", type=Path, default=build_deb.REPO / "dist")
    parser.add_argument("--work", type=Path, default=build_deb.REPO / "build" / "image",
                        help="scratch folder; keeps the uncompressed .img for make test-image")
    parser.add_argument("--no-mosquitto", action="store_true",
                        help="leave out the local MQTT broker (for an existing one, e.g. HA's)")
    parser.add_argument("--no-xz", action="store_true", help="write the .img uncompressed")
    args = parser.parse_args(argv)
    try:
        image = build(args.deb, args.out, args.work, not args.no_mosquitto, not args.no_xz)
    except (BuildError, build_deb.BuildError) as exc:
        print(f"build_image: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"build_image: {' '.join(map(str, exc.cmd))} failed with status {exc.returncode}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
