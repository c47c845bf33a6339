"""`make eval-tracking`: maskwatch's tracker against norfair, ByteTrack and SORT on MOT15.

Runs, in one process and on the same public detections of each sequence in
../shared/tracking/MOT15/train, maskwatch's own tracker (through edge.mot.track_mot, the code
behind `maskwatch track --mot`) and the peers that are installed: norfair 2.3.0 with IoU
distance, and `trackers` 2.6.1 ByteTrack and SORT with their defaults at the sequence's frame
rate. It prints one markdown table (also written to /tmp/eval_tracking.md) with

- HOTA from TrackEval (benchmark MOT15, so no class filtering; class column -1),
- MOTA, IDF1 and ID switches from motmetrics (IoU >= 0.5 to match),
- identities output against people in the ground truth (the count maskwatch would publish),
- milliseconds per frame spent in the tracker's update call (input conversion excluded),

plus the time of one maskwatch update with 10 live tracks on a synthetic scene.

`--variants clean noisy clean-noisy heads crowd crowd-close crowd-apart pan clean-pan` (what
`make eval-tracking` runs) evaluates every tracker also on those edge.tools.mot_variants copies
of every sequence, written to a temporary folder: the ground truth as detections, the public
detections and the ground truth with noise added, noisy head-sized boxes, twice as many
people as the ground truth (a copy played backwards, on paths beside the original's at three
distances) as detections, and the public detections and the ground truth seen by a camera that
sways; each kind gets a combined row of its own ("all-clean", ...).

`--detect-every 1 2 3` adds maskwatch rows that see the detections of every n-th frame only
and ride the Kalman prediction in between, as `camera.detect_every_n_frames: n` does in the
daemon: the accuracy cost of detecting less often.

Needs the `eval` extra, `pip install -e '.[eval]'` (TrackEval comes from PyPI's `trackeval`, a
numpy-2 packaging of the original), and norfair installed by hand, because it declares
numpy<2 but runs on numpy 2: `pip install --no-deps norfair==2.3.0`. A peer that is not
installed is skipped and named under the table.

maskwatch's rows are those of `maskwatch track --mot`: confirmed tracks only, held-back rows of
a track written once it is confirmed, the tracker's sharp boxes (the detection smoothed only as
much as the track's detections have proven noisy), gaps of up to 1 s between two detections of
a track interpolated.

Exit code 0 after printing; 2 when the data or a required metric package is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config.tracker import TrackerConfig
from edge.detection import FACE_NOT_VISIBLE, Detection
from edge.mot import (
    DEFAULT_DATA,
    Sequence,
    TrackerFactory,
    load_sequences,
    read_detections,
    track_mot,
)
from edge.tools.mot_variants import KINDS, kind_of, write_variants
from edge.track import Tracker, TrackUpdate

# motmetrics 1.4 still calls np.asfarray, which numpy 2 removed.
if not hasattr(np, "asfarray"):
    np.asfarray = lambda a, dtype=float: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]

TABLE_PATH = Path("/tmp/eval_tracking.md")
# Runs of the synthetic timing scene, each way, for the medians the table ends with.
SYNTHETIC_RUNS = 5

# A result row: frame, id, x, y, w, h.
Row = tuple[int, int, float, float, float, float]


@dataclass(slots=True)
class Result:
    """One tracker's output on one sequence."""

    rows: list[Row]
    ms_per_frame: float

    @property
    def identities(self) -> int:
        """Distinct ids output: the people the tracker counted."""
        return len({r[1] for r in self.rows})


def det_arrays(seq: Sequence) -> dict[int, np.ndarray]:
    """Detections per frame as (K, 5) x1, y1, x2, y2, score, for the peers' inputs."""
    frames = read_detections(seq.det_path)
    return {
        f: np.array([(*d.box, d.score) for d in dets], dtype=float).reshape(-1, 5)
        for f, dets in frames.items()
    }


