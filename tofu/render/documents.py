"""Renditions that are data, not pixels: JSON documents about an original.

``info`` (tofu's ``/.../info/NAME``): the original's width and height as displayed (after EXIF
orientation), its format, whether it is animated and its frames, whether it has alpha, its
dominant colour and two placeholders, a BlurHash and a ThumbHash, computed on a thumbnail of
at most ``INFO_SIDE`` pixels that the pipeline decodes with shrink-on-load (so a miss costs a
fraction of a render: docs/urls.md, Placeholders and info).

``thumbor_meta`` (thumbor's ``meta/`` URLs): thumbor's JSON shape, computed from the header
and the planned geometry alone (no pixel is decoded).

Both are pure functions of (original bytes, size), like every render.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pyvips

from tofu.render.steps import Geometry, Source
from tofu.transform import Fit, Gravity, Size

# The thumbnail the placeholders are computed on: ThumbHash takes at most 100x100, and 32 px
# already carries all the detail either hash encodes (ThumbHash: 7 luminance components at
# most; BlurHash: 4x3 here), at a few milliseconds of Python for both.
INFO_SIDE = 32
INFO_THUMBNAIL = Size(width=INFO_SIDE, height=INFO_SIDE, fit=Fit.INSIDE)
# BlurHash components along the long and the short side (its authors' suggested 4x3).
_BLURHASH_LONG, _BLURHASH_SHORT = 4, 3
# Dominant colour: the most common colour with each channel in 8 levels, then the mean of the
# pixels in that bin (finer bins leave too few pixels each on a 32 px thumbnail).
_DOMINANT_SHIFT = 5
_OPAQUE = 128  # pixels at least this opaque count for the dominant colour


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def info(image: pyvips.Image, source: Source) -> bytes:
    """The info document for ``source``, with placeholders from ``image``: its thumbnail,
    8-bit sRGB (the pipeline's decode, orientation, colour management and ``to_8bit``)."""
    if image.bands - int(image.hasalpha()) < 3:
        image = image.colourspace("srgb")  # grey (and grey + alpha) to three channels
    if not image.hasalpha():
        image = image.bandjoin(255)
    width, height = image.width, image.height
    rgba = np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=(height, width, image.bands)
    )[:, :, :4]
    return _dumps(
        {
            "width": source.width,
            "height": source.height,
            "format": source.loader,
            "animated": source.frames > 1,
            "frames": source.frames,
            "has_alpha": source.has_alpha,
            "dominant_color": "#{:02x}{:02x}{:02x}".format(*dominant_colour(rgba)),
            "blurhash": blur_hash(rgba),
            "thumbhash": base64.b64encode(thumb_hash(rgba)).decode(),
        }
    )


def dominant_colour(rgba: np.ndarray) -> tuple[int, int, int]:
    """The most common colour of ``rgba`` (height x width x 4, uint8) among its opaque pixels
    (all of them when none is), as (red, green, blue)."""
    pixels = rgba.reshape(-1, 4)
    opaque = pixels[pixels[:, 3] >= _OPAQUE]
    rgb = (opaque if len(opaque) else pixels)[:, :3].astype(np.int64)
    levels = 256 >> _DOMINANT_SHIFT
    bins = rgb >> _DOMINANT_SHIFT
    index = (bins[:, 0] * levels + bins[:, 1]) * levels + bins[:, 2]
    mode = np.bincount(index).argmax()
    red, green, blue = rgb[index == mode].mean(axis=0).round().astype(int)
    return int(red), int(green), int(blue)


