"""Training augmentation: geometry (scale, crop, flip, small rotation) and the ways CCTV degrades
images (blur, down-and-up scaling, JPEG artefacts, sensor noise, colour casts).

Everything works on RGB uint8 images and (N, 4) x1y1x2y2 boxes, with numpy and OpenCV only.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.letterbox import letterbox_into


def place_on_canvas(
    image: np.ndarray,
    boxes: np.ndarray,
    size: int,
    rng: np.random.Generator,
    min_scale: float = 0.5,
    max_scale: float = 1.6,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale the image relative to a letterbox fit, then crop or pad it onto a size x size canvas.

    Scales below 1 shrink heads (far-away people on a wide street camera); above 1 zoom into a
    crop. The canvas border is black, as the runtime letterbox pads.
    """
    h, w = image.shape[:2]
    fit = size / max(h, w)
    scale = fit * float(np.exp(rng.uniform(np.log(min_scale), np.log(max_scale))))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    # Offset of the resized image inside the canvas (negative = cropped).
    ox = int(rng.integers(min(0, size - nw), max(0, size - nw) + 1))
    oy = int(rng.integers(min(0, size - nh), max(0, size - nh) + 1))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    sx1, sy1 = max(0, -ox), max(0, -oy)
    dx1, dy1 = max(0, ox), max(0, oy)
    cw, ch = min(nw - sx1, size - dx1), min(nh - sy1, size - dy1)
    canvas[dy1 : dy1 + ch, dx1 : dx1 + cw] = resized[sy1 : sy1 + ch, sx1 : sx1 + cw]
    out = boxes * scale + np.array([ox, oy, ox, oy], dtype=np.float32)
    return canvas, out


def clip_boxes(
    boxes: np.ndarray, labels: np.ndarray, size: int, ignore: int, min_visible: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the canvas; a head with less than min_visible of its box left becomes an
    ignore region, gone ones drop."""
    if len(boxes) == 0:
        return boxes, labels
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = np.clip(boxes, 0, size)
    carea = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = carea > 1.0
    visible = carea / np.maximum(area, 1e-6)
    labels = labels.copy()
    labels[visible < min_visible] = ignore
    return clipped[keep], labels[keep]


def flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal mirror."""
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out


def rotate(
    image: np.ndarray, boxes: np.ndarray, degrees: float
) -> tuple[np.ndarray, np.ndarray]:
    """Small rotation about the centre; boxes become the bounds of their rotated ellipse."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out_img = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    if len(boxes) == 0:
        return out_img, boxes
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) / 2
    hh = (boxes[:, 3] - boxes[:, 1]) / 2
    ncx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2]
    ncy = m[1, 0] * cx + m[1, 1] * cy + m[1, 2]
    c, s = abs(m[0, 0]), abs(m[0, 1])
    # A head is round: the ellipse bound keeps the box tight, unlike rotating the corners.
    nhw = np.sqrt((c * hw) ** 2 + (s * hh) ** 2)
    nhh = np.sqrt((s * hw) ** 2 + (c * hh) ** 2)
    return out_img, np.stack([ncx - nhw, ncy - nhh, ncx + nhw, ncy + nhh], axis=1)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photometric CCTV degradations, each applied with its own probability."""
    img = image
    if rng.random() < 0.5:  # colour cast, brightness, contrast, saturation
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-8, 8)) % 180
        hsv[..., 1] *= rng.uniform(0.5, 1.4)
        hsv[..., 2] = hsv[..., 2] * rng.uniform(0.6, 1.35) + rng.uniform(-25, 25)
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    if rng.random() < 0.2:
        img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)  # night IR
    if rng.random() < 0.35:  # down-and-up scaling: a low-resolution sensor or a digital zoom
        h, w = img.shape[:2]
        f = rng.uniform(0.35, 0.8)
        # Bilinear both ways, as the shipped model was trained (an INTER_AREA once passed
        # positionally landed in resize's dst argument and was ignored).
        small = cv2.resize(
            img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_LINEAR
        )
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:  # focus and motion blur
        if rng.random() < 0.5:
            k = int(rng.choice([3, 5]))
            img = cv2.GaussianBlur(img, (k, k), 0)
        else:
            k = int(rng.choice([3, 5, 7]))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            if rng.random() < 0.5:
                kernel = kernel.T
            img = cv2.filter2D(img, -1, kernel)
    if rng.random() < 0.3:  # sensor noise
        noise = rng.normal(0, rng.uniform(2, 9), img.shape).astype(np.float32)
        img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:  # compression artefacts of a cheap encoder
        q = int(rng.integers(20, 75))
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        decoded = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED) if ok else None
        if decoded is not None:
            img = decoded
    return img


