"""Everything tofu knows about an image format, in one table (as imgproxy's imagetype/defs.go).

The URL parser's format names, Accept negotiation, the encoder, the probe's loader check and the
output a source gets by default all read ``FORMATS``; a format's animation support is one
entry's property. No pyvips import at run time: the savers call methods of the image they get.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyvips

    from tofu.render.steps import RenderSettings


class ImageFormat(enum.Enum):
    """Output formats tofu encodes (values are the canonical URL names)."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    GIF = "gif"

    # Members are singletons compared by identity; Enum's own __hash__ is Python code, and
    # this one is in every cache key.
    __hash__ = object.__hash__

    @property
    def media_type(self) -> str:
        return FORMATS[self].media_type

    @property
    def has_alpha(self) -> bool:
        return FORMATS[self].alpha


# Save function: (image, quality or None for the format's default, settings) -> bytes.
Saver = Callable[["pyvips.Image", "int | None", "RenderSettings"], bytes]

# Progressive JPEG: measured on the corpus photos with optimised Huffman tables, it saves
# only 0.7 % of the bytes at 512 px and 1.5 % at 1200 px while encoding takes 50-70 % longer.
# So only large outputs, where it also lets the picture appear early on slow links.
PROGRESSIVE_MIN_PIXELS = 1000 * 1000


@dataclass(frozen=True, slots=True)
class FormatSpec:
    format: ImageFormat
    label: str  # for messages: "JPEG", "WebP"
    media_type: str
    names: tuple[str, ...]  # URL format names (".webp"); the first is canonical
    loader: str | None  # the libvips buffer loader that decodes it as a source; None: refused
    default_quality: int | None  # None: quality does not apply (lossless or palette)
    save_data_quality: int | None  # the default for clients that send Save-Data: on
    alpha: bool
    animation: bool  # can hold several frames with delays and a loop count
    still_output: ImageFormat  # output for a still source of this format when nothing chooses
    save: Saver

    def quality(self, requested: int | None, save_data: bool) -> int | None:
        """The encoder quality: the URL's, else the (Save-Data) default."""
        if requested is not None or self.default_quality is None:
            return requested
        return self.save_data_quality if save_data else self.default_quality


def _save_jpeg(image: pyvips.Image, quality: int | None, settings: RenderSettings) -> bytes:
    return image.jpegsave_buffer(
        Q=quality or FORMATS[ImageFormat.JPEG].default_quality,
        optimize_coding=True,
        interlace=image.width * image.height >= PROGRESSIVE_MIN_PIXELS,
        keep="none",
    )


def _save_png(image: pyvips.Image, quality: int | None, settings: RenderSettings) -> bytes:
    return image.pngsave_buffer(compression=6, keep="none")


def _save_webp(image: pyvips.Image, quality: int | None, settings: RenderSettings) -> bytes:
    # Animated sources keep page-height, delay and loop: webpsave writes them as an animation.
    q = quality or FORMATS[ImageFormat.WEBP].default_quality
    return image.webpsave_buffer(Q=q, effort=4, keep="none")


def _save_avif(image: pyvips.Image, quality: int | None, settings: RenderSettings) -> bytes:
    return image.heifsave_buffer(
        Q=quality or FORMATS[ImageFormat.AVIF].default_quality,
        compression="av1",
        effort=settings.avif_effort,
        keep="none",
    )


def _save_gif(image: pyvips.Image, quality: int | None, settings: RenderSettings) -> bytes:
    # libvips quantises (libimagequant) per frame and keeps page-height, delay and loop.
    # Effort 1: 35 frames of 100x100 (garden.gif) in 0.26 s instead of 1.9 s at the default
    # 7, for the same bytes.
    return image.gifsave_buffer(effort=1, keep="none")


# --auto-quality's default target (SSIM over RGB against the output before encoding,
# ``tofu.render.autoquality``): the median score of the corpus photos at the fixed default
# qualities below, at the W5 size mix (``python -m bench.autoquality``).
AUTO_QUALITY_TARGET = 0.9385

# Default qualities: WebP and AVIF at the level where they look like JPEG q80 (equal mean SSIM,
# see docs/rendering.md); the Save-Data ones give softer detail for 60 % (JPEG), 68 % (WebP) and
# 58 % (AVIF) of the bytes (corpus photos at 750x500c).
FORMATS: dict[ImageFormat, FormatSpec] = {
    spec.format: spec
    for spec in (
        FormatSpec(
            format=ImageFormat.JPEG,
            label="JPEG",
            media_type="image/jpeg",
            names=("jpeg", "jpg"),
            loader="VipsForeignLoadJpegBuffer",
            default_quality=80,
            save_data_quality=55,
            alpha=False,
            animation=False,
            still_output=ImageFormat.JPEG,
            save=_save_jpeg,
        ),
        FormatSpec(
            format=ImageFormat.PNG,
            label="PNG",
            media_type="image/png",
            names=("png",),
            loader="VipsForeignLoadPngBuffer",
            default_quality=None,
            save_data_quality=None,
            alpha=True,
            animation=False,
            still_output=ImageFormat.PNG,
            save=_save_png,
        ),
        FormatSpec(
            format=ImageFormat.WEBP,
            label="WebP",
            media_type="image/webp",
            names=("webp",),
            loader="VipsForeignLoadWebpBuffer",
            default_quality=78,
            save_data_quality=55,
            alpha=True,
            animation=True,
            still_output=ImageFormat.WEBP,
            save=_save_webp,
        ),
        FormatSpec(
            format=ImageFormat.GIF,
            label="GIF",
            media_type="image/gif",
            names=("gif",),
            loader="VipsForeignLoadNsgifBuffer",
            default_quality=None,
            save_data_quality=None,
            alpha=True,
            animation=True,
            still_output=ImageFormat.PNG,  # a still GIF is better as a (smaller, truecolour) PNG
            save=_save_gif,
        ),
        FormatSpec(
            format=ImageFormat.AVIF,
            label="AVIF",
            media_type="image/avif",
            names=("avif",),
            loader="VipsForeignLoadHeifBuffer",
            default_quality=62,
            save_data_quality=45,
            alpha=True,
            animation=False,  # libvips writes no AVIF sequences
            still_output=ImageFormat.JPEG,  # AVIF (HEIF) sources: JPEG unless they have alpha
            save=_save_avif,
        ),
    )
}

# URL format name -> format (".jpg" and ".jpeg" are one).
BY_NAME: dict[str, ImageFormat] = {name: s.format for s in FORMATS.values() for name in s.names}
# libvips loader class -> the format it decodes; anything else is refused (fewer decoders).
BY_LOADER: dict[str, ImageFormat] = {s.loader: s.format for s in FORMATS.values() if s.loader}


def _or_list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


# "JPEG, PNG, WebP, GIF or AVIF": the sources tofu decodes, for messages.
SOURCE_LABELS = _or_list([s.label for s in FORMATS.values() if s.loader])
OUTPUT_NAMES = _or_list([s.names[0] for s in FORMATS.values()])
