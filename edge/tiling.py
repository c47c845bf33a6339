"""Detect small heads in large frames by running the detector on overlapping tiles.

The model sees its input at 320 x 320: a 1280 x 720 frame shrinks 4x, so a 16 px head becomes
4 px, far below what the model finds. Cutting the frame into a grid of tiles that overlap (so a
head on a seam is whole in at least one tile) gives each head more model pixels, at the price of
one inference per tile. Detections from all tiles are merged by class-agnostic NMS, and a box
that touches a tile's inner edge is dropped when another tile holds all of it: that tile saw the
whole head, this one half of it.

Still photos (`maskwatch detect`) have faces of every size in one picture: detect_still looks at
the whole image and then at finer and finer grids of tiles, each tile keeping only the faces
that are small in its input, and at the whole image zoomed out, for faces that fill much of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import cv2
import numpy as np

from edge.anchors import inside_matrix, iou_matrix
from edge.detection import FACE_NOT_VISIBLE, Detection
from edge.layout import Window
from edge.postprocess import nms

Box = tuple[float, float, float, float]

# A box within this many pixels of a tile's inner edge is cut by it.
EDGE_PX = 2


def tile_windows(width: int, height: int, columns: int, rows: int, overlap: float) -> list[Window]:
    """Tile rectangles (x1, y1, x2, y2) covering the frame; neighbours share `overlap` of a tile.

    With overlap o and n tiles along a side of length L, each tile is L / (n - (n - 1) o) long.
    """
    def spans(length: int, n: int) -> list[tuple[int, int]]:
        if n == 1:
            return [(0, length)]
        size = length / (n - (n - 1) * overlap)
        step = size * (1 - overlap)
        return [(round(i * step), min(length, round(i * step + size))) for i in range(n)]

    return [
        (x1, y1, x2, y2) for y1, y2 in spans(height, rows) for x1, x2 in spans(width, columns)
    ]


def _cut_by_inner_edge(box: tuple[float, ...], window: Window, width: int, height: int) -> bool:
    """Whether the box touches an edge of its tile that is not the frame's edge."""
    x1, y1, x2, y2 = box
    wx1, wy1, wx2, wy2 = window
    return (
        (wx1 > 0 and x1 <= wx1 + EDGE_PX)
        or (wy1 > 0 and y1 <= wy1 + EDGE_PX)
        or (wx2 < width and x2 >= wx2 - EDGE_PX)
        or (wy2 < height and y2 >= wy2 - EDGE_PX)
    )


def _inside(box: tuple[float, ...], window: Window) -> bool:
    """Whether the box lies within the window, clear of its edges."""
    return (
        box[0] > window[0] + EDGE_PX
        and box[1] > window[1] + EDGE_PX
        and box[2] < window[2] - EDGE_PX
        and box[3] < window[3] - EDGE_PX
    )


# Still photos (`maskwatch detect`): neighbouring tiles share a quarter of their side, and a tile
# keeps only faces under TILE_FACE_MAX_PX in the model's input. A tile magnifies: a face that
# large there is one the coarser passes see well. From PIECE_FROM_PX up, what a tile adds is
# often a piece of a close-up face (an eye, an ear) read as a face, so such a box is dropped
# when at least PIECE_INSIDE of it lies inside a face box that a coarser view (the whole image,
# zoomed out, mirrored) found and that is PIECE_AREA_RATIO times its area or more; a tile's box
# of about the same size as the coarse one is kept, often the better-placed box of that face.
# The model card ("Face-mask photos beside the peers") gives what each bound and the rule
# changed on the photos and close-ups.
STILL_OVERLAP = 0.25
TILE_FACE_MAX_PX = 96.0
PIECE_FROM_PX = 64.0
PIECE_INSIDE = 0.7
PIECE_AREA_RATIO = 3.0
# A grid whose tiles would be narrower than this is skipped: nothing left to magnify.
MIN_TILE_PX = 32
# Large faces: a face filling a portrait or a door camera's picture is 200-300 px in the input,
# where the model is less sure of it than at about 100 px (face-mask-853 validation faces
# cropped to fill 85 % of a picture: AP50 0.879 / 0.725 in one pass, 0.954 / 0.839 with the
# views below, `make eval-model`). The whole image is also seen shrunk by each ZOOM_OUTS
# factor into a corner of the input; the whole-image pass keeps faces under
# STILL_LARGE_FACE_PX in its input, a zoomed-out pass those from ZOOMED_MIN_PX to
# STILL_LARGE_FACE_PX in its own (the last pass with no upper limit). The ranges overlap; NMS
# keeps the better box. A camera's zoomed-out view (edge.pipeline) keeps the whole frame's
# heads under LARGE_FACE_PX: one look a frame, where the smaller bound counts a face filling
# the frame twice less often.
ZOOM_OUTS = (2.0, 4.0)
STILL_LARGE_FACE_PX = 160.0
LARGE_FACE_PX = 96.0
ZOOMED_MIN_PX = 40.0
# Box voting (vote_boxes): a box much less sure than the kept one is often a piece of the head
# or a neighbour's, and would pull the mean off.
VOTE_SCORE_SHARE = 0.5


