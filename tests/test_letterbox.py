"""The model's input: edge.letterbox.letterbox_into, pixel for pixel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.letterbox import letterbox_into


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR frame whose three channels differ, so a missed channel swap shows."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame[..., 0] //= 2  # blue darker than red: BGR and RGB are not the same picture
    return frame


@pytest.mark.parametrize(
    ("height", "width"), [(576, 768), (720, 1280), (640, 200), (320, 320), (37, 53), (1, 1)]
)
def test_frame_lands_top_left_as_rgb_with_black_padding(height: int, width: int) -> None:
    size = 320
    frame = textured(height, width, seed=height + width)
    # The interpreter's buffer holds the previous frame's pixels: fill it with junk first.
    tensor = np.full((1, size, size, 3), 200, np.uint8)
    scale = letterbox_into(frame, tensor[0])
    assert scale == pytest.approx(size / max(height, width))
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    expected = cv2.cvtColor(
        cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
    )
    assert np.array_equal(tensor[0, :nh, :nw], expected)
    assert not tensor[0, nh:].any()
    assert not tensor[0, :nh, nw:].any()


def test_the_frame_itself_is_not_touched() -> None:
    frame = textured(576, 768, seed=1)
    before = frame.copy()
    letterbox_into(frame, np.zeros((320, 320, 3), np.uint8))
    assert np.array_equal(frame, before)


def test_a_larger_input_gets_the_same_picture_larger() -> None:
    # The runtime takes the side from the model; 480 must hold the same layout as 320.
    frame = textured(432, 768, seed=2)
    big = np.zeros((480, 480, 3), np.uint8)
    assert letterbox_into(frame, big) == pytest.approx(480 / 768)
    assert big[:270].any()
    assert not big[270:].any()
