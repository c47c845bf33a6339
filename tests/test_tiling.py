"""Tiled detection: the grid covers the frame, seams are overlapped, merging keeps whole heads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import camera_pipeline, one_label

from edge.config.detector import DetectorConfig
from edge.detect import Detector
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK, Detection
from edge.tiling import (
    MIN_TILE_PX,
    STILL_OVERLAP,
    TILE_FACE_MAX_PX,
    ZOOM_OUTS,
    detect_still,
    detect_tiled,
    still_windows,
    tile_windows,
    vote_boxes,
)

CLIP = Path(__file__).resolve().parents[2] / "shared/videos/one-by-one-person-detection.mp4"


def test_one_tile_is_the_whole_frame() -> None:
    assert tile_windows(1280, 720, 1, 1, 0.2) == [(0, 0, 1280, 720)]


@pytest.mark.parametrize(("columns", "rows", "overlap"), [(2, 2, 0.15), (3, 2, 0.2), (4, 3, 0.0)])
def test_tiles_cover_the_frame_and_neighbours_share_the_overlap(
    columns: int, rows: int, overlap: float
) -> None:
    windows = tile_windows(1280, 720, columns, rows, overlap)
    assert len(windows) == columns * rows
    covered = np.zeros((720, 1280), dtype=bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    first, second = windows[0], windows[1]
    width = first[2] - first[0]
    shared = first[2] - second[0]
    assert shared == pytest.approx(overlap * width, abs=1)
    assert second[2] - second[0] == pytest.approx(width, abs=1)


def _fake_detector(
    heads: list[tuple[float, float, float, float]], windows: list[tuple[int, int, int, int]]
) -> tuple[Callable[[np.ndarray], list[Detection]], list[tuple[int, int]]]:
    """A stand-in that 'sees' fixed frame-coordinate boxes, clipped to whatever crop it gets.

    detect_tiled visits the windows in order, so the n-th call gets the n-th window's crop.
    Only for testing the merge logic; the real model is tested below.
    """
    calls: list[tuple[int, int]] = []

    def detect(crop: np.ndarray) -> list[Detection]:
        if len(calls) == len(windows):  # detect_still's zoomed-out views: nothing seen there
            return []
        ox, oy = windows[len(calls)][:2]
        h, w = crop.shape[:2]
        calls.append((ox, oy))
        found = []
        for x1, y1, x2, y2 in heads:
            cx1, cy1 = max(x1 - ox, 0), max(y1 - oy, 0)
            cx2, cy2 = min(x2 - ox, w), min(y2 - oy, h)
            if cx2 - cx1 > 2 and cy2 - cy1 > 2:
                score = (cx2 - cx1) * (cy2 - cy1) / ((x2 - x1) * (y2 - y1))  # partial = lower
                found.append(
                    Detection((cx1, cy1, cx2, cy2), FACE_NOT_VISIBLE, score, (0.0, 0.0, score))
                )
        return found

    return detect, calls


def test_a_head_on_a_seam_is_reported_once_whole() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    windows = tile_windows(1280, 720, 2, 1, 0.2)
    seam = windows[1][0]  # the second tile starts inside the first
    head = (seam + 10.0, 300.0, seam + 40.0, 335.0)  # inside the overlap, cut by tile 1's edge
    cut = (windows[0][2] - 15.0, 100.0, windows[0][2] + 15.0, 135.0)  # straddles tile 1's edge
    detect, calls = _fake_detector([head, cut], windows)
    found = detect_tiled(detect, frame, windows, 0.45)
    assert len(calls) == 2
    boxes = sorted(tuple(round(v) for v in d.box) for d in found)
    assert boxes == sorted([tuple(round(v) for v in head), tuple(round(v) for v in cut)])


def test_heads_away_from_seams_keep_their_frame_coordinates() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    heads = [(50.0, 60.0, 80.0, 95.0), (1100.0, 600.0, 1130.0, 640.0)]
    windows = tile_windows(1280, 720, 3, 2, 0.15)
    detect, _ = _fake_detector(heads, windows)
    found = detect_tiled(detect, frame, windows, 0.45)
    assert sorted(d.box for d in found) == sorted(heads)


def test_a_still_is_detected_whole_and_then_in_finer_grids() -> None:
    assert still_windows(640, 480, 1) == [[(0, 0, 640, 480)]]
    assert still_windows(640, 480, 3) == [
        [(0, 0, 640, 480)],
        tile_windows(640, 480, 2, 2, STILL_OVERLAP),
        tile_windows(640, 480, 3, 3, STILL_OVERLAP),
    ]
    # Tiles narrower than MIN_TILE_PX magnify nothing: a tiny image is detected whole only.
    assert still_windows(3 * MIN_TILE_PX - 1, 480, 3) == [
        [(0, 0, 3 * MIN_TILE_PX - 1, 480)],
        tile_windows(3 * MIN_TILE_PX - 1, 480, 2, 2, STILL_OVERLAP),
    ]
    assert still_windows(2, 2, 4) == [[(0, 0, 2, 2)]]


def _still_detector(
    heads: list[tuple[float, float, float, float]], width: int, height: int, scales: int
) -> tuple[Callable[[np.ndarray], list[Detection]], list[tuple[int, int]]]:
    """_fake_detector over the windows detect_still visits, in its order."""
    windows = [w for level in still_windows(width, height, scales) for w in level]
    return _fake_detector(heads, windows)


def test_a_face_across_seams_is_reported_once_from_the_whole_image() -> None:
    """Pieces of a face that crosses tile seams are small enough for the tiles to keep, but each
    is cut by a tile's inner edge and the whole image holds the face: only its whole box is
    kept, and a small face inside one tile is kept too."""
    frame = np.zeros((480, 640, 3), np.uint8)
    seam_x = still_windows(640, 480, 3)[2][0][2]  # where the first 3 x 3 tile ends
    face = (seam_x - 30.0, 150.0, seam_x + 30.0, 210.0)  # 60 px: pieces under the size limit
    small = (20.0, 20.0, 36.0, 38.0)
    detect, calls = _still_detector([face, small], 640, 480, 3)
    found = detect_still(detect, frame, 3, 320, 0.45, 50)
    assert len(calls) == 1 + 4 + 9  # the zoomed-out views are not counted by the stand-in
    assert sorted(d.box for d in found) == sorted([face, small])


def test_tiles_keep_only_faces_small_in_their_input() -> None:
    """A face that fits inside a tile but is large in its input is the whole image's to find:
    a tile's box of it (here the whole pass misses it) is dropped, a small face's is kept."""
    frame = np.zeros((480, 640, 3), np.uint8)
    tile = still_windows(640, 480, 2)[1][0]
    scale = 320 / max(tile[2] - tile[0], tile[3] - tile[1])
    side = TILE_FACE_MAX_PX / scale  # image pixels of a face TILE_FACE_MAX_PX in the tile input
    big = (40.0, 40.0, 40.0 + side + 2, 40.0 + side + 2)
    small = (200.0, 40.0, 200.0 + side - 2, 40.0 + side - 2)
    detect, _ = _still_detector([big, small], 640, 480, 2)

    def tiles_only(crop: np.ndarray) -> list[Detection]:
        found = detect(crop)
        return [] if crop.shape[:2] == frame.shape[:2] else found

    found = detect_still(tiles_only, frame, 2, 320, 0.45, 50)
    assert [d.box for d in found] == [small]


@pytest.mark.parametrize("mirror", [False, True])
def test_a_tile_box_inside_a_much_larger_face_is_a_piece_of_it(mirror: bool) -> None:
    """A close-up face the whole image finds; a tile reads its eye, 70 px in the tile's input,
    as a face: dropped as a piece of the larger face. Kept: a tile's box wholly inside a
    coarse face box of under three times its area (a better-placed box of that face), a tile
    box under 64 px inside the large face (a small face is no piece), and a large tile box
    inside a head box (face_not_visible: a face on a head is no piece of it)."""
    frame = np.zeros((480, 640, 3), np.uint8)
    windows = [w for level in still_windows(640, 480, 2) for w in level]
    per_px = max(windows[1][2] - windows[1][0], windows[1][3] - windows[1][1]) / 320
    side = 70 * per_px  # image pixels of a box 70 px in a tile's input
    face = (20.0, 20.0, 220.0, 220.0)  # 100 px in the whole-image input
    eye = (60.0, 80.0, 60.0 + side, 80.0 + side)
    small = (150.0, 150.0, 150.0 + 50 * per_px, 150.0 + 50 * per_px)  # 50 px in the tile
    head = (300.0, 260.0, 500.0, 460.0)
    on_head = (330.0, 300.0, 330.0 + side, 300.0 + side)
    coarse = (400.0, 20.0, 400.0 + 1.6 * side, 20.0 + 1.6 * side)  # 2.56 x the tile box's area
    better = (410.0, 30.0, 410.0 + side, 30.0 + side)  # wholly inside it
    whole = [(face, FRONT_WITH_MASK), (head, FACE_NOT_VISIBLE), (coarse, FRONT_WITHOUT_MASK)]
    in_tiles = [(box, FRONT_WITHOUT_MASK) for box in (eye, small, on_head, better)]
    calls: list[int] = []

    def views(crop: np.ndarray) -> list[Detection]:
        k = len(calls)
        calls.append(k)
        if k >= len(windows):  # the zoomed-out and mirrored views: nothing
            return []
        ox, oy, x2, y2 = windows[k]
        found = []
        for box, label in whole if k == 0 else in_tiles:
            if box[0] >= ox and box[1] >= oy and box[2] <= x2 and box[3] <= y2:
                scores = [0.0, 0.0, 0.0]
                scores[label] = 0.8 if k == 0 else 0.9
                shifted = (box[0] - ox, box[1] - oy, box[2] - ox, box[3] - oy)
                found.append(
                    Detection(shifted, label, scores[label], (scores[0], scores[1], scores[2]))
                )
        return found

    found = {d.box for d in detect_still(views, frame, 2, 320, 0.45, 50, mirror=mirror)}
    assert eye not in found
    assert {face, head, small, on_head, better} <= found


def test_a_face_too_large_for_one_pass_is_read_from_a_zoomed_out_view() -> None:
    """A face 200 px in the whole-image input is taken from the 2x zoomed-out view (100 px
    there), in the photo's own pixels; a face 50 px in the input stays the whole pass's. The
    stand-in finds the bright patches of whatever it is given and labels them by the view: the
    whole image reads both as masks, the zoomed-out views read both unmasked."""
    frame = np.zeros((480, 640, 3), np.uint8)
    large, medium = (200, 40, 600, 440), (20, 20, 120, 120)  # 200 and 50 px in the 320 input
    for x1, y1, x2, y2 in (large, medium):
        frame[y1:y2, x1:x2] = 255
    views: list[tuple[int, int]] = []

    def patches(crop: np.ndarray) -> list[Detection]:
        views.append(crop.shape[:2])
        count, _, stats, _ = cv2.connectedComponentsWithStats((crop[..., 0] > 127).astype(np.uint8))
        whole = crop.shape[:2] == frame.shape[:2]
        label = FRONT_WITH_MASK if whole else FRONT_WITHOUT_MASK
        scores = (0.9, 0.0, 0.0) if whole else (0.0, 0.7, 0.0)
        return [
            Detection((x, y, x + w, y + h), label, max(scores), scores)
            for x, y, w, h, _ in stats[1:count].tolist()
        ]

    found = {d.box[0] < 150: d for d in detect_still(patches, frame, 3, 320, 0.45, 50)}
    assert len(views) == 1 + 4 + 9 + len(ZOOM_OUTS)
    assert views[-len(ZOOM_OUTS):] == [(320, 320)] * len(ZOOM_OUTS)
    assert found[False].label == FRONT_WITHOUT_MASK
    assert found[False].box == pytest.approx(large, abs=2.5)
    assert found[True].label == FRONT_WITH_MASK
    assert found[True].box == pytest.approx(medium)
    views.clear()
    (one,) = [d for d in detect_still(patches, frame, 1, 320, 0.45, 50) if d.box[0] > 150]
    assert views == [frame.shape[:2]]  # scales 1: one pass, the large face as it reads there
    assert one.label == FRONT_WITH_MASK


def test_a_mirrored_whole_view_reads_each_face_again_in_the_photos_own_pixels() -> None:
    """With mirror, the whole image and its zoomed-out views (not the tiles) are detected a
    second time flipped left to right, and a face's more confident reading wins, its box back
    in the photo's pixels. The stand-in reads
    a bright patch whose left edge is brighter than its right as unmasked (0.9), else masked
    (0.5): only the flipped view sees the patch that way round."""
    frame = np.zeros((480, 640, 3), np.uint8)
    face = (100, 200, 140, 240)  # 20 px in the whole image's 320 input: every view keeps it
    frame[200:240, 100:140] = np.linspace(120, 250, 40, dtype=np.uint8)[None, :, None]
    views = 0

    def read(crop: np.ndarray) -> list[Detection]:
        nonlocal views
        views += 1
        ys, xs = np.nonzero(crop[..., 0] > 60)
        if not len(xs) or xs.min() == 0 or xs.max() == crop.shape[1] - 1:
            return []  # no patch, or only a piece of it at the crop's edge
        row = crop[int(ys.mean()), xs.min() : xs.max() + 1, 0].astype(int)
        unmasked = row[0] > row[-1]
        label = FRONT_WITHOUT_MASK if unmasked else FRONT_WITH_MASK
        score = 0.9 if unmasked else 0.5
        scores = (0.0, score, 0.0) if unmasked else (score, 0.0, 0.0)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        return [Detection(box, label, score, scores)]

    (plain,) = detect_still(read, frame, 2, 320, 0.45, 50)
    single = views
    assert plain.label == FRONT_WITH_MASK
    views = 0
    (mirrored,) = detect_still(read, frame, 2, 320, 0.45, 50, mirror=True)
    assert views == single + 1 + len(ZOOM_OUTS)
    assert mirrored.label == FRONT_WITHOUT_MASK and mirrored.score == 0.9
    assert mirrored.box == pytest.approx(face, abs=1)


def test_a_still_gives_at_most_max_detections_best_first() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    heads = [(20.0 + 40 * i, 200.0 + 3 * i, 36.0 + 40 * i, 218.0 + 3 * i) for i in range(15)]
    scores = {h[0]: 0.3 + 0.04 * ((7 * i) % 15) for i, h in enumerate(heads)}

    def detect(crop: np.ndarray) -> list[Detection]:
        """The heads in no score order, seen on the whole image only (tiles see nothing)."""
        if crop.shape[:2] != frame.shape[:2]:
            return []
        return [Detection(h, FACE_NOT_VISIBLE, scores[h[0]], (0, 0, scores[h[0]])) for h in heads]

    for scales in (1, 3):
        found = detect_still(detect, frame, scales, 320, 0.45, 10)
        got = [d.score for d in found]
        assert len(got) == 10
        assert got == sorted(scores.values(), reverse=True)[:10]


@pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/videos (third-party data)")
def test_a_faces_box_is_the_vote_of_the_boxes_its_views_found() -> None:
    """The kept face's box is the score-weighted mean of the overlapping boxes of its label
    at least half as confident; a box of another label (a head box follows another
    convention), one less than half as sure and a neighbour's box do not vote; score and
    label stay the kept box's."""
    found = [
        one_label((100, 100, 140, 150), FRONT_WITH_MASK, 0.8),  # kept
        one_label((104, 102, 144, 152), FRONT_WITH_MASK, 0.4),  # the same face, half as sure
        one_label((96, 98, 140, 150), FRONT_WITH_MASK, 0.3),  # less than half as sure
        one_label((102, 101, 142, 151), FRONT_WITHOUT_MASK, 0.8),  # read the other way
        one_label((95, 90, 150, 160), FACE_NOT_VISIBLE, 0.8),  # the head box around it
        one_label((130, 100, 170, 150), FRONT_WITH_MASK, 0.8),  # a neighbour, IoU 0.2
    ]
    (voted, neighbour) = vote_boxes(found, np.array([0, 5]), 0.55)
    assert voted.box == pytest.approx((100 + 4 / 3, 100 + 2 / 3, 140 + 4 / 3, 150 + 2 / 3))
    assert (voted.label, voted.score) == (FRONT_WITH_MASK, 0.8)
    assert neighbour == found[5]


