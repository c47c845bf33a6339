"""Region selection: which small squares of the frame the detector looks at on each frame.

As Frigate does it, the detector looks where people can be rather than everywhere: around the
heads it already tracks and around whatever moved, at a size where small heads have enough
model pixels, with a slow sweep over the whole frame for people who arrive without moving.
Each region is a square of `size` frame pixels; grid x grid of them share one model input
(edge.layout.mosaic), so the cost is one inference per grid squared regions.

Order of priority, cut at `max_regions`: tracked heads (nearby heads share a region; a head too
large for a region gets one sized to it), then moving areas not already covered (top first: a
walking person's head is at the top of what moves), then cells of the sweep. The last input's
free places are filled from the sweep too, since they cost nothing. People near the camera,
too large for any region to find, are found by a look at the whole frame now and then, which
edge.pipeline adds (`whole_frame_s`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from edge.config.regions import RegionsConfig
from edge.layout import Placement, Window, mosaic

Box = tuple[float, float, float, float]

# A candidate region overlapping a chosen one by this IoU or more adds too little to be worth a
# place of its own.
COVERED_IOU = 0.5
# Moving areas grow by this share of a search region on every side before regions cover them.
MOTION_GROWTH = 0.15
# A head whose detector box is LARGE_SHARE of a search region's side or more is large: it gets
# a region sized to it even before its track counts, and the moving area around it is its own.
# The whole-frame view (regions.whole_frame_s) keeps heads from WHOLE_KEEP_SHARE of that side:
# smaller ones are the regions' to find, magnified.
LARGE_SHARE = 0.5
WHOLE_KEEP_SHARE = 1 / 3
# A moving area NEAR_MOTION_SIDES search regions tall (and half one wide) or more is someone
# near the camera, whom only the whole frame finds whole: on PETS 2009 (moving areas 82 px tall
# at the median, 206 px at the 99th percentile, 576 px frames) one frame of 795 after the first
# has such motion, on the one-by-one clip (people close to a 432 px tall frame) 193 of 1,394.
NEAR_MOTION_SIDES = 2.5


def region_side(grid: int, zoom: float, input_size: int) -> int:
    """A region's side in frame pixels: one mosaic cell of the input, divided by the zoom."""
    return max(8, round(input_size // grid / zoom))


def square_at(cx: float, cy: float, side: int, width: int, height: int) -> Window:
    """The side x side square centred on (cx, cy), moved inside the frame (clipped if larger)."""
    x1 = min(max(0, round(cx - side / 2)), max(0, width - side))
    y1 = min(max(0, round(cy - side / 2)), max(0, height - side))
    return (x1, y1, min(width, x1 + side), min(height, y1 + side))


def _iou(a: Window, b: Window) -> float:
    """Intersection over union of two windows."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


class Head(NamedTuple):
    """A tracked head as region selection sees it.

    Attributes:
        box: (x1, y1, x2, y2), frame pixels.
        confirmed: whether its track counts as a person already.
        travelled: whether it has moved at least its own height since its track began.
        seen_side: the longer side of the box the detector last drew for it (a face's own box,
            not the head around it that the track follows); 0 when not known.
    """

    box: Box
    confirmed: bool
    travelled: bool
    seen_side: float = 0.0


def _grown(box: Box, by: float) -> Box:
    """The box grown by `by` pixels on every side."""
    return (box[0] - by, box[1] - by, box[2] + by, box[3] + by)


def _explained(area: Box, heads: Sequence[Box], side: int) -> bool:
    """Whether a moving area fits one region and holds a tracked head's centre."""
    x1, y1, x2, y2 = area
    if x2 - x1 > side or y2 - y1 > 2 * side:
        return False
    return _holds_centre(area, heads)


def _holds_centre(area: Box, heads: Sequence[Box]) -> bool:
    """Whether the area holds the centre of one of the heads."""
    return any(
        area[0] <= (h[0] + h[2]) / 2 <= area[2] and area[1] <= (h[1] + h[3]) / 2 <= area[3]
        for h in heads
    )


def _spans(length: int, side: int, overlap: float) -> list[int]:
    """Start positions of side-long cells covering length, neighbours sharing `overlap`."""
    if length <= side:
        return [0]
    n = math.ceil((length - side) / (side * (1 - overlap))) + 1
    step = (length - side) / (n - 1)
    return [round(i * step) for i in range(n)]


def sweep_cells(width: int, height: int, side: int, overlap: float) -> list[Window]:
    """Overlapping side x side cells covering the frame, row by row."""
    return [
        (x, y, min(width, x + side), min(height, y + side))
        for y in _spans(height, side, overlap)
        for x in _spans(width, side, overlap)
    ]


def around_heads(heads: Sequence[Box], side: int, margin: float, width: int,
                 height: int, grow: bool = False) -> list[Window]:
    """Regions holding every head with `margin` head sizes around it; near heads share one.

    Greedy, top to bottom: a head joins the first region whose heads, with their margins,
    still fit in one side x side square together with it. With grow, a head too large for a
    side x side square with its margins gets a square as large as they are (shown smaller in
    its cell): cut by a small region, a near head is only pieces; a head joins such a group
    while all of them fit in the square its largest member needs.
    """
    groups: list[list[float]] = []  # x1, y1, x2, y2, side of the group's square
    for x1, y1, x2, y2 in sorted(heads, key=lambda b: (b[1], b[0])):
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        box = [x1 - mx, y1 - my, x2 + mx, y2 + my]
        need = max(side, math.ceil(max(box[2] - box[0], box[3] - box[1]))) if grow else side
        for group in groups:
            union = [min(group[0], box[0]), min(group[1], box[1]),
                     max(group[2], box[2]), max(group[3], box[3])]
            limit = max(group[4], need)
            if union[2] - union[0] <= limit and union[3] - union[1] <= limit:
                group[:] = [*union, limit]
                break
        else:
            groups.append([*box, need])
    return [
        square_at((g[0] + g[2]) / 2, (g[1] + g[3]) / 2, int(g[4]), width, height)
        for g in groups
    ]


def over_motion(areas: Sequence[Box], side: int, width: int, height: int) -> list[Window]:
    """Regions covering moving areas, each area's top row of regions first.

    An area up to one region wide and high gets one region; a larger one a grid of regions
    spread evenly over it.
    """
    rows: list[list[Window]] = []
    for x1, y1, x2, y2 in areas:
        columns = max(1, math.ceil((x2 - x1) / side))
        lines = max(1, math.ceil((y2 - y1) / side))
        for r in range(lines):
            cy = y1 + (y2 - y1) * (r + 0.5) / lines
            row = [
                square_at(x1 + (x2 - x1) * (c + 0.5) / columns, cy, side, width, height)
                for c in range(columns)
            ]
            if len(rows) <= r:
                rows.append([])
            rows[r] += row
    return [w for row in rows for w in row]


class RegionPlanner:
    """Chooses each frame's regions and packs them into model inputs."""

    def __init__(self, config: RegionsConfig, input_size: int) -> None:
        """Regions sized for a model input of input_size pixels."""
        self.config = config
        self.input_size = input_size
        self.side = region_side(config.grid, config.zoom, input_size)
        self.search_side = region_side(config.grid, config.search_zoom, input_size)
        self.per_input = config.grid * config.grid
        # Frame pixels from which a head is large (see LARGE_SHARE), and from which the
        # whole-frame view keeps what it finds (regions.whole_frame_s).
        self.large_px = LARGE_SHARE * self.search_side
        self.whole_keep_px = WHOLE_KEEP_SHARE * self.search_side
        self._cells: list[Window] = []
        self._cells_for = (0, 0)
        self._cursor = 0

    def plan(self, width: int, height: int, heads: Sequence[Head],
             moving: Sequence[Box]) -> list[Window]:
        """This frame's regions: around heads, then motion, then sweep cells; at most max.

        heads: the tracked heads; moving: the areas that moved (empty without motion).
        """
        cfg = self.config
        # Zoomed in on heads that travel. A confirmed head that has not is looked at like a
        # search region, a new one not at all (motion and the sweep come by): a patch of
        # background that the model once took for a head must not be looked at closely until
        # it counts, or it is found again and again and counted.
        is_large = [self.is_large(h) for h in heads]
        small = [h for h, big in zip(heads, is_large, strict=True) if not big]
        walking = [h.box for h in small if h.travelled]
        still = [h.box for h in small if h.confirmed and not h.travelled]
        # A large head gets a region sized to it, even before it counts: with a head size on
        # each side it is shown at 160 / (3 x 57) = 0.94 model px per frame px at most (320
        # input, grid 2, search_zoom 1.4, track_margin 1), below a search region's 1.4, and a
        # false one must still be found on min_hits frames in a row to count.
        large = [h.box for h, big in zip(heads, is_large, strict=True) if big]
        chosen = around_heads(large, self.search_side, cfg.track_margin, width, height, True)
        chosen += around_heads(walking, self.side, cfg.track_margin, width, height)
        chosen += around_heads(still, self.search_side, cfg.track_margin, width, height)
        # The motion of a small far person is a coarse blob that may stop short of the head.
        moving = [_grown(area, MOTION_GROWTH * self.search_side) for area in moving]
        # A moving area the size of one person with a tracked head in it is that person.
        boxes = [h.box for h in heads]
        unexplained = [
            area
            for area in moving
            if not _explained(area, boxes, self.search_side) and not _holds_centre(area, large)
        ]
        for candidate in over_motion(unexplained, self.search_side, width, height):
            if all(_iou(candidate, other) < COVERED_IOU for other in chosen):
                chosen.append(candidate)
        chosen = chosen[: cfg.max_regions]
        wanted = min(cfg.max_regions, len(chosen) + cfg.scan_cells_per_frame)
        if wanted:
            # Free places in the last input cost nothing: the sweep fills them.
            wanted = min(cfg.max_regions, math.ceil(wanted / self.per_input) * self.per_input)
        return chosen + self._sweep(width, height, wanted - len(chosen))

    def near_motion(self, moving: Sequence[Box]) -> bool:
        """Whether something moves that is too tall to be a person far away, with whole-frame
        looks on (whole_frame_s): the whole frame looks on every such frame."""
        if self.config.whole_frame_s <= 0:
            return False
        side = self.search_side
        return any(
            a[3] - a[1] >= NEAR_MOTION_SIDES * side and a[2] - a[0] >= side / 2 for a in moving
        )

    def is_large(self, head: Head) -> bool:
        """Whether the detector's last box of the head (a face's own box, for a face) is
        LARGE_SHARE of a search region's side or more."""
        return head.seen_side >= self.large_px

    def _sweep(self, width: int, height: int, count: int) -> list[Window]:
        """The next count cells of the sweep (the sweep moves on by as many)."""
        if self._cells_for != (width, height):
            self._cells = sweep_cells(width, height, self.search_side, self.config.overlap)
            self._cells_for = (width, height)
            self._cursor = 0
        count = min(max(0, count), len(self._cells))
        cells = [self._cells[(self._cursor + i) % len(self._cells)] for i in range(count)]
        self._cursor = (self._cursor + count) % len(self._cells)
        return cells

    def inputs(self, regions: Sequence[Window]) -> list[list[Placement]]:
        """The regions packed grid x grid per model input, in order."""
        n = self.per_input
        return [
            mosaic(regions[i : i + n], self.input_size, self.config.grid)
            for i in range(0, len(regions), n)
        ]
