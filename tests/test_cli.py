"""Tests of the `maskwatch` command line, run as a real subprocess (`python -m edge ...`).

The commands run the committed model with the real interpreter on images written at test time
(a frame of ../shared's footage when present, generated pictures always). Exit codes are the
documented sysexits ones (edge/__main__.py): 0 ok, 65 malformed input, 66 input missing,
70 unusable model, 78 invalid configuration.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.anchors import iou_matrix
from edge.config.detector import DetectorConfig
from edge.detection import LABELS

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
VIDEO = REPO.parent / "shared" / "videos" / "one-by-one-person-detection.mp4"
# Every detect/track/check-config call is a few seconds at most; this only stops a hang.
COMMAND_TIMEOUT_S = 120

EXIT_OK, EXIT_DATA, EXIT_NO_INPUT, EXIT_SOFTWARE, EXIT_CONFIG = 0, 65, 66, 70, 78


def maskwatch(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m edge ARGS` and capture its output (never raises on a failing exit)."""
    run_env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    run_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edge", *map(str, args)],
        cwd=cwd or REPO,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    """stderr without the interpreter's own informational lines."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("INFO: ")]


# -- check-config ----------------------------------------------------------------------------


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """A $CREDENTIALS_DIRECTORY holding the mqtt_password credential, as systemd provides."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "mqtt_password").write_text("s3cret\n")
    return directory


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_check_config_accepts_the_shipped_configs(
    config: Path, credentials: Path, tmp_path: Path
) -> None:
    """Every example config is valid; the host-only parts (/dev/video0, an RTSP camera, the
    broker) are not needed. Secrets live outside the config: the systemd credential is given
    as the unit would give it, a password_file is pointed at a test file."""
    text = config.read_text()
    target = config
    match = re.search(r"^(\s*password_file:\s*)(\S+)", text, flags=re.MULTILINE)
    if match:
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        target = tmp_path / config.name
        target.write_text(text.replace(match.group(0), f"{match.group(1)}{secret}"))
        assert "source: ../" not in text, "a copied config must not hold relative paths"
    result = maskwatch("check-config", target, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"{target}: ok ("), result.stdout
    assert error_lines(result.stderr) == []


def test_check_config_names_a_missing_password_file(tmp_path: Path) -> None:
    config = tmp_path / "maskwatch.yaml"
    absent = tmp_path / "no-such-password"
    config.write_text(f"device: t1\nmqtt:\n  username: u\n  password_file: {absent}\n")
    result = maskwatch("check-config", config)
    assert result.returncode == EXIT_CONFIG
    (line,) = error_lines(result.stderr)
    assert str(absent) in line and "mqtt.password_file" in line, line


BROKEN_CONFIGS = {
    "unknown-key": (
        "device: t1\ndetector:\n  score_threshold: 0.3\n  treshold: 0.3\n",
        4,
        "detector.treshold",
    ),
    "wrong-type": (
        "device: t1\ncameras:\n  - name: door\n    source: door.mp4\n    fps: fast\n",
        5,
        "cameras.0.fps",
    ),
    "out-of-range": ("device: t1\nmqtt:\n  qos: 3\n", 3, "mqtt.qos"),
    "bad-device-name": ("device: Front Door\n", 1, "device"),
    "malformed-yaml": ("device: t1\nmqtt: [unclosed\n  host: broker\n", 3, "invalid YAML"),
    "tab-indent": ("device: t1\nmqtt:\n\thost: broker\n", 3, "invalid YAML"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGS))
def test_check_config_reports_file_line_and_field(name: str, tmp_path: Path) -> None:
    text, line, field = BROKEN_CONFIGS[name]
    config = tmp_path / f"{name}.yaml"
    config.write_text(text)
    result = maskwatch("check-config", config)
    assert result.returncode == EXIT_CONFIG, (result.stdout, result.stderr)
    assert result.stdout == ""
    (message,) = error_lines(result.stderr)
    assert message.startswith(f"{config}:{line}: {field}"), message
    assert re.fullmatch(rf"{re.escape(str(config))}:\d+: [^:]+: .+", message), message
    assert "Traceback" not in result.stderr


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text("device: t1\nmqtt:\n  qos: 7\nstate:\n  outbox_max_events: 0\n")
    result = maskwatch("check-config", config)
    assert result.returncode == EXIT_CONFIG
    lines = error_lines(result.stderr)
    assert [ln.split(": ")[0:2] for ln in lines] == [
        [f"{config}:3", "mqtt.qos"],
        [f"{config}:5", "state.outbox_max_events"],
    ]


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    result = maskwatch("check-config", absent)
    assert result.returncode == EXIT_CONFIG
    (message,) = error_lines(result.stderr)
    assert message.startswith(f"{absent}: ") and "cannot read" in message


