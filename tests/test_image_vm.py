"""The built SD-card image, booted in qemu-system-aarch64 (-M virt, TCG) against a real broker.

`make test-image` builds the image and runs this module with $MASKWATCH_IMAGE set to the
uncompressed .img; without that variable (plain `make test`) it is skipped: the build takes
minutes and the emulated boots several more. The VM boots the image's own kernel and initrd
(copied off its FAT partition, as a Pi's firmware would load them) with the kernel command
line of its cmdline.txt, from a copy of the image 512 MiB larger than built, as a bigger SD
card is. The only network is QEMU's user-mode one with restrict=on: the host reaches the
guest's SSH through a forwarded loopback port, and the guest reaches the test's mosquitto on
the host loopback through a guestfwd relay (10.0.2.100:1883); nothing else.

Checked in order on one VM (the tests share it and must run in file order):
first boot applies the set-up files from the boot partition (host name, user, SSH key) and
grows the root partition; systemd starts maskwatch (Type=notify, so "active" means READY=1)
on a looping clip on the boot partition; person events and totals reach the broker; a daemon
stopped with SIGSTOP is killed by the watchdog and restarted; a power cut (QEMU quit from its
monitor) with the broker away loses no person the daemon had committed and no count of the
running hour, all delivered after the next boot; a bad config on the boot partition is refused
with file and line in the journal and not restarted in a loop.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MOSQUITTO, Mosquitto, Subscriber, free_port, write_cut

REPO = Path(__file__).resolve().parent.parent
FOOTAGE = REPO.parent / "shared" / "videos" / "one-by-one-person-detection.mp4"
IMAGE = os.environ.get("MASKWATCH_IMAGE", "")
QEMU = "qemu-system-aarch64"
FAT_OFFSET = 4 * 2**20  # packaging/image/build_image.py: FIRST_PARTITION_MIB
GROW_MIB = 512
USER, PASSWORD = "tester", "maskwatch-vm-test"
HOSTNAME = "maskwatch-vm"
DEVICE = "vmtest"
PERSON = f"maskwatch/{DEVICE}/person"
CURRENT = f"maskwatch/{DEVICE}/totals/current"
# The first person of the one-by-one footage (seconds), as tests/test_faults.py cuts it: 33
# frames at 10 fps, which TCG takes through the detector at about one frame a second.
PERSON_SEEN_S = ((6.5, 7.3),)
# TCG emulates every arm64 instruction: boots take minutes, the model's first load a minute.
BOOT_S = 600.0
START_S = 600.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not IMAGE, reason="set MASKWATCH_IMAGE to a built .img (make test-image)"),
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} is not installed"),
    pytest.mark.skipif(shutil.which("mcopy") is None, reason="mtools is not installed"),
    pytest.mark.skipif(not MOSQUITTO.exists(), reason=f"{MOSQUITTO} is not installed"),
    pytest.mark.skipif(not FOOTAGE.is_file(), reason=f"{FOOTAGE} is absent (../shared)"),
]

# Run by QEMU for every guest connection to 10.0.2.100:1883, with the connection as stdin and
# stdout: relays it to the broker on the host's loopback (none there: the guest sees a close).
RELAY = """\
import os, selectors, socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
except OSError:
    sys.exit(0)
s.settimeout(None)
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                sys.exit(0)
            s.sendall(data)
        else:
            data = s.recv(65536)
            if not data:
                sys.exit(0)
            os.write(1, data)
"""

# Read-only look at the guest's state file: committed person events and running-hour counts.
GUEST_STATE_QUERY = """\
import json, sqlite3
c = sqlite3.connect("file:/var/lib/maskwatch/maskwatch.sqlite3?mode=ro", uri=True, timeout=30)
people = [json.loads(p)["event_id"] for (p,) in
          c.execute("SELECT payload FROM outbox WHERE kind = 'person' ORDER BY id")]
counts = c.execute("SELECT COALESCE(SUM(mask + no_mask + undecided), 0) FROM counters")\
    .fetchone()[0]
