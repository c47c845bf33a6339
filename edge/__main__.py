"""Command line: `maskwatch run | replay | detect | track | check-config | config-schema |
config-reference`.

Exit codes (sysexits): 0 ok, 2 usage, 65 malformed input data, 66 input file missing or
unreadable, 70 unusable model or internal error, 73 state directory or output file not
writable, 75 (replay) events still wait for the broker in the state directory, 78 invalid
configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge import __version__
from edge.runtime import (
    EXIT_CANT_CREATE,
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_NO_INPUT,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    REPLAY_DRAIN_TIMEOUT_S,
    setup_logging,
)

if TYPE_CHECKING:  # the config stack is imported lazily: `maskwatch --help` stays fast
    from edge.config.root import Config

log = logging.getLogger("maskwatch")


def _load(path: Path | None, overrides: dict[str, object] | None = None) -> Config:
    """The config from a file, or built-in defaults; ConfigError is reported by the caller."""
    from edge.config.load import load_config_or_defaults

    config = load_config_or_defaults(path)
    if overrides:
        mqtt = config.mqtt.model_copy(update=overrides)
        config = config.model_copy(update={"mqtt": mqtt})
    return config


def _load_or_report(
    path: Path | None, overrides: dict[str, object] | None = None
) -> Config | None:
    """The config, or None after printing every error as FILE:LINE: field.path: message."""
    from edge.config.load import ConfigError

    try:
        return _load(path, overrides)
    except ConfigError as exc:
        for message in exc.messages:
            print(message, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file; print every error as FILE:LINE: field.path: message."""
    from edge.config.load import ConfigError, load_config
    from edge.config.mqtt import resolve_password

    try:
        config = load_config(args.file)
        resolve_password(config.mqtt)
    except ConfigError as exc:
        for message in exc.messages:
            print(message, file=sys.stderr)
        return EXIT_CONFIG
    missing = [p for p in (config.detector.model, config.detector.labels_path) if not p.exists()]
    for path in missing:
        print(f"{args.file}: detector: file not found: {path}", file=sys.stderr)
    if missing:
        return EXIT_CONFIG
    print(f"{args.file}: ok ({len(config.cameras)} camera(s), device {config.device})")
    return EXIT_OK


