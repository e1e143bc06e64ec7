"""Rendering: a pure function of (original bytes, size) -> (bytes, format). No I/O, no server.

The steps, in order, each a small function in ``steps.py``:

1. ``probe``          sniff the format, read the header only; refuse unsupported formats and
                      image bombs (too many pixels or frames) before any decoding
2. ``plan``           the geometry: target box, resized size, crop, never upscaling unless
                      asked; refuses plans whose intermediate image would be too large
3. shrink, for JPEGs (libjpeg-turbo, ``jpeg.py``):
   ``decode_scaled``  shrink-on-load: decode at the smallest DCT scale quality allows
   ``resize``         Lanczos-3 to the planned size
   ``orient``         EXIF orientation 1-8
   ``colour_manage``  embedded profiles other than sRGB to sRGB
   or, for every other format and in ``exact_shrink`` mode, one libvips ``thumbnail`` call
   that does the same (animated sources over budget: the first frame; animations within
   budget take their own path: ``animated.py``)
4. ``crop``           centre or smart (libvips attention) crop of a COVER box
   ``crop_focal``     or a crop around a focal point, when the URL names one
5. ``to_8bit``        16-bit sources to 8 bits per sample
6. ``flatten``        alpha onto a white background when the output format has none (JPEG)
   (libvips computes the pixels of steps 3-6 only now, in one pass over the image)
7. ``encode``         the output format, metadata stripped, per-format quality defaults

Sizes with ``operations`` (thumbor URLs) add the steps of ``adjust.py``: ``cut`` (decode,
trim, manual crop) replaces shrink-on-load when the source is cut before scaling, ``resolve``
turns the operations' box rules into a plain ``Size`` for ``plan``, ``adjust`` (flips, rotation,
colour filters, corners, fill) runs after ``crop_focal``, and ``encode_within`` honours
``max_bytes``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyvips

from tofu.errors import Unprocessable
from tofu.formats import FORMATS
from tofu.negotiate import Negotiated
from tofu.render import steps
from tofu.render.adjust import adjust, cut, encode_within, resolve
from tofu.render.animated import animated_output, render_animated
from tofu.render.animated import memory_bytes as animation_memory
from tofu.render.cancel import Cancellation
from tofu.render.runtime import configure_libvips, configure_malloc, release_freed_memory
from tofu.render.steps import (
    Geometry,
    RenderSettings,
    Rendition,
    Source,
    colour_manage,
    crop,
    crop_focal,
    decode_scaled,
    flatten,
    memory_bytes,
    orient,
    plan,
    probe,
    resize,
    thumbnail,
    to_8bit,
    vips_reason,
)
from tofu.transform import NO_OPERATIONS, ImageFormat, Size

__all__ = [
    "Cancellation",
    "Plan",
    "RenderSettings",
    "Rendition",
    "configure_libvips",
    "configure_malloc",
    "execute",
    "prepare",
    "render",
]

# Originals from this size up leave tens of MB of freed decode buffers behind (an 18 MP
# progressive JPEG: ~100 MB): handing them back keeps RSS down where it matters.
_TRIM_AFTER_PIXELS = 8_000_000


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``prepare`` learnt from the header: enough to admit the render by its memory."""

    source: Source
    geometry: Geometry
    size: Size
    output: ImageFormat
    animated: bool  # every frame of an animation, within budget (``animated.py``)
    memory_bytes: int  # about the most the render will hold at once


def prepare(
    data: bytes, size: Size, settings: RenderSettings, negotiated: Negotiated | None = None
) -> Plan:
    """Steps 1-2 (header only, cheap). The output format is the URL's, else ``negotiated`` (from
    the Accept header), else the source's family; animated sources within budget stay animated.
    Raises ``UnsupportedMediaType`` or ``Unprocessable``."""
    source = probe(data, settings)
    ops = size.operations
    if ops.cuts_source:
        # Planned again on the cut in execute; it decodes the whole source.
        geometry = plan(source, resolve(size, source, settings), settings)
        memory = memory_bytes(source, geometry, whole=True)
    else:
        size = resolve(size, source, settings)
        geometry = plan(source, size, settings)
        memory = memory_bytes(source, geometry)
    animated = (
        animated_output(source, geometry, size, settings, negotiated)
        if not ops.cuts_source
        else None
    )
    if animated is not None:
        return Plan(source, geometry, size, animated, True, animation_memory(source, geometry))
    output = size.format or (negotiated.still if negotiated else None) or source.family
    return Plan(source, geometry, size, output, False, memory)


def execute(
    data: bytes,
    plan: Plan,
    settings: RenderSettings,
    cancellation: Cancellation | None = None,
) -> Rendition:
    """Steps 3-7. Raises ``Unprocessable`` for a corrupt original, never anything else for bad
    input; ``RenderTimeout`` once ``cancellation`` is cancelled."""
    cancellation = cancellation or Cancellation()
    if plan.animated:
        return render_animated(data, plan.source, plan.size, plan.output, settings, cancellation)
    started = time.perf_counter()
    source, geometry, size = plan.source, plan.geometry, plan.size
    ops = size.operations
    try:
        if ops.cuts_source:
            image, cut_source, offset = cut(data, source, ops)
            size = resolve(size, cut_source, settings, offset)
            geometry = steps.plan(cut_source, size, settings)
            image = resize(image, cut_source, geometry)  # decoded, oriented: no shrink-on-load
        elif source.turbo_decodable and not settings.exact_shrink:
            image = decode_scaled(data, source, geometry)
            cancellation.check()
            image = resize(image, source, geometry)
            image = orient(image, source)
            image = colour_manage(image, source)
        else:
            image = thumbnail(data, source, geometry)
        if geometry.crop == "attention":
            # The smart crop looks at the whole resized image: compute it where the deadline
            # can stop it.
            image = cancellation.watch(image).copy_memory()
            cancellation.check()
        image = crop(image, geometry)
        image = crop_focal(image, geometry)
        if ops != NO_OPERATIONS:
            image = adjust(image, size)
        image = to_8bit(image)
        image = flatten(image, plan.output)
        # libvips is demand-driven: nothing is decoded until pixels are asked for. Computing
        # the (output-sized, so small) result here keeps decode+resize apart from encoding,
        # for the phase timings, at the cost of one copy of the output pixels.
        image = cancellation.watch(image).copy_memory()
    except pyvips.Error as exc:
        cancellation.check()  # killed by the deadline, not a bad original
        # A corrupt body surfaces when pixels are computed, not in probe.
        raise Unprocessable(f"cannot decode the original: {vips_reason(exc)}") from None
    resized = time.perf_counter()
    if source.width * source.height >= _TRIM_AFTER_PIXELS:
        release_freed_memory()  # its decode buffers are gone now
    cancellation.check()
    try:
        quality = FORMATS[plan.output].quality(size.quality, size.save_data)
        body = encode_within(image, plan.output, quality, settings, ops.max_bytes)
    except pyvips.Error as exc:
        raise Unprocessable(f"cannot encode {plan.output.value}: {vips_reason(exc)}") from None
    return Rendition(
        body,
        plan.output,
        image.width,
        image.height,
        resize_seconds=resized - started,
        encode_seconds=time.perf_counter() - resized,
    )


def render(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None = None,
    cancellation: Cancellation | None = None,
) -> Rendition:
    """Render ``data`` at ``size``: ``prepare`` then ``execute``."""
    return execute(data, prepare(data, size, settings, negotiated), settings, cancellation)