def still_windows(width: int, height: int, scales: int) -> list[list[Window]]:
    """The windows of each scale: the whole image, then 2 x 2, ..., scales x scales tiles.

    A still photo has faces of every size: the whole-image pass finds the large ones, each
    finer grid gives the small ones n times more model pixels. Grids of tiles narrower than
    MIN_TILE_PX are left out, so a tiny image is detected whole only.
    """
    return [[(0, 0, width, height)]] + [
        tile_windows(width, height, n, n, STILL_OVERLAP)
        for n in range(2, scales + 1)
        if min(width, height) >= n * MIN_TILE_PX
    ]


def _shifted(found: list[Detection], x: int, y: int) -> list[Detection]:
    """Detections in a window's pixels moved to the frame's, the window starting at (x, y)."""
    return [
        replace(d, box=(d.box[0] + x, d.box[1] + y, d.box[2] + x, d.box[3] + y)) for d in found
    ]


def _zoomed_out(
    detect: Callable[[np.ndarray], list[Detection]],
    image: np.ndarray,
    factor: float,
    input_size: int,
) -> list[Detection]:
    """Detections on the image shrunk `factor` times below the input's size, in image pixels.

    The shrunk image lies in the top-left corner of a black input-sized square, as the
    letterbox pads; the square goes to `detect` as it is (its letterbox is then the identity).
    """
    height, width = image.shape[:2]
    scale = input_size / factor / max(height, width)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((input_size, input_size, 3), np.uint8)
    canvas[:h, :w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return [
        replace(
            d,
            box=(
                min(d.box[0] / scale, width),
                min(d.box[1] / scale, height),
                min(d.box[2] / scale, width),
                min(d.box[3] / scale, height),
            ),
        )
        for d in detect(canvas)
    ]


def longer_side(box: Box) -> float:
    """A box's longer side (x1, y1, x2, y2), in its own pixels."""
    return max(box[2] - box[0], box[3] - box[1])


def _mirrored(box: Box, width: int) -> Box:
    """A box of an image flipped left to right, in the unflipped image's pixels."""
    return (width - box[2], box[1], width - box[0], box[3])


def _still_views(
    detect: Callable[[np.ndarray], list[Detection]],
    image: np.ndarray,
    scales: int,
    input_size: int,
    tiles: bool = True,
) -> tuple[list[list[Detection]], list[Window], list[float]]:
    """The faces each view of detect_still keeps (image pixels), each view's window, and
    for a tile the image pixels per model-input pixel in it (0 for the other views).

    tiles=False leaves the grids of tiles out: the whole image and its zoomed-out views only.
    """
    height, width = image.shape[:2]
    windows: list[Window] = []
    found: list[list[Detection]] = []
    tile_px: list[float] = []
    # Image pixels per model-input pixel on the whole-image pass.
    per_input_px = max(width, height) / input_size
    levels = still_windows(width, height, scales)
    for level, level_windows in enumerate(levels if tiles else levels[:1]):
        for x1, y1, x2, y2 in level_windows:
            per_tile_px = max(x2 - x1, y2 - y1) / input_size if level else 0.0
            if level == 0:
                limit = np.inf if scales == 1 else STILL_LARGE_FACE_PX * per_input_px
            else:
                limit = TILE_FACE_MAX_PX * per_tile_px
            small = [d for d in detect(image[y1:y2, x1:x2]) if longer_side(d.box) < limit]
            found.append(_shifted(small, x1, y1))
            windows.append((x1, y1, x2, y2))
            tile_px.append(per_tile_px)
    if scales > 1:
        for k, factor in enumerate(ZOOM_OUTS):
            low = ZOOMED_MIN_PX * factor * per_input_px
            high = (
                np.inf
                if k == len(ZOOM_OUTS) - 1
                else STILL_LARGE_FACE_PX * factor * per_input_px
            )
            dets = _zoomed_out(detect, image, factor, input_size)
            found.append([d for d in dets if low <= longer_side(d.box) < high])
            windows.append((0, 0, width, height))
            tile_px.append(0.0)
    return found, windows, tile_px


def without_pieces(found: list[list[Detection]], tile_px: list[float]) -> list[list[Detection]]:
    """Each view's faces less the tiles' boxes that are pieces of a larger face.

    A tile's box of PIECE_FROM_PX or more in the tile's input, lying at least PIECE_INSIDE
    inside a face box (either front label) of a coarser view whose area is PIECE_AREA_RATIO
    times its own or more, is a piece of that face (see TILE_FACE_MAX_PX). tile_px: for each
    view, image pixels per model-input pixel if it is a tile (a camera's region too), 0 if it
    is a coarser view.
    """
    faces = np.array(
        [
            d.box
            for view, px in zip(found, tile_px, strict=True)
            if not px
            for d in view
            if d.label != FACE_NOT_VISIBLE
        ],
        dtype=np.float64,
    ).reshape(-1, 4)
    if not len(faces):
        return found
    face_area = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    out: list[list[Detection]] = []
    for view, px in zip(found, tile_px, strict=True):
        if not px or not view:
            out.append(view)
            continue
        boxes = np.array([d.box for d in view], dtype=np.float64)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = w * h
        large = np.maximum(w, h) >= PIECE_FROM_PX * px
        inside = inside_matrix(boxes, faces) >= PIECE_INSIDE
        piece = large & (inside & (face_area[None, :] >= PIECE_AREA_RATIO * area[:, None])).any(1)
        out.append([view[k] for k in np.flatnonzero(~piece)])
    return out


def detect_still(
    detect: Callable[[np.ndarray], list[Detection]],
    image: np.ndarray,
    scales: int,
    input_size: int,
    nms_iou: float,
    max_detections: int,
    mirror: bool = False,
    box_vote: float = 0.0,
) -> list[Detection]:
    """Faces of every size in a still image: the whole image, finer grids of tiles, zoomed out.

    scales 1 is one pass over the whole image. From 2, each tile keeps the faces smaller than
    TILE_FACE_MAX_PX in its model input, and the whole image is also detected zoomed out
    (ZOOM_OUTS) for the faces too large for one pass. With mirror, the whole image and its
    zoomed-out views are detected a second time flipped left to right: a face's two readings
    differ, and NMS keeps the more confident (tiles are not mirrored: their small faces gain
    less than the false alarms that a second look at a crowd adds). All are merged as tiles
    are (a box cut by a tile's edge is dropped, the whole image holds it), each face's box is
    the vote of its views' boxes when box_vote > 0 (vote_boxes, with box_vote as the IoU),
    and the max_detections best are returned, best first.
    """
    height, width = image.shape[:2]
    found, windows, tile_px = _still_views(detect, image, scales, input_size)
    if mirror:
        flipped, flipped_windows, flipped_px = _still_views(
            detect, np.ascontiguousarray(image[:, ::-1]), scales, input_size, tiles=False
        )
        found += [[replace(d, box=_mirrored(d.box, width)) for d in f] for f in flipped]
        windows += [(width - x2, y1, width - x1, y2) for x1, y1, x2, y2 in flipped_windows]
        tile_px += flipped_px
    merged = merge_windows(
        without_pieces(found, tile_px), windows, width, height, nms_iou, box_vote=box_vote
    )
    return sorted(merged, key=lambda d: -d.score)[:max_detections]


def detect_tiled(
    detect: Callable[[np.ndarray], list[Detection]],
    frame: np.ndarray,
    windows: list[Window],
    nms_iou: float,
) -> list[Detection]:
    """Run `detect` on each window of the frame and merge the heads into frame coordinates."""
    found = []
    for x1, y1, x2, y2 in windows:
        # A view, not a copy: the detector's letterbox reads it once.
        found.append(_shifted(detect(frame[y1:y2, x1:x2]), x1, y1))
    h, w = frame.shape[:2]
    return merge_windows(found, windows, w, h, nms_iou)


def merge_windows(
    found: Sequence[Sequence[Detection]],
    windows: Sequence[Window],
    width: int,
    height: int,
    nms_iou: float,
    drop_cut: bool = False,
    box_vote: float = 0.0,
) -> list[Detection]:
    """Heads found in each window (frame pixels) as one list: half heads dropped, NMS.

    Used for tiles and for regions alike: a box cut by its window's inner edge is dropped when
    another window holds all of it (always, with drop_cut: regions are placed around where
    heads are, so a head they cut is a half head that the next frame's regions hold whole),
    and heads seen in two overlapping windows become one. With box_vote > 0 each head NMS keeps
    takes the box of vote_boxes over all the windows' boxes.
    """
    kept: list[Detection] = []
    for window, dets in zip(windows, found, strict=True):
        for det in dets:
            if _cut_by_inner_edge(det.box, window, width, height) and (
                drop_cut or any(_inside(det.box, other) for other in windows if other != window)
            ):
                continue
            kept.append(det)
    if len(windows) == 1 or len(kept) < 2:
        return kept
    boxes = np.array([d.box for d in kept], dtype=np.float32)
    scores = np.array([d.score for d in kept], dtype=np.float32)
    keep = nms(boxes, scores, nms_iou, len(kept))
    if box_vote > 0:
        return vote_boxes(kept, keep, box_vote)
    return [kept[i] for i in keep]


def vote_boxes(found: Sequence[Detection], keep: np.ndarray, min_iou: float) -> list[Detection]:
    """found[keep], each with the score-weighted mean of the boxes found for the same head.

    The boxes of one head from different views (tiles, the whole image, zoomed out, mirrored)
    scatter around it, each placed by a different crop of it; their mean tends to lie closer
    to the head than the single most confident one (box voting, Gidaris & Komodakis 2015). A box
    votes for a kept one when it overlaps it by min_iou or more, has its label (a face box
    and a head box follow different conventions) and scores at least VOTE_SCORE_SHARE of it.
    Another kept box never votes (with nms_iou above min_iou two would become one), and a
    box no other box votes for is returned as it is. Scores and labels are kept.
    """
    boxes = np.array([d.box for d in found], dtype=np.float64)
    scores = np.array([d.score for d in found])
    labels = np.array([d.label for d in found])
    may_vote = np.ones(len(found), dtype=bool)
    may_vote[keep] = False
    mean = boxes[keep]
    for label in np.unique(labels[keep]).tolist():
        # The kept boxes of one label against the boxes that may vote for them, in one go.
        rows = np.flatnonzero(labels[keep] == label)
        kept = keep[rows]
        voters = np.flatnonzero(
            may_vote & (labels == label) & (scores >= VOTE_SCORE_SHARE * scores[kept].min())
        )
        votes = iou_matrix(boxes[kept], boxes[voters]) >= min_iou
        votes &= scores[voters][None, :] >= VOTE_SCORE_SHARE * scores[kept][:, None]
        weight = votes * scores[voters][None, :]
        ok = votes.any(axis=1)
        # The kept box's own vote, then the others'.
        own = scores[kept[ok]]
        mean[rows[ok]] = (own[:, None] * boxes[kept[ok]] + weight[ok] @ boxes[voters]) / (
            own + weight[ok].sum(axis=1)
        )[:, None]
    return [
        replace(found[i], box=(b[0], b[1], b[2], b[3]))
        for i, b in zip(keep.tolist(), mean.tolist(), strict=True)
    ]