def test_check_config_names_a_missing_model(tmp_path: Path) -> None:
    config = tmp_path / "maskwatch.yaml"
    config.write_text("device: t1\ndetector:\n  model: models/absent.tflite\n")
    result = maskwatch("check-config", config)
    assert result.returncode == EXIT_CONFIG
    assert str(tmp_path / "models" / "absent.tflite") in result.stderr


# -- config-schema ---------------------------------------------------------------------------


def test_config_schema_is_json_with_properties() -> None:
    result = maskwatch("config-schema")
    assert result.returncode == EXIT_OK, result.stderr
    schema = json.loads(result.stdout)
    assert {"device", "cameras", "detector", "mqtt", "state"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False


# -- detect ----------------------------------------------------------------------------------


def write_images(directory: Path) -> list[Path]:
    """A real street frame (when ../shared is present) and generated pictures, as files."""
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    if VIDEO.exists():
        cap = cv2.VideoCapture(str(VIDEO))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 200)
        ok, frame = cap.read()
        cap.release()
        assert ok, f"cannot read {VIDEO}"
        images.append((directory / "street.jpg", frame))
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), (7, 7), 0)
    cv2.circle(texture, (250, 140), 40, (120, 150, 200), -1)
    images.append((directory / "generated.png", texture))
    images.append((directory / "tall picture.png", np.full((400, 90, 3), 200, np.uint8)))
    for path, image in images:
        assert cv2.imwrite(str(path), image), path
    return [path for path, _ in images]


def parse_json_lines(stdout: str) -> list[dict[str, object]]:
    """Every stdout line is one JSON object."""
    return [json.loads(line) for line in stdout.splitlines()]


def assert_detection_sane(det: dict[str, object], width: int, height: int, floor: float) -> None:
    """A detection record: a known label, a score in [floor, 1], a box inside the image."""
    assert set(det) == {"label", "score", "box"}, det
    assert det["label"] in LABELS, det
    score = det["score"]
    assert isinstance(score, float) and floor <= score <= 1.0, det
    box = det["box"]
    assert isinstance(box, list) and len(box) == 4, det
    assert all(isinstance(v, (int, float)) for v in box), det
    x1, y1, x2, y2 = box
    assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, det


def test_detect_prints_one_json_line_per_image(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    # Listed as a user would: absolute, relative to the working directory, with spaces.
    listed = [str(images[0]), *[os.path.relpath(p, tmp_path) for p in images[1:]]]
    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(listed) + "\n\n")
    result = maskwatch(
        "detect", "--json", "--image-list", image_list, "--score-threshold", "0", "--cpu",
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_OK, result.stderr
    records = parse_json_lines(result.stdout)
    assert [r["image"] for r in records] == listed
    for record, path in zip(records, images, strict=True):
        assert set(record) == {"image", "detections"}, record
        image = cv2.imread(str(path))
        assert image is not None
        height, width = image.shape[:2]
        detections = record["detections"]
        assert isinstance(detections, list)
        # With no score threshold any model proposes heads, at most a photo's cap of them.
        assert 1 <= len(detections) <= DetectorConfig().photo_max_detections
        for det in detections:
            assert_detection_sane(det, width, height, floor=0.0)


def test_detect_with_the_default_threshold(tmp_path: Path) -> None:
    images = write_images(tmp_path / "images")
    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(map(str, images)))
    result = maskwatch("detect", "--json", "--image-list", image_list)
    assert result.returncode == EXIT_OK, result.stderr
    records = parse_json_lines(result.stdout)
    assert len(records) == len(images)
    for record, path in zip(records, images, strict=True):
        image = cv2.imread(str(path))
        assert image is not None
        height, width = image.shape[:2]
        detections = record["detections"]
        assert isinstance(detections, list)
        for det in detections:
            assert_detection_sane(det, width, height, floor=DetectorConfig().photo_score_threshold)