def cmd_config_schema(_args: argparse.Namespace) -> int:
    """Print the JSON schema of the config file (for editors and docs)."""
    from edge.config.load import config_schema

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def cmd_config_reference(_args: argparse.Namespace) -> int:
    """Print the configuration reference as Markdown (docs/configuration.md)."""
    from edge.config.reference import config_reference

    sys.stdout.write(config_reference())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon."""
    from edge.config.load import ConfigError
    from edge.daemon import run
    from edge.detect import ModelError
    from edge.outbox import StateError

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.logging)
    try:
        return run(config)
    except ConfigError as exc:
        for message in exc.messages:
            log.error("%s", message)
        return EXIT_CONFIG
    except ModelError as exc:
        log.error("%s", exc)
        return EXIT_SOFTWARE
    except StateError as exc:
        log.error("%s", exc)
        return EXIT_CANT_CREATE


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a video through the full pipeline and print the summary.

    Exit 75 (EX_TEMPFAIL) when, after the drain time, events still wait for the broker: they
    are kept in the state directory, and the next replay or run on it sends them.
    """
    from edge.config.state import user_state_directory
    from edge.detect import ModelError
    from edge.outbox import StateError
    from edge.replay import SnapshotFrameMissing, replay, summary_table

    overrides: dict[str, object] = {}
    if args.mqtt_host:
        overrides["host"] = args.mqtt_host
    if args.mqtt_port:
        overrides["port"] = args.mqtt_port
    config = _load_or_report(args.config, overrides)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.logging)
    start = None
    if args.start_time:
        try:
            start = datetime.fromisoformat(args.start_time)
        except ValueError:
            print(f"--start-time: not ISO 8601: {args.start_time!r}", file=sys.stderr)
            return 2
        if start.tzinfo is None:
            start = start.replace(tzinfo=config.totals.zoneinfo)
    if not args.video.exists():
        print(f"{args.video}: no such file", file=sys.stderr)
        return EXIT_NO_INPUT
    if args.snapshot is not None and args.snapshot.suffix.lower() != ".png":
        print(f"--snapshot: {args.snapshot}: must end in .png", file=sys.stderr)
        return 2
    state_dir = args.state_dir
    if state_dir is None:
        try:
            state_dir = user_state_directory()
        except RuntimeError:
            print("--state-dir: no home directory to keep the state in; pass --state-dir DIR",
                  file=sys.stderr)
            return EXIT_USAGE
    try:
        result = replay(args.video, config, start, args.annotate, args.drain_timeout,
                        progress=sys.stderr.isatty(), snapshot=args.snapshot,
                        snapshot_frame=args.snapshot_frame, state_dir=state_dir)
    except StateError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CANT_CREATE
    except ModelError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_SOFTWARE
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_INPUT
    except SnapshotFrameMissing as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except OSError as exc:  # the annotated video or the snapshot cannot be written
        print(str(exc), file=sys.stderr)
        return EXIT_CANT_CREATE
    print(summary_table(result.people))
    fps = result.frames / result.seconds if result.seconds else 0.0
    print(f"{result.frames} frames in {result.seconds:.1f} s ({fps:.1f} fps)")
    if not result.delivered:
        waiting = result.waiting
        print(
            f"{waiting.person_rows} person event(s) and {waiting.hourly_rows} hourly total(s) "
            f"still wait for the MQTT broker at {config.mqtt.host}:{config.mqtt.port} after "
            f"{args.drain_timeout:g} s; kept in {result.state_file}, the next `maskwatch "
            f"replay --state-dir {state_dir}` or `maskwatch run` on that state directory "
            "sends them",
            file=sys.stderr,
        )
        return EXIT_TEMPFAIL
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    """Run the detector on every image of a list; one JSON line per image.

    Every listed image gets its line, a failed one with an "error" key (and a message on
    stderr). Exit 66 when a listed image (or the list) cannot be opened, else 65 when one is
    not a decodable image, else 0.
    """
    import cv2

    from edge.detect import Detector, ModelError
    from edge.tiling import detect_still

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    update: dict[str, object] = {"accelerator": "cpu"} if args.cpu else {}
    if args.model is not None:
        # A model given here has no Edge TPU build beside it: run it on the CPU.
        update.update(model=args.model.resolve(), edgetpu_model=None, accelerator="cpu",
                      labels=config.detector.labels_path)
    # Photos list their faces down to the photo threshold (ranked lists), not the camera's.
    update["score_threshold"] = (
        args.score_threshold
        if args.score_threshold is not None
        else config.detector.photo_score_threshold
    )
    if args.scales is not None:
        update["photo_scales"] = args.scales
    if args.no_mirror:
        update["photo_mirror"] = False
    # A photo's cap, per view and in all, is the photo one (crowds hold more than a frame).
    update["max_detections"] = config.detector.photo_max_detections
    detector_config = config.detector.model_copy(update=update)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        detector = Detector(detector_config)
    except ModelError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_SOFTWARE
    try:
        listed = [ln.strip() for ln in args.image_list.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        print(f"{args.image_list}: {exc.strerror}", file=sys.stderr)
        return EXIT_NO_INPUT
    missing = malformed = 0
    for entry in listed:
        record: dict[str, object] = {"image": entry, "detections": []}
        # Checked before imread, which cannot tell a missing file from a broken one (and
        # prints an OpenCV warning for the former).
        problem = _unopenable(Path(entry))
        image = None if problem else cv2.imread(entry, cv2.IMREAD_COLOR)
        if problem:
            missing += 1
        elif image is None:
            problem = "not a readable image"
            malformed += 1
        if problem:
            print(f"{entry}: {problem}", file=sys.stderr)
            record["error"] = problem
        else:
            assert image is not None
            found = detect_still(
                detector.detect,
                image,
                detector_config.photo_scales,
                detector.input_size,
                detector_config.nms_iou,
                detector_config.max_detections,
                mirror=detector_config.photo_mirror,
                box_vote=detector_config.photo_box_vote,
            )
            record["detections"] = [
                {
                    "label": d.label_name,
                    "score": round(d.score, 4),
                    "box": [round(v, 1) for v in d.box],
                }
                for d in found
            ]
        print(json.dumps(record), flush=True)
    if missing:
        return EXIT_NO_INPUT
    return EXIT_DATA if malformed else EXIT_OK


def _unopenable(path: Path) -> str | None:
    """Why an image file cannot be opened (missing, a folder, no permission), else None."""
    try:
        with path.open("rb"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def cmd_track(args: argparse.Namespace) -> int:
    """Track MOTChallenge detections with the daemon's tracker; print MOT rows."""
    from edge.mot import track_mot

    try:
        track_mot(args.mot, args.fps, args.min_score, sys.stdout, steady=args.steady_boxes)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:  # reading det.txt
        print(f"{args.mot}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_DATA
    return EXIT_OK


def _seconds(text: str) -> float:
    """A duration for argparse: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds (0 or more): {text!r}")
    return value


def _scales(text: str) -> int:
    """How many scales `detect` looks at for argparse: 1 to 4."""
    if text.isdigit() and 1 <= int(text) <= 4:
        return int(text)
    raise argparse.ArgumentTypeError(f"not a number of scales from 1 to 4: {text!r}")


def _frame_number(text: str) -> int:
    """A frame number for argparse: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a frame number (0, 1, 2 ...): {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="maskwatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", type=Path, default=Path("/etc/maskwatch/maskwatch.yaml"))
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file (exit 78 on errors)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("config-schema", help="print the config file's JSON schema")
    p.set_defaults(func=cmd_config_schema)

    p = sub.add_parser("config-reference", help="print the configuration reference (Markdown)")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("replay", help="run the full pipeline over a video file")
    p.add_argument("video", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--start-time", help="ISO 8601 time of the first frame (default: now)")
    p.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write an annotated video")
    p.add_argument("--snapshot", type=Path, metavar="OUT.png",
                   help="write one annotated frame as a PNG (see --snapshot-frame)")
    p.add_argument("--snapshot-frame", type=_frame_number, default=0, metavar="N",
                   help="the frame --snapshot writes, counted from 0 (default 0)")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where events wait for the broker, kept across runs (default: "
                   "$XDG_STATE_HOME/maskwatch/replay, else ~/.local/state/maskwatch/replay)")
    p.add_argument("--drain-timeout", type=_seconds, default=REPLAY_DRAIN_TIMEOUT_S,
                   metavar="SECONDS", help="how long to wait at the end for the broker to "
                   "acknowledge everything (default %(default)g); exit 75 if anything is still "
                   "waiting then")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("detect", help="run the detector on images, one JSON line each")
    p.add_argument("--json", action="store_true", help="JSON lines output (the only format)")
    p.add_argument("--image-list", type=Path, required=True, help="file with one image path a line")
    p.add_argument(
        "--score-threshold", type=float, metavar="X",
        help="list faces scoring at least X (default: the config's "
        "detector.photo_score_threshold, 0.05; the camera decides at detector.score_threshold)",
    )
    p.add_argument("--model", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--cpu", action="store_true", help="never use an Edge TPU")
    p.add_argument(
        "--scales", type=_scales, metavar="N",
        help="how many scales each photo is detected at, 1 to 4: 1 is the whole image once; "
        "N adds grids of 2 x 2 up to N x N overlapping tiles for small faces and the whole "
        "image zoomed out 2x and 4x for faces that fill much of it (default: the config's "
        "detector.photo_scales, 4)",
    )
    p.add_argument(
        "--no-mirror", action="store_true",
        help="do not also detect the whole image and its zoomed-out views flipped left to "
        "right (the config's detector.photo_mirror)",
    )
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("track", help="track MOTChallenge detections, print MOT rows")
    p.add_argument("--mot", type=Path, required=True, metavar="DET.txt")
    p.add_argument("--fps", type=float, required=True)
    p.add_argument(
        "--min-score",
        type=float,
        default=-math.inf,
        help="drop detections scoring below this, in the file's units (default: keep all; "
        "a file whose scores leave [0, 1], such as DPM's margins, is read as logits)",
    )
    p.add_argument(
        "--steady-boxes",
        action="store_true",
        help="write the tracker's steady (Kalman-smoothed) boxes, the ones the daemon follows "
        "people by, instead of its sharp boxes (each frame's likeliest box)",
    )
    p.set_defaults(func=cmd_track)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `maskwatch` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