_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[value // 83 ** (length - 1 - i) % 83] for i in range(length))


def _to_srgb(value: float) -> int:
    """Linear light 0-1 to an sRGB byte, as BlurHash's reference truncates."""
    v = min(max(value, 0.0), 1.0)
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def blur_hash(rgba: np.ndarray) -> str:
    """The BlurHash of ``rgba`` (height x width x 4, uint8) flattened onto white (BlurHash has
    no alpha), 4x3 components (3x4 for a portrait): Wolt's reference encoder (``encode.ts``,
    MIT) with numpy for the sums (the ``blurhash`` package's pure Python loops take ~3 ms on
    a 32 px image, more than the rest of an info document together)."""
    alpha = rgba[:, :, 3:4].astype(np.float64) / 255
    srgb = (rgba[:, :, :3] * alpha + 255 * (1 - alpha)) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    height, width = linear.shape[:2]
    across, down = (
        (_BLURHASH_LONG, _BLURHASH_SHORT) if width >= height else (_BLURHASH_SHORT, _BLURHASH_LONG)
    )
    basis_x = np.cos(np.pi * np.outer(np.arange(across), np.arange(width)) / width)
    basis_y = np.cos(np.pi * np.outer(np.arange(down), np.arange(height)) / height)
    # factors[j, i] = sum over pixels of cos_y(j) * cos_x(i) * colour, per channel.
    factors = np.einsum("jy,yxc,ix->jic", basis_y, linear, basis_x) / (width * height)
    factors[1:, :, :] *= 2  # the reference's normalisation: 1 for the DC, 2 for the rest
    factors[0, 1:, :] *= 2
    dc, ac = factors[0, 0], factors.reshape(-1, 3)[1:]
    text = _base83((across - 1) + (down - 1) * 9, 1)
    largest = float(np.abs(ac).max()) if len(ac) else 0.0
    quantised = int(max(0, min(82, math.floor(largest * 166 - 0.5))))
    maximum = (quantised + 1) / 166
    text += _base83(quantised, 1)
    text += _base83((_to_srgb(dc[0]) << 16) + (_to_srgb(dc[1]) << 8) + _to_srgb(dc[2]), 4)
    for colour in ac:
        value = 0
        for component in colour:
            signed = math.copysign(abs(component / maximum) ** 0.5, component)
            value = value * 19 + int(max(0, min(18, math.floor(signed * 9 + 9.5))))
        text += _base83(value, 2)
    return text


def _round(value: float) -> int:
    """JavaScript's ``Math.round`` (halves up), as ThumbHash's reference encoder rounds."""
    return math.floor(value + 0.5)


def thumb_hash(rgba: np.ndarray) -> bytes:
    """The ThumbHash of ``rgba`` (height x width x 4, uint8, at most 100 x 100): Evan
    Wallace's reference encoder (``rgbaToThumbHash``, MIT), with numpy for the sums. (The
    ``thumbhash`` package on PyPI drops the alpha channel's data: an operator precedence slip.)"""
    height, width = rgba.shape[:2]
    assert width <= 100 and height <= 100
    pixels = rgba.reshape(-1, 4).astype(np.float64)
    alpha = pixels[:, 3] / 255
    total_alpha = float(alpha.sum())
    average = (alpha[:, None] / 255 * pixels[:, :3]).sum(axis=0)
    if total_alpha:
        average /= total_alpha
    has_alpha = total_alpha < width * height
    limit = 5 if has_alpha else 7
    lx = max(1, _round(limit * width / max(width, height)))
    ly = max(1, _round(limit * height / max(width, height)))
    # Transparent parts take the average colour, so that they do not darken the rest.
    rgb = average * (1 - alpha[:, None]) + alpha[:, None] / 255 * pixels[:, :3]
    red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    luma = (red + green + blue) / 3
    p_channel = (red + green) / 2 - blue
    q_channel = red - green

    def encode(channel: np.ndarray, nx: int, ny: int) -> tuple[float, list[float], float]:
        grid = channel.reshape(height, width)
        dc, ac, scale = 0.0, [], 0.0
        for cy in range(ny):
            fy = np.cos(np.pi / height * cy * (np.arange(height) + 0.5))
            cx = 0
            while cx * ny < nx * (ny - cy):
                fx = np.cos(np.pi / width * cx * (np.arange(width) + 0.5))
                f = float(fy @ grid @ fx) / (width * height)
                if cx or cy:
                    ac.append(f)
                    scale = max(scale, abs(f))
                else:
                    dc = f
                cx += 1
        if scale:
            ac = [0.5 + 0.5 / scale * f for f in ac]
        return dc, ac, scale

    l_dc, l_ac, l_scale = encode(luma, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = encode(p_channel, 3, 3)
    q_dc, q_ac, q_scale = encode(q_channel, 3, 3)
    a_dc, a_ac, a_scale = encode(alpha, 5, 5) if has_alpha else (1.0, [], 1.0)
    landscape = width > height
    header24 = (
        _round(63 * l_dc)
        | _round(31.5 + 31.5 * p_dc) << 6
        | _round(31.5 + 31.5 * q_dc) << 12
        | _round(31 * l_scale) << 18
        | int(has_alpha) << 23
    )
    header16 = (
        (ly if landscape else lx)
        | _round(63 * p_scale) << 3
        | _round(63 * q_scale) << 9
        | int(landscape) << 15
    )
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    if has_alpha:
        out.append(_round(15 * a_dc) | _round(15 * a_scale) << 4)
    odd = False
    for f in [*l_ac, *p_ac, *q_ac, *a_ac]:
        nibble = _round(15 * f)
        if odd:
            out[-1] |= nibble << 4
        else:
            out.append(nibble)
        odd = not odd
    return bytes(out)


def thumbor_meta(
    source: Source,
    cut: Source | None,
    cut_box: tuple[int, int, int, int] | None,
    size: Size,
    geometry: Geometry,
) -> bytes:
    """thumbor's ``meta/`` document (its ``JSONEngine``): the source, the operations (crops in
    source pixels, the resize, flips) and the target size, for a render planned as
    ``geometry`` of ``size`` (its box rules resolved) over ``cut`` (what a manual crop at
    ``cut_box`` leaves of ``source``), or the whole ``source``."""
    operations: list[dict[str, Any]] = []
    if cut_box is not None and cut is not None:
        left, top, width, height = cut_box
        right, bottom = left + width, top + height
        operations.append(
            {"type": "crop", "left": left, "top": top, "right": right, "bottom": bottom}
        )
    base = cut or source
    target_width, target_height = geometry.resized_width, geometry.resized_height
    if size.fit is Fit.COVER:
        box = geometry.focal[:2] if geometry.focal else (geometry.box_width, geometry.box_height)
        target_width, target_height = min(box[0], target_width), min(box[1], target_height)
        window = _cover_window(base, size, geometry, target_width, target_height)
        if window is not None:
            operations.append(window)
    if (target_width, target_height) != (base.width, base.height):
        operations.append({"type": "resize", "width": target_width, "height": target_height})
    ops = size.operations
    if ops.flip_horizontal:
        operations.append({"type": "flip_horizontally"})
    if ops.flip_vertical:
        operations.append({"type": "flip_vertically"})
    return _dumps(
        {
            "thumbor": {
                "source": {
                    "width": source.width,
                    "height": source.height,
                    "frameCount": source.frames,
                },
                "operations": operations,
                "target": {"width": target_width, "height": target_height},
            }
        }
    )


def _cover_window(
    base: Source, size: Size, geometry: Geometry, width: int, height: int
) -> dict[str, Any] | None:
    """The part of ``base`` a COVER render keeps, in its pixels (thumbor crops before it
    resizes); None when nothing is cut off, or when the attention crop decides it from the
    pixels (not known from the header)."""
    scale = geometry.resized_width / base.width
    crop_width = min(base.width, round(width / scale))
    crop_height = min(base.height, round(height / scale))
    if (crop_width, crop_height) == (base.width, base.height) or size.gravity is Gravity.ATTENTION:
        return None
    fx, fy = size.focal if size.gravity is Gravity.FOCAL and size.focal else (50.0, 50.0)
    left = min(max(0, round(base.width * fx / 100 - crop_width / 2)), base.width - crop_width)
    top = min(max(0, round(base.height * fy / 100 - crop_height / 2)), base.height - crop_height)
    return {
        "type": "crop",
        "left": left,
        "top": top,
        "right": left + crop_width,
        "bottom": top + crop_height,
    }
