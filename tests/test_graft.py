"""Grafting fine-tuned anchor levels onto the shipped model (models/training/graft.py).

On the real shipped .tflite: a second export is made from it by changing its stride-32
predictor's weights, and the graft must take exactly those levels and leave every other output
bit-identical.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.anchors import ANCHOR_SPEC, anchors_per_cell
from edge.config.detector import default_model_path
from edge.interpreter import load_cpu
from models.training.graft import (
    graft,
    holds_data,
    level_layers,
    read_model,
    same_tensor,
    write_model,
)

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
    """The model's outputs on one image as ints: box deltas, then scores."""
    interp = load_cpu(path, threads=1).interpreter
    interp.set_tensor(interp.get_input_details()[0]["index"], image[None])
    interp.invoke()
    return [interp.get_tensor(d["index"])[0].astype(int) for d in interp.get_output_details()]


def _edited(tmp_path: Path, edit: Callable[[Any, Any], None], name: str) -> Path:
    """The shipped model with `edit(model, tensor)` applied to every tensor, written out."""
    model = read_model(MODEL)
    for tensor in model.subgraphs[0].tensors:
        edit(model, tensor)
    out = tmp_path / name
    write_model(model, out)
    return out


def _changed_export(tmp_path: Path) -> Path:
    """The shipped model with its stride-32 class predictor's int8 weights reversed."""
    reversed_kernels = []

    def edit(model: Any, tensor: Any) -> None:
        if tensor.name.decode().endswith("/cls2_1/convolution") and holds_data(model, tensor):
            data = model.buffers[tensor.buffer].data
            model.buffers[tensor.buffer].data = np.asarray(data, np.uint8)[::-1].copy()
            reversed_kernels.append(tensor)

    out = _edited(tmp_path, edit, "changed.tflite")
    assert reversed_kernels, "no cls2 kernel in the shipped model"
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


def test_graft_accepts_an_export_naming_fused_ops_differently(
    tmp_path: Path, image: np.ndarray
) -> None:
    """TensorFlow 2.21 names each backbone depthwise weight after the batch norm folded into it
    too ("..._BN_1/batchnorm/mul_1;.../depthwise"): the same tensor, so the graft goes on."""
    changed = read_model(_changed_export(tmp_path))
    renamed = 0
    for tensor in changed.subgraphs[0].tensors:
        name = tensor.name.decode()
        if re.search(r"block_\d+_depthwise_1/depthwise$", name):
            bn = name.replace("_depthwise_1/depthwise", "_depthwise_BN_1/batchnorm/mul_1")
            tensor.name = f"{bn};{name}".encode()
            renamed += 1
    assert renamed, "no backbone depthwise weight in the shipped model"
    other = tmp_path / "renamed.tflite"
    write_model(changed, other)
    plain, fused = tmp_path / "plain.tflite", tmp_path / "fused.tflite"
    graft(MODEL, tmp_path / "changed.tflite", {2}, plain)
    graft(MODEL, other, {2}, fused)
    for a, b in zip(_outputs(plain, image), _outputs(fused, image), strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_tensor_needs_a_shared_op_name() -> None:
    assert same_tensor(b"a/conv", b"a/conv")
    assert same_tensor(b"a/conv", b"a/bn/mul_1;a/conv")
    assert not same_tensor(b"a/conv", b"b/conv;b/bn")
    assert not same_tensor(b"a;", b";b")  # an empty op name is no common name


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


def _box_path(name: str) -> bool:
    """Activations between the box predictors and the box output (not the scores); the
    concatenation is StatefulPartitionedCall_1:11, the uint8 output StatefulPartitionedCall_1:1."""
    return bool(re.search(r"/box\d_1/|/box\d_flat_1/|box_deltas|StatefulPartitionedCall_1:1", name))


def test_a_boxes_only_graft_of_every_level_takes_the_box_output_and_its_new_range(
    tmp_path: Path, image: np.ndarray
) -> None:
    """Every box predictor grafted: the box output (its range included) is the new export's,
    every score stays bit-identical to the base."""

    def edit(model: Any, tensor: Any) -> None:
        name = tensor.name.decode()
        data = model.buffers[tensor.buffer].data
        if name.endswith("/box2_1/convolution") and holds_data(model, tensor):
            model.buffers[tensor.buffer].data = np.asarray(data, np.uint8)[::-1].copy()
        elif _box_path(name) and not holds_data(model, tensor):
            tensor.quantization.scale = [s * 1.3 for s in tensor.quantization.scale]

    changed = _edited(tmp_path, edit, "boxes.tflite")
    out = tmp_path / "grafted.tflite"
    assert graft(MODEL, changed, {0, 1, 2, 3}, out, boxes_only=True) > 0
    (shipped_boxes, shipped_scores), (new_boxes, _), (boxes, scores) = (
        _outputs(p, image) for p in (MODEL, changed, out)
    )
    np.testing.assert_array_equal(scores, shipped_scores)
    np.testing.assert_array_equal(boxes, new_boxes)
    assert not np.array_equal(boxes, shipped_boxes)


def test_a_grafted_bias_is_re_expressed_at_the_base_input_scale(
    tmp_path: Path, image: np.ndarray
) -> None:
    """The new export measured the stride-32 features 1.25x wider: its box2 bias is stored at
    that scale. Grafted onto the base (which reads the features at its own scale) the bias
    is converted back, so the same real weights give the base's boxes to within a step."""
    model = read_model(MODEL)
    graph = model.subgraphs[0]
    conv = next(
        op
        for op in graph.operators
        if any(re.search(r"/box2_1/", graph.tensors[t].name.decode()) for t in op.outputs)
        and len(op.inputs) >= 3
    )
    features, bias = graph.tensors[conv.inputs[0]], graph.tensors[conv.inputs[2]]
    features.quantization.scale = [s * 1.25 for s in features.quantization.scale]
    buf = model.buffers[bias.buffer]
    values = np.frombuffer(bytes(buf.data), dtype="<i4") / 1.25
    buf.data = np.round(values).astype("<i4").view(np.uint8)
    bias.quantization.scale = [s * 1.25 for s in bias.quantization.scale]
    changed = tmp_path / "wider.tflite"
    write_model(model, changed)
    out = tmp_path / "grafted.tflite"
    graft(MODEL, changed, {0, 1, 2, 3}, out, boxes_only=True)
    shipped_boxes, _ = _outputs(MODEL, image)
    boxes, _ = _outputs(out, image)
    assert np.abs(boxes - shipped_boxes).max() <= 1


@pytest.mark.parametrize(("shift", "accepted"), [(20, True), (-20, False)])
def test_score_ranges_may_grow_only_where_the_uint8_score_is_saturated(
    tmp_path: Path, shift: int, accepted: bool
) -> None:
    """The base's logits reach far below where the uint8 score is already 0 (-6.2), so a
    grafted level may reach lower still; reaching 20 steps higher than the base would clip
    scores that matter."""

    def edit(model: Any, tensor: Any) -> None:
        name = tensor.name.decode()
        if "/cls2_1/" in name and not holds_data(model, tensor):
            tensor.quantization.zeroPoint = [z + shift for z in tensor.quantization.zeroPoint]

    changed = _edited(tmp_path, edit, "shifted.tflite")
    out = tmp_path / "grafted.tflite"
    if accepted:
        assert graft(MODEL, changed, {2}, out) > 0
    else:
        with pytest.raises(ValueError, match="exceeds the base outputs"):
            graft(MODEL, changed, {2}, out)


def test_boxes_only_names_the_box_predictors() -> None:
    assert level_layers({0, 3}, boxes_only=True) == {"box0", "box3"}