# ------------------------------------------------------------------------------- trackers


class EveryNthFrameTracker(Tracker):
    """A Tracker that sees the detections of every n-th frame only and predicts in between.

    What CameraPipeline does with `detect_every_n_frames: n`: frames 0, n, 2n, ... go through
    update(); the others through predict(), the detector's output never computed.
    """

    def __init__(self, config: TrackerConfig, every: int) -> None:
        """A tracker for config that detects on one frame in `every`."""
        super().__init__(config)
        self.every = every
        self._frame = 0

    def update(
        self,
        detections: Iterable[Detection],
        timestamp: float,
        frame_size: tuple[float, float] | None = None,
    ) -> TrackUpdate:
        """update() on the frames the detector would run on, predict() on the others."""
        frame, self._frame = self._frame, self._frame + 1
        if frame % self.every:
            return self.predict(timestamp)
        return super().update(list(detections), timestamp, frame_size)


def tracker_factory(every: int) -> TrackerFactory:
    """What builds maskwatch's tracker when it detects on every n-th frame only.

    every == 1 is the plain Tracker, the one `maskwatch track --mot` runs.
    """
    if every == 1:
        return Tracker
    return functools.partial(EveryNthFrameTracker, every=every)


def run_maskwatch(
    seq: Sequence, config: TrackerConfig | None = None, every: int = 1
) -> Result:
    """maskwatch's tracker through track_mot; timed on a second pass over Tracker.update.

    every > 1: the tracker sees the detections of every n-th frame only (EveryNthFrameTracker).
    """
    out = io.StringIO()
    track_mot(seq.det_path, seq.fps, 0.0, out, config, make_tracker=tracker_factory(every))
    rows = []
    for line in out.getvalue().splitlines():
        c = line.split(",")
        rows.append((int(c[0]), int(c[1]), float(c[2]), float(c[3]), float(c[4]), float(c[5])))
    frames = read_detections(seq.det_path)
    tracker = EveryNthFrameTracker(config or TrackerConfig(), every)
    spent = 0.0
    for frame in range(1, seq.length + 1):
        dets = frames.get(frame, [])
        start = time.perf_counter()
        tracker.update(dets, (frame - 1) / seq.fps, seq.frame_size)
        spent += time.perf_counter() - start
    return Result(rows, 1000.0 * spent / seq.length)


def run_norfair(seq: Sequence) -> Result:
    """norfair 2.3.0, IoU distance, defaults otherwise; estimates of initialised objects."""
    import norfair

    frames = det_arrays(seq)
    tracker = norfair.Tracker(distance_function="iou", distance_threshold=0.7)
    rows: list[Row] = []
    spent = 0.0
    for frame in range(1, seq.length + 1):
        dets = frames.get(frame, np.zeros((0, 5)))
        inputs = [
            norfair.Detection(points=d[:4].reshape(2, 2), scores=np.array([d[4], d[4]]))
            for d in dets
        ]
        start = time.perf_counter()
        objects = tracker.update(detections=inputs)
        spent += time.perf_counter() - start
        for obj in objects:
            if obj.id is None:  # norfair returns initialised objects only; ids are set there
                continue
            (x1, y1), (x2, y2) = obj.estimate
            rows.append((frame, int(obj.id), x1, y1, x2 - x1, y2 - y1))
    return Result(rows, 1000.0 * spent / seq.length)


