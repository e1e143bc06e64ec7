"""The rendering steps before encoding. Each takes and returns plain values or a lazy
``pyvips.Image``; libvips does the work when the encoder pulls pixels."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import pyvips

from tofu.errors import Unprocessable, UnsupportedMediaType
from tofu.formats import BY_LOADER, FORMATS, SOURCE_LABELS
from tofu.transform import Fit, Gravity, ImageFormat, Size

_MAX_COORD = 10_000_000  # libvips' VIPS_MAX_COORD: "unbounded" for a thumbnail box side
_WHITE = 255


@dataclass(frozen=True, slots=True)
class RenderSettings:
    max_source_pixels: int = 50_000_000
    max_frames: int = 500  # more frames than this: the first frame as a still
    max_animation_pixels: int = 50_000_000  # width x height x frames; beyond: the first frame
    max_output_side: int = 4096
    avif_effort: int = 0


@dataclass(frozen=True, slots=True)
class Rendition:
    body: bytes
    format: ImageFormat
    width: int
    height: int
    # Where the time went (not part of the result's identity).
    resize_seconds: float = field(default=0.0, compare=False)
    encode_seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Source:
    """What the header says, with width and height as displayed (after EXIF orientation)."""

    loader: str  # the format decoding it, as ImageFormat's value ("jpeg", "gif", "avif")
    width: int
    height: int
    has_alpha: bool
    needs_colour_transform: bool  # tagged with a profile other than sRGB, or CMYK
    frames: int = 1  # frames of an animation (GIF, WebP); width and height are one frame's

    @property
    def family(self) -> ImageFormat:
        """The still output when neither URL nor Accept chooses: the format table's, or PNG
        for a source with alpha when that has none."""
        output = FORMATS[ImageFormat(self.loader)].still_output
        return ImageFormat.PNG if self.has_alpha and not FORMATS[output].alpha else output


@dataclass(frozen=True, slots=True)
class Geometry:
    """Arguments for ``thumbnail`` plus an optional focal crop after it."""

    box_width: int
    box_height: int
    crop: str | None  # libvips "interesting": "centre" | "attention"
    upscale: bool
    focal: tuple[int, int, int, int] | None  # final width, height, focal x%, focal y%


def probe(data: bytes, settings: RenderSettings) -> Source:
    """Identify the format and check the limits from the header alone (no pixel is decoded)."""
    found = pyvips.vips_lib.vips_foreign_find_load_buffer(data, len(data))
    source_format = BY_LOADER.get(pyvips.ffi.string(found).decode() if found else "")
    if source_format is None:
        raise UnsupportedMediaType(f"the original is not a {SOURCE_LABELS} image")
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
        width, height = header.width, header.height
        frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
        orientation = header.get("orientation") if header.get_typeof("orientation") else 1
        has_alpha = bool(header.hasalpha())
        needs_colour_transform = header.interpretation == "cmyk" or (
            bool(header.get_typeof("icc-profile-data"))
            and not _is_srgb_profile(header.get("icc-profile-data"))
        )
    except pyvips.Error:
        raise Unprocessable("cannot read the image header: the original is corrupt") from None
    if width * height > settings.max_source_pixels:
        raise Unprocessable(
            f"source is {width}x{height}, over the {settings.max_source_pixels} pixel limit"
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    # Frames beyond --max-frames are not refused: the first frame is rendered (render/animated).
    return Source(
        source_format.value, width, height, has_alpha, needs_colour_transform, max(1, frames)
    )


def _is_srgb_profile(profile: bytes) -> bool:
    """Whether an embedded ICC profile is sRGB, by its description ("sRGB IEC61966-2.1", "sRGB
    built-in", ...). Most camera and web JPEGs carry one: converting sRGB to sRGB changes no
    pixel but costs up to a third of the render."""
    try:
        (count,) = struct.unpack_from(">I", profile, 128)
        for i in range(min(count, 100)):
            signature, offset, _ = struct.unpack_from(">4sII", profile, 132 + 12 * i)
            if signature != b"desc":
                continue
            kind = profile[offset : offset + 4]
            if kind == b"desc":  # ICC v2: an ASCII count and string
                (length,) = struct.unpack_from(">I", profile, offset + 8)
                text = profile[offset + 12 : offset + 12 + length].decode("latin-1")
            elif kind == b"mluc":  # ICC v4: the first localized UTF-16 record
                length, start = struct.unpack_from(">II", profile, offset + 20)
                text = profile[offset + start : offset + start + length].decode("utf-16-be")
            else:
                return False
            return text.startswith("sRGB")
    except (struct.error, UnicodeDecodeError):
        pass
    return False


def plan(source: Source, size: Size, settings: RenderSettings) -> Geometry:
    """The box to thumbnail into. Never upscales unless the size says ``u``; a COVER box too
    large for the source shrinks, keeping its aspect ratio, so the crop is still exact."""
    limit = settings.max_output_side
    if size.fit is Fit.INSIDE:
        return Geometry(size.width or limit, size.height or limit, None, size.upscale, None)
    assert size.width is not None and size.height is not None  # the parser fills both for COVER
    width, height = size.width, size.height
    scale = max(width / source.width, height / source.height)
    if scale > 1 and not size.upscale:
        width = max(1, round(width / scale))
        height = max(1, round(height / scale))
        scale = 1.0
    if size.gravity is Gravity.FOCAL:
        assert size.focal is not None
        # Cover without cropping, then crop around the point ourselves.
        cover_w = max(width, math.ceil(source.width * scale))
        cover_h = max(height, math.ceil(source.height * scale))
        return Geometry(cover_w, cover_h, None, True, (width, height, *size.focal))
    return Geometry(width, height, size.gravity.value, True, None)


def shrink(data: bytes, source: Source, geometry: Geometry) -> pyvips.Image:
    """Orient, colour-manage, shrink and (centre/smart) crop in one libvips call.

    ``thumbnail`` decodes with shrink-on-load (JPEG DCT scaling, WebP/AVIF subsampled decode)
    and resizes with a Lanczos kernel. Sources tagged with another profile (Display P3, Adobe
    RGB) and CMYK are converted to sRGB; untagged and sRGB-tagged ones are sRGB already.
    ``fail_on=error`` makes truncated and corrupt files fail instead of rendering grey.
    """
    options: dict[str, object] = {
        "height": geometry.box_height,
        "size": "both" if geometry.upscale else "down",
        "option_string": "fail_on=error",
    }
    if geometry.crop:
        options["crop"] = geometry.crop
    if source.needs_colour_transform:
        options["export_profile"] = "srgb"
    return pyvips.Image.thumbnail_buffer(data, geometry.box_width, **options)


def crop_focal(image: pyvips.Image, geometry: Geometry) -> pyvips.Image:
    """Crop to the final box with the focal point as near the centre as the edges allow."""
    if geometry.focal is None:
        return image
    width, height, fx, fy = geometry.focal
    width, height = min(width, image.width), min(height, image.height)
    left = round(image.width * fx / 100 - width / 2)
    top = round(image.height * fy / 100 - height / 2)
    left = min(max(0, left), image.width - width)
    top = min(max(0, top), image.height - height)
    return image.crop(left, top, width, height)


def to_8bit(image: pyvips.Image) -> pyvips.Image:
    """16-bit (and float) images to 8 bits per sample; encoders expect uchar."""
    if image.format == "uchar":
        return image
    colour = image.bands - (1 if image.hasalpha() else 0) >= 3
    return image.colourspace("srgb" if colour else "b-w").cast("uchar")


def flatten(image: pyvips.Image, output: ImageFormat) -> pyvips.Image:
    """Alpha onto white for formats without alpha; kept otherwise."""
    if output.has_alpha or not image.hasalpha():
        return image
    return image.flatten(background=[_WHITE] * (image.bands - 1))


def vips_reason(exc: pyvips.Error) -> str:
    """The informative line of a libvips error, for a one-line 422 reason."""
    lines = [line.strip() for line in str(exc).splitlines()]
    detail = [line for line in lines[1:] if line and not line.startswith("unable to call")]
    return (detail or lines or ["unknown error"])[0][:200]
