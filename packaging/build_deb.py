"""Build dist/maskwatch_<version>_<arch>.deb for Debian bookworm / Raspberry Pi OS (amd64, arm64).

The package is self-contained: maskwatch and its Python dependencies, as the target's CPython
3.11 binary wheels from PyPI, are installed into /opt/maskwatch/lib at build time, so nothing is
compiled or downloaded on the device and Debian's own Python modules are left alone. Layout:

    /opt/maskwatch/lib/                 maskwatch, numpy, opencv, scipy, ai-edge-litert, ...
    /usr/bin/maskwatch                  wrapper: PYTHONPATH=/opt/maskwatch/lib python3 -m edge
    /usr/share/maskwatch/models/        *.tflite and labels.txt (edge.config.detector looks here;
                                        the wheel's own copy is left out of /opt/maskwatch/lib)
    /usr/share/maskwatch/config-schema.json
    /lib/systemd/system/maskwatch.service   systemd/maskwatch.service, unchanged
    /etc/maskwatch/maskwatch.yaml       configs/maskwatch.yaml, a conffile
    /usr/share/doc/maskwatch/           README.md, MODEL_CARD.md, copyright

The unit is shipped as it is in the repository (its ExecStart already runs /usr/bin/maskwatch);
the build fails if that ever changes rather than keeping a second copy. The one substitution made
is in the default config: its `$schema=` comment points at the installed schema instead of
../docs/config-schema.json.

Usage: python packaging/build_deb.py [--arch amd64|arm64] [--out dist]
Needs dpkg-deb and pip (PyPI access, or wheels in pip's cache); no root.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PACKAGE = "maskwatch"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3; the wheels' extension modules are cp311
# Debian architecture -> wheel platform machine.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
# Bookworm's glibc: wheels built for any manylinux up to this run on the target.
TARGET_GLIBC = (2, 36)
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
MAINTAINER = "maskwatch maintainers <maskwatch@localhost>"
UNIT_EXEC = "/usr/bin/maskwatch"
SCHEMA_INSTALLED = "/usr/share/maskwatch/config-schema.json"
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")


class BuildError(RuntimeError):
    """The package cannot be built; the message says why."""


def project_version() -> str:
    """The version in pyproject.toml as a Debian version (PEP 440 pre-releases sort before)."""
    import tomllib  # Python >= 3.11, which the build needs anyway (the target's is 3.11)

    with (REPO / "pyproject.toml").open("rb") as f:
        version = str(tomllib.load(f)["project"]["version"])
    # 1.2.0rc1 -> 1.2.0~rc1, so that dpkg orders it before 1.2.0 as pip does.
    return re.sub(r"(\d)\.?(a|b|rc|dev)(\d*)$", r"\1~\2\3", version)


def host_arch() -> str:
    """The build machine's Debian architecture."""
    if shutil.which("dpkg"):
        done = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()
    machine = os.uname().machine
    for arch, wheel_machine in MACHINES.items():
        if machine == wheel_machine:
            return arch
    raise BuildError(f"unsupported build machine {machine}: pass --arch amd64 or --arch arm64")


def platform_args(arch: str) -> list[str]:
    """pip --platform flags for every manylinux tag the target's glibc accepts.

    pip does not expand manylinux_2_X to older tags by itself, so each one is listed.
    """
    machine = MACHINES[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, TARGET_GLIBC[1] + 1)]
    tags += [f"{legacy}_{machine}" for legacy in LEGACY_MANYLINUX]
    args: list[str] = []
    for tag in tags:
        args += ["--platform", tag]
    return args