# Zoomed views bring one head to this many model pixels (log-uniform), upscaling its source
# pixels at most MAX_UPSCALE times: close-up faces and backs of heads of a door camera.
ZOOM_HEAD_PX = (60.0, 300.0)
MAX_UPSCALE = 3.0


def zoom_on_head(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    prefer: Sequence[tuple[int, float]] = (),
    head_px: tuple[float, float] = ZOOM_HEAD_PX,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A size x size view that shows one labelled head large (head_px: the range of its longer
    side, log-uniform), at a random place in the view.

    prefer lists (label, share) pairs: with probability share the head is drawn among those
    with that label when the image has any (the shares add up to at most 1). Backs of heads
    and unmasked faces are a small share of all heads, yet large ones are what a weak model
    reads as masks. None when the image has no labelled head big enough to zoom on without
    turning to mush.
    """
    heads = np.flatnonzero(labels >= 0)
    draw, below = rng.random(), 0.0
    for label, share in prefer:
        below += share
        if draw < below:
            preferred = np.flatnonzero(labels == label)
            if len(preferred):
                heads = preferred
            break
    if len(heads) == 0:
        return None
    k = int(heads[rng.integers(len(heads))])
    b = boxes[k]
    side = float(max(b[2] - b[0], b[3] - b[1]))
    target = float(np.exp(rng.uniform(*np.log(head_px))))
    scale = min(target / max(side, 1.0), MAX_UPSCALE)
    if side * scale < head_px[0]:
        return None
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    hb = b * scale
    # The head lands anywhere in the view that keeps it whole.
    span_x = max(0.0, size - (hb[2] - hb[0]))
    span_y = max(0.0, size - (hb[3] - hb[1]))
    ox = int(-hb[0] + rng.uniform(0, span_x))
    oy = int(-hb[1] + rng.uniform(0, span_y))
    # Resize only the part that lands in the view.
    x0, y0 = max(0, int(-ox / scale)), max(0, int(-oy / scale))
    x1 = min(w, int(np.ceil((size - ox) / scale)) + 1)
    y1 = min(h, int(np.ceil((size - oy) / scale)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    part = cv2.resize(
        image[y0:y1, x0:x1],
        (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
        interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA,
    )
    px, py = ox + round(x0 * scale), oy + round(y0 * scale)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    sx, sy = max(0, -px), max(0, -py)
    dx, dy = max(0, px), max(0, py)
    cw = min(part.shape[1] - sx, size - dx)
    ch = min(part.shape[0] - sy, size - dy)
    if cw <= 0 or ch <= 0:
        return None
    canvas[dy : dy + ch, dx : dx + cw] = part[sy : sy + ch, sx : sx + cw]
    del nw, nh
    return canvas, boxes * scale + np.array([px - x0 * scale, py - y0 * scale] * 2, np.float32)


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    ignore: int,
    zoom_share: float = 0.0,
    zoom_prefer: Sequence[tuple[int, float]] = (),
    zoom_px: tuple[float, float] = ZOOM_HEAD_PX,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random training view of a sample, size x size RGB uint8 with its boxes.

    A zoom_share of the views zoom onto one labelled head (zoom_on_head; zoom_prefer its
    (label, share) preferences) where one is big enough; the rest scale the whole image around
    its letterbox fit.
    """
    zoomed = (
        zoom_on_head(image, boxes, labels, size, rng, zoom_prefer, zoom_px)
        if rng.random() < zoom_share
        else None
    )
    img, b = zoomed if zoomed is not None else place_on_canvas(image, boxes, size, rng)
    if rng.random() < 0.5:
        img, b = flip(img, b)
    if rng.random() < 0.3:
        img, b = rotate(img, b, float(rng.uniform(-8, 8)))
    b, lab = clip_boxes(b, labels, size, ignore)
    return degrade(img, rng), b.astype(np.float32), lab


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Deterministic fit of an RGB image into size x size, top-left, black padding.

    The runtime's own letterbox (edge.letterbox.letterbox_into, which takes BGR and writes RGB),
    so that validation and int8 calibration see the pixels the daemon feeds the model.
    """
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    scale = letterbox_into(np.ascontiguousarray(image[..., ::-1]), canvas)
    return canvas, scale
