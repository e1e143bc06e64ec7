"""thumbor's colour and detail filters (its C extensions in ``thumbor/ext/filters``), as libvips
operations on one frame: ``rgb``, ``saturation``, ``colorize``, ``equalize``, ``curve``,
``convolution``, ``sharpen``, ``noise``, and the geometry of ``stretch`` and ``proportion``.

Each works on 8-bit sRGB colour bands (a grey image is made sRGB, as thumbor's engine hands its
filters RGB) and leaves alpha alone, except ``convolution``, which thumbor applies to alpha too.
All stay lazy, so the pipeline's runner watches their work; ``equalize`` reads the whole image
(its histogram), as a ``whole`` step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyvips

from tofu.render.steps import to_8bit
from tofu.transform import Colorize, Convolution, Curve, CurvePoints, Sharpen

_WAVELET_LEVELS = 5  # thumbor's wavelet sharpen
# thumbor's rgb2ycbcr and ycbcr2rgb (JPEG's full-range YCbCr), as recombination matrices.
_TO_YCBCR = [[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]]
_TO_RGB = [[1.0, 0.0, 1.402], [1.0, -0.34414, -0.71414], [1.0, 1.772, 0.0]]


def _split(image: pyvips.Image) -> tuple[pyvips.Image, pyvips.Image | None]:
    """8-bit sRGB colour bands and the alpha band (None without one)."""
    image = to_8bit(image)
    if image.bands < 3:
        image = image.colourspace("srgb")
    if image.hasalpha():
        return image.extract_band(0, n=3), image.extract_band(3)
    return image, None


def _join(colour: pyvips.Image, alpha: pyvips.Image | None) -> pyvips.Image:
    colour = colour.cast("uchar").copy(interpretation="srgb")
    return colour if alpha is None else colour.bandjoin(alpha)


def rgb(image: pyvips.Image, deltas: tuple[int, int, int]) -> pyvips.Image:
    """Each channel + 255 * delta / 100 (C integer division, towards zero), clipped."""
    colour, alpha = _split(image)
    return _join(colour.linear([1, 1, 1], [int(255 * d / 100) for d in deltas]), alpha)


def saturation(image: pyvips.Image, change: float) -> pyvips.Image:
    """alienryderflex.com's: p = sqrt(.299 r^2 + .587 g^2 + .114 b^2), each channel c to
    p + (c - p) * change."""
    colour, alpha = _split(image)
    squares = colour.cast("float") ** 2
    p = squares.recomb([[0.299, 0.587, 0.114]]) ** 0.5
    return _join(p + (colour - p) * change, alpha)


def colorize(image: pyvips.Image, spec: Colorize) -> pyvips.Image:
    """Each channel blended towards the colour by its percentage."""
    colour, alpha = _split(image)
    percents = (spec.red, spec.green, spec.blue)
    return _join(
        colour.linear(
            [(100 - p) / 100 for p in percents],
            [c * p / 100 for c, p in zip(spec.colour, percents, strict=True)],
        ),
        alpha,
    )


def equalize(image: pyvips.Image) -> pyvips.Image:
    """thumbor's histogram equalisation, per channel, with its quirk: the lowest cumulative
    count is looked for only until one channel has one (the others keep 0 when their darkest
    value is higher)."""
    colour, alpha = _split(image)
    histogram = np.frombuffer(colour.hist_find().write_to_memory(), dtype=np.uint32)
    counts = histogram.reshape(256, 3).T.astype(np.int64)
    area = colour.width * colour.height
    cumulative = np.where(counts > 0, np.cumsum(counts, axis=1), 0)
    lowest = np.zeros(3, dtype=np.int64)
    for value in range(256):
        found = cumulative[:, value] != 0
        lowest = np.where((lowest == 0) & found, cumulative[:, value], lowest)
        if lowest.any():
            break
    with np.errstate(divide="ignore", invalid="ignore"):
        table = (cumulative - lowest[:, None]).astype(np.float32) / (area - lowest[:, None])
    # C's float-to-unsigned-char conversion (in range: truncation; a single-valued channel
    # divides by zero there, undefined: 0 here).
    table = np.nan_to_num(np.clip(table * 255, 0, 255), nan=0.0, posinf=0.0, neginf=0.0)
    return _join(colour.maplut(_lut(table.astype(np.uint8))), alpha)


def _lut(table: np.ndarray) -> pyvips.Image:
    """A 256x1 lookup image with one band per row of ``table`` (bands x 256)."""
    rows = np.ascontiguousarray(table.T.reshape(1, 256, table.shape[0]))
    return pyvips.Image.new_from_array(rows).cast("uchar")


def curve_table(points: CurvePoints) -> list[int]:
    """thumbor's ``cubic_spline_interpolation``: a natural cubic spline through the points,
    rounded and clipped to 0-255; below the first point its output, from the last one on,
    the last one's."""
    n = len(points)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    # The tridiagonal system for the second derivatives (natural ends), solved as thumbor does.
    lower, diagonal, upper, result = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    diagonal[0] = diagonal[n - 1] = 1.0
    for i in range(1, n - 1):
        lower[i] = (xs[i] - xs[i - 1]) / 6
        diagonal[i] = (xs[i + 1] - xs[i - 1]) / 3
        upper[i] = (xs[i + 1] - xs[i]) / 6
        result[i] = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) - (ys[i] - ys[i - 1]) / (
            xs[i] - xs[i - 1]
        )
    for i in range(1, n):
        k = lower[i] / diagonal[i - 1]
        diagonal[i] -= k * upper[i - 1]
        result[i] -= k * result[i - 1]
    for i in range(n - 2, -1, -1):
        k = upper[i] / diagonal[i + 1]
        result[i] -= k * result[i + 1]
    second = [result[i] / diagonal[i] for i in range(n)]
    table = [ys[0]] * 256
    for i in range(n - 1):
        x0, y0, x1, y1 = xs[i], ys[i], xs[i + 1], ys[i + 1]
        h = x1 - x0
        for x in range(x0, x1):
            b = (x - x0) / h
            a = 1 - b
            y = (
                a * y0
                + b * y1
                + (h * h / 6) * ((a**3 - a) * second[i] + (b**3 - b) * second[i + 1])
            )
            table[x] = min(max(_c_round(y), 0), 255)
    for x in range(xs[-1], 256):
        table[x] = ys[-1]
    return table