def run(cmd: list[str], **kwargs: object) -> None:
    """Run a build step, echoing it; a failure stops the build with the step's output."""
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def build_wheel(work: Path) -> Path:
    """maskwatch's own (pure Python) wheel, built from the checkout."""
    out = work / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)])
    wheels = sorted(out.glob(f"{PACKAGE}-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one maskwatch wheel in {out}, found {wheels}")
    return wheels[0]


def install_python_tree(wheel: Path, lib: Path, arch: str) -> None:
    """maskwatch[litert] and its dependencies as the target's binary wheels, into lib."""
    run(
        [
            sys.executable, "-m", "pip", "install", "-q",
            "--target", str(lib),
            "--only-binary=:all:",
            "--python-version", PYTHON_VERSION,
            "--implementation", "cp",
            "--abi", "cp" + PYTHON_VERSION.replace(".", ""),
            *platform_args(arch),
            "--no-compile",  # postinst byte-compiles with the device's own python3
            "--no-warn-script-location",
            f"{wheel}[litert]",
        ]
    )  # fmt: skip
    # pip's console script carries the build machine's interpreter path; /usr/bin/maskwatch
    # replaces it.
    shutil.rmtree(lib / "bin", ignore_errors=True)
    # The wheel carries the models as package data; this package keeps them in
    # /usr/share/maskwatch/models instead (edge.config.detector looks there when the installed
    # package has none), so they are not shipped twice.
    shutil.rmtree(lib / "edge" / "models", ignore_errors=True)


def wheel_tags(lib: Path) -> dict[str, list[str]]:
    """Each installed distribution's wheel tags, from its .dist-info/WHEEL file."""
    tags: dict[str, list[str]] = {}
    for wheel_file in sorted(lib.glob("*.dist-info/WHEEL")):
        lines = wheel_file.read_text().splitlines()
        tags[wheel_file.parent.name] = [
            ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Tag:")
        ]
    return tags


def platform_glibc(platform: str) -> tuple[int, int] | None:
    """The glibc a manylinux platform tag needs, None for a platform-independent tag."""
    if platform == "any":
        return None
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", platform)
    if found:
        return int(found.group(1)), int(found.group(2))
    for legacy, glibc in LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            return glibc
    raise BuildError(f"unexpected wheel platform tag {platform}")


def required_glibc(lib: Path, arch: str) -> tuple[int, int]:
    """The newest glibc any installed wheel needs; also checks every wheel is for arch."""
    machine = MACHINES[arch]
    needed = (2, 17)
    for dist, tags in wheel_tags(lib).items():
        platforms = {tag.split("-")[2] for tag in tags}
        if platforms == {"any"}:
            continue
        wrong = [p for p in platforms if not p.endswith("_" + machine)]
        if wrong:
            raise BuildError(f"{dist} is built for {wrong}, not {machine}")
        # A wheel with several tags runs where the least demanding one does.
        wheel_needs = min(g for p in platforms if (g := platform_glibc(p)) is not None)
        needed = max(needed, wheel_needs)
    return needed


def copy(src: Path, dst: Path, mode: int = 0o644) -> None:
    """Copy one file into the package tree with the given mode."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def packaged_config() -> str:
    """configs/maskwatch.yaml with its schema comment pointing at the installed schema."""
    text = (REPO / "configs" / "maskwatch.yaml").read_text()
    return re.sub(r"(\$schema=)\S+", lambda m: m.group(1) + SCHEMA_INSTALLED, text, count=1)


def packaged_unit() -> str:
    """systemd/maskwatch.service, checked to run the wrapper this package installs."""
    text = (REPO / "systemd" / "maskwatch.service").read_text()
    for line in text.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=")) and UNIT_EXEC not in line:
            raise BuildError(
                f"systemd/maskwatch.service: {line!r} does not run {UNIT_EXEC}, the path this "
                "package installs; update packaging/build_deb.py together with the unit"
            )
    return text


def copyright_text() -> str:
    """debian/copyright-style notice: maskwatch's licence and where the bundled ones are."""
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: maskwatch\n\n"
        "Files: *\n"
        "License: Apache-2.0\n"
        " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n\n"
        "Files: opt/maskwatch/lib/*\n"
        "Comment: Third-party Python packages bundled from PyPI wheels; each one's licence is\n"
        " in its /opt/maskwatch/lib/<name>.dist-info folder.\n"
    )


def stage_tree(root: Path, lib_src: Path) -> None:
    """Every file of the package below root, except DEBIAN/."""
    shutil.copytree(lib_src, root / "opt" / PACKAGE / "lib", symlinks=True)
    copy(HERE / "maskwatch.sh", root / "usr" / "bin" / PACKAGE, 0o755)
    models = root / "usr" / "share" / PACKAGE / "models"
    for model in [*sorted((REPO / "models").glob("*.tflite")), REPO / "models" / "labels.txt"]:
        copy(model, models / model.name)
    schema = REPO / "docs" / "config-schema.json"
    if schema.is_file():
        copy(schema, root / SCHEMA_INSTALLED.lstrip("/"))
    unit = root / "lib" / "systemd" / "system" / f"{PACKAGE}.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(packaged_unit())
    config = root / "etc" / PACKAGE / f"{PACKAGE}.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(packaged_config())
    doc = root / "usr" / "share" / "doc" / PACKAGE
    copy(REPO / "README.md", doc / "README.md")
    copy(REPO / "models" / "MODEL_CARD.md", doc / "MODEL_CARD.md")
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(copyright_text())


