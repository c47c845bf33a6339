"""Region selection: regions hold the tracked heads, cover motion, sweep the frame, pack as mosaics;
and the mosaic maps heads back to the right place of the frame (with the real model)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import camera_pipeline, one_label

from edge.config.detector import DetectorConfig
from edge.config.load import ConfigError, load_config
from edge.config.regions import RegionsConfig
from edge.detect import Detector
from edge.layout import compose_into, letterboxed, mosaic, to_frame
from edge.pipeline import _whole_and_regions
from edge.regions import (
    Head,
    RegionPlanner,
    around_heads,
    over_motion,
    region_side,
    square_at,
    sweep_cells,
)

CLIP = Path(__file__).resolve().parents[2] / "shared/videos/one-by-one-person-detection.mp4"


def contains(window: tuple[int, ...], box: tuple[float, ...]) -> bool:
    """Whether box lies inside window."""
    return bool(window[0] <= box[0] and window[1] <= box[1]) and bool(
        box[2] <= window[2] and box[3] <= window[3]
    )


def test_region_side_is_a_mosaic_cell_over_the_zoom() -> None:
    assert region_side(2, 2.5, 320) == 64
    assert region_side(2, 1.4, 320) == 114
    assert region_side(1, 0.5, 320) == 640


def test_squares_stay_inside_the_frame() -> None:
    assert square_at(5, 5, 64, 768, 576) == (0, 0, 64, 64)
    assert square_at(760, 570, 64, 768, 576) == (704, 512, 768, 576)
    assert square_at(400, 300, 64, 768, 576) == (368, 268, 432, 332)
    assert square_at(50, 50, 200, 120, 100) == (0, 0, 120, 100)  # frame smaller than a region


def test_near_heads_share_a_region_far_heads_get_their_own() -> None:
    near = [(100.0, 100.0, 116.0, 116.0), (110.0, 104.0, 126.0, 120.0)]
    far = [(500.0, 300.0, 516.0, 316.0)]
    regions = around_heads(near + far, 64, 1.0, 768, 576)
    assert len(regions) == 2
    for head in near + far:
        # Each head with a margin of one head size on every side.
        grown = (head[0] - 16, head[1] - 16, head[2] + 16, head[3] + 16)
        assert any(contains(r, grown) for r in regions)
    assert all(r[2] - r[0] == 64 and r[3] - r[1] == 64 for r in regions)


def test_a_large_moving_area_is_covered_top_row_first() -> None:
    regions = over_motion([(100.0, 100.0, 300.0, 300.0)], 114, 768, 576)
    assert len(regions) == 4  # 200 x 200 px: two regions across, two down
    tops = [r[1] for r in regions]
    assert tops[:2] == sorted(tops)[:2] and tops[0] < tops[2]
    covered = np.zeros((576, 768), bool)
    for x1, y1, x2, y2 in regions:
        covered[y1:y2, x1:x2] = True
    assert covered[100:300, 100:300].all()


def test_the_sweep_covers_the_frame_with_overlap() -> None:
    cells = sweep_cells(768, 576, 114, 0.2)
    covered = np.zeros((576, 768), bool)
    for x1, y1, x2, y2 in cells:
        assert x2 - x1 == 114 and y2 - y1 == 114
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert cells[1][0] < cells[0][2] - 0.2 * 114 + 1  # neighbours share at least the overlap


def planner(**overrides: object) -> RegionPlanner:
    """A planner for a 320 px input: 64 px track regions, 114 px search regions."""
    settings: dict[str, object] = {"enabled": True, "zoom": 2.5, "search_zoom": 1.4}
    return RegionPlanner(RegionsConfig.model_validate({**settings, **overrides}), 320)


def test_tracks_come_first_then_motion_then_the_sweep_fills_the_input() -> None:
    plan = planner(scan_cells_per_frame=1)
    heads = [(100.0, 100.0, 116.0, 116.0)]
    moving = [(95.0, 95.0, 125.0, 160.0), (500.0, 200.0, 540.0, 300.0)]  # the head walks
    regions = plan.plan(768, 576, [Head(heads[0], True, True)], moving)
    # The tracked head; the other moving area, grown by a margin and taller than one region,
    # top first; a sweep cell, which also fills the 2 x 2 input.
    assert len(regions) == 4
    assert contains(regions[0], heads[0]) and regions[0][2] - regions[0][0] == 64
    assert contains(regions[1], (500.0, 200.0, 540.0, 240.0))
    assert regions[1][1] < regions[2][1] and contains(regions[2], (500.0, 260.0, 540.0, 300.0))
    assert regions[3:] == sweep_cells(768, 576, 114, 0.2)[:1]
    assert plan.plan(768, 576, [], [])[:4] == sweep_cells(768, 576, 114, 0.2)[1:5]
    inputs = plan.inputs(regions)
    assert len(inputs) == 1 and [p.window for p in inputs[0]] == regions


def test_motion_of_a_tracked_person_adds_no_region() -> None:
    heads = [Head((510.0, 205.0, 526.0, 221.0), False, True)]
    moving = [(500.0, 200.0, 540.0, 300.0)]  # that person's body
    regions = planner(scan_cells_per_frame=0).plan(768, 576, heads, moving)
    assert regions[0] == square_at(518, 213, 64, 768, 576)
    assert len(regions) == 4 and all(r[2] - r[0] == 114 for r in regions[1:])  # sweep only
    assert not any(contains(r, (500.0, 200.0, 540.0, 240.0)) for r in regions[1:2])


def test_only_heads_that_travel_are_magnified() -> None:
    box = (100.0, 100.0, 116.0, 116.0)
    plan = planner(scan_cells_per_frame=0)
    # (The sweep fills the rest of the input after the first region.)
    assert plan.plan(768, 576, [Head(box, False, True)], [])[0] == square_at(108, 108, 64, 768, 576)
    # A person who stopped: looked at, at the search size.
    stopped = plan.plan(768, 576, [Head(box, True, False)], [])
    assert stopped[0] == square_at(108, 108, 114, 768, 576)
    # Not a person yet and never moved (a sign the model once took for a head): left to the
    # sweep and to motion.
    assert plan.plan(768, 576, [Head(box, False, False)], []) == []


def test_a_large_head_gets_a_region_sized_to_it_even_before_it_counts() -> None:
    plan = planner(scan_cells_per_frame=0)
    # 90 px: half a search region (57 px) or more is large, whether it walks or not.
    near = (300.0, 20.0, 390.0, 110.0)
    for head in (Head(near, False, False, 90.0), Head(near, True, True, 90.0)):
        region = plan.plan(768, 432, [head], [])[0]
        assert region[2] - region[0] == region[3] - region[1] == 270  # one head each side
        assert contains(region, near)
    # Without the detector's size it is not known to be large: as before.
    assert plan.plan(768, 432, [Head(near, False, False)], []) == []
    # Its body moving adds no region of its own (the rest of the input is the sweep's); a
    # small walker's motion still does.
    body = (290.0, 20.0, 400.0, 430.0)
    cells = sweep_cells(768, 432, 114, 0.2)
    regions = plan.plan(768, 432, [Head(near, True, False, 90.0)], [body])
    assert len(regions) == 4 and all(r in cells for r in regions[1:])
    far = (600.0, 200.0, 630.0, 280.0)
    regions = plan.plan(768, 432, [Head(near, True, False, 90.0)], [body, far])
    assert contains(regions[1], (600.0, 200.0, 630.0, 250.0)) and regions[1] not in cells


def test_only_motion_too_tall_for_a_far_person_calls_for_the_whole_frame() -> None:
    plan = planner(whole_frame_s=1.0)  # search regions of 114 px
    assert plan.near_motion([(10.0, 0.0, 67.0, 285.0)])
    assert not plan.near_motion([(10.0, 0.0, 67.0, 284.0)])  # under 2.5 regions tall
    assert not plan.near_motion([(10.0, 0.0, 66.0, 400.0)])  # a pole, a shadow's edge
    assert not plan.near_motion([])
    assert not planner(whole_frame_s=0.0).near_motion([(10.0, 0.0, 67.0, 285.0)])


def test_around_heads_grows_a_square_only_when_asked() -> None:
    head = [(100.0, 100.0, 160.0, 160.0)]
    assert around_heads(head, 114, 1.0, 768, 576) == [square_at(130, 130, 114, 768, 576)]
    assert around_heads(head, 114, 1.0, 768, 576, grow=True) == [(40, 40, 220, 220)]
    # Clipped to the frame when the head with its margins is larger than it.
    assert around_heads([(0.0, 0.0, 200.0, 200.0)], 114, 1.0, 300, 250, grow=True) == [
        (0, 0, 300, 250)
    ]


def test_max_regions_caps_a_crowd() -> None:
    # 11 walking heads, none close to another.
    heads = [Head((x, 300.0, x + 16.0, 316.0), True, True) for x in range(0, 760, 70)]
    regions = planner(max_regions=8).plan(768, 576, heads, [])
    assert len(regions) == 8
    assert len(planner(max_regions=8).inputs(regions)) == 2


def test_nothing_to_look_at_and_no_sweep_means_no_inference() -> None:
    assert planner(scan_cells_per_frame=0).plan(768, 576, [], []) == []


def test_mosaic_cells_and_their_way_back() -> None:
    windows = [(0, 0, 64, 64), (100, 50, 164, 114), (700, 500, 768, 576)]
    placements = mosaic(windows, 320, 2)
    cells = [(0, 0, 160, 160), (160, 0, 320, 160), (0, 160, 160, 320)]
    assert [p.cell for p in placements] == cells
    assert placements[0].scale == 2.5
    # A box in the second cell, and one in the empty fourth cell.
    boxes = np.array([[170.0, 10.0, 210.0, 50.0], [200.0, 200.0, 240.0, 240.0]], np.float32)
    frame_boxes, owner = to_frame(boxes, placements)
    assert owner.tolist() == [1, -1]
    assert frame_boxes[0].tolist() == pytest.approx([104.0, 54.0, 120.0, 70.0])
    # One window filling the input keeps every box, as the whole-frame letterbox did.
    single = letterboxed((0, 0, 768, 576), 320)
    _, owner = to_frame(boxes, single)
    assert owner.tolist() == [0, 0]


def test_mosaic_draws_each_window_into_its_cell() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[:100, :100] = (255, 0, 0)  # blue in BGR
    frame[100:, 200:] = (0, 0, 255)  # red
    target = np.full((320, 320, 3), 7, np.uint8)
    compose_into(frame, mosaic([(0, 0, 100, 100), (200, 100, 300, 200)], 320, 2), target)
    assert (target[:160, :160] == (0, 0, 255)).all()  # RGB: blue
    assert (target[:160, 160:] == (255, 0, 0)).all()  # red
    assert (target[160:] == 0).all()  # empty cells are black


@pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/videos (third-party data)")
def test_the_real_model_finds_the_same_head_in_every_cell() -> None:
    """Four copies of one region in a 2 x 2 mosaic: the same head, mapped to the same place."""
    cap = cv2.VideoCapture(str(CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 245)  # a man standing at the table, seen from behind
    ok, picture = cap.read()
    cap.release()
    assert ok
    frame = cv2.resize(picture, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    head = np.array([428, 9, 489, 84]) / 2  # where the model boxes it in the full picture
    window = square_at((head[0] + head[2]) / 2, (head[1] + head[3]) / 2, 100, *frame.shape[1::-1])
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    found = detector.detect_placed(frame, mosaic([window] * 4, detector.input_size, 2))
    assert len(found) == 4
    boxes = [max(cell, key=lambda d: d.score).box for cell in found]
    for box in boxes:
        assert box == pytest.approx(boxes[0], abs=3)  # cells see different borders
        assert abs((box[0] + box[2]) / 2 - (head[0] + head[2]) / 2) < 8
        assert abs((box[1] + box[3]) / 2 - (head[1] + head[3]) / 2) < 8


def test_a_regions_pipeline_plans_one_inference_per_four_regions() -> None:
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    regions = {"enabled": True, "scan_cells_per_frame": 5, "whole_frame_s": 0.0}
    pipe = camera_pipeline(detector, regions=regions)
    frame = np.full((576, 768, 3), 90, np.uint8)
    results = [pipe.process(frame, i / 10) for i in range(3)]
    # First frame: motion everywhere (no background yet); then 5 sweep cells, two inputs.
    assert [len(r.inference_ms) for r in results[1:]] == [2, 2]


def test_the_whole_frame_is_looked_at_three_frames_in_a_row_once_a_second() -> None:
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    regions = {"enabled": True, "scan_cells_per_frame": 5, "whole_frame_s": 1.0}
    pipe = camera_pipeline(detector, regions=regions)
    frame = np.full((576, 768, 3), 90, np.uint8)
    plans = []
    for i in range(25):
        plan = pipe.plan(frame, i / 10)
        found = [detector.detect_placed(frame, placements) for placements in plan.inputs]
        pipe.complete(frame, i / 10, plan, [f for cell in found for f in cell], [])
        plans.append(plan)
    assert [i for i, p in enumerate(plans) if p.whole_first] == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    whole = plans[10].inputs[0]
    assert len(whole) == 1 and whole[0].window == (0, 0, 768, 576)
    assert [len(p.inputs) for p in plans[9:13]] == [2, 3, 3, 3]
    # A clock stepped back starts a run at once.
    assert pipe.plan(frame, 0.5).whole_first
    # Between two runs, something as tall as a person close to the camera moves.
    near = frame.copy()
    near[100:500, 300:420] = 240
    assert pipe.plan(near, 2.5).whole_first


def test_a_run_of_whole_frame_looks_is_three_detection_frames() -> None:
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    regions = {"enabled": True, "scan_cells_per_frame": 1, "whole_frame_s": 1.0}
    pipe = camera_pipeline(detector, regions=regions, detect_every_n_frames=2)
    frame = np.full((576, 768, 3), 90, np.uint8)
    looked = []
    for i in range(16):
        plan = pipe.plan(frame, i / 10)
        pipe.complete(frame, i / 10, plan, [[] for _ in plan.windows], [])
        if plan.whole_first:
            looked.append(i)
    assert looked == [0, 2, 4, 10, 12, 14]


def test_whole_frame_heads_are_large_ones_and_region_pieces_of_them_go() -> None:
    # The whole frame, then two 114 px regions (1.4 model px per frame px) in one mosaic.
    regions = [(280, 0, 394, 114), (60, 60, 174, 174)]
    inputs = [letterboxed((0, 0, 768, 432), 320), mosaic(regions, 320, 2)]
    face = one_label((300.0, 20.0, 390.0, 110.0), 1, 0.7)
    small_far = one_label((600.0, 300.0, 616.0, 316.0), 2, 0.5)  # the whole frame's guess
    eye = one_label((320.0, 40.0, 368.0, 88.0), 1, 0.8)  # 67 model px, inside the face: a piece
    inside_small = one_label((330.0, 60.0, 346.0, 76.0), 2, 0.6)  # too small to be a piece
    elsewhere = one_label((100.0, 100.0, 150.0, 150.0), 2, 0.6)
    found = _whole_and_regions(
        [[face, small_far], [eye, inside_small], [elsewhere]], inputs, 38.0
    )
    assert found == [[face], [inside_small], [elsewhere]]
    # A head seen from behind holds no pieces (the still photos' rule: faces only).
    back = one_label((300.0, 20.0, 390.0, 110.0), 2, 0.7)
    found = _whole_and_regions([[back], [eye], [elsewhere]], inputs, 38.0)
    assert found == [[back], [eye], [elsewhere]]


def test_the_pipeline_tracks_the_whole_frames_large_heads_not_region_pieces_of_them() -> None:
    """complete() with made-up detections: what the tracker is given on a whole-frame frame."""
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    regions = {"enabled": True, "scan_cells_per_frame": 1, "whole_frame_s": 1.0, "motion": False}
    pipe = camera_pipeline(detector, regions=regions)
    frame = np.full((432, 768, 3), 90, np.uint8)
    plan = pipe.plan(frame, 0.0)
    assert plan.whole_first and len(plan.inputs) == 2
    assert plan.windows[1] == (0, 0, 114, 114)  # the sweep's first cell

    face = one_label((10.0, 5.0, 100.0, 95.0), 1, 0.9)
    tiny = one_label((600.0, 300.0, 612.0, 312.0), 2, 0.9)  # small: the regions' to find
    eye = one_label((30.0, 25.0, 78.0, 73.0), 1, 0.9)  # the first region's piece of it (67 px)
    found = [[face, tiny], [eye], [], [], []]
    result = pipe.complete(frame, 0.0, plan, found, [])
    assert [h.detection.box for h in result.heads if h.detection] == [face.box]


@pytest.mark.skipif(not CLIP.exists(), reason="needs ../shared/videos (third-party data)")
def test_a_near_walker_is_found_by_the_whole_frame_and_followed_by_a_region_sized_to_him() -> None:
    """One-by-one's first man walks in close to the camera (heads boxed at 73-105 px in a 768
    px frame, too large for a 114 px search region): with whole-frame looks he counts sooner."""
    detector = Detector(DetectorConfig(accelerator="cpu", threads=1))
    confirmed_at = {}
    for every in (1.0, 0.0):
        regions = {"enabled": True, "zoom": 2.0, "search_zoom": 1.4, "whole_frame_s": every}
        pipe = camera_pipeline(detector, regions=regions)
        cap = cv2.VideoCapture(str(CLIP))
        sized = 0
        for i in range(90):
            ok, frame = cap.read()
            assert ok
            plan = pipe.plan(frame, i / 10)
            found = [detector.detect_placed(frame, placements) for placements in plan.inputs]
            result = pipe.complete(frame, i / 10, plan, [f for cell in found for f in cell], [])
            # Regions only (the whole frame, first when looked at, is wider too).
            looked = plan.windows[1:] if plan.whole_first else plan.windows
            sized += any(w[2] - w[0] > 114 for w in looked)
            if every not in confirmed_at and any(h.confirmed for h in result.heads):
                confirmed_at[every] = i
        cap.release()
        if every:
            assert sized >= 20  # his own region, larger than a search region, frame after frame
    assert confirmed_at[1.0] <= 70
    assert confirmed_at.get(0.0, 90) > confirmed_at[1.0] + 10


def test_regions_and_tiles_together_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "maskwatch.yaml"
    path.write_text(
        "cameras:\n"
        "  - name: street\n"
        "    source: /dev/video0\n"
        "    tiles: {columns: 4, rows: 3}\n"
        "    regions:\n"
        "      enabled: true\n"
        "      grid: 7\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = err.value.messages
    assert any(m.startswith(f"{path}:7: cameras.0.regions.grid:") for m in messages), messages
    path.write_text(path.read_text().replace("grid: 7", "grid: 2"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.messages == [
        f"{path}:5: cameras.0.regions: regions and tiles cannot both be used: set "
        "tiles to 1 x 1 or disable regions"
    ]