def test_detect_reports_unreadable_images_and_goes_on(tmp_path: Path) -> None:
    good = write_images(tmp_path / "images")[-1]
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 800, np.uint8).tobytes())
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{garbage}\n{good}\n")
    result = maskwatch("detect", "--json", "--image-list", image_list)
    assert result.returncode == EXIT_DATA, result.stderr
    bad_record, good_record = parse_json_lines(result.stdout)
    assert bad_record == {"image": str(garbage), "detections": [], "error": "not a readable image"}
    assert "error" not in good_record
    assert error_lines(result.stderr) == [f"{garbage}: not a readable image"]


def test_detect_reports_missing_images_as_missing_input(tmp_path: Path) -> None:
    good = write_images(tmp_path / "images")[-1]
    absent = tmp_path / "absent.png"
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{good}\n{absent}\n{tmp_path}\n")
    result = maskwatch("detect", "--json", "--image-list", image_list)
    assert result.returncode == EXIT_NO_INPUT, result.stderr
    records = parse_json_lines(result.stdout)
    assert [r["image"] for r in records] == [str(good), str(absent), str(tmp_path)]
    assert records[1]["error"] == "No such file or directory"
    assert records[2]["error"] == "Is a directory"
    assert error_lines(result.stderr) == [
        f"{absent}: No such file or directory",
        f"{tmp_path}: Is a directory",
    ]


def test_detect_with_a_missing_image_list(tmp_path: Path) -> None:
    absent = tmp_path / "absent.txt"
    result = maskwatch("detect", "--json", "--image-list", absent)
    assert result.returncode == EXIT_NO_INPUT
    assert result.stdout == ""
    assert error_lines(result.stderr) == [f"{absent}: No such file or directory"]


