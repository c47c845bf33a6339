"""Graft some anchor levels of one int8 export onto another, leaving the rest bit-identical.

    python -m models.training.graft --base BASE.tflite --new NEW.tflite --levels 2,3 --out OUT

A fine-tune that trains only some anchor levels (`train.py --train-levels 2,3`) leaves the
float weights of everything else as they were, but a new int8 export still changes them: the
calibration re-measures every activation's range from slightly different float weights, and
small heads, which the daemon follows over many frames, are where that shows (re-exporting the
stage-3 model's own weights, untrained, moved the PETS 2009 street count from 23 counted /
6 twice to 30 / 12). So the new levels' tensors (their weights, biases and activation ranges)
are copied into the base model and nothing else is: the backbone, the top-down path and the
other levels stay bit-identical. The outputs concatenate every level at one scale: grafted
levels' outputs keep the base's scale, which must hold their range to within 5 % (checked;
logits past where the uint8 score is already 0 or 255 may grow), unless every level of an
output is grafted, and then that output takes the new export's range. With --boxes-only only
the box predictors are taken (a `train.py --train-boxes` fine-tune).

Needs only the runtime's flatbuffer schema (ai_edge_litert), not TensorFlow.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

# The scores output is a sigmoid in uint8 steps of 1/256: a logit at or above LOGIT_CEILING
# scores 255 (sigmoid >= 254.5 / 256), one at or below LOGIT_FLOOR scores 0 (< 0.5 / 256).
LOGIT_CEILING = math.log(254.5 / 1.5)
LOGIT_FLOOR = math.log(0.5 / 255.5)

# Operators whose inputs are (activation, int8 weights, int32 bias at input x weight scale).
_BIASED_OPS = {
    schema.BuiltinOperator.CONV_2D,
    schema.BuiltinOperator.DEPTHWISE_CONV_2D,
    schema.BuiltinOperator.FULLY_CONNECTED,
}

# Layers of models/training/model.py that feed one anchor level only.
_LEVEL_PARTS = ("{l}_a_dw", "{l}_a_pw", "{l}_b_dw", "{l}_b_pw")


def level_layers(levels: set[int], boxes_only: bool = False) -> set[str]:
    """Names of the Keras layers that feed only the given anchor levels' outputs: each level's
    two separable convolutions and its predictors, and the stride-64 convolution when level 3
    (stride 64) is among them. With boxes_only, each level's box predictor alone (its last
    1x1 convolution, which feeds nothing but the box outputs)."""
    if boxes_only:
        return {f"box{level}" for level in levels}
    names = set()
    for level in levels:
        names |= {"head" + part.format(l=level) for part in _LEVEL_PARTS}
        names |= {f"cls{level}", f"box{level}"}
    if 3 in levels:
        names.add("down6")
    return names


def read_model(path: Path) -> Any:
    """The .tflite as the schema's mutable object tree."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    if any(b.offset for b in model.buffers):
        raise ValueError(f"{path}: buffers stored past the flatbuffer are not supported")
    return model