def _run_roboflow(seq: Sequence, make: Callable[[float], object]) -> Result:
    """A `trackers` 2.6.1 tracker; rows of confirmed tracks (id -1 = unconfirmed) dropped."""
    import supervision as sv

    frames = det_arrays(seq)
    tracker = make(seq.fps)
    rows: list[Row] = []
    spent = 0.0
    for frame in range(1, seq.length + 1):
        dets = frames.get(frame, np.zeros((0, 5)))
        inputs = sv.Detections(
            xyxy=dets[:, :4].copy(),
            confidence=dets[:, 4].copy(),
            class_id=np.zeros(len(dets), dtype=int),
        )
        start = time.perf_counter()
        tracked = tracker.update(inputs)  # type: ignore[attr-defined]
        spent += time.perf_counter() - start
        for box, track_id in zip(tracked.xyxy, tracked.tracker_id, strict=True):
            if track_id >= 0:
                x1, y1, x2, y2 = (float(v) for v in box)
                rows.append((frame, int(track_id), x1, y1, x2 - x1, y2 - y1))
    return Result(rows, 1000.0 * spent / seq.length)


def run_bytetrack(seq: Sequence) -> Result:
    """`trackers` ByteTrack with its defaults at the sequence's frame rate."""
    from trackers import ByteTrackTracker

    return _run_roboflow(seq, lambda fps: ByteTrackTracker(frame_rate=fps))


def run_sort(seq: Sequence) -> Result:
    """`trackers` SORT with its defaults at the sequence's frame rate."""
    from trackers import SORTTracker

    return _run_roboflow(seq, lambda fps: SORTTracker(frame_rate=fps))


PEERS: dict[str, Callable[[Sequence], Result]] = {
    "norfair": run_norfair,
    "bytetrack": run_bytetrack,
    "sort": run_sort,
}


# -------------------------------------------------------------------------------- metrics


def write_rows(path: Path, rows: Iterable[Row]) -> None:
    """MOTChallenge result file; confidence 1 and class column -1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for f, i, x, y, w, h in sorted(rows):
            out.write(f"{f},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n")


def clear_metrics(gt_path: Path, res_path: Path) -> dict[str, float]:
    """MOTA, IDF1, ID switches and their counts from motmetrics (IoU >= 0.5 to match)."""
    import motmetrics as mm

    gt = mm.io.loadtxt(str(gt_path), fmt="mot15-2D", min_confidence=1)
    res = mm.io.loadtxt(str(res_path), fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt, res, "iou", distth=0.5)
    names = ["mota", "idf1", "num_switches", "num_misses", "num_false_positives"]
    names += ["num_objects", "idtp", "idfp", "idfn"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="seq")
    row = {name: float(summary[name].iloc[0]) for name in names}
    return {
        "MOTA": row["mota"],
        "IDF1": row["idf1"],
        "IDsw": row["num_switches"],
        # Counts behind them, so sequences can be combined as one long run.
        "errors": row["num_misses"] + row["num_false_positives"] + row["num_switches"],
        "objects": row["num_objects"],
        "idtp": row["idtp"],
        "idfp": row["idfp"],
        "idfn": row["idfn"],
    }


def hota(
    data: Path, sequences: list[Sequence], trackers_dir: Path, names: list[str]
) -> dict[str, dict[str, float]]:
    """HOTA per tracker and sequence (plus COMBINED_SEQ) from TrackEval, benchmark MOT15."""
    import trackeval

    eval_config = trackeval.Evaluator.get_default_eval_config()
    eval_config.update(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_ONLY_COMBINED": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "DISPLAY_LESS_PROGRESS": True,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_EMPTY_CLASSES": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
        }
    )
    dataset_config = {
        "GT_FOLDER": str(data),
        "TRACKERS_FOLDER": str(trackers_dir),
        "OUTPUT_FOLDER": str(trackers_dir / "trackeval"),
        "TRACKERS_TO_EVAL": names,
        "BENCHMARK": "MOT15",
        "SPLIT_TO_EVAL": "train",
        "SKIP_SPLIT_FOL": True,
        "SEQ_INFO": {s.name: s.length for s in sequences},
        "PRINT_CONFIG": False,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = trackeval.Evaluator(eval_config)
        dataset = trackeval.datasets.MotChallenge2DBox(dataset_config)
        results, _ = evaluator.evaluate([dataset], [trackeval.metrics.HOTA()])
    out: dict[str, dict[str, float]] = {}
    for name in names:
        per_seq = results["MotChallenge2DBox"][name]
        out[name] = {
            seq: float(np.mean(per_seq[seq]["pedestrian"]["HOTA"]["HOTA"])) for seq in per_seq
        }
    return out


def synthetic_ms_per_frame(
    tracks: int = 10, frames: int = 2000, sharp_boxes: bool = True
) -> float:
    """Milliseconds per maskwatch update with `tracks` people walking across a 25 fps scene.

    sharp_boxes: as `maskwatch track --mot` runs the tracker (True) or as the daemon does.
    """
    rng = np.random.default_rng(0)
    start_xy = rng.uniform(50, 1500, size=(tracks, 2))
    velocity = rng.uniform(-40, 40, size=(tracks, 2))
    tracker = Tracker(TrackerConfig(), sharp_boxes=sharp_boxes)
    spent = 0.0
    for k in range(frames):
        t = k / 25.0
        xy = start_xy + velocity * t + rng.normal(0, 1.0, size=(tracks, 2))
        dets = [
            Detection((x, y, x + 40.0, y + 48.0), FACE_NOT_VISIBLE, 0.9, (0.05, 0.05, 0.9))
            for x, y in xy.tolist()
        ]
        begin = time.perf_counter()
        tracker.update(dets, t)
        spent += time.perf_counter() - begin
    return 1000.0 * spent / frames


# --------------------------------------------------------------------------------- report


def _combined(rows: list[dict[str, float]], hota_all: float) -> dict[str, float]:
    """Several sequences' rows combined as one long run, as TrackEval and motmetrics do."""
    total_frames = sum(r["frames"] for r in rows)
    idtp = sum(r["idtp"] for r in rows)
    return {
        "HOTA": hota_all,
        "MOTA": 1.0 - sum(r["errors"] for r in rows) / sum(r["objects"] for r in rows),
        "IDF1": 2 * idtp / (2 * idtp + sum(r["idfp"] + r["idfn"] for r in rows)),
        "IDsw": sum(r["IDsw"] for r in rows),
        "identities": sum(r["identities"] for r in rows),
        "people": sum(r["people"] for r in rows),
        "ms": sum(r["ms"] * r["frames"] for r in rows) / total_frames,
        "frames": total_frames,
    }


