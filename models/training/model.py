"""The head detector: MobileNetV2 (ImageNet-initialised) with a light four-level SSD head.

Only operations the Edge TPU compiler maps are used: Conv2D, DepthwiseConv2D, ReLU6, Add,
nearest-neighbour upsampling, Reshape, Concatenation and Logistic; batch-norm folds away at
conversion. Box decoding and NMS run on the CPU after the model (edge/detect.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow import keras

from edge.anchors import ANCHOR_SPEC, anchors_per_cell
from edge.detection import LABELS

NUM_CLASSES = len(LABELS)
FPN_CHANNELS = 96
# MobileNetV2 activations tapped at strides 8, 16 and 32 (SSDLite taps the same expansions).
TAPS = ("block_6_expand_relu", "block_13_expand_relu", "out_relu")


def _sep_conv(x: tf.Tensor, channels: int, name: str) -> tf.Tensor:
    # No batch-norm in the head: with batches of 16 and a few hundred steps its moving
    # statistics lag the batch statistics, and the model scored nothing at inference (measured).
    x = keras.layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(channels, 1, name=f"{name}_pw")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def _upsample(x: tf.Tensor, cells: int, for_export: bool, name: str) -> tf.Tensor:
    if for_export:
        return keras.layers.Resizing(cells, cells, interpolation="nearest", name=name)(x)
    return keras.layers.UpSampling2D(2, name=name)(x)


def build_backbone(size: int) -> keras.Model:
    """Keras MobileNetV2 alpha 1.0 without top, input already scaled to [-1, 1]."""
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None
    )


def build_detector(
    size: int = ANCHOR_SPEC.input_size, for_export: bool = False
) -> tuple[keras.Model, keras.Model, keras.Model]:
    """The training model (uint8-range float input -> logits, box offsets), the export model
    (-> scores, box offsets) and the backbone.

    for_export fixes the batch to 1 and upsamples with a resize op: Keras's UpSampling2D and
    batch-agnostic reshapes convert to TILE, SHAPE and STRIDED_SLICE, which the Edge TPU
    compiler does not map. Same layer names, same weights.
    """
    backbone = build_backbone(size)
    taps = keras.Model(
        backbone.input, [backbone.get_layer(n).output for n in TAPS], name="mobilenetv2"
    )
    image = keras.Input((size, size, 3), batch_size=1 if for_export else None, name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit_range")(image)
    c3, c4, c5 = taps(x)
    # Top-down path: stride-8 cells see 16 px faces; the deeper levels lend them semantics.
    p5 = keras.layers.Conv2D(FPN_CHANNELS, 1, activation="relu6", name="lat5")(c5)
    p4 = keras.layers.Conv2D(FPN_CHANNELS, 1, activation="relu6", name="lat4")(c4)
    p4 = keras.layers.Add(name="td4")([p4, _upsample(p5, size // 16, for_export, "up5")])
    p3 = keras.layers.Conv2D(FPN_CHANNELS, 1, activation="relu6", name="lat3")(c3)
    p3 = keras.layers.Add(name="td3")([p3, _upsample(p4, size // 8, for_export, "up4")])
    # Stride 64 for heads that fill the frame: one strided convolution over the stride-32 map.
    p6 = keras.layers.Conv2D(
        FPN_CHANNELS, 3, strides=2, padding="same", activation="relu6", name="down6"
    )(p5)
    scores, deltas = [], []
    levels = (p3, p4, p5, p6)
    for level, (p, n_anchors) in enumerate(zip(levels, anchors_per_cell(), strict=True)):
        f = _sep_conv(p, FPN_CHANNELS, f"head{level}_a")
        f = _sep_conv(f, FPN_CHANNELS, f"head{level}_b")
        cls = keras.layers.Conv2D(
            n_anchors * NUM_CLASSES,
            1,
            name=f"cls{level}",
            # Start every anchor at ~1 % foreground so focal loss is stable from step one.
            bias_initializer=keras.initializers.Constant(-4.6),
        )(f)
        box = keras.layers.Conv2D(n_anchors * 4, 1, name=f"box{level}")(f)
        cells = (size // ANCHOR_SPEC.levels[level].stride) ** 2 * n_anchors
        scores.append(keras.layers.Reshape((cells, NUM_CLASSES), name=f"cls{level}_flat")(cls))
        deltas.append(keras.layers.Reshape((cells, 4), name=f"box{level}_flat")(box))
    logits = keras.layers.Concatenate(axis=1, name="class_logits")(scores)
    probs = keras.layers.Activation("sigmoid", name="scores")(logits)
    boxes = keras.layers.Concatenate(axis=1, name="box_deltas")(deltas)
    train_model = keras.Model(image, [logits, boxes], name="head_detector_train")
    export_model = keras.Model(image, [probs, boxes], name="head_detector")
    return train_model, export_model, backbone


def imagenet_backbone_weights(tflite_path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Dequantized (kernel, bias) pairs of the 52 MobileNetV2 convolutions in a PTQ .tflite.

    Kernels are int8 per output channel (real = q * scale); biases are int32 with their own
    scales; batch-norm is already folded in. Returned in Keras layouts: Conv2D (kh, kw, in, out),
    DepthwiseConv2D (kh, kw, in, 1).
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(tflite_path))
    details = sorted(interp.get_tensor_details(), key=lambda d: d["index"])
    by_index = {d["index"]: d for d in details}
    pairs = []
    for d in details:
        scales = d["quantization_parameters"]["scales"]
        if d["dtype"] != np.int8 or len(d["shape"]) != 4 or len(scales) <= 1:
            continue
        if "top/" in d["name"]:
            continue  # the ImageNet classifier
        q = interp.get_tensor(d["index"]).astype(np.float32)
        is_depthwise = d["shape"][0] == 1 and "depthwise" in d["name"]
        out_ch = d["shape"][3] if is_depthwise else d["shape"][0]
        scale_shape = (1, 1, 1, -1) if is_depthwise else (-1, 1, 1, 1)
        kernel = q * np.asarray(scales, np.float32).reshape(scale_shape)
        kernel = np.transpose(kernel, (1, 2, 3, 0))  # tflite OHWI / 1HWC -> keras HWIO / HWC1
        bias_d = by_index[d["index"] + 1]
        if bias_d["dtype"] != np.int32 or tuple(bias_d["shape"]) != (out_ch,):
            raise ValueError(f"no bias after kernel {d['name']}")
        bias = interp.get_tensor(bias_d["index"]).astype(np.float32) * np.asarray(
            bias_d["quantization_parameters"]["scales"], np.float32
        )
        pairs.append((kernel, bias))
    if len(pairs) != 52:
        raise ValueError(f"expected 52 backbone convolutions, found {len(pairs)}")
    return pairs


def load_imagenet_weights(backbone: keras.Model, tflite_path: Path) -> None:
    """Put the folded ImageNet weights into the Keras backbone's convolutions and batch-norms.

    Keras's convolutions there have no bias, so the bias goes into the batch-norm that follows:
    gamma 1, beta = bias, moving mean 0, moving variance 1 - epsilon (an identity plus bias).
    """
    pairs = imagenet_backbone_weights(tflite_path)
    layers = backbone.layers
    convs = [
        i
        for i, layer in enumerate(layers)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
    ]
    if len(convs) != len(pairs):
        raise ValueError(f"backbone has {len(convs)} convolutions, weights {len(pairs)}")
    for i, (kernel, bias) in zip(convs, pairs, strict=True):
        conv = layers[i]
        if tuple(conv.kernel.shape) != kernel.shape:
            raise ValueError(f"{conv.name}: kernel {conv.kernel.shape} vs {kernel.shape}")
        conv.kernel.assign(kernel)
        bn = layers[i + 1]
        if not isinstance(bn, keras.layers.BatchNormalization):
            raise ValueError(f"{conv.name} is not followed by a batch-norm")
        bn.gamma.assign(np.ones_like(bias))
        bn.beta.assign(bias)
        bn.moving_mean.assign(np.zeros_like(bias))
        bn.moving_variance.assign(np.full_like(bias, 1.0 - bn.epsilon))


def tflite_layer_weights(tflite_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Dequantized (kernel, bias) of every convolution in one of our int8 .tflite exports, by
    Keras layer name (the converter keeps it: ".../<layer>_1/convolution").

    Batch-norm is folded in, which for the frozen backbone (gamma 1, mean 0, variance 1 - eps,
    as load_imagenet_weights sets it) is the kernel as it was and the beta as bias. Lets a new
    training stage start from a shipped model when its float weights are not at hand.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(tflite_path))
    details = sorted(interp.get_tensor_details(), key=lambda d: d["index"])
    by_index = {d["index"]: d for d in details}
    out = {}
    for d in details:
        scales = d["quantization_parameters"]["scales"]
        if d["dtype"] != np.int8 or len(d["shape"]) != 4 or len(scales) <= 1:
            continue
        name = d["name"].split(";")[0].split("/")[-2]
        name = name[:-2] if name.endswith("_1") else name
        is_depthwise = d["name"].endswith("depthwise")
        scale_shape = (1, 1, 1, -1) if is_depthwise else (-1, 1, 1, 1)
        q = interp.get_tensor(d["index"]).astype(np.float32)
        kernel = np.transpose(q * np.asarray(scales, np.float32).reshape(scale_shape), (1, 2, 3, 0))
        bias_d = by_index[d["index"] - 1]
        bias = interp.get_tensor(bias_d["index"]).astype(np.float32) * np.asarray(
            bias_d["quantization_parameters"]["scales"], np.float32
        )
        out[name] = (kernel, bias)
    return out


def load_tflite_weights(train_model: keras.Model, backbone: keras.Model, tflite_path: Path) -> int:
    """Start a model from an earlier int8 export; layers it lacks (or of another shape) keep
    their fresh initialisation. Returns how many layers were loaded."""
    weights = tflite_layer_weights(tflite_path)
    loaded = 0
    layers = list(train_model.layers) + list(backbone.layers)
    for i, layer in enumerate(layers):
        if layer.name not in weights or not isinstance(
            layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
        ):
            continue
        kernel, bias = weights[layer.name]
        if tuple(layer.kernel.shape) != kernel.shape:
            continue
        layer.kernel.assign(kernel)
        if layer.use_bias:
            layer.bias.assign(bias)
        else:
            bn = layers[i + 1]
            bn.gamma.assign(np.ones_like(bias))
            bn.beta.assign(bias)
            bn.moving_mean.assign(np.zeros_like(bias))
            bn.moving_variance.assign(np.full_like(bias, 1.0 - bn.epsilon))
        loaded += 1
    return loaded
