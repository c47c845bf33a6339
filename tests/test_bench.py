"""The bench (`python -m edge.tools.bench`) end to end on a few frames of a generated clip
(no timing assertions)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config.detector import default_model_path
from edge.runtime import EXIT_NO_INPUT, EXIT_SOFTWARE, EXIT_USAGE
from edge.tools.bench import STAGES, main, make_clip

REPO_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = Path("/usr/sbin/mosquitto")
FRAMES = 6

needs_model = pytest.mark.skipif(
    not default_model_path().is_file(),
    reason=f"{default_model_path()} not built yet (make model)",
)


def _args(**overrides: object) -> argparse.Namespace:
    """The namespace `python -m edge.tools.bench`'s parser produces, with overrides."""
    values: dict[str, object] = {"json": True, "video": None, "frames": FRAMES, "runtime": "auto",
                                 "detect_every": 1, "motion": False, "soak_hours": None,
                                 "threads": None, "config": None}
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 768x576 MJPG clip with a few more frames than the bench asks for."""
    return make_clip(tmp_path_factory.mktemp("bench") / "clip.avi", FRAMES + 4)


@pytest.fixture(scope="module")
def result(clip: Path) -> dict:
    """`python -m edge.tools.bench --json` in its own process, as `make bench` runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge.tools.bench", "--json", "--video", str(clip),
         "--frames", str(FRAMES)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_model
def test_headline_figures_are_positive_numbers(result: dict) -> None:
    """raw and pipeline fps, their ratio, overhead, memory and start-up time are measured."""
    for key in ("raw_fps", "pipeline_fps", "pipeline_vs_raw", "pipeline_vs_raw_median",
                "threaded_fps", "threaded_vs_raw", "rss_mb", "ready_s"):
        assert isinstance(result[key], float), key
        assert result[key] > 0, key
    assert 0 < result["overhead_ratio"] < 1
    assert result["rss_mb"] >= result["rss_mb_after_load"] > 0
    assert result["frames"] == FRAMES


@needs_model
def test_every_stage_has_median_and_p95(result: dict) -> None:
    """Each stage of the pipeline, and the raw loop, report ms; shares sum to the frame."""
    for stage in (*STAGES, "frame", "raw_loop", "raw_invoke"):
        stats = result["ms"][stage]
        assert isinstance(stats["median"], float) and isinstance(stats["p95"], float), stage
        assert 0 <= stats["median"] <= stats["p95"], stage
    # Stages that run on every frame take measurable time (the detector reports its own split).
    for stage in ("decode", "preprocess", "invoke", "postprocess", "track", "frame",
                  "raw_loop", "raw_invoke"):
        assert result["ms"][stage]["median"] > 0, stage
    # The ledger ticks once per second of footage, as the replay and the daemon do.
    assert result["ms"]["publish"]["mean"] > 0
    assert result["detector_calls"] == FRAMES
    assert result["still_frames"] == 0
    assert sum(result["share"].values()) == pytest.approx(1.0, abs=0.01)


@needs_model
def test_tracking_with_ten_people(result: dict) -> None:
    """The tracking-only measurement keeps ten tracks and times both stages."""
    tracking = result["tracking_10"]
    assert tracking["tracks"] == 10
    assert tracking["track_ms"]["median"] > 0
    assert tracking["vote_ms"]["median"] > 0


@needs_model
def test_names_the_interpreter_and_the_machine(result: dict) -> None:
    """Which runtime and accelerator ran, and on what, for the benchmark table."""
    assert result["runtime"] in ("ai_edge_litert", "tflite_runtime")
    assert result["accelerator"] in ("cpu", "edgetpu")
    assert isinstance(result["runtime_version"], str)
    assert result["machine"]["cores"] >= 1
    assert result["ready"]["model_load_s"] > 0
    assert result["ready"]["first_frame_s"] > 0