def evaluate(
    data: Path,
    config: TrackerConfig | None = None,
    peers: bool = True,
    detect_every: Iterable[int] = (1,),
    variants: Iterable[str] = (),
) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """Run every tracker on every sequence; the markdown table and the numbers behind it.

    detect_every: maskwatch runs once per n, detecting every n-th frame ("maskwatch-every-n").
    variants: kinds of edge.tools.mot_variants to evaluate beside the sequences themselves; each
    kind gets its own combined row ("all-clean", ...), the sequences themselves "all".
    """
    runners: dict[str, Callable[[Sequence], Result]] = {
        ("maskwatch" if n == 1 else f"maskwatch-every-{n}"): functools.partial(
            run_maskwatch, config=config, every=n
        )
        for n in detect_every
    }
    missing: list[str] = []
    if peers:
        for name, runner in PEERS.items():
            module = {"norfair": "norfair", "bytetrack": "trackers", "sort": "trackers"}[name]
            try:
                __import__(module)
            except ImportError:
                missing.append(name)
                continue
            runners[name] = runner
    numbers: dict[str, dict[str, dict[str, float]]] = {name: {} for name in runners}
    kinds = list(variants)
    with tempfile.TemporaryDirectory(prefix="eval_tracking_") as tmp:
        tmp_dir = Path(tmp)
        if kinds:
            source, data = data, tmp_dir / "sequences"
            write_variants(source, data, kinds)
        sequences = load_sequences(data)
        # Sequences grouped by variant kind, originals ("") first, in the order asked for.
        groups: dict[str, list[Sequence]] = {kind: [] for kind in ["", *kinds]}
        for seq in sequences:
            groups.setdefault(kind_of(seq.name), []).append(seq)
        groups = {kind: seqs for kind, seqs in groups.items() if seqs}
        for seq in sequences:
            people = seq.people()
            for name, runner in runners.items():
                result = runner(seq)
                res_path = tmp_dir / name / "data" / f"{seq.name}.txt"
                write_rows(res_path, result.rows)
                row = clear_metrics(seq.gt_path, res_path)
                row.update(
                    identities=result.identities,
                    people=people,
                    ms=result.ms_per_frame,
                    frames=seq.length,
                )
                numbers[name][seq.name] = row
        order: list[str] = []
        for kind, seqs in groups.items():
            scores = hota(data, seqs, tmp_dir, list(runners))
            total = "all" if not kind else f"all-{kind}"
            for name, per_seq in numbers.items():
                for seq in seqs:
                    per_seq[seq.name]["HOTA"] = scores[name][seq.name]
                rows = [per_seq[seq.name] for seq in seqs]
                per_seq[total] = _combined(rows, scores[name]["COMBINED_SEQ"])
            order += [*(s.name for s in seqs), total]
    lines = [
        "| sequence | tracker | HOTA | MOTA | IDF1 | ID sw. | identities / people | count error "
        "| ms / frame |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seq_name in order:
        for name in runners:
            r = numbers[name][seq_name]
            error = (r["identities"] - r["people"]) / r["people"]
            lines.append(
                f"| {seq_name} | {name} | {r['HOTA']:.3f} | {r['MOTA']:.3f} | {r['IDF1']:.3f} "
                f"| {r['IDsw']:.0f} | {r['identities']:.0f} / {r['people']:.0f} "
                f"| {error:+.1%} | {r['ms']:.3f} |"
            )
    lines.append("")
    # Medians of runs interleaved in this process: one run moves with whatever else the
    # machine does.
    daemon, mot = [], []
    for _ in range(SYNTHETIC_RUNS):
        daemon.append(synthetic_ms_per_frame(sharp_boxes=False))
        mot.append(synthetic_ms_per_frame(sharp_boxes=True))
    lines.append(
        f"maskwatch update with 10 live tracks (synthetic, 25 fps, median of "
        f"{SYNTHETIC_RUNS} runs): {statistics.median(daemon):.3f} ms per frame as the daemon "
        f"runs it, {statistics.median(mot):.3f} with sharp boxes (`maskwatch track --mot`)"
    )
    if missing:
        lines.append(f"not installed, skipped: {', '.join(missing)}")
    return "\n".join(lines) + "\n", numbers


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m edge.tools.eval_tracking`."""
    parser = argparse.ArgumentParser(prog="python -m edge.tools.eval_tracking", description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder of MOTChallenge sequences"
    )
    parser.add_argument("--no-peers", action="store_true", help="evaluate maskwatch only")
    parser.add_argument(
        "--detect-every",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="maskwatch rows detecting every N-th frame only (Kalman prediction between)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=KINDS,
        default=[],
        metavar="KIND",
        help="also evaluate these edge.tools.mot_variants kinds of every sequence "
        f"({', '.join(KINDS)})",
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.detect_every):
        print("eval-tracking: --detect-every values must be at least 1", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"eval-tracking: no MOT15 data at {args.data}", file=sys.stderr)
        return 2
    try:
        import motmetrics  # noqa: F401
        import trackeval  # noqa: F401
    except ImportError as err:
        print(f"eval-tracking: {err.name} missing: pip install -e '.[eval]'", file=sys.stderr)
        return 2
    table, _ = evaluate(
        args.data,
        peers=not args.no_peers,
        detect_every=args.detect_every,
        variants=args.variants,
    )
    print(table, end="")
    TABLE_PATH.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
