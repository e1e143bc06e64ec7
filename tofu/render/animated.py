"""Animated sources (GIF, WebP): whether one is rendered animated, what that costs, and its
frames taken apart and put back together. The pipeline (``pipeline.py``) runs the same steps
on every frame as on a still; frame delays and the loop count are kept.

A source is rendered animated only when ``animated_output`` names a format: the source has
several frames, the output format animates (the URL's, else the negotiated animated one, else
the source's own) and the animation is within budget: ``--max-frames`` frames, and
``--max-animation-pixels`` over all frames, decoded and resized (an upscale makes more pixels
than its source has). Otherwise the still path renders its first frame.

libvips holds the frames as one tall strip, ``page-height`` rows per frame.
"""

from __future__ import annotations

import pyvips

from tofu.formats import FORMATS, ImageFormat
from tofu.negotiate import Negotiated
from tofu.render.steps import Geometry, RenderSettings, Source
from tofu.transform import Size

_DEFAULT_DELAY = 100  # ms: what libvips and browsers show a frame without a delay of its own


def within_budget(
    source: Source, settings: RenderSettings, geometry: Geometry | None = None
) -> bool:
    """Whether rendering every frame is allowed: at most ``max_frames`` frames, and at most
    ``max_animation_pixels`` pixels over all of them both decoded and resized (``geometry``)."""
    resized = geometry.resized_width * geometry.resized_height if geometry else 0
    return source.frames <= settings.max_frames and (
        max(source.width * source.height, resized) * source.frames <= settings.max_animation_pixels
    )


def memory_bytes(source: Source, geometry: Geometry, *, whole: bool = False) -> int:
    """About the most an animated render holds: the decoded frames (the decoder's frame buffers,
    the one being composed and the previous one, RGBA; every frame with ``whole``, for a cut),
    and every frame resized, twice (the resized strip and the finished one the encoder reads)."""
    decoded = source.width * source.height * 4 * (source.frames if whole else 2)
    return decoded + geometry.resized_width * geometry.resized_height * source.frames * 4 * 2


def animated_output(
    source: Source,
    geometry: Geometry,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None,
) -> ImageFormat | None:
    """The format to render ``source`` animated in, or None for a still of its first frame (a
    still source, an explicit still format in the URL, or an animation over budget)."""
    if source.frames <= 1 or not within_budget(source, settings, geometry):
        return None
    if size.format is not None:
        output = size.format
    elif negotiated is not None:
        output = negotiated.animated
    else:
        output = ImageFormat(source.loader)
    return output if FORMATS[output].animation else None


def frames(strip: pyvips.Image) -> list[pyvips.Image]:
    """The frames of a strip, in order (views of it: no pixel is copied)."""
    height = strip.get("page-height") if strip.get_typeof("page-height") else strip.height
    return [strip.crop(0, top, strip.width, height) for top in range(0, strip.height, height)]


def join(frames: list[pyvips.Image], like: pyvips.Image) -> pyvips.Image:
    """``frames`` (all of one size) as a strip, with the delays and loop count of ``like``,
    the strip they were taken from."""
    strip = pyvips.Image.arrayjoin(frames, across=1)
    count = len(frames)
    strip = strip.copy()  # a new header, so setting metadata leaves the joined image alone
    strip.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    delays = list(like.get("delay")) if like.get_typeof("delay") else []
    strip.set_type(
        pyvips.GValue.array_int_type, "delay", (delays + [_DEFAULT_DELAY] * count)[:count]
    )
    loop = like.get("loop") if like.get_typeof("loop") else 0
    strip.set_type(pyvips.GValue.gint_type, "loop", loop)
    return strip
