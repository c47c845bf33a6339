"""models.training.evaluate: AP, matching and confusion on constructed data; the peer decoders.

The peer models, the dataset and our model are real files; tests that need ../shared (or the
trained model) skip with the reason when it is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.anchors import iou_matrix
from edge.detection import FACE_NOT_VISIBLE, FRONT_WITH_MASK, FRONT_WITHOUT_MASK, LABELS
from models.training.data import IGNORE, UNKNOWN, Sample, face_mask_split
from models.training.eval_sources import tally
from models.training.evaluate import (
    BEARDED_FILE,
    CLOSEUP_SIDE,
    DEFAULT_MODEL,
    EXIT_NO_INPUT,
    MASK,
    NO_MASK,
    NOT_VISIBLE,
    POOR_MASK,
    PRED_LABELS,
    Aizoo,
    Dets,
    MobileDet,
    OurModel,
    aizoo_anchors,
    ap_per_class,
    closeups,
    confusion,
    decode_centre_size,
    greyscale,
    greyscale_section,
    load_bearded,
    main,
    match_one_to_one,
    reading,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATASET = SHARED / "datasets" / "face-mask-853"


def need(path: Path) -> None:
    """Skip the test when a file from ../shared (or the trained model) is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (third-party data kept in ../shared, or not trained yet)")


def sample(boxes: Sequence[Sequence[float]], labels: list[int]) -> Sample:
    """A ground-truth image without pixels."""
    return Sample(
        name="constructed",
        boxes=np.array(boxes, np.float32).reshape(-1, 4),
        labels=np.array(labels, np.int64),
        background_classes=(),
    )


def dets(boxes: Sequence[Sequence[float]], labels: list[int], scores: list[float]) -> Dets:
    """Detections without class pairs (p_mask nan)."""
    return Dets(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(labels, np.int64),
        np.array(scores, np.float64),
        np.full(len(scores), np.nan),
    )


A, B, C = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
FAR = [100, 100, 110, 110]


def test_label_spaces_agree() -> None:
    """Our detector's label indices are the evaluation's first three, in the same order."""
    assert (FRONT_WITH_MASK, FRONT_WITHOUT_MASK, FACE_NOT_VISIBLE) == (MASK, NO_MASK, NOT_VISIBLE)
    assert [n.replace("front_with_", "").replace("front_without_", "no_") for n in LABELS] == [
        "mask",
        "no_mask",
        "face_not_visible",
    ]
    assert PRED_LABELS[POOR_MASK] == "poor_mask"


def test_ap_ranks_hits_and_false_alarms() -> None:
    """Hit 0.9, false alarm 0.8, hit 0.7 on two faces: AP = 0.5 * 1 + 0.5 * 2/3."""
    gt = [sample([A, B], [MASK, MASK])]
    found = [dets([A, FAR, B], [MASK, MASK, MASK], [0.9, 0.8, 0.7])]
    mask_ap, no_mask_ap = ap_per_class(gt, found)
    assert mask_ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(no_mask_ap)  # no no-mask face at all


def test_ap_ignores_boxes_on_ignore_regions_and_other_labels() -> None:
    """A box on an incorrectly worn mask is no false alarm; a face_not_visible box no hit."""
    gt = [sample([A, B, C], [MASK, IGNORE, NO_MASK])]
    on_ignore = [dets([B, A], [MASK, MASK], [0.95, 0.9])]
    assert ap_per_class(gt, on_ignore)[0] == pytest.approx(1.0)
    hidden = [dets([A, C], [NOT_VISIBLE, NO_MASK], [0.9, 0.9])]
    mask_ap, no_mask_ap = ap_per_class(gt, hidden)
    assert mask_ap == 0.0
    assert no_mask_ap == pytest.approx(1.0)


def test_match_one_to_one_takes_best_iou_first() -> None:
    """Two boxes on one face: the better overlap wins, the other stays free."""
    gt = np.array([A, C], np.float32)
    shifted = [2, 0, 12, 10]  # IoU with A 0.67
    found = np.array([shifted, A, FAR], np.float32)
    assert match_one_to_one(gt, found, 0.5) == [(0, 1)]
    assert match_one_to_one(gt, np.zeros((0, 4)), 0.5) == []


def test_confusion_counts_labels_misses_and_false_alarms() -> None:
    """Mask face read as no mask, no-mask face missed, a stray box and one on an ignore region."""
    gt = [sample([A, B, C], [MASK, NO_MASK, IGNORE])]
    found = [dets([A, C, FAR, B], [NO_MASK, MASK, MASK, NO_MASK], [0.9, 0.9, 0.6, 0.2])]
    c = confusion(gt, found, threshold=0.35)
    assert c.counts == {(MASK, NO_MASK): 1}
    assert c.missed == {NO_MASK: 1}  # its box scores 0.2, under the threshold
    assert c.unmatched_front == 1  # FAR; the box on the ignore region is not counted
    assert c.total(MASK) == 1 and c.total(NO_MASK) == 1


