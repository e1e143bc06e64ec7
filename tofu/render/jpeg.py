"""JPEG decoding with libjpeg-turbo (simplejpeg) at a reduced DCT scale: shrink-on-load.

A JPEG can be decoded directly at M/8 of its size (M = 1..8) by a scaled inverse DCT, which
skips most of the work for a small rendition. libvips' ``thumbnail`` keeps a factor of two for
its final Lanczos step and decodes with the wheel's mozjpeg, which is slower than
libjpeg-turbo 3; decoding as small as quality allows and handing the pixels to libvips for the
rest takes a fifth off the render (docs/benchmarks.md).

Which scale, measured on the corpus photos (resize-only SSIM against a Lanczos-3 downscale of
the full decode, as ``tests/test_quality.py`` measures it):

- M = 5, 6 and 7 decode more slowly than the full image (libjpeg-turbo has SIMD for the 8x8,
  4x4, 2x2 and 1x1 transforms only), so they are never used.
- At M = 1 and 2 each 8x8 block becomes one or four pixels, close to a box filter: a Lanczos
  step that shrinks by less than 2 afterwards leaves aliasing (SSIM down to 0.86 on fine
  texture), so those scales need a decoded image at least twice the output.
- M = 3 and 4 need only cover the output (worst SSIM 0.975).

Leniency is libvips': libjpeg-turbo decodes strictly (any libjpeg warning fails it, and
simplejpeg cannot decode past some warnings at all, such as "N extraneous bytes before marker"
in the header), and a file it refuses is decoded by libvips' ``jpegload`` with
``fail_on=error``, as the exact path's ``thumbnail`` reads it: recoverable damage renders,
truncation stays a 422. A file missing only its EOI renders when libvips decodes every row
without reading past the data (it never reads the EOI), else it is refused like a truncated
one ("premature end of JPEG image"), on both paths. An intact file never takes the second
decoder.
"""

from __future__ import annotations

import math

import numpy as np
import pyvips
import simplejpeg

# (M, how many times the output the decoded image must be at least), smallest scale first.
_SCALES = ((1, 2.0), (2, 2.0), (3, 1.0), (4, 1.0))
_LIBVIPS_SHRINKS = (8, 4, 2, 1)  # what jpegload can shrink by on load


def decode_scale(width: int, height: int, out_width: int, out_height: int) -> int:
    """The smallest M (of M/8) at which a ``width`` x ``height`` JPEG may be decoded for an
    ``out_width`` x ``out_height`` result; 8 is the full image."""
    for m, factor in _SCALES:
        if (
            math.ceil(width * m / 8) >= out_width * factor
            and math.ceil(height * m / 8) >= out_height * factor
        ):
            return m
    return 8


def libvips_scale(width: int, height: int, out_width: int, out_height: int) -> int:
    """The M that libvips ``thumbnail`` decodes at: it shrinks on load by the largest of 8, 4
    and 2 that leaves at least twice the output (for the memory estimate of exact mode)."""
    shrink = min(width / out_width, height / out_height) / 2
    for factor in (8, 4, 2):
        if shrink >= factor:
            return 8 // factor
    return 8


def decode(data: bytes, m: int, width: int, height: int, *, grey: bool) -> pyvips.Image:
    """Decode ``data``, a ``width`` x ``height`` JPEG, at M/8 of its size (at least) as 8-bit
    RGB (or grey) pixels, without orientation or colour management. A file libjpeg-turbo
    decodes only with warnings is left to libvips (module docstring); a file libvips refuses
    raises ``pyvips.Error``, on loading or once the pixels are computed (the caller's 422)."""
    try:
        pixels: np.ndarray = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if grey else "RGB",
            min_width=math.ceil(width * m / 8),
            min_height=math.ceil(height * m / 8),
            strict=True,  # libjpeg's warnings (premature end of data, ...) are errors
        )
    except ValueError:
        return _decode_with_libvips(data, m, grey=grey)
    rows, columns, bands = pixels.shape
    # new_from_memory keeps a reference to the array: no copy.
    return pyvips.Image.new_from_memory(pixels.data, columns, rows, bands, "uchar")


def _decode_with_libvips(data: bytes, m: int, *, grey: bool) -> pyvips.Image:
    """``data`` as libvips reads it on the exact path, shrunk on load by the largest factor it
    offers that leaves at least M/8 of the size."""
    shrink = next(s for s in _LIBVIPS_SHRINKS if 8 // s >= m)
    image = pyvips.Image.jpegload_buffer(data, shrink=shrink, fail_on="error")
    return image.colourspace("b-w") if grey and image.bands != 1 else image
