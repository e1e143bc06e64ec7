"""Encoding: the output format's saver from the format table (``tofu.formats``), with its quality
defaults and metadata stripped.

The defaults aim at the same visual quality in every format (AVIF and WebP at the level where
they look like JPEG q80, but smaller); see docs/rendering.md for the measured sizes.
"""

from __future__ import annotations

import pyvips

from tofu.formats import FORMATS
from tofu.formats import PROGRESSIVE_MIN_PIXELS as _PROGRESSIVE_MIN_PIXELS
from tofu.render.steps import RenderSettings
from tofu.transform import ImageFormat

__all__ = ["DEFAULT_QUALITY", "_PROGRESSIVE_MIN_PIXELS", "encode"]

# Formats where quality applies -> their default quality.
DEFAULT_QUALITY = {
    fmt: spec.default_quality for fmt, spec in FORMATS.items() if spec.default_quality is not None
}


def encode(
    image: pyvips.Image, output: ImageFormat, quality: int | None, settings: RenderSettings
) -> bytes:
    """``quality`` None: the format's default. Multi-frame images (page-height set) come out
    animated in formats that animate."""
    return FORMATS[output].save(image, quality, settings)