def test_kept_boxes_never_vote_for_each_other_and_a_lone_box_stays_as_it_is() -> None:
    """Two faces NMS kept apart (here with nms_iou above the vote's IoU) keep their own boxes,
    exactly: neither votes for the other, and nothing else votes for them."""
    found = [
        one_label((0.1, 0.3, 10.7, 10.9), FRONT_WITH_MASK, 0.9),
        one_label((0.1, 0.3, 10.7, 12.9), FRONT_WITH_MASK, 0.8),
    ]
    voted = vote_boxes(found, np.array([0, 1]), 0.55)
    assert [d.box for d in voted] == [found[0].box, found[1].box]


def test_photos_vote_boxes_only_when_asked() -> None:
    """detect_still with box_vote 0 keeps the most confident box of a face; with it, the mean
    of the views' boxes: here the whole image and a 2 x 2 tile place the face differently."""
    frame = np.zeros((600, 600, 3), np.uint8)

    top_left = still_windows(600, 600, 2)[1][0]

    def views(image: np.ndarray) -> list[Detection]:
        # The whole image boxes the face one way, the top-left tile 6 px further right (the
        # other tiles and the zoomed-out views see nothing).
        if image.shape[:2] == frame.shape[:2]:
            return [one_label((100, 100, 130, 140), FRONT_WITH_MASK, 0.9)]
        starts_at_origin = image.ctypes.data == frame.ctypes.data
        if image.shape[:2] == (top_left[3], top_left[2]) and starts_at_origin:
            return [one_label((106, 100, 136, 140), FRONT_WITH_MASK, 0.9)]
        return []

    (plain,) = detect_still(views, frame, 2, 320, 0.45, 50)
    (voted,) = detect_still(views, frame, 2, 320, 0.45, 50, box_vote=0.5)
    assert plain.box in ((100, 100, 130, 140), (106, 100, 136, 140))
    assert voted.box == pytest.approx((103, 100, 133, 140))