def _c_round(value: float) -> int:
    """C's round(): halves away from zero."""
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def curve(image: pyvips.Image, spec: Curve) -> pyvips.Image:
    """Each channel through its own curve, then through ``all``."""
    colour, alpha = _split(image)
    common = curve_table(spec.all)
    tables = [
        [common[v] for v in curve_table(points)] for points in (spec.red, spec.green, spec.blue)
    ]
    return _join(colour.maplut(_lut(np.array(tables, dtype=np.uint8))), alpha)


def convolution(image: pyvips.Image, spec: Convolution) -> pyvips.Image:
    """The kernel over every band, edges extended, each sum truncated and clipped. Alpha too
    when some pixel is transparent (thumbor's engine has an alpha band only then: an opaque
    picture's alpha, as libvips decodes a GIF's, is left opaque). Reads the whole image."""
    image = to_8bit(image)
    if image.bands < 3:
        image = image.colourspace("srgb")
    if image.hasalpha() and image.extract_band(image.bands - 1).min() == 255:
        colour, alpha = _split(image)
        return _join(convolution(colour, spec), alpha)
    total = sum(spec.matrix)
    values = [v / total for v in spec.matrix] if spec.normalize and total != 0 else spec.matrix
    rows = [list(values[i : i + spec.columns]) for i in range(0, len(values), spec.columns)]
    mask = pyvips.Image.new_from_list(rows)
    # (int) in C truncates towards zero; then clipped to 0-255.
    summed = image.cast("float").conv(mask, precision="float")
    truncated = (summed < 0).ifthenelse(summed.ceil(), summed.floor())
    return truncated.cast("uchar").copy(interpretation="srgb")


Compute = Callable[[pyvips.Image], pyvips.Image]


def sharpen(image: pyvips.Image, spec: Sharpen, computed: Compute) -> pyvips.Image:
    """thumbor's wavelet sharpen: each channel (or only the luma of JPEG YCbCr) split into
    five levels of detail by a B3-spline "a trous" transform, level ``l`` amplified by
    ``amount * exp(-(l - radius)^2 / 1.5) + 1``, and summed back."""
    colour, alpha = _split(image)
    planes = colour.cast("float") / 255
    if spec.luminance_only:
        ycbcr = colour.cast("float").recomb(_TO_YCBCR).linear(1 / 255, [0, 128 / 255, 128 / 255])
        luma = _wavelet_sharpen(ycbcr.extract_band(0), spec.amount, spec.radius, computed)
        sharpened = luma.bandjoin(ycbcr.extract_band(1, n=2)) * 255
        result = sharpened.linear(1, [0, -128, -128]).recomb(_TO_RGB)
    else:
        result = _wavelet_sharpen(planes, spec.amount, spec.radius, computed) * 255
    return _join(result, alpha)


def _wavelet_sharpen(
    plane: pyvips.Image, amount: float, radius: float, computed: Compute
) -> pyvips.Image:
    """Each level's smooth image is read twice (its detail, the next level): ``computed``
    holds it in memory (under the deadline) rather than have libvips compute it twice."""
    high = computed(plane)
    detail = None
    low = plane
    for level in range(_WAVELET_LEVELS):
        step = 1 << level
        taps = [0.0] * (2 * step + 1)
        taps[0], taps[step], taps[-1] = 1.0, 2.0, 1.0
        mask = pyvips.Image.new_from_list([taps], scale=4)
        # Mirrored edges, as thumbor's hat transform reflects at the borders.
        padded = high.embed(
            step, step, high.width + 2 * step, high.height + 2 * step, extend="mirror"
        )
        low = computed(
            padded.convsep(mask, precision="float").crop(step, step, high.width, high.height)
        )
        gain = amount * math.exp(-((level - radius) ** 2) / 1.5) + 1
        amplified = (high - low) * gain
        detail = amplified if detail is None else detail + amplified
        high = low
    assert detail is not None
    return detail + low


def noise(image: pyvips.Image, amount: int, seed: int) -> pyvips.Image:
    """The same random offset added to every colour channel of a pixel, with the spread of
    thumbor's (uniform over ``amount``: a standard deviation of amount / sqrt(12)). Seeded
    from the URL's arguments: the same URL gives the same bytes."""
    colour, alpha = _split(image)
    grain = pyvips.Image.gaussnoise(
        colour.width, colour.height, mean=0.0, sigma=amount / math.sqrt(12), seed=seed
    )
    return _join(colour + grain, alpha)


def resize_to(image: pyvips.Image, width: int, height: int) -> pyvips.Image:
    """Exactly ``width`` x ``height`` (each side scaled alone)."""
    if (width, height) == (image.width, image.height):
        return image
    return image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
