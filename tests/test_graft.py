"""Grafting fine-tuned anchor levels onto the shipped model (models/training/graft.py).

On the real shipped .tflite: a second export is made from it by changing its stride-32
predictor's weights, and the graft must take exactly those levels and leave every other output
bit-identical.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.anchors import ANCHOR_SPEC, anchors_per_cell
from edge.config.detector import default_model_path
from edge.interpreter import load_cpu
from models.training.graft import graft, level_layers, read_model, write_model

MODEL = default_model_path()


def _level_slices() -> list[slice]:
    """Rows of the model's outputs that belong to each anchor level, in output order."""
    rows, start = [], 0
    for level, n in zip(ANCHOR_SPEC.levels, anchors_per_cell(), strict=True):
        count = (ANCHOR_SPEC.input_size // level.stride) ** 2 * n
        rows.append(slice(start, start + count))
        start += count
    return rows


def _outputs(path: Path, image: np.ndarray) -> list[np.ndarray]:
    interp = load_cpu(path, threads=1).interpreter
    interp.set_tensor(interp.get_input_details()[0]["index"], image[None])
    interp.invoke()
    return [interp.get_tensor(d["index"])[0].astype(int) for d in interp.get_output_details()]


def _changed_export(tmp_path: Path) -> Path:
    """The shipped model with its stride-32 class predictor's int8 weights reversed."""
    model = read_model(MODEL)
    graph = model.subgraphs[0]
    for tensor in graph.tensors:
        name = tensor.name.decode()
        data = model.buffers[tensor.buffer].data
        if name.endswith("/cls2_1/convolution") and data is not None and len(data):
            model.buffers[tensor.buffer].data = np.asarray(data, np.uint8)[::-1].copy()
            break
    else:
        raise AssertionError("no cls2 kernel in the shipped model")
    out = tmp_path / "changed.tflite"
    write_model(model, out)
    return out


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8), (7, 7), 2)
    return np.ascontiguousarray(img)


def test_graft_takes_the_named_levels_and_leaves_the_rest_bit_identical(
    tmp_path: Path, image: np.ndarray
) -> None:
    changed = _changed_export(tmp_path)
    out = tmp_path / "grafted.tflite"
    assert graft(MODEL, changed, {2, 3}, out) > 0
    shipped, new, grafted = (_outputs(p, image) for p in (MODEL, changed, out))
    levels = _level_slices()
    assert any(
        not np.array_equal(a[levels[2]], b[levels[2]]) for a, b in zip(shipped, new, strict=True)
    ), "the changed export should differ at level 2"
    for k in range(2):
        for level in (0, 1, 3):
            np.testing.assert_array_equal(grafted[k][levels[level]], shipped[k][levels[level]])
        np.testing.assert_array_equal(grafted[k][levels[2]], new[k][levels[2]])


def test_graft_of_other_levels_takes_nothing_of_the_change(
    tmp_path: Path, image: np.ndarray
) -> None:
    changed = _changed_export(tmp_path)
    out = tmp_path / "grafted.tflite"
    graft(MODEL, changed, {3}, out)
    for a, b in zip(_outputs(MODEL, image), _outputs(out, image), strict=True):
        np.testing.assert_array_equal(a, b)


def test_graft_refuses_another_architecture(tmp_path: Path) -> None:
    model = read_model(MODEL)
    model.subgraphs[0].tensors[0].name = b"something else"
    other = tmp_path / "other.tflite"
    write_model(model, other)
    with pytest.raises(ValueError, match="not the same architecture"):
        graft(MODEL, other, {2, 3}, tmp_path / "out.tflite")


def test_level_layers_name_each_levels_own_layers() -> None:
    assert level_layers({2}) == {
        "head2_a_dw",
        "head2_a_pw",
        "head2_b_dw",
        "head2_b_pw",
        "cls2",
        "box2",
    }
    assert "down6" in level_layers({3})
