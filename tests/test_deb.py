"""The Debian package: built for amd64 and arm64, installed into a real Debian bookworm root.

`packaging/build_deb.py` builds the package for both architectures; the one for this machine is
installed with dpkg into a bookworm root made by debootstrap (minbase plus python3, systemd and
adduser: what a Raspberry Pi OS Lite image has) and checked from inside with chroot: the
config check, `systemd-analyze verify` of the installed unit, the system user, the detector
running on the shipped model, an edited config surviving a reinstall, and a clean purge.

The root is made once and cached in $MASKWATCH_DEBOOTSTRAP_CACHE (default
~/.cache/maskwatch/bookworm-root); each run works on a copy. Skipped when not on Linux, not
root, or when the Debian mirror ($MASKWATCH_DEBIAN_MIRROR) cannot be reached to make the root.
The tests run in file order and share one installed root; the purge test comes last.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "packaging" / "build_deb.py"
MIRROR = os.environ.get("MASKWATCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(
    os.environ.get(
        "MASKWATCH_DEBOOTSTRAP_CACHE", Path.home() / ".cache" / "maskwatch" / "bookworm-root"
    )
)
DEBOOTSTRAP_ARGS = ["--variant=minbase", "--include=python3,systemd,adduser", "bookworm"]
# Written into the cached root once debootstrap succeeded; other contents mean another recipe.
CACHE_MARKER = ".maskwatch-debootstrap"
CONFIG = "/etc/maskwatch/maskwatch.yaml"
UNIT = "/lib/systemd/system/maskwatch.service"
WANTS_LINK = "etc/systemd/system/multi-user.target.wants/maskwatch.service"
# A clean environment for commands in the root: the host's PATH points into the venv.
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Debian packages: Linux only"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed"),
]


def host_arch() -> str:
    """This machine's Debian architecture."""
    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """maskwatch_<version>_<arch>.deb for amd64 and arm64, built by packaging/build_deb.py.

    Deleted after the module: together they are a quarter of a gigabyte.
    """
    out = tmp_path_factory.mktemp("dist")
    built: dict[str, Path] = {}
    for arch in ELF_MACHINE:
        done = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT), "--arch", arch, "--out", str(out),
             "--work", str(out / "work")],
            capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        built[arch] = Path(done.stdout.strip().splitlines()[-1])
    yield built
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(debs: dict[str, Path]) -> Path:
    """The package for this machine's architecture."""
    arch = host_arch()
    if arch not in debs:
        pytest.skip(f"no package is built for this machine's architecture {arch}")
    return debs[arch]


def ensure_debootstrap() -> str:
    """The debootstrap command (`make system-deps` installs it; a test never installs)."""
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if found is None:
        pytest.skip("debootstrap is not installed (make system-deps installs it)")
    return found


