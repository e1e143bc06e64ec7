"""Rendering: a pure function of (original bytes, size) -> (bytes, format). No I/O, no server.

The steps, in order, each a small function in ``steps.py``:

1. ``probe``      sniff the format, read the header only; refuse unsupported formats and image
                  bombs (too many pixels or frames) before any decoding
2. ``plan``       the geometry: target box, crop, never upscaling unless asked
3. ``shrink``     one libvips ``thumbnail`` call: orient (EXIF), colour-manage to sRGB,
                  shrink-on-load, resize, centre or smart crop; animated: the first frame
4. ``crop_focal`` crop around a focal point, when the URL names one
5. ``to_8bit``    16-bit sources to 8 bits per sample
6. ``flatten``    alpha onto a white background when the output format has none (JPEG)
7. ``encode``     the output format, metadata stripped, per-format quality defaults
"""

from __future__ import annotations

import pyvips

from tofu.errors import Unprocessable
from tofu.render.encode import encode
from tofu.render.steps import (
    RenderSettings,
    Rendition,
    crop_focal,
    flatten,
    plan,
    probe,
    shrink,
    to_8bit,
)
from tofu.transform import ImageFormat, Size

__all__ = ["RenderSettings", "Rendition", "render"]


def render(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: ImageFormat | None = None,
) -> Rendition:
    """Render ``data`` at ``size``. The output format is the URL's, else ``negotiated`` (from the
    Accept header), else the source's family. Raises ``UnsupportedMediaType`` or
    ``Unprocessable``; never anything else for bad input."""
    source = probe(data, settings)
    output = size.format or negotiated or source.family
    geometry = plan(source, size, settings)
    try:
        image = shrink(data, source, geometry)
        image = crop_focal(image, geometry)
        image = to_8bit(image)
        image = flatten(image, output)
        body = encode(image, output, size.quality, settings)
    except pyvips.Error as exc:
        # libvips decodes lazily, so a corrupt body surfaces here, not in probe.
        raise Unprocessable(f"cannot decode the original: {_first_line(exc)}") from None
    return Rendition(body, output, image.width, image.height)


def _first_line(exc: pyvips.Error) -> str:
    lines = [line.strip() for line in str(exc).splitlines()]
    detail = [line for line in lines[1:] if line and not line.startswith("unable to call")]
    return (detail or lines or ["unknown error"])[0][:200]
