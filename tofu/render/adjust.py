"""The pixel operations of ``Size.operations`` (the edits thumbor URLs add), one small function
each; the pipeline (``pipeline.py``) runs them as its steps, on a still or on every frame of an
animation. Their box rules (orig sides, adaptive, full fit-in, focal box, manual crop) are
geometry and live in ``steps.layout``.

Three of them read the whole image to decide (``trim_window``, ``median_colour``, and the
attention crop in ``steps.crop_window``): the pipeline computes their input first, where the
deadline can stop it, and an animation decides once, on its first frame, for every frame.
"""

from __future__ import annotations

import math

import pyvips

from tofu.render.encode import DEFAULT_QUALITY, encode
from tofu.render.steps import Box, RenderSettings
from tofu.transform import (
    Colour,
    Fill,
    FillKind,
    ImageFormat,
    RoundCorner,
    Size,
    Trim,
    TrimCorner,
)

_FILL_BLUR_RADIUS = 50  # thumbor's fill(blur)
_MAX_BYTES_MIN_QUALITY = 10  # below this thumbor gives up and keeps the first encoding


def trim_window(image: pyvips.Image, trim: Trim) -> Box | None:
    """The part inside the border of the corner pixel's colour (it reads the whole image);
    None when all of it would go."""
    flat = image.flatten(background=[255] * (image.bands - 1)) if image.hasalpha() else image
    x, y = (0, 0) if trim.corner is TrimCorner.TOP_LEFT else (flat.width - 1, flat.height - 1)
    background = flat.getpoint(x, y)
    left, top, width, height = flat.find_trim(
        threshold=max(trim.tolerance, 1), background=background
    )
    if width <= 0 or height <= 0:
        return None
    return left, top, width, height


def rotate(image: pyvips.Image, degrees: int) -> pyvips.Image:
    """Counter-clockwise, as thumbor (PIL) rotates; libvips' angles are clockwise."""
    return image.rot(f"d{360 - degrees}")


def brightness(image: pyvips.Image, amount: int) -> pyvips.Image:
    """thumbor: every channel + 255 * amount / 100 (C integer division)."""
    return _on_colour(image, 1.0, float(int(255 * amount / 100)))