print(json.dumps({"people": people, "counts": counts}))
"""


def fat(image: Path) -> str:
    """mtools' name for the image's FAT partition."""
    return f"{image}@@{FAT_OFFSET}"


def fat_read(image: Path, name: str) -> str:
    """A text file from the FAT partition."""
    return subprocess.run(["mtype", "-i", fat(image), f"::{name}"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def fat_write(image: Path, name: str, data: bytes | str, tmp: Path) -> None:
    """Put a file onto the FAT partition (replacing one of that name)."""
    src = tmp / f"fat-{name}"
    src.write_bytes(data.encode() if isinstance(data, str) else data)
    subprocess.run(["mcopy", "-o", "-i", fat(image), str(src), f"::{name}"], check=True)


@dataclass
class Vm:
    """A running qemu-system-aarch64 booted from `disk`; SSH on 127.0.0.1:ssh_port."""

    disk: Path
    workdir: Path
    ssh_key: Path
    ssh_port: int
    broker_port: int
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0

    @property
    def console(self) -> Path:
        return self.workdir / f"console-{self.boots}.log"

    @property
    def monitor(self) -> Path:
        return self.workdir / "monitor.sock"

    def boot(self) -> None:
        """Start QEMU on the image's own kernel, initrd and kernel command line."""
        assert self.proc is None
        self.boots += 1
        config = fat_read(self.disk, "config.txt")
        kernel = re.search(r"^kernel=(\S+)", config, re.M)
        initrd = re.search(r"^initramfs (\S+)", config, re.M)
        assert kernel and initrd, config
        for name in (kernel.group(1), initrd.group(1)):
            subprocess.run(["mcopy", "-o", "-i", fat(self.disk), f"::{name}",
                            str(self.workdir / name)], check=True)  # fmt: skip
        # The Pi's consoles (ttyS1, tty0) become virt's PL011 UART.
        cmdline = " ".join(
            w for w in fat_read(self.disk, "cmdline.txt").split() if not w.startswith("console=")
        )
        relay = self.workdir / "relay.py"
        relay.write_text(RELAY)
        netdev = (
            f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
            f"guestfwd=tcp:10.0.2.100:1883-cmd:{sys.executable} {relay} {self.broker_port}"
        )
        self.monitor.unlink(missing_ok=True)
        cmd = [
            QEMU, "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "2048",
            "-kernel", str(self.workdir / kernel.group(1)),
            "-initrd", str(self.workdir / initrd.group(1)),
            "-append", f"console=ttyAMA0 {cmdline}",
            "-drive", f"if=none,id=hd0,format=raw,file={self.disk}",
            "-device", "virtio-blk-pci,drive=hd0",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM
            "-device", "virtio-rng-pci",
            "-display", "none", "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.monitor},server=on,wait=off",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=(self.workdir / "qemu.err").open("ab"))  # fmt: skip

    def ssh(self, command: str, *, sudo: bool = False, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run a command in the guest as the first-boot user (through sudo if asked)."""
        if sudo:
            command = f"echo {PASSWORD} | sudo -S -p '' sh -c {shlex.quote(command)}"
        done = subprocess.run(
            ["ssh", "-p", str(self.ssh_port), "-i", str(self.ssh_key), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"{USER}@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done

    def wait_ssh(self) -> float:
        """Wait until the guest accepts SSH logins; the seconds that took."""
        started = time.monotonic()
        while time.monotonic() - started < BOOT_S:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            try:
                if self.ssh("true", timeout=60, check=False).returncode == 0:
                    return time.monotonic() - started
            except subprocess.TimeoutExpired:
                pass
            time.sleep(5)
        raise AssertionError(f"no SSH after {BOOT_S:.0f} s:\n{self.tail()}")

    def unit(self, *props: str) -> dict[str, str]:
        """systemctl show maskwatch's properties."""
        out = self.ssh(f"systemctl show maskwatch.service -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, predicate: Callable[[dict[str, str]], bool], what: str,
                  timeout: float = START_S) -> dict[str, str]:  # fmt: skip
        """Poll maskwatch's unit state until predicate holds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                journal = self.ssh("journalctl -b -u maskwatch --no-pager | tail -40",
                                   sudo=True, check=False).stdout  # fmt: skip
                raise AssertionError(f"{what}: still {state} after {timeout:.0f} s\n{journal}")
            time.sleep(3)

    def power_cut(self) -> None:
        """Stop the VM at once from the QEMU monitor, as pulling the plug stops a Pi."""
        assert self.proc is not None
        with socket.socket(socket.AF_UNIX) as mon:
            mon.connect(str(self.monitor))
            mon.sendall(b"quit\n")
            try:
                while mon.recv(4096):
                    pass
            except OSError:
                pass
        self.proc.wait(timeout=60)
        self.proc = None

    def tail(self) -> str:
        """The end of the serial console of this boot."""
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return text[-4000:]

    def kill(self) -> None:
        """Stop QEMU (teardown)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real mosquitto on the host loopback, for the whole module (stopped and restarted by
    the power-cut test on the same port)."""
    broker = Mosquitto(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.stop()


def steady_timezone() -> str:
    """A time zone with at least 30 minutes left in its current hour (see test_faults)."""
    from test_faults import steady_timezone as pick

    return pick()


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[Vm]:
    """The image, 512 MiB larger, with set-up files and a test config on its boot partition."""
    work = tmp_path_factory.mktemp("vm")
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", IMAGE, str(disk)], check=True)
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + GROW_MIB * 2**20)
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pw_hash = subprocess.run(["openssl", "passwd", "-6", PASSWORD], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    fat_write(disk, "hostname", f"{HOSTNAME}\r\n", work)
    fat_write(disk, "userconf.txt", f"{USER}:{pw_hash}\n", work)
    fat_write(disk, "authorized_keys", key.with_suffix(".pub").read_text(), work)
    clip = write_cut(FOOTAGE, work / "clip.mp4", PERSON_SEEN_S, 1.0, 1.5)
    fat_write(disk, "clip.mp4", clip.read_bytes(), work)
    config = (
        f"device: {DEVICE}\n"
        "cameras:\n"
        "  - name: door\n"
        "    source: clip.mp4          # beside this file on the boot partition\n"
        "    file_pacing: asap\n"
        "    loop: true\n"
        "detector:\n"
        "  threads: 2\n"
        "mqtt:\n"
        "  host: 10.0.2.100\n"
        "  port: 1883\n"
        "  status_interval_s: 10\n"
        "totals:\n"
        f"  timezone: {steady_timezone()}\n"
        "logging:\n"
        "  level: INFO\n"
    )
    fat_write(disk, "maskwatch.yaml", config, work)
    machine = Vm(disk, work, key, free_port(), broker.port)
    machine.boot()
    yield machine
    machine.kill()
    print(f"VM consoles and disk in {work}")


@pytest.fixture(scope="module")
def listener(broker: Mosquitto) -> Iterator[Subscriber]:
    """Everything maskwatch publishes for the test device, from the start."""
    sub = Subscriber(broker.host, broker.port, f"maskwatch/{DEVICE}/#")
    yield sub
    sub.close()


def test_first_boot_applies_the_setup_files_and_grows_the_root(vm: Vm) -> None:
    took = vm.wait_ssh()  # the user and its key from the boot partition let us in
    print(f"first boot to SSH: {took:.0f} s")
    assert vm.ssh("hostname").stdout.strip() == HOSTNAME
    groups = vm.ssh("id -nG").stdout.split()
    assert {"sudo", "systemd-journal"} <= set(groups), groups
    left = vm.ssh("ls /boot/firmware").stdout.split()
    assert "maskwatch.yaml" in left and "clip.mp4" in left
    assert not {"hostname", "userconf.txt", "authorized_keys"} & set(left), left
    # The root partition now ends at the end of the larger disk, and ext4 grew with it.
    disk_bytes, part_bytes = map(int, vm.ssh("lsblk -bndo SIZE /dev/vda /dev/vda2").stdout.split())
    fat_end = 4 * 2**20 + 256 * 2**20
    assert part_bytes == disk_bytes - fat_end, (disk_bytes, part_bytes)
    fs_bytes = int(vm.ssh("df -B1 --output=size / | tail -1").stdout)
    assert fs_bytes > part_bytes - 200 * 2**20 > 600 * 2**20, (fs_bytes, part_bytes)
    journal = vm.ssh("journalctl -b -u maskwatch-firstboot --no-pager", sudo=True).stdout
    assert "grew /dev/vda2" in journal, journal


def test_systemd_starts_maskwatch_and_person_events_arrive(vm: Vm, listener: Subscriber) -> None:
    started = time.monotonic()
    state = vm.wait_unit(lambda s: s["ActiveState"] == "active", "maskwatch active (READY=1)")
    print(f"maskwatch READY {time.monotonic() - started:.0f} s after SSH came up: {state}")
    assert state["SubState"] == "running" and state["NRestarts"] == "0", state
    people = listener.wait_for(lambda ms: any(m.topic == PERSON for m in ms), START_S,
                               "a person event from the VM")  # fmt: skip
    event = json.loads(next(m for m in people if m.topic == PERSON).payload)
    assert event["camera"] == "door" and event["event_id"], event
    listener.wait_for(lambda ms: any(m.topic == CURRENT for m in ms), 60, "totals/current")


def test_watchdog_restarts_a_daemon_stopped_with_sigstop(vm: Vm) -> None:
    before = vm.unit("MainPID", "NRestarts")
    vm.ssh(f"kill -STOP {before['MainPID']}", sudo=True)
    # WatchdogSec=30: systemd aborts the silent daemon, restarts it after RestartSec=5, and
    # the new one is active again once it has sent READY=1.
    state = vm.wait_unit(
        lambda s: s["ActiveState"] == "active" and s["MainPID"] not in ("0", before["MainPID"]),
        "restart after the watchdog",
    )
    assert int(state["NRestarts"]) == int(before["NRestarts"]) + 1, state
    journal = vm.ssh("journalctl -b -u maskwatch --no-pager", sudo=True).stdout
    assert "Watchdog timeout" in journal, journal[-3000:]


def test_power_cut_loses_no_committed_person_and_no_count(vm: Vm, broker: Mosquitto) -> None:
    # The broker goes away, so decided people stay in the outbox; wait until one is there.
    broker.stop()
    deadline = time.monotonic() + START_S
    while True:
        state = json.loads(vm.ssh(f"python3 -c {shlex.quote(GUEST_STATE_QUERY)}",
                                  sudo=True).stdout)  # fmt: skip
        if state["people"]:
            break
        assert time.monotonic() < deadline, f"no people queued while the broker was away: {state}"
        time.sleep(5)
    vm.power_cut()  # mid-run: the daemon is deciding and committing as the plug is pulled
    broker.start()
    after = Subscriber(broker.host, broker.port, f"maskwatch/{DEVICE}/#")
    try:
        vm.boot()
        vm.wait_ssh()
        after.wait_for(
            lambda ms: set(state["people"])
            <= {json.loads(m.payload)["event_id"] for m in ms if m.topic == PERSON},
            START_S, "every person committed before the power cut",
        )  # fmt: skip
        # The running hour's total, as Home Assistant reads it, includes every count made
        # before the cut: nothing was rolled back (the test's hour does not end meanwhile).
        after.wait_for(
            lambda ms: any(json.loads(m.payload)["people"] >= state["counts"]
                           for m in ms if m.topic == CURRENT),
            START_S, f"totals/current with at least the {state['counts']} people counted",
        )  # fmt: skip
    finally:
        after.close()
    assert state["counts"] >= len(state["people"]) > 0, state
    # The initramfs replayed ext4's journal and checked the root before mounting it.
    console = vm.console.read_text(errors="replace")
    assert "fsck not present" not in console
    assert re.search(r"RASPIROOT: (recovering journal|clean)", console), vm.tail()


def test_bad_config_on_the_boot_partition_is_refused_with_file_and_line(vm: Vm) -> None:
    add_bogus = r"s/^    loop: true/    loop: true\n    bogus: 1/"
    vm.ssh(f"sed -i '{add_bogus}' /boot/firmware/maskwatch.yaml && systemctl restart maskwatch",
           sudo=True, check=False)  # fmt: skip
    state = vm.wait_unit(lambda s: s["ActiveState"] == "failed", "refused config", timeout=300)
    journal = vm.ssh("journalctl -b -u maskwatch --no-pager", sudo=True).stdout
    assert "/boot/firmware/maskwatch.yaml:7: cameras.0.bogus:" in journal, journal[-3000:]
    # Exit 78 is not retried: no restart loop on a config error.
    restarts = state["NRestarts"]
    time.sleep(15)
    again = vm.unit("ActiveState", "NRestarts")
    assert again == {"ActiveState": "failed", "NRestarts": restarts}, again