def test_detect_model_option_runs_on_the_cpu(tmp_path: Path) -> None:
    # The config asks for the Edge TPU (which fails loudly here); --model means that model,
    # on the CPU, with no Edge TPU build beside it.
    config = tmp_path / "maskwatch.yaml"
    config.write_text("device: t1\ndetector:\n  accelerator: edgetpu\n")
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{write_images(tmp_path / 'images')[-1]}\n")
    model = REPO / "models" / "head_detector_int8.tflite"
    with_tpu = maskwatch("detect", "--json", "--image-list", image_list, "--config", config)
    assert with_tpu.returncode == EXIT_SOFTWARE, with_tpu.stderr
    assert "accelerator is edgetpu" in with_tpu.stderr
    result = maskwatch(
        "detect", "--json", "--image-list", image_list, "--config", config, "--model", model
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert len(parse_json_lines(result.stdout)) == 1


def test_detect_with_an_unusable_model(tmp_path: Path) -> None:
    model = tmp_path / "corrupt.tflite"
    model.write_bytes(b"\x00not a flatbuffer" * 64)
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{write_images(tmp_path / 'images')[-1]}\n")
    result = maskwatch("detect", "--json", "--image-list", image_list, "--model", model)
    assert result.returncode == EXIT_SOFTWARE
    assert result.stdout == ""
    (message,) = error_lines(result.stderr)
    assert message.startswith(f"{model}: not a usable TFLite model"), message


FACE_PHOTOS = REPO.parent / "shared" / "datasets" / "face-mask-853"


def _faces_found(records: list[dict[str, object]], faces: list[tuple[np.ndarray, str]]) -> int:
    """Labelled faces that a detection of the same label boxes with IoU >= 0.5."""
    dets = [d for r in records for d in r["detections"]]  # type: ignore[attr-defined]
    if not dets:
        return 0
    ious = iou_matrix(np.array([box for box, _ in faces]), np.array([d["box"] for d in dets]))
    same = np.array([[d["label"] == label for d in dets] for _, label in faces])
    return int(((ious >= 0.5) & same).any(axis=1).sum())


def _collage(tmp_path: Path, grid: int, first: int) -> tuple[Path, list[tuple[np.ndarray, str]]]:
    """grid x grid real validation photos from the `first` on, each shrunk to 400 x 300 in one
    collage: the image list naming it, and its labelled faces (box, label) in its pixels."""
    from models.training.data import face_mask_split

    _, val = face_mask_split(FACE_PHOTOS)
    side_w, side_h = 400, 300
    collage = np.zeros((grid * side_h, grid * side_w, 3), np.uint8)
    faces: list[tuple[np.ndarray, str]] = []
    for k, sample in enumerate(val[first : first + grid * grid]):
        image = cv2.cvtColor(sample.load_rgb(), cv2.COLOR_RGB2BGR)
        sy, sx = side_h / image.shape[0], side_w / image.shape[1]
        ox, oy = (k % grid) * side_w, (k // grid) * side_h
        collage[oy : oy + side_h, ox : ox + side_w] = cv2.resize(image, (side_w, side_h))
        for box, label in zip(sample.boxes, sample.labels, strict=True):
            if label in (0, 1):  # with / without mask; incorrectly worn masks left out
                faces.append((box * [sx, sy, sx, sy] + [ox, oy, ox, oy], LABELS[label]))
    assert cv2.imwrite(str(tmp_path / "collage.png"), collage)
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{tmp_path / 'collage.png'}\n")
    return image_list, faces


@pytest.mark.skipif(not FACE_PHOTOS.is_dir(), reason="needs ../shared/datasets (third-party data)")
def test_detect_lists_faces_below_the_camera_threshold(tmp_path: Path) -> None:
    """Real validation photos in a 3 x 3 collage: by default the list goes on below the
    camera's 0.35 (down to photo_score_threshold), and those extra entries reach labelled faces
    the cut list misses, so a ranking (AP) of it is not cut short; --score-threshold still
    cuts where the caller asks."""
    image_list, faces = _collage(tmp_path, 3, 18)
    ranked = maskwatch("detect", "--json", "--image-list", image_list, "--cpu")
    cut = maskwatch("detect", "--json", "--image-list", image_list, "--cpu",
                    "--score-threshold", "0.35")
    assert ranked.returncode == cut.returncode == EXIT_OK, ranked.stderr + cut.stderr
    ranked_records, cut_records = parse_json_lines(ranked.stdout), parse_json_lines(cut.stdout)
    floor = DetectorConfig().photo_score_threshold
    ranked_scores = [d["score"] for r in ranked_records for d in r["detections"]]  # type: ignore[attr-defined]
    cut_scores = [d["score"] for r in cut_records for d in r["detections"]]  # type: ignore[attr-defined]
    assert min(ranked_scores) >= floor
    assert any(s < 0.35 for s in ranked_scores), sorted(ranked_scores)[:5]
    assert min(cut_scores) >= 0.35
    assert _faces_found(ranked_records, faces) > _faces_found(cut_records, faces), len(faces)


@pytest.mark.skipif(not FACE_PHOTOS.is_dir(), reason="needs ../shared/datasets (third-party data)")
def test_detect_tiles_find_small_faces_that_one_pass_misses(tmp_path: Path) -> None:
    """Four real validation photos as one 2 x 2 collage: every face is half as large in the
    model's input as in its own photo. The default (the whole image, then finer tiles) finds
    more of the labelled faces, with the right label, than the single whole-image pass."""
    image_list, faces = _collage(tmp_path, 2, 0)
    tiled = maskwatch("detect", "--json", "--image-list", image_list, "--cpu")
    single = maskwatch(
        "detect", "--json", "--image-list", image_list, "--cpu", "--scales", "1", "--no-mirror"
    )
    assert tiled.returncode == single.returncode == EXIT_OK, tiled.stderr + single.stderr
    found_tiled = _faces_found(parse_json_lines(tiled.stdout), faces)
    found_single = _faces_found(parse_json_lines(single.stdout), faces)
    assert found_tiled > found_single, (found_tiled, found_single, len(faces))


@pytest.mark.skipif(not FACE_PHOTOS.is_dir(), reason="needs ../shared/datasets (third-party data)")
def test_detect_finest_tiles_find_faces_that_three_scales_miss(tmp_path: Path) -> None:
    """Sixteen real validation photos as one 4 x 4 collage (faces a quarter of their size): the
    default's 4 x 4 tiles find labelled faces, with the right label, that 3 x 3 tiles miss."""
    image_list, faces = _collage(tmp_path, 4, 0)
    finest = maskwatch("detect", "--json", "--image-list", image_list, "--cpu")
    three = maskwatch("detect", "--json", "--image-list", image_list, "--cpu", "--scales", "3")
    assert finest.returncode == three.returncode == EXIT_OK, finest.stderr + three.stderr
    found_finest = _faces_found(parse_json_lines(finest.stdout), faces)
    found_three = _faces_found(parse_json_lines(three.stdout), faces)
    assert found_finest > found_three, (found_finest, found_three, len(faces))


@pytest.mark.skipif(not FACE_PHOTOS.is_dir(), reason="needs ../shared/datasets (third-party data)")
def test_detect_keeps_a_crowds_faces_past_the_cameras_cap(tmp_path: Path) -> None:
    """A face-mask-853 photo of a crowd (the one with the most labelled faces) holds more faces
    than a camera frame's cap of 50: at a low score threshold the command keeps more of them,
    up to detector.photo_max_detections, and a config can lower that."""
    from models.training.data import face_mask_split

    train, val = face_mask_split(FACE_PHOTOS)
    crowd = max(train + val, key=lambda s: len(s.boxes))
    assert len(crowd.boxes) > 50
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{crowd.image_path}\n")
    config = tmp_path / "photos.yaml"
    config.write_text("device: t1\ndetector:\n  photo_max_detections: 40\n")
    args = ("detect", "--json", "--image-list", image_list, "--cpu", "--score-threshold", "0.05")
    default = maskwatch(*args)
    lowered = maskwatch(*args, "--config", config)
    assert default.returncode == lowered.returncode == EXIT_OK, default.stderr + lowered.stderr
    found: list[object] = parse_json_lines(default.stdout)[0]["detections"]  # type: ignore[assignment]
    capped: list[object] = parse_json_lines(lowered.stdout)[0]["detections"]  # type: ignore[assignment]
    assert 50 < len(found) <= 300
    assert capped == found[:40]  # the best 40, best first


@pytest.mark.parametrize("scales", ["0", "5", "-1", "2.5", "two"])
def test_detect_refuses_a_bad_number_of_scales(tmp_path: Path, scales: str) -> None:
    image_list = tmp_path / "images.txt"
    image_list.write_text("")
    result = maskwatch("detect", "--json", "--image-list", image_list, "--scales", scales)
    assert result.returncode == 2
    assert f"--scales: not a number of scales from 1 to 4: {scales!r}" in result.stderr


# -- track -----------------------------------------------------------------------------------


def write_mot_detections(path: Path, frames: int = 12) -> None:
    """Two people walking towards each other, far apart, one detection each per frame."""
    rows = []
    for f in range(1, frames + 1):
        rows.append(f"{f},-1,{100 + 5 * f},50,40,80,0.9,-1,-1,-1")
        rows.append(f"{f},-1,{500 - 5 * f},60,42,84,0.8,-1,-1,-1")
    path.write_text("\n".join(rows) + "\n")


def test_track_prints_mot_rows(tmp_path: Path) -> None:
    det = tmp_path / "det.txt"
    write_mot_detections(det, frames=12)
    result = maskwatch("track", "--mot", det, "--fps", "10")
    assert result.returncode == EXIT_OK, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    assert rows, "no MOT rows"
    for row in rows:
        assert len(row) == 10, row
        assert int(row[0]) in range(1, 13) and int(row[1]) >= 1, row
        x, y, w, h = map(float, row[2:6])
        assert w > 0 and h > 0 and x >= 0 and y >= 0, row
        assert row[6:] == ["1", "-1", "-1", "-1"], row
    ids = {int(row[1]) for row in rows}
    assert len(ids) == 2, f"two clean, separate tracks should give two people: {ids}"
    frames = [int(row[0]) for row in rows]
    assert frames == sorted(frames)


def test_track_reports_a_bad_row_with_file_and_line(tmp_path: Path) -> None:
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,10,20,20,0.9,-1,-1,-1\n2,-1,ten,10,20,20,0.9,-1,-1,-1\n")
    result = maskwatch("track", "--mot", det, "--fps", "10")
    assert result.returncode == EXIT_DATA
    (message,) = error_lines(result.stderr)
    assert message.startswith(f"{det}:2: field 'x'"), message


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_track_with_an_unreadable_file(kind: str, tmp_path: Path) -> None:
    det = tmp_path / "absent.txt" if kind == "missing" else tmp_path
    result = maskwatch("track", "--mot", det, "--fps", "10")
    assert result.returncode == EXIT_NO_INPUT
    (message,) = error_lines(result.stderr)
    assert message.startswith(f"{det}: "), message


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = maskwatch("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
