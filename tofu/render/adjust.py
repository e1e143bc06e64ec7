"""Rendering steps for ``Size.operations`` (the edits thumbor URLs add), kept apart from the
resize steps in ``steps.py``. Sizes without operations never reach anything here but the
``if`` that finds nothing to do.

Before scaling: ``cut`` (decode, orient, sRGB, ``trim``, manual ``crop``), which replaces
shrink-on-load for those URLs, and ``resolve`` (the operations' box rules, into a plain ``Size``
that ``plan`` understands). After scaling: ``adjust`` (flips, rotation, colour filters, rounded
corners, fill, background). When encoding: ``encode_within`` (``max_bytes``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pyvips

from tofu.render.encode import DEFAULT_QUALITY, encode
from tofu.render.steps import RenderSettings, Source
from tofu.transform import (
    NO_OPERATIONS,
    Colour,
    Fill,
    FillKind,
    Fit,
    Gravity,
    ImageFormat,
    Operations,
    RoundCorner,
    Size,
    Trim,
    TrimCorner,
)

_FILL_BLUR_RADIUS = 50  # thumbor's fill(blur)
_MAX_BYTES_MIN_QUALITY = 10  # below this thumbor gives up and keeps the first encoding


def cut(
    data: bytes, source: Source, ops: Operations
) -> tuple[pyvips.Image, Source, tuple[int, int]]:
    """Decode the whole original (oriented, in sRGB), then trim and crop it. Returns the image,
    its description for ``plan`` and the offset of its top-left corner in the original."""
    image = pyvips.Image.new_from_buffer(data, "", fail_on="error").autorot()
    if source.needs_colour_transform:
        image = image.icc_transform("srgb", embedded=True, input_profile="srgb")
    left = top = 0
    if ops.trim is not None:
        image, (left, top) = _trim(image, ops.trim)
    if ops.crop is not None:
        # The box is in the original's coordinates: shift it by what the trim removed.
        crop_left, crop_top, crop_right, crop_bottom = ops.crop
        crop_left, crop_right = (
            min(max(v - left, 0), image.width) for v in (crop_left, crop_right)
        )
        crop_top, crop_bottom = (
            min(max(v - top, 0), image.height) for v in (crop_top, crop_bottom)
        )
        if crop_left < crop_right and crop_top < crop_bottom:  # else ignored, as thumbor does
            image = image.crop(crop_left, crop_top, crop_right - crop_left, crop_bottom - crop_top)
            left, top = left + crop_left, top + crop_top
    # Oriented and in sRGB now: nothing of the original's header applies any more.
    cut_source = replace(
        source,
        width=image.width,
        height=image.height,
        needs_colour_transform=False,
        orientation=1,
        icc_profile=None,
        cmyk=False,
        progressive=False,
        bands=image.bands,
    )
    return image, cut_source, (left, top)


def _trim(image: pyvips.Image, trim: Trim) -> tuple[pyvips.Image, tuple[int, int]]:
    """Remove the border of the corner pixel's colour; nothing when all of it would go."""
    flat = image.flatten(background=[255] * (image.bands - 1)) if image.hasalpha() else image
    x, y = (0, 0) if trim.corner is TrimCorner.TOP_LEFT else (flat.width - 1, flat.height - 1)
    background = flat.getpoint(x, y)
    left, top, width, height = flat.find_trim(
        threshold=max(trim.tolerance, 1), background=background
    )
    if width <= 0 or height <= 0:
        return image, (0, 0)
    return image.crop(left, top, width, height), (left, top)


def resolve(
    size: Size, source: Source, settings: RenderSettings, offset: tuple[int, int] = (0, 0)
) -> Size:
    """``size`` with its operations' box rules applied for this source, in the terms ``plan``
    knows: "orig" sides (at most ``max_output_side``), adaptive orientation, full fit-in (cover
    without crop) and a focal box (in original pixels; ``offset`` is where the cut source
    starts)."""
    ops = size.operations
    if size.fit is not Fit.OUTSIDE and ops == NO_OPERATIONS:
        return size
    width, height = size.width, size.height
    if ops.original_width:
        width = min(source.width, settings.max_output_side)
    if ops.original_height:
        height = min(source.height, settings.max_output_side)
    if ops.adaptive and width and height:
        source_portrait = source.width < source.height
        box_portrait = width < height
        if source_portrait != box_portrait and source.width != source.height and width != height:
            width, height = height, width
    fit = size.fit
    if fit is Fit.OUTSIDE:
        fit = Fit.INSIDE
        if width and height:
            # Scale by the larger ratio: the side that then fills the box is the one kept.
            if source.width / width <= source.height / height:
                height = None
            else:
                width = None
    focal = size.focal
    gravity = size.gravity
    if gravity is Gravity.FOCAL and focal is None:
        focal, gravity = _focal_percent(ops, source, offset)
    return replace(size, width=width, height=height, fit=fit, gravity=gravity, focal=focal)