@needs_model
@pytest.mark.skipif(not MOSQUITTO.exists(), reason=f"{MOSQUITTO} is not installed")
def test_publishes_to_a_real_broker(result: dict) -> None:
    """The pipeline's ledger reached the bench's own mosquitto and was flushed."""
    assert result["mqtt"]["broker"].startswith("mosquitto 127.0.0.1:")
    assert result["mqtt"]["delivered"] is True


@needs_model
def test_readable_table(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the same figures come as a table."""
    assert main(_args(json=False, video=clip, frames=2)) == 0
    out = capsys.readouterr().out
    assert "raw interpreter loop" in out
    for stage in STAGES:
        assert f"\n{stage} " in out


def test_frames_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--frames 0 is refused before anything is loaded."""
    assert main(_args(frames=0)) == EXIT_USAGE
    assert "--frames" in capsys.readouterr().err


def test_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A clip that does not exist exits 66 and names it."""
    missing = tmp_path / "nope.avi"
    assert main(_args(video=missing)) == EXIT_NO_INPUT
    assert str(missing) in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None,
                    reason="tflite-runtime is installed here")
def test_runtime_not_installed(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for an interpreter package this environment lacks exits 70 and says which."""
    assert main(_args(video=clip, runtime="tflite_runtime")) == EXIT_SOFTWARE
    assert "tflite-runtime is not installed" in capsys.readouterr().err


def test_detect_every_below_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--detect-every 0 is refused before anything is loaded."""
    assert main(_args(detect_every=0)) == EXIT_USAGE
    assert "--detect-every" in capsys.readouterr().err


@needs_model
def test_detect_every_and_motion_options(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Detecting every 2nd frame calls the detector on half the frames; options are reported."""
    assert main(_args(video=clip, frames=FRAMES, detect_every=2, motion=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"] == {"detect_every_n_frames": 2, "motion_gating": True,
                              "detector_threads": None, "config": None}
    assert out["frames"] == FRAMES
    # Frames 0, 2, 4 are due a detection; motion gating may skip some of them, never others.
    assert out["detector_calls"] + out["still_frames"] == FRAMES // 2
    assert out["detector_calls"] >= 1


@needs_model
def test_one_interpreter_thread_and_a_regions_config(
    clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads 1 runs the interpreter on one thread; --config takes a camera's regions."""
    config = tmp_path / "street.yaml"
    config.write_text(
        "cameras:\n  - name: street\n    source: /dev/video0\n"
        "    regions: {enabled: true, scan_cells_per_frame: 5}\n"
        "tracker: {high_score: 0.35}\n"
    )
    assert main(_args(video=clip, threads=1, config=config)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threads"] == 1 and out["options"]["detector_threads"] == 1
    assert out["options"]["config"] == str(config)
    # Regions: at least the 5 sweep cells a frame, two 2 x 2 inputs.
    assert out["inferences_per_frame"] >= 2
    assert out["threaded_fps"] > 0 and out["threaded_inferences_vs_raw"] > 0
    assert out["ms"]["plan"]["median"] > 0  # motion areas and region selection are timed


def test_threads_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--threads 0 is refused before anything is loaded."""
    assert main(_args(threads=0)) == EXIT_USAGE
    assert "--threads" in capsys.readouterr().err


@needs_model
def test_soak_reports_a_memory_curve(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--soak-hours replays the clip in a loop and samples resident memory along the way."""
    # 0.001 h of footage at the clip's 7 fps: 25 frames, so the 10-frame clip loops twice.
    assert main(_args(video=clip, soak_hours=0.001)) == 0
    soak = json.loads(capsys.readouterr().out)["soak"]
    assert soak["frames"] == 25
    assert soak["loops"] == 2
    assert soak["detected_frames"] == 25
    curve = soak["curve"]
    assert len(curve) >= 2
    assert [p["footage_min"] for p in curve] == sorted(p["footage_min"] for p in curve)
    assert all(0 < p["rss_mb"] <= p["peak_rss_mb"] for p in curve)