def normalise_modes(root: Path) -> None:
    """0755 folders and executables, 0644 other files: wheels and umasks vary."""
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


def installed_size_kib(root: Path) -> int:
    """Installed-Size: the tree's size in KiB, as dpkg-gencontrol counts it."""
    total = 0
    for path in root.rglob("*"):
        if path.is_symlink() or path.is_dir():
            total += 1
        else:
            total += (path.stat().st_size + 1023) // 1024
    return total


def control_text(version: str, arch: str, glibc: tuple[int, int], size_kib: int) -> str:
    """DEBIAN/control."""
    maintainer = MAINTAINER
    if os.environ.get("DEBFULLNAME") and os.environ.get("DEBEMAIL"):
        maintainer = f"{os.environ['DEBFULLNAME']} <{os.environ['DEBEMAIL']}>"
    python_next = f"3.{int(PYTHON_VERSION.split('.')[1]) + 1}"
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {maintainer}\n"
        f"Installed-Size: {size_kib}\n"
        # The bundled extension modules are built for this one CPython minor version.
        f"Depends: python3 (>= {PYTHON_VERSION}), python3 (<< {python_next}), "
        f"libc6 (>= {glibc[0]}.{glibc[1]}), adduser\n"
        "Recommends: systemd\n"
        "Suggests: libedgetpu1-std, mosquitto-clients\n"
        "Section: video\n"
        "Priority: optional\n"
        "Description: count people passing a camera and how many wear a face mask\n"
        " An edge daemon for a Raspberry Pi (optionally with a Coral Edge TPU): it detects and\n"
        " tracks heads in camera frames, decides once per person whether they wear a mask,\n"
        " and publishes each decision and hourly totals over MQTT. No image leaves the device.\n"
        " .\n"
        " Python dependencies are bundled in /opt/maskwatch/lib.\n"
    )


def md5sums_text(root: Path) -> str:
    """DEBIAN/md5sums for every regular file (what debsums and dpkg --verify check)."""
    lines = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "DEBIAN" not in path.parts:
            digest = hashlib.md5(path.read_bytes()).hexdigest()  # md5: dpkg's md5sums format
            lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    return "".join(lines)


def write_debian_dir(root: Path, version: str, arch: str, glibc: tuple[int, int]) -> None:
    """DEBIAN/: control, conffiles, md5sums and the maintainer scripts."""
    debian = root / "DEBIAN"
    debian.mkdir()
    for script in MAINTAINER_SCRIPTS:
        copy(HERE / script, debian / script, 0o755)
    (debian / "conffiles").write_text(f"/etc/{PACKAGE}/{PACKAGE}.yaml\n")
    (debian / "md5sums").write_text(md5sums_text(root))
    size = installed_size_kib(root)
    (debian / "control").write_text(control_text(version, arch, glibc, size))
    for name in ("conffiles", "md5sums", "control"):
        (debian / name).chmod(0o644)


def build(arch: str, out: Path, work: Path) -> Path:
    """Build the .deb for arch into out; returns its path."""
    if arch not in MACHINES:
        raise BuildError(f"--arch must be one of {', '.join(MACHINES)}, not {arch}")
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb not found (apt-get install dpkg)")
    version = project_version()
    work.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(work)
    lib = work / f"lib-{arch}"
    shutil.rmtree(lib, ignore_errors=True)
    install_python_tree(wheel, lib, arch)
    glibc = required_glibc(lib, arch)
    root = work / f"root-{arch}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    stage_tree(root, lib)
    normalise_modes(root)
    write_debian_dir(root, version, arch, glibc)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{PACKAGE}_{version}_{arch}.deb"
    # zstd (dpkg >= 1.21.18, i.e. bookworm): xz saves 20 % but takes 20x the CPU time.
    run(["dpkg-deb", "--root-owner-group", "-Zzstd", "-z9", "--build", str(root), str(deb)])
    shutil.rmtree(root)
    shutil.rmtree(lib)
    return deb


def main(argv: list[str] | None = None) -> int:
    """Command line: build one architecture's package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="amd64 or arm64 (default: this machine's)")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the .deb goes")
    parser.add_argument(
        "--work", type=Path, default=REPO / "build" / "deb", help="scratch folder for the build"
    )
    args = parser.parse_args(argv)
    try:
        deb = build(args.arch or host_arch(), args.out, args.work)
    except BuildError as exc:
        print(f"build_deb: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"build_deb: {' '.join(exc.cmd)} failed with status {exc.returncode}", file=sys.stderr
        )
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