def _focal_percent(
    ops: Operations, source: Source, offset: tuple[int, int]
) -> tuple[tuple[float, float] | None, Gravity]:
    """The centre of the focal box, in percent of the (cut) source; centred when the box lies
    outside the cut (thumbor drops such focal points)."""
    assert ops.focal_box is not None
    left, top, right, bottom = ops.focal_box
    x = (left + right) / 2 - offset[0]
    y = (top + bottom) / 2 - offset[1]
    if not (0 <= x <= source.width and 0 <= y <= source.height):
        return None, Gravity.CENTRE
    return (100 * x / source.width, 100 * y / source.height), Gravity.FOCAL


def adjust(image: pyvips.Image, size: Size) -> pyvips.Image:
    """The operations after scaling, in the order ``Operations`` documents."""
    ops = size.operations
    if ops.flip_horizontal:
        image = image.fliphor()
    if ops.flip_vertical:
        image = image.flipver()
    if ops.rotate:
        # Counter-clockwise, as thumbor (PIL) rotates; libvips' angles are clockwise.
        image = image.rot(f"d{360 - ops.rotate}")
    if ops.grayscale:
        image = image.colourspace("b-w")
    if ops.brightness:
        # thumbor: every channel + 255 * amount / 100 (C integer division).
        image = _on_colour(image, 1.0, float(int(255 * ops.brightness / 100)))
    if ops.contrast:
        # thumbor: (x - 128) * (amount + 100)^2 / 10000 + 128.
        factor = ((ops.contrast + 100) ** 2 // 100) / 100
        image = _on_colour(image, factor, 128 - 128 * factor)
    if ops.blur is not None:
        image = _blur(image, *ops.blur)
    if ops.round_corner is not None:
        image = _round_corner(image, ops.round_corner)
    if ops.fill is not None:
        image = _fill(image, ops.fill, size)
    if ops.background is not None and ops.background[3] and image.hasalpha():
        image = image.flatten(background=_colour_for(image, ops.background)[: image.bands - 1])
    return image


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


def _blur(image: pyvips.Image, radius: int, sigma: float) -> pyvips.Image:
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


def _round_corner(image: pyvips.Image, corner: RoundCorner) -> pyvips.Image:
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


def _fill(image: pyvips.Image, fill: Fill, size: Size) -> pyvips.Image:
    """Centre the picture on the requested box (open sides: the picture's), over a colour, the
    picture's median colour, or the picture itself blurred and stretched."""
    width = max(size.width or image.width, image.width)
    height = max(size.height or image.height, image.height)
    left, top = (width - image.width) // 2, (height - image.height) // 2
    if fill.kind is FillKind.BLUR:
        background = _blur(image, _FILL_BLUR_RADIUS, _FILL_BLUR_RADIUS).resize(
            width / image.width, vscale=height / image.height
        )
        background = background.crop(
            0, 0, min(width, background.width), min(height, background.height)
        )
        background = background.embed(0, 0, width, height, extend="copy")
    else:
        if fill.kind is FillKind.AUTO:
            # Statistics read every pixel: compute them once, not again for the output.
            image = image.copy_memory()
        colour = fill.colour if fill.kind is FillKind.COLOUR else _median_colour(image)
        if colour[3] < 255:
            image = _with_alpha(image)
        elif image.bands < 3:
            image = image.colourspace("srgb")
        background = pyvips.Image.black(width, height).new_from_image(_colour_for(image, colour))
        background = background.copy(interpretation=image.interpretation)
    if background.bands != image.bands:
        image, background = _with_alpha(image), _with_alpha(background)
    if fill.merge_alpha and image.hasalpha():
        return background.composite2(image, "over", x=left, y=top).cast("uchar")
    return background.cast("uchar").insert(image, left, top)


def _median_colour(image: pyvips.Image) -> Colour:
    bands = [int(image.extract_band(i).percent(50)) for i in range(min(image.bands, 3))]
    if len(bands) == 1:
        bands *= 3
    return (bands[0], bands[1], bands[2], 255)


def encode_within(
    image: pyvips.Image,
    output: ImageFormat,
    quality: int | None,
    settings: RenderSettings,
    max_bytes: int | None,
) -> bytes:
    """``encode``, lowering a JPEG's or WebP's quality until it fits in ``max_bytes``, as thumbor
    does: x0.75 a step; the first encoding when no quality of 10 or more fits."""
    body = encode(image, output, quality, settings)
    if max_bytes is None or output not in (ImageFormat.JPEG, ImageFormat.WEBP):
        return body
    q = quality or DEFAULT_QUALITY[output]
    result = body
    while len(result) > max_bytes:
        q = int(q * 0.75)
        if q < _MAX_BYTES_MIN_QUALITY:
            return body
        result = encode(image, output, q, settings)
    return result