def write_model(model: Any, path: Path) -> None:
    """Serialise the object tree as a .tflite."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def holds_data(model: Any, tensor: Any) -> bool:
    """Whether the tensor holds data in the file (weights, biases) rather than activations."""
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _rescale_bias(model: Any, bias: Any, weights: Any, input_scale: float) -> None:
    """Re-quantise an int32 bias for another input scale (bias scale = input x weight scale)."""
    buf = model.buffers[bias.buffer]
    values = np.frombuffer(bytes(buf.data), dtype="<i4").astype(np.float64)
    real = values * np.asarray(bias.quantization.scale, np.float64)
    scale = input_scale * np.asarray(weights.quantization.scale, np.float64)
    rounded = np.round(real / scale)
    info = np.iinfo(np.int32)
    if rounded.min() < info.min or rounded.max() > info.max:
        raise ValueError(f"{bias.name.decode()}: bias does not fit int32 at the base's scale")
    buf.data = rounded.astype("<i4").view(np.uint8)
    bias.quantization.scale = [float(x) for x in scale]


def _range(q: Any) -> tuple[float, float]:
    scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
    return scale * (-128 - zero), scale * (127 - zero)


def same_tensor(base_name: bytes, new_name: bytes) -> bool:
    """Whether two exports' tensor names name the same tensor: equal, or sharing one of the
    `;`-separated op names a converter fuses into a name (another TensorFlow version names a
    depthwise weight after the batch norm folded into it as well as after the convolution)."""
    shared = set(base_name.split(b";")) & set(new_name.split(b";"))
    return base_name == new_name or bool(shared - {b""})


def graft(
    base_path: Path, new_path: Path, levels: set[int], out: Path, boxes_only: bool = False
) -> int:
    """Write base with the given levels' tensors taken from new; returns how many were taken.

    Both files must be exports of the same architecture (the same tensors in the same order,
    shapes equal, names equal or sharing a fused op name: `same_tensor`).
    With boxes_only, only the levels' box predictors are taken: every score stays the base's.
    """
    base, new = read_model(base_path), read_model(new_path)
    bg, ng = base.subgraphs[0], new.subgraphs[0]
    if len(bg.tensors) != len(ng.tensors):
        raise ValueError(f"{new_path}: {len(ng.tensors)} tensors, {base_path} {len(bg.tensors)}")
    names = "|".join(sorted(level_layers(levels, boxes_only)))
    own = re.compile(rf"/(?:{names})_1/")
    # The predictors' outputs go straight into the concatenated model outputs.
    predictors = ("box{lv}",) if boxes_only else ("cls{lv}", "box{lv}")
    outputs = re.compile(
        rf"/(?:{'|'.join(p.format(lv=lv) for lv in sorted(levels) for p in predictors)})_1/"
    )
    # Every level's predictor of a kind grafted: nothing of the base reaches that output any
    # more, so the output and the tensors on the way to it take the new export's range.
    names_all = b"".join(t.name for t in bg.tensors)
    all_levels = {int(x) for x in re.findall(rb"/box(\d+)_1/", names_all)}
    whole_output = levels >= all_levels
    taken: set[int] = set()
    for i, (bt, nt) in enumerate(zip(bg.tensors, ng.tensors, strict=True)):
        if not same_tensor(bt.name, nt.name) or list(bt.shape) != list(nt.shape):
            raise ValueError(
                f"tensor {i}: {nt.name!r} {list(nt.shape)} against "
                f"{bt.name!r} {list(bt.shape)}: not the same architecture"
            )
        # The base's name, whose tensor is written: the new export's may name more fused ops.
        name = bt.name.decode()
        if not own.search(name):
            continue
        if holds_data(base, bt):
            base.buffers[bt.buffer].data = new.buffers[nt.buffer].data
        elif outputs.search(name) and not whole_output:
            base_lo, base_hi = _range(bt.quantization)
            lo, hi = base_lo, base_hi
            new_lo, new_hi = _range(nt.quantization)
            if "/cls" in name:
                # Logits past these give the top or bottom uint8 score anyway: clipping
                # them there changes no output.
                lo = -math.inf if lo <= LOGIT_FLOOR else lo
                hi = math.inf if hi >= LOGIT_CEILING else hi
            # A sliver past the base's range clips only the most extreme values.
            if max(lo - new_lo, new_hi - hi) > 0.05 * (base_hi - base_lo):
                raise ValueError(
                    f"{name}: grafted range {new_lo:.2f}..{new_hi:.2f} exceeds the "
                    f"base outputs' {lo:.2f}..{hi:.2f}"
                )
            taken.add(i)
            continue  # keeps the base's (the concatenation's) scale
        bt.quantization = nt.quantization
        taken.add(i)
    if whole_output:
        # Reshapes, the concatenation and the final uint8 quantisation, in graph order.
        for op in bg.operators:
            ins = [t for t in op.inputs if t >= 0 and not holds_data(base, bg.tensors[t])]
            if ins and all(t in taken for t in ins):
                for t in op.outputs:
                    bg.tensors[t].quantization = ng.tensors[t].quantization
                    taken.add(t)
    # An operator of the grafted levels that reads a tensor from outside them (the stride-32
    # feature map, a level's features under its box predictor) computed its int32 bias at
    # that tensor's scale in the new export: re-expressed at the base's scale, which the
    # operator reads here (the int8 weights do not depend on it).
    for op in bg.operators:
        if not any(t in taken for t in op.outputs):
            continue
        for t in (t for t in op.inputs if t >= 0 and t not in taken):
            bq, nq = bg.tensors[t].quantization, ng.tensors[t].quantization
            if bq is None or bq.scale is None or holds_data(base, bg.tensors[t]):
                continue
            if list(bq.scale) == list(nq.scale) and list(bq.zeroPoint) == list(nq.zeroPoint):
                continue
            code = base.operatorCodes[op.opcodeIndex]
            kind = max(code.builtinCode, code.deprecatedBuiltinCode)
            if (
                kind not in _BIASED_OPS
                or t != op.inputs[0]
                or len(op.inputs) < 3
                or op.inputs[2] not in taken
                or not holds_data(base, bg.tensors[op.inputs[2]])
            ):
                raise ValueError(
                    f"{bg.tensors[t].name.decode()}: input of a grafted operator "
                    "quantised differently in the two exports"
                )
            _rescale_bias(base, bg.tensors[op.inputs[2]], bg.tensors[op.inputs[1]], bq.scale[0])
    write_model(base, out)
    return len(taken)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", type=Path, required=True, help="export whose other levels stay")
    ap.add_argument("--new", type=Path, required=True, help="export of the fine-tuned levels")
    ap.add_argument("--levels", default="2,3", help="comma-separated anchor levels to take")
    ap.add_argument(
        "--boxes-only",
        action="store_true",
        help="take only the levels' box predictors (a `train.py --train-boxes` fine-tune)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    levels = {int(x) for x in args.levels.split(",")}
    try:
        n = graft(args.base, args.new, levels, args.out, args.boxes_only)
    except (OSError, ValueError) as exc:
        print(f"graft: {exc}", file=sys.stderr)
        return 1
    what = "the box predictors of levels" if args.boxes_only else "levels"
    print(f"wrote {args.out}: {n} tensors of {what} {args.levels} from {args.new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