def contrast(image: pyvips.Image, amount: int) -> pyvips.Image:
    """thumbor: (x - 128) * (amount + 100)^2 / 10000 + 128."""
    factor = ((amount + 100) ** 2 // 100) / 100
    return _on_colour(image, factor, 128 - 128 * factor)


def background(image: pyvips.Image, colour: Colour) -> pyvips.Image:
    """Transparent parts flattened onto ``colour``."""
    return image.flatten(background=_colour_for(image, colour)[: image.bands - 1])


def _on_colour(image: pyvips.Image, scale: float, offset: float) -> pyvips.Image:
    """``scale * x + offset`` on the colour bands, clipped to 0-255; alpha untouched."""
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.hasalpha():
        colour, alpha = (
            image.extract_band(0, n=image.bands - 1),
            image.extract_band(image.bands - 1),
        )
        return colour.linear(scale, offset).cast("uchar").bandjoin(alpha)
    return image.linear(scale, offset).cast("uchar")


def blur(image: pyvips.Image, radius: int, sigma: float) -> pyvips.Image:
    """A Gaussian of ``sigma`` truncated at ``radius`` pixels, like thumbor's convolution."""
    sigma = min(max(sigma, 0.1), 1000.0)  # libvips' range
    min_ampl = min(max(math.exp(-(radius * radius) / (2 * sigma * sigma)), 0.001), 0.99)
    return image.gaussblur(sigma, min_ampl=min_ampl).cast("uchar")


def _colour_for(image: pyvips.Image, colour: Colour) -> list[float]:
    """``colour`` as band values for ``image`` (grey or sRGB, with or without alpha)."""
    red, green, blue, alpha = colour
    values = (
        [red, green, blue] if image.bands >= 3 else [0.299 * red + 0.587 * green + 0.114 * blue]
    )
    return [float(v) for v in values] + ([float(alpha)] if image.hasalpha() else [])


def _with_alpha(image: pyvips.Image) -> pyvips.Image:
    if image.bands < 3:
        image = image.colourspace("srgb")
    return image if image.hasalpha() else image.bandjoin(255)


def round_corner(image: pyvips.Image, corner: RoundCorner) -> pyvips.Image:
    """Corners outside ellipses of the given radii show ``corner.colour`` (or transparency)."""
    rx, ry = max(corner.radius_x, 1), max(corner.radius_y, 1)
    xy = pyvips.Image.xyz(image.width, image.height)
    x, y = xy[0] + 0.5, xy[1] + 0.5
    # Distance into the corner region along each axis (0 outside the corner squares).
    dx = (x < rx).ifthenelse(rx - x, (x > image.width - rx).ifthenelse(x - (image.width - rx), 0))
    dy = (y < ry).ifthenelse(ry - y, (y > image.height - ry).ifthenelse(y - (image.height - ry), 0))
    inside = ((dx / rx) ** 2 + (dy / ry) ** 2) <= 1
    if corner.colour[3] == 0:
        image = _with_alpha(image)
        alpha = image.extract_band(image.bands - 1)
        return image.extract_band(0, n=image.bands - 1).bandjoin(inside.ifthenelse(alpha, 0))
    return inside.ifthenelse(image, _colour_for(image, corner.colour))


def fill(image: pyvips.Image, spec: Fill, size: Size, median: Colour | None) -> pyvips.Image:
    """Centre the picture on the requested box (open sides: the picture's), over a colour, the
    picture's ``median`` colour (``median_colour``), or the picture itself blurred and
    stretched."""
    width = max(size.width or image.width, image.width)
    height = max(size.height or image.height, image.height)
    left, top = (width - image.width) // 2, (height - image.height) // 2
    if spec.kind is FillKind.BLUR:
        canvas = blur(image, _FILL_BLUR_RADIUS, _FILL_BLUR_RADIUS).resize(
            width / image.width, vscale=height / image.height
        )
        canvas = canvas.crop(0, 0, min(width, canvas.width), min(height, canvas.height))
        canvas = canvas.embed(0, 0, width, height, extend="copy")
    else:
        colour = median if spec.kind is FillKind.AUTO and median is not None else spec.colour
        if colour[3] < 255:
            image = _with_alpha(image)
        elif image.bands < 3:
            image = image.colourspace("srgb")
        canvas = pyvips.Image.black(width, height).new_from_image(_colour_for(image, colour))
        canvas = canvas.copy(interpretation=image.interpretation)
    if canvas.bands != image.bands:
        image, canvas = _with_alpha(image), _with_alpha(canvas)
    if spec.merge_alpha and image.hasalpha():
        return canvas.composite2(image, "over", x=left, y=top).cast("uchar")
    return canvas.cast("uchar").insert(image, left, top)


def median_colour(image: pyvips.Image) -> Colour:
    """The median of each colour band, alpha left out (it reads the whole image)."""
    colour_bands = image.bands - 1 if image.hasalpha() else image.bands
    bands = [int(image.extract_band(i).percent(50)) for i in range(min(colour_bands, 3))]
    if len(bands) == 1:
        bands *= 3
    return (bands[0], bands[1], bands[2], 255)


def encode_within(
    image: pyvips.Image,
    output: ImageFormat,
    quality: int | None,
    settings: RenderSettings,
    max_bytes: int | None,
    first: bytes | None = None,
) -> tuple[bytes, int | None]:
    """``encode``, lowering a JPEG's or WebP's quality until it fits in ``max_bytes``, as thumbor
    does: x0.75 a step; the first encoding when no quality of 10 or more fits. ``first``: the
    encoding at ``quality``, when the caller has it already. Returns the body and the quality
    it was encoded at (None: the format's default, or none applies). Every encoding reads
    ``image``: a deadline that kills it stops the loop at the encoding under way."""
    body = first if first is not None else encode(image, output, quality, settings)
    if quality is None and output in DEFAULT_QUALITY:
        quality = DEFAULT_QUALITY[output]
    if max_bytes is None or output not in (ImageFormat.JPEG, ImageFormat.WEBP):
        return body, quality
    q = quality or DEFAULT_QUALITY[output]
    result = body
    while len(result) > max_bytes:
        q = int(q * 0.75)
        if q < _MAX_BYTES_MIN_QUALITY:
            return body, quality
        result = encode(image, output, q, settings)
    return result, q if result is not body else quality
