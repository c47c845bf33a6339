"""`pip install maskwatch` as a newcomer does it: a wheel built from this checkout, installed
with no extras into a fresh virtualenv (no access to the checkout), replays real footage to a
real mosquitto with the model and labels the wheel carries and the interpreter pip pulled in.

The virtualenv is installed from the package index pip is configured with (PyPI, or a local
mirror); the tests need it, as CI has it. The footage is third-party (../shared, read in
place): the replay test skips without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MOSQUITTO, Mosquitto, Subscriber, write_cut

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "head_detector_int8.tflite"
LABELS = REPO / "models" / "labels.txt"
FOOTAGE = REPO.parent / "shared" / "videos" / "one-by-one-person-detection.mp4"
# Seconds of the footage in which its first two people are seen (as in tests/test_faults.py).
TWO_PEOPLE_S = ((6.5, 7.3), (24.1, 24.9))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MODEL.is_file(), reason="the trained model is missing (make model)"),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """maskwatch's wheel, built from this checkout as `pip wheel` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = out.glob("maskwatch-*.whl")
    return built


def outside_env() -> dict[str, str]:
    """This process's environment without what would let the checkout leak into the venv."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with `pip install WHEEL`: no extras, nothing from the checkout."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True, text=True, timeout=1200, check=False, env=outside_env(),
        cwd=root,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def test_wheel_carries_the_model_and_labels_and_no_training_code(wheel: Path) -> None:
    """The model and labels are package data, byte for byte the checkout's; the model card
    and the training code stay in the repository."""
    with zipfile.ZipFile(wheel) as z:
        assert z.read("edge/models/head_detector_int8.tflite") == MODEL.read_bytes()
        assert z.read("edge/models/labels.txt") == LABELS.read_bytes()
        names = z.namelist()
        record = z.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert "edge/models/head_detector_int8.tflite," in record
    assert [n for n in names if not n.startswith(("edge/", "maskwatch-"))] == []
    assert [n for n in names if n.startswith("edge/models/") and not n.endswith(
        (".tflite", "labels.txt"))] == []


def test_installed_without_extras_finds_its_model_and_an_interpreter(venv: Path,
                                                                      tmp_path: Path) -> None:
    """The default model path lies inside the installed package and LiteRT came along."""
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import edge, ai_edge_litert; from edge.config.detector import default_model_path; "
         "print(edge.__file__); print(default_model_path())"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env=outside_env(),
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    package, model = probe.stdout.split()
    site = str(venv / "lib")
    assert package.startswith(site), package
    assert model.startswith(site) and model.endswith("edge/models/head_detector_int8.tflite")
    assert Path(model).read_bytes() == MODEL.read_bytes()


@pytest.mark.skipif(not FOOTAGE.is_file(),
                    reason=f"{FOOTAGE} is absent (third-party footage, read from ../shared)")
@pytest.mark.skipif(not MOSQUITTO.exists(), reason=f"{MOSQUITTO} is not installed")
def test_installed_without_extras_replays_a_clip_to_a_real_broker(
    venv: Path, mosquitto: Mosquitto, subscribe: Callable[..., Subscriber], tmp_path: Path
) -> None:
    """`maskwatch replay CLIP --mqtt-host --mqtt-port`, built-in defaults, run from a folder
    outside the checkout: people decided and published, the hour closed, exit 0."""
    clip = write_cut(FOOTAGE, tmp_path / "two.mp4", TWO_PEOPLE_S, 1.0, 1.5)
    sub = subscribe(mosquitto.host, mosquitto.port, "maskwatch/#")
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run(
        [str(venv / "bin" / "maskwatch"), "replay", str(clip), "--mqtt-host", mosquitto.host,
         "--mqtt-port", str(mosquitto.port)],
        capture_output=True, text=True, timeout=600, check=False, cwd=work, env=outside_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [ln for ln in done.stdout.splitlines() if ln.split()[:1] == ["people"]]
    counted = int(row.split()[1])
    assert counted >= 1, done.stdout
    messages = sub.wait_for(
        lambda ms: any(m.topic.endswith("/totals/hourly") for m in ms), 30, "the hourly total"
    )
    people = [json.loads(m.payload) for m in messages if m.topic.endswith("/person")]
    assert len({p["event_id"] for p in people}) == counted
    assert sorted(work.iterdir()) == [], "the replay wrote into its working directory"