def test_reading_uses_the_mask_vote_probability() -> None:
    """A face_not_visible box whose front scores favour mask reads as mask."""
    d = Dets(
        np.array([A, [1, 0, 11, 10]], np.float32),
        np.array([NOT_VISIBLE, NO_MASK]),
        np.array([0.6, 0.4]),
        np.array([0.7, 0.2]),
    )
    assert reading(d, np.array(A, np.float32)) == ("mask", 0)
    assert reading(d, np.array(FAR, np.float32)) == ("missed", None)
    d.p_mask[0] = 0.3
    assert reading(d, np.array(A, np.float32)) == ("other", 0)


def test_tally_leaves_heads_of_unknown_label_out_of_the_false_alarms() -> None:
    """A labelled head read right, one missed, a box on an unknown head (no false alarm), a
    box on nothing (a false alarm), and boxes under the threshold (not counted)."""
    truth = sample([A, B, C], [NOT_VISIBLE, UNKNOWN, MASK])
    seen = dets(
        [A, B, FAR, C], [NOT_VISIBLE, MASK, NOT_VISIBLE, MASK], [0.8, 0.9, 0.7, 0.2]
    )
    t = tally([truth], [seen], threshold=0.35)
    assert t.table == {(NOT_VISIBLE, "face_not_visible"): 1, (MASK, "missed"): 1}
    assert t.false_alarms == {NOT_VISIBLE: 1}


def test_aizoo_anchor_layout() -> None:
    """5,972 anchors; per cell the two sizes square, then the first size at ratios .62, .42."""
    anchors = aizoo_anchors()
    assert anchors.shape == (5972, 4)
    assert sum(4 * n * n for n in (33, 17, 9, 5, 3)) == 5972
    first = anchors[:4]
    np.testing.assert_allclose(first[:, :2], [[0.5 / 33, 0.5 / 33]] * 4, rtol=1e-6)
    np.testing.assert_allclose(first[:2, 2:], [[0.04, 0.04], [0.056, 0.056]], rtol=1e-6)
    np.testing.assert_allclose(first[2, 2:], [0.04 * np.sqrt(0.62), 0.04 / np.sqrt(0.62)])
    # The next cell moves along x (row-major, x inner).
    np.testing.assert_allclose(anchors[4, :2], [1.5 / 33, 0.5 / 33], rtol=1e-6)
    np.testing.assert_allclose(anchors[-1, :2], [2.5 / 3, 2.5 / 3], rtol=1e-6)


def test_decode_centre_size() -> None:
    """Zero offsets give the anchor back; dx = 10 (x variance .1) moves one anchor width."""
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    var = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
    np.testing.assert_allclose(
        decode_centre_size(np.zeros((1, 4), np.float32), anchors, var), [[0.4, 0.3, 0.6, 0.7]]
    )
    moved = decode_centre_size(np.array([[10, 0, 0, 0]], np.float32), anchors, var)
    np.testing.assert_allclose(moved, [[0.6, 0.3, 0.8, 0.7]], rtol=1e-6)


def test_missing_shared_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No dataset under --shared: exit 66 and one line naming the folder."""
    code = main(["--shared", str(tmp_path), "--out", str(tmp_path / "r.md")])
    assert code == EXIT_NO_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(tmp_path) in err and "\n" not in err
    assert not (tmp_path / "r.md").exists()


def first_val_sample() -> tuple[Sample, np.ndarray]:
    """The first validation image with its pixels (BGR)."""
    need(DATASET)
    _, val = face_mask_split(DATASET)
    s = val[0]
    bgr = cv2.imread(str(s.image_path))
    assert bgr is not None
    return s, bgr


def test_aizoo_decoder_on_a_real_image() -> None:
    """The real model's output count equals the anchor count; a labelled face is found."""
    need(SHARED / "peers" / "aizoo")
    s, bgr = first_val_sample()
    model = Aizoo(SHARED, threads=1)
    assert len(model.anchors) == 5972  # the constructor checked the model's outputs against it
    d = model.detect(bgr).above(model.operating_threshold)
    h, w = bgr.shape[:2]
    assert len(d.boxes) > 0
    assert (d.boxes[:, [0, 2]] <= w).all() and (d.boxes[:, [1, 3]] <= h).all()
    assert set(d.labels.tolist()) <= {MASK, NO_MASK}
    faces = s.boxes[s.labels >= 0]
    assert iou_matrix(faces, d.boxes).max() >= 0.5


