"""thumbor's ``watermark`` filter: another original composited over the rendition.

The watermark's bytes come with the original's (the service fetches both, cached alike), so a
render stays a pure function of its inputs. ``prepare`` probes each watermark's header with
the original's limits; the pipeline decodes each once (``decode``) and composites it on every
frame (``composite``), placed as thumbor places it (``placement``, a port of thumbor's
``Filter.on_image_ready``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pyvips

from tofu.render.steps import Source, to_8bit
from tofu.transform import Watermark

_MAX_TILES_EACH_WAY = 6  # thumbor: beyond 100 tiles in both directions, at most 6x6
_MAX_BOTH_WAYS = 100
_SMALL_REPEAT_SPACE = 10  # thumbor's gap when fewer than two fit


@dataclass(frozen=True, slots=True)
class Tiling:
    """Where copies of a ``width`` x ``height`` watermark go: ``count`` along each axis from
    ``left``/``top``, one every ``pitch`` pixels."""

    left: int
    top: int
    count_x: int
    count_y: int
    pitch_x: int
    pitch_y: int


def sized(image_width: int, image_height: int, source: Source, spec: Watermark) -> tuple[int, int]:
    """thumbor's ``calc_watermark_size``: within ``width``/``height`` percent of the image, the
    watermark's aspect ratio kept (scaled up too); its own size without ratios."""
    width, height = source.width, source.height
    if not (spec.width or spec.height):
        return width, height
    max_width = image_width * spec.width / 100 if spec.width else None
    max_height = image_height * spec.height / 100 if spec.height else None
    if not max_width:
        assert max_height is not None
        max_width = width * max_height / height
    if not max_height:
        max_height = height * max_width / width
    if width / max_width >= height / max_height:
        return max(1, round(max_width)), max(1, round(height * max_width / width))
    return max(1, round(width * max_height / height)), max(1, round(max_height))


def _resolve_percent(position: str, length: int) -> str:
    match = re.fullmatch(r"(-?)(\d+)p", position)
    if match is None:
        return position
    return f"{match[1]}{round(length * float(match[2]) / 100 + 1e-5)}"


def _axis(position: str, length: int, size: int) -> tuple[int, int, int] | None:
    """(offset, count, remainder) along one axis for a fixed position; None for ``repeat``."""
    position = _resolve_percent(position, length)
    if position == "repeat":
        return None
    if position == "center":
        return int((length - size) / 2), 1, 0
    offset = int(position)
    if position.startswith("-"):
        offset = int((length - size) + offset)
    return offset, 1, 0


def _repeat(length: int, size: int) -> tuple[int, int]:
    count, remainder = divmod(length, size)
    if length / size < 2:
        return math.ceil(length / size), _SMALL_REPEAT_SPACE
    return count, remainder


def placement(width: int, height: int, wm_width: int, wm_height: int, spec: Watermark) -> Tiling:
    """thumbor's placement of a ``wm_width`` x ``wm_height`` watermark on a ``width`` x
    ``height`` image: pixels from the left/top, ``-N`` from the right/bottom, ``Np`` percent
    of the image, ``center``, or ``repeat`` (tiles spread evenly over the image)."""
    fixed_x = _axis(spec.x, width, wm_width)
    fixed_y = _axis(spec.y, height, wm_height)
    repeat_x = _repeat(width, wm_width) if fixed_x is None else (1, 0)
    repeat_y = _repeat(height, wm_height) if fixed_y is None else (1, 0)
    if fixed_x is None and fixed_y is None and repeat_x[0] * repeat_y[0] > _MAX_BOTH_WAYS:
        tiles_x = min(_MAX_TILES_EACH_WAY, repeat_x[0])
        tiles_y = min(_MAX_TILES_EACH_WAY, repeat_y[0])
        repeat_x = (tiles_x, width - tiles_x * wm_width)
        repeat_y = (tiles_y, height - tiles_y * wm_height)
    space_x = repeat_x[1] // (max(repeat_x[0], 2) - 1)
    space_y = repeat_y[1] // (max(repeat_y[0], 2) - 1)
    return Tiling(
        left=0 if fixed_x is None else fixed_x[0],
        top=0 if fixed_y is None else fixed_y[0],
        count_x=repeat_x[0],
        count_y=repeat_y[0],
        pitch_x=wm_width + space_x,
        pitch_y=wm_height + space_y,
    )


def decode(data: bytes, source: Source, spec: Watermark, width: int, height: int) -> pyvips.Image:
    """The watermark for a ``width`` x ``height`` image: its first frame, oriented, 8-bit
    sRGB with alpha, at its size (``sized``), made ``spec.alpha`` percent more transparent
    (thumbor's ``_alpha``: every alpha value less 255 * alpha / 100, clipped)."""
    wm_width, wm_height = sized(width, height, source, spec)
    options: dict[str, object] = {"height": wm_height, "size": "force"}
    if source.needs_colour_transform:
        options["export_profile"] = "srgb"
    image = to_8bit(pyvips.Image.thumbnail_buffer(data, wm_width, **options))
    if image.bands < 3:
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.bandjoin(255)
    if spec.alpha:
        alpha = image.extract_band(3) - (255 * spec.alpha // 100)
        image = image.extract_band(0, n=3).bandjoin(alpha.cast("uchar"))
    return image.copy(interpretation="srgb")


def composite(image: pyvips.Image, watermark: pyvips.Image, spec: Watermark) -> pyvips.Image:
    """``watermark`` over ``image`` where ``placement`` puts it; alpha kept only if the image
    had it."""
    tiling = placement(image.width, image.height, watermark.width, watermark.height, spec)
    image = to_8bit(image)
    if image.bands < 3:
        image = image.colourspace("srgb")
    had_alpha = image.hasalpha()
    base = image if had_alpha else image.bandjoin(255)
    if tiling.count_x * tiling.count_y == 1:
        overlays, xs, ys = [watermark], [tiling.left], [tiling.top]
    elif tiling.pitch_x >= watermark.width and tiling.pitch_y >= watermark.height:
        # Evenly spaced copies: one overlay, the watermark in a transparent cell, repeated.
        cell = watermark.embed(0, 0, tiling.pitch_x, tiling.pitch_y, background=[0, 0, 0, 0])
        tiles = cell.replicate(tiling.count_x, tiling.count_y)
        overlays, xs, ys = [tiles], [tiling.left], [tiling.top]
    else:
        # Overlapping copies (thumbor's 6x6 cap on a small image): each on its own (<= 36).
        overlays, xs, ys = [], [], []
        for i in range(tiling.count_x):
            for j in range(tiling.count_y):
                overlays.append(watermark)
                xs.append(tiling.left + i * tiling.pitch_x)
                ys.append(tiling.top + j * tiling.pitch_y)
    result = base.composite(overlays, "over", x=xs, y=ys).cast("uchar")
    result = result.copy(interpretation="srgb")
    return result if had_alpha else result.extract_band(0, n=3)