def test_tiling_finds_a_small_head_the_whole_frame_misses() -> None:
    """A real head shrunk into a large frame: the real model misses it whole, finds it tiled."""
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 245)  # a man standing at the table, seen from behind
    ok, picture = cap.read()
    cap.release()
    assert ok
    # The picture at 1/2 size in a 1920 x 1080 frame: the head is ~30 px, ~5 px at model scale.
    small = cv2.resize(picture, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    ox, oy = 700, 500
    frame[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    head = np.array([428, 9, 489, 84]) / 2 + [ox, oy, ox, oy]  # where the model boxes it at 1x

    detector = Detector(DetectorConfig())

    def hits(found: list[Detection]) -> int:
        x1, y1, x2, y2 = head
        return sum(
            1 for d in found if d.box[0] < x2 and d.box[2] > x1 and d.box[1] < y2 and d.box[3] > y1
        )

    assert hits(detector.detect(frame)) == 0
    tiled = detect_tiled(detector.detect, frame, tile_windows(1920, 1080, 4, 3, 0.2), 0.45)
    assert hits(tiled) == 1


def test_the_pipeline_reports_every_tiles_inference_time() -> None:
    """The daemon's inference_ms stat is a mean per inference: a tiled frame gives one per tile.

    (It once took only the last tile's time, once per frame.) A frame the detector skips
    (detect_every_n_frames) gives none.
    """
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    frame = np.full((480, 640, 3), 90, np.uint8)
    whole = camera_pipeline(detector).process(frame, 0.0)
    assert len(whole.inference_ms) == 1 and whole.inference_ms[0] > 0
    tiled = camera_pipeline(detector, tiles={"columns": 3, "rows": 2}, detect_every_n_frames=2)
    first, second = tiled.process(frame, 0.0), tiled.process(frame, 0.1)
    assert len(first.inference_ms) == 6 and all(ms > 0 for ms in first.inference_ms)
    assert second.inference_ms == [] and not second.detected
