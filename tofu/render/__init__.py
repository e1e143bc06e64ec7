"""Rendering: a pure function of (original bytes, size) -> (bytes, format). No I/O, no server.

The steps, in order, each a small function in ``steps.py``:

1. ``probe``      sniff the format, read the header only; refuse unsupported formats and image
                  bombs (too many pixels or frames) before any decoding
2. ``plan``       the geometry: target box, crop, never upscaling unless asked
3. ``shrink``     one libvips ``thumbnail`` call: orient (EXIF), colour-manage to sRGB,
                  shrink-on-load, resize, centre or smart crop; animated: the first frame
                  (animations within budget take their own path: ``animated.py``)
4. ``crop_focal`` crop around a focal point, when the URL names one
5. ``to_8bit``    16-bit sources to 8 bits per sample
6. ``flatten``    alpha onto a white background when the output format has none (JPEG)
   (libvips computes the pixels of steps 3-6 only now, in one pass over the image)
7. ``encode``     the output format, metadata stripped, per-format quality defaults
"""

from __future__ import annotations

import time

import pyvips

from tofu.errors import Unprocessable
from tofu.formats import FORMATS
from tofu.negotiate import Negotiated
from tofu.render.animated import animated_output, render_animated
from tofu.render.encode import encode
from tofu.render.runtime import configure_libvips, release_freed_memory
from tofu.render.steps import (
    RenderSettings,
    Rendition,
    crop_focal,
    flatten,
    plan,
    probe,
    shrink,
    to_8bit,
    vips_reason,
)
from tofu.transform import Size

__all__ = ["RenderSettings", "Rendition", "configure_libvips", "render"]

# Originals from this size up leave tens of MB of freed decode buffers behind (an 18 MP
# progressive JPEG: ~100 MB): handing them back keeps RSS down where it matters.
_TRIM_AFTER_PIXELS = 8_000_000


def render(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None = None,
) -> Rendition:
    """Render ``data`` at ``size``. The output format is the URL's, else ``negotiated`` (from the
    Accept header), else the source's family; animated sources within budget stay animated
    (``animated.py``). Raises ``UnsupportedMediaType`` or ``Unprocessable``; never anything
    else for bad input."""
    started = time.perf_counter()
    source = probe(data, settings)
    animated = animated_output(source, size, settings, negotiated)
    if animated is not None:
        return render_animated(data, source, size, animated, settings)
    output = size.format or (negotiated.still if negotiated else None) or source.family
    geometry = plan(source, size, settings)
    try:
        image = shrink(data, source, geometry)
        image = crop_focal(image, geometry)
        image = to_8bit(image)
        image = flatten(image, output)
        # libvips is demand-driven: nothing is decoded until pixels are asked for. Computing
        # the (output-sized, so small) result here keeps decode+resize apart from encoding,
        # for the phase timings, at the cost of one copy of the output pixels.
        image = image.copy_memory()
    except pyvips.Error as exc:
        # A corrupt body surfaces when pixels are computed, not in probe.
        raise Unprocessable(f"cannot decode the original: {vips_reason(exc)}") from None
    resized = time.perf_counter()
    if source.width * source.height >= _TRIM_AFTER_PIXELS:
        release_freed_memory()  # its decode buffers are gone now
    try:
        quality = FORMATS[output].quality(size.quality, size.save_data)
        body = encode(image, output, quality, settings)
    except pyvips.Error as exc:
        raise Unprocessable(f"cannot encode {output.value}: {vips_reason(exc)}") from None
    return Rendition(
        body,
        output,
        image.width,
        image.height,
        resize_seconds=resized - started,
        encode_seconds=time.perf_counter() - resized,
    )
