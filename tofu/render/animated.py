"""Animated sources (GIF, WebP) to animated output: every frame resized and cropped alike,
frame delays and the loop count kept.

``render`` sends a source here only when ``animated_output`` names a format: the source has
several frames, the output format animates (the URL's, else the negotiated animated one, else
the source's own) and the animation is within budget (``--max-frames`` frames and
``--max-animation-pixels`` over all frames). Otherwise the still path renders its first frame.

libvips holds the frames as one tall strip, ``page-height`` rows per frame. ``thumbnail`` with
``n=-1`` resizes each frame (it keeps the page height exact), but its crop would cut the strip,
not each frame, so the crop is done here, frame by frame, at one position for all of them.
"""

from __future__ import annotations

import time

import pyvips

from tofu.errors import Unprocessable
from tofu.formats import FORMATS, ImageFormat
from tofu.negotiate import Negotiated
from tofu.render.cancel import Cancellation
from tofu.render.encode import encode
from tofu.render.runtime import release_freed_memory
from tofu.render.steps import (
    Geometry,
    RenderSettings,
    Rendition,
    Source,
    flatten,
    plan,
    thumbnail_buffer,
    to_8bit,
    vips_reason,
)
from tofu.transform import Fit, Gravity, Size

_TRIM_AFTER_PIXELS = 8_000_000  # decoded pixels over all frames; as render's for stills


def within_budget(
    source: Source, settings: RenderSettings, geometry: Geometry | None = None
) -> bool:
    """Whether rendering every frame is allowed: at most ``max_frames`` frames, and at most
    ``max_animation_pixels`` pixels over all of them both decoded and resized (``geometry``:
    an upscale makes more pixels than the source has)."""
    resized = geometry.resized_width * geometry.resized_height if geometry else 0
    return source.frames <= settings.max_frames and (
        max(source.width * source.height, resized) * source.frames <= settings.max_animation_pixels
    )


def memory_bytes(source: Source, geometry: Geometry) -> int:
    """About the most an animated render holds: the decoder's frame buffers (the frame being
    composed and the previous one, RGBA), and every frame resized, twice (the resized strip
    and the cropped one the encoder reads)."""
    decoded = source.width * source.height * 4 * 2
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


def render_animated(
    data: bytes,
    source: Source,
    size: Size,
    output: ImageFormat,
    settings: RenderSettings,
    cancellation: Cancellation,
) -> Rendition:
    started = time.perf_counter()
    try:
        frames = _resize_frames(data, source, size, settings)
        frames = flatten(to_8bit(frames), output)
        # decode + resize now, apart from encoding (as render), where the deadline stops it
        frames = cancellation.watch(frames).copy_memory()
    except pyvips.Error as exc:
        cancellation.check()  # killed by the deadline, not a bad original
        raise Unprocessable(f"cannot decode the original: {vips_reason(exc)}") from None
    resized = time.perf_counter()
    if source.width * source.height * source.frames >= _TRIM_AFTER_PIXELS:
        release_freed_memory()
    cancellation.check()
    quality = FORMATS[output].quality(size.quality, size.save_data)
    try:
        body = encode(cancellation.watch(frames), output, quality, settings)
    except pyvips.Error as exc:
        cancellation.check()
        raise Unprocessable(f"cannot encode {output.value}: {vips_reason(exc)}") from None
    return Rendition(
        body,
        output,
        frames.width,
        frames.get("page-height"),
        resize_seconds=resized - started,
        encode_seconds=time.perf_counter() - resized,
    )


def _resize_frames(
    data: bytes, source: Source, size: Size, settings: RenderSettings
) -> pyvips.Image:
    """All frames at the output size, as a strip with page-height, delay and loop set."""
    geometry = plan(source, size, settings)
    if size.fit is Fit.INSIDE:
        box_width, box_height, final = geometry.box_width, geometry.box_height, None
    else:
        # COVER: each frame scaled to cover the final box, then cropped alike below.
        width, height = (
            geometry.focal[:2]
            if geometry.focal
            else (
                geometry.box_width,
                geometry.box_height,
            )
        )
        scale = max(width / source.width, height / source.height)
        box_width = max(width, round(source.width * scale))
        box_height = max(height, round(source.height * scale))
        final = (width, height)
    strip = thumbnail_buffer(
        data, source, box_width, box_height, geometry.upscale, "n=-1,fail_on=error"
    )
    page_height = strip.get("page-height") if strip.get_typeof("page-height") else strip.height
    if final is not None:
        anchor = _anchor(strip, page_height, size, final)
        strip, page_height = _crop_frames(strip, page_height, *final, anchor)
    pages = strip.height // page_height
    strip = strip.copy()  # a new header, so setting metadata leaves the loader's image alone
    strip.set_type(pyvips.GValue.gint_type, "page-height", page_height)
    delays = strip.get("delay") if strip.get_typeof("delay") else []
    # Frames without a delay of their own show for libvips' default (100 ms), as browsers do.
    strip.set_type(pyvips.GValue.array_int_type, "delay", (list(delays) + [100] * pages)[:pages])
    if not strip.get_typeof("loop"):
        strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    return strip


def _anchor(
    strip: pyvips.Image, page_height: int, size: Size, final: tuple[int, int]
) -> tuple[float, float]:
    """The point of a frame to keep central, as fractions of its width and height."""
    if size.gravity is Gravity.FOCAL and size.focal is not None:
        return size.focal[0] / 100, size.focal[1] / 100
    if size.gravity is Gravity.ATTENTION:
        # Smart crop on the first frame, applied to every frame: per-frame crops would jitter.
        first = strip.crop(0, 0, strip.width, page_height)
        _, found = first.smartcrop(
            min(final[0], first.width),
            min(final[1], first.height),
            interesting="attention",
            attention_x=True,
            attention_y=True,
        )
        return found["attention_x"] / first.width, found["attention_y"] / first.height
    return 0.5, 0.5


def _crop_frames(
    strip: pyvips.Image, page_height: int, width: int, height: int, anchor: tuple[float, float]
) -> tuple[pyvips.Image, int]:
    """The same ``width`` x ``height`` window of every frame, placed around ``anchor``; with
    the new page height."""
    width, height = min(width, strip.width), min(height, page_height)
    if (width, height) == (strip.width, page_height):
        return strip, page_height
    left = min(max(0, round(strip.width * anchor[0] - width / 2)), strip.width - width)
    top = min(max(0, round(page_height * anchor[1] - height / 2)), page_height - height)
    pages = strip.height // page_height
    frames = [strip.crop(left, page * page_height + top, width, height) for page in range(pages)]
    return pyvips.Image.arrayjoin(frames, across=1), height