def mirror_reachable() -> str | None:
    """None when the Debian mirror answers, else why not."""
    try:
        with urllib.request.urlopen(f"{MIRROR}/dists/bookworm/Release", timeout=30) as reply:
            reply.read(64)
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def bookworm_cache() -> Path:
    """A pristine Debian bookworm root, made once by debootstrap and kept in CACHE."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, chroot, mount)")
    recipe = " ".join(DEBOOTSTRAP_ARGS) + "\n"
    marker = CACHE / CACHE_MARKER
    if marker.is_file() and marker.read_text() == recipe:
        return CACHE
    debootstrap = ensure_debootstrap()
    why = mirror_reachable()
    if why is not None:
        pytest.skip(f"cannot reach the Debian mirror {MIRROR} to make a bookworm root: {why}")
    partial = CACHE.with_name(CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [debootstrap, *DEBOOTSTRAP_ARGS, str(partial), MIRROR],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if done.returncode != 0:
        log = done.stdout[-2000:] + done.stderr[-2000:]
        if "Couldn't download" in log or "Failed getting release" in log:
            pytest.skip(f"debootstrap could not download from {MIRROR}: {log[-300:]}")
        pytest.fail(f"debootstrap failed:\n{log}")
    (partial / CACHE_MARKER).write_text(recipe)
    shutil.rmtree(CACHE, ignore_errors=True)
    partial.rename(CACHE)
    return CACHE


def is_mounted(path: Path) -> bool:
    """Whether something is mounted exactly at path."""
    target = str(path.resolve())
    return any(line.split()[1] == target for line in Path("/proc/mounts").read_text().splitlines())


@pytest.fixture(scope="module")
def root(bookworm_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throw-away copy of the cached root with /proc mounted (always unmounted after)."""
    copy = tmp_path_factory.mktemp("bookworm") / "root"
    subprocess.run(["cp", "-a", str(bookworm_cache), str(copy)], check=True)
    proc = copy / "proc"
    mounted = subprocess.run(["mount", "-t", "proc", "proc", str(proc)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        shutil.rmtree(copy, ignore_errors=True)
        pytest.skip(f"cannot mount /proc in the chroot: {mounted.stderr.strip()}")
    try:
        yield copy
    finally:
        if subprocess.run(["umount", str(proc)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(proc)], capture_output=True)
        # Never delete through a mount point that is still there.
        if not is_mounted(proc):
            shutil.rmtree(copy, ignore_errors=True)


def chroot(root: Path, *cmd: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run a command inside the root; stdin is empty, so a dpkg prompt fails instead of hanging."""
    return subprocess.run(
        ["chroot", str(root), *cmd], capture_output=True, text=True, env=CHROOT_ENV,
        stdin=subprocess.DEVNULL, timeout=timeout,
    )  # fmt: skip


def dpkg_install(root: Path, deb: Path) -> None:
    """dpkg -i the package inside the root, asserting it succeeds."""
    shutil.copyfile(deb, root / "tmp" / deb.name)
    done = chroot(root, "dpkg", "-i", f"/tmp/{deb.name}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(root: Path, deb: Path) -> Path:
    """The root with the package installed by dpkg -i."""
    dpkg_install(root, deb)
    return root


@pytest.mark.parametrize("arch", list(ELF_MACHINE))
def test_package_has_control_conffile_files_and_binaries_for_its_arch(
    debs: dict[str, Path], arch: str
) -> None:
    deb = debs[arch]
    assert deb.name.startswith("maskwatch_") and deb.name.endswith(f"_{arch}.deb")
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Architecture", "Depends"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Package: maskwatch\n" in fields
    assert f"Architecture: {arch}\n" in fields
    assert "python3 (>= 3.11)" in fields and "adduser" in fields, fields
    assert "mosquitto" not in fields
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert conffiles.split() == [CONFIG]

    # One pass over the data archive: the paths, and the machine of every shared object.
    names: set[str] = set()
    machines: dict[str, int] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
            for member in tar:
                names.add(member.name.removeprefix("."))
                if member.isfile() and ".so" in Path(member.name).name:
                    head = tar.extractfile(member).read(20)  # type: ignore[union-attr]
                    if head[:4] == b"\x7fELF":
                        machines[member.name] = struct.unpack_from("<H", head, 18)[0]
    for path in (CONFIG, UNIT, "/usr/bin/maskwatch", "/opt/maskwatch/lib/edge/__main__.py",
                 "/usr/share/maskwatch/models/head_detector_int8.tflite",
                 "/usr/share/maskwatch/models/labels.txt"):  # fmt: skip
        assert path in names, path
    assert any(n.startswith("/opt/maskwatch/lib/ai_edge_litert/") for n in names)
    # The models ship once, in /usr/share/maskwatch/models, not also as the wheel's package data.
    assert [n for n in names if n.startswith("/opt/maskwatch/lib/edge/models")] == []
    # numpy, scipy, opencv, pydantic-core, the LiteRT interpreter: all built for this arch.
    assert len(machines) > 20, sorted(machines)
    wrong = {name: m for name, m in machines.items() if m != ELF_MACHINE[arch]}
    assert not wrong, wrong


def test_installed_config_passes_check_config(installed: Path) -> None:
    done = chroot(installed, "maskwatch", "check-config", CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CONFIG}: ok" in done.stdout
    # The same command rejects a broken file, so the 0 above means the check ran.
    (installed / "tmp" / "bad.yaml").write_text("cameras:\n  - name: door\n    bogus: 1\n")
    bad = chroot(installed, "maskwatch", "check-config", "/tmp/bad.yaml")
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "/tmp/bad.yaml:3: cameras.0.bogus:" in bad.stderr


def test_installed_unit_passes_systemd_analyze_verify(installed: Path) -> None:
    done = chroot(installed, "systemd-analyze", "verify", UNIT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "maskwatch.service" not in done.stderr, done.stderr


def test_postinst_created_the_system_user_in_video_and_plugdev(installed: Path) -> None:
    passwd = chroot(installed, "getent", "passwd", "maskwatch")
    assert passwd.returncode == 0, "no maskwatch user"
    _name, _pw, uid, _gid, _gecos, home, shell = passwd.stdout.strip().split(":")
    assert int(uid) < 1000, "not a system user"
    assert home == "/var/lib/maskwatch"
    assert shell.endswith("nologin")
    groups = chroot(installed, "id", "-nG", "maskwatch").stdout.split()
    assert {"maskwatch", "video", "plugdev"} <= set(groups), groups


def test_installed_detector_matches_the_checkout_on_the_same_picture(
    installed: Path, tmp_path: Path
) -> None:
    # Threshold 0 keeps every candidate, so any picture gives detections to compare.
    rng = np.random.default_rng(5)
    picture = cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (9, 9), 0)
    cv2.circle(picture, (320, 150), 60, (170, 190, 220), -1)
    assert cv2.imwrite(str(installed / "tmp" / "frame.png"), picture)
    (installed / "tmp" / "images.txt").write_text("/tmp/frame.png\n")
    args = ["detect", "--json", "--score-threshold", "0", "--image-list"]
    inside = chroot(installed, "maskwatch", *args, "/tmp/images.txt")
    assert inside.returncode == 0, inside.stdout + inside.stderr

    shutil.copyfile(installed / "tmp" / "frame.png", tmp_path / "frame.png")
    (tmp_path / "images.txt").write_text(f"{tmp_path / 'frame.png'}\n")
    here = subprocess.run([sys.executable, "-m", "edge", *args, str(tmp_path / "images.txt")],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert here.returncode == 0, here.stderr
    got = json.loads(inside.stdout)["detections"]
    want = json.loads(here.stdout)["detections"]
    assert want, "the checkout found no candidates at threshold 0"
    assert len(got) == len(want)
    for g, w in zip(got[:5], want[:5], strict=True):
        assert g["label"] == w["label"]
        assert g["score"] == pytest.approx(w["score"], abs=0.02)
        assert g["box"] == pytest.approx(w["box"], abs=2.0)


def test_edited_config_survives_a_reinstall(installed: Path, deb: Path) -> None:
    config = installed / CONFIG.lstrip("/")
    edited = config.read_text().replace("level: INFO", "level: DEBUG") + "# edited on site\n"
    assert edited != config.read_text()
    config.write_text(edited)
    dpkg_install(installed, deb)
    assert config.read_text() == edited
    assert not list(config.parent.glob("maskwatch.yaml.dpkg-*"))
    assert chroot(installed, "maskwatch", "check-config", CONFIG).returncode == 0


def test_purge_disables_the_service_and_removes_its_files(installed: Path) -> None:
    enable = chroot(installed, "systemctl", "enable", "maskwatch.service")
    assert enable.returncode == 0, enable.stderr
    assert (installed / WANTS_LINK).is_symlink()
    state = installed / "var" / "lib" / "maskwatch"
    state.mkdir(exist_ok=True)
    (state / "outbox.sqlite").write_bytes(b"")
    done = chroot(installed, "dpkg", "--purge", "maskwatch")
    assert done.returncode == 0, done.stdout + done.stderr
    for leftover in ("opt/maskwatch", "usr/bin/maskwatch", UNIT.lstrip("/"), "etc/maskwatch",
                     "var/lib/maskwatch", WANTS_LINK):  # fmt: skip
        assert not (installed / leftover).exists() and not (installed / leftover).is_symlink(), (
            leftover
        )
    # Debian policy: the system user stays after a purge.
    assert chroot(installed, "getent", "passwd", "maskwatch").returncode == 0