def test_mobiledet_decoder_on_a_real_image() -> None:
    """At most 10 boxes, in image pixels, mask / no_mask / poor_mask; a labelled face is found."""
    need(SHARED / "peers" / "mobiledet-mask")
    s, bgr = first_val_sample()
    model = MobileDet(SHARED, threads=1)
    assert model.max_detections == 10
    d = model.detect(bgr)
    assert 0 < len(d.boxes) <= 10
    assert set(d.labels.tolist()) <= {MASK, NO_MASK, POOR_MASK}
    h, w = bgr.shape[:2]
    assert (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.boxes[:, [0, 2]] <= w).all()
    assert (d.boxes[:, [1, 3]] <= h).all()
    faces = s.boxes[s.labels >= 0]
    assert iou_matrix(faces, d.above(model.operating_threshold).boxes).max() >= 0.5


def test_our_model_runs_through_the_runtime_detector() -> None:
    """Our model's boxes carry its three labels and the vote probability."""
    need(DEFAULT_MODEL)
    _, bgr = first_val_sample()
    model = OurModel(DEFAULT_MODEL, threads=1)
    assert model.operating_threshold == pytest.approx(0.35)
    d = model.detect(bgr)
    assert set(d.labels.tolist()) <= {MASK, NO_MASK, NOT_VISIBLE}
    assert ((d.p_mask >= 0) & (d.p_mask <= 1)).all()
    assert (d.scores >= 0.01).all()


def test_bearded_list_names_validation_no_mask_faces() -> None:
    """Every listed face exists in the validation split and is labelled without_mask."""
    need(DATASET)
    _, val = face_mask_split(DATASET)
    faces = load_bearded(BEARDED_FILE, val)
    assert len(faces) >= 1
    assert len({(f.image, f.box) for f in faces}) == len(faces)


def test_closeups_centre_one_face_at_the_asked_share() -> None:
    need(DATASET)
    _, val = face_mask_split(DATASET)
    shots = closeups(val[:6], 0.5)
    assert shots
    for sample, image in shots:
        assert image.shape == (CLOSEUP_SIDE, CLOSEUP_SIDE, 3)
        ((x1, y1, x2, y2),) = sample.boxes[sample.labels != IGNORE]
        assert max(x2 - x1, y2 - y1) == pytest.approx(CLOSEUP_SIDE / 2, rel=0.03)
        assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx(
            (CLOSEUP_SIDE / 2, CLOSEUP_SIDE / 2), abs=CLOSEUP_SIDE * 0.01
        )


def test_a_face_box_inside_a_head_of_unknown_label_is_no_false_alarm() -> None:
    """A head of unknown label is boxed by the whole head: a face box on it overlaps that box
    by IoU 0.3 only, yet lies wholly inside it, so it is ignored; a box mostly outside is not."""
    head = [0, 0, 30, 30]
    face = [8, 10, 22, 26]  # IoU with the head 0.25, all of it inside
    straddling = [20, 0, 50, 30]  # a third of it inside
    gt = [sample([A, head], [MASK, UNKNOWN])]
    assert ap_per_class(gt, [dets([face, A], [MASK, MASK], [0.9, 0.8])])[0] == pytest.approx(1.0)
    assert ap_per_class(gt, [dets([straddling, A], [MASK, MASK], [0.9, 0.8])])[0] == (
        pytest.approx(0.5)
    )


def test_greyscale_is_three_equal_channels_of_the_same_size() -> None:
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    grey = greyscale(bgr)
    assert grey.shape == bgr.shape and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not (grey == bgr).all()


class _ColourBlind:
    """A contender that reads the one face right in colour and as the other label in grey
    (a test double: the section's bookkeeping, not a model, is under test)."""

    name = "blind"
    labels: tuple[int, ...] = (MASK, NO_MASK)
    operating_threshold = 0.5
    operating_source = "a test double"

    def detect(self, bgr: np.ndarray) -> Dets:
        grey = bool((bgr[..., 0] == bgr[..., 1]).all() and (bgr[..., 1] == bgr[..., 2]).all())
        return dets([[10, 10, 30, 30]], [NO_MASK if grey else MASK], [0.9])


def test_greyscale_section_scores_colour_and_grey_side_by_side() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    face = Sample(
        name="one face",
        boxes=np.array([[10, 10, 30, 30]], np.float32),
        labels=np.array([MASK], np.int64),
        background_classes=(),
        image=image[..., ::-1].copy(),
    )
    model = _ColourBlind()
    given = {model.name: [dets([[10, 10, 30, 30]], [NO_MASK], [0.9])]}
    lines = greyscale_section([model], [("run here", [face], None), ("given", [face], given)])
    assert "| run here | 1 | 1.000 / n/a | 0.000 / n/a |" in lines
    # Colour boxes handed in are scored as they are (here a wrong label), not run again.
    assert "| given | 1 | 0.000 / n/a | 0.000 / n/a |" in lines
