"""What the header says (``probe``), the geometry of a render (``layout``: the one place the box,
the resized size, the crops and the operations' box rules are computed), and the pixel steps
of scaling. Each takes and returns plain values or a lazy ``pyvips.Image``; libvips does the
work when the pipeline (``pipeline.py``) computes pixels."""

from __future__ import annotations

import dataclasses
import math
import struct
from dataclasses import dataclass, field

import pyvips

from tofu.errors import Unprocessable, UnsupportedMediaType
from tofu.formats import BY_LOADER, FORMATS, SOURCE_LABELS
from tofu.render import autoquality, jpeg
from tofu.transform import NO_OPERATIONS, Fit, Gravity, ImageFormat, Operations, Size

_MAX_COORD = 10_000_000  # libvips' VIPS_MAX_COORD: "unbounded" for a thumbnail box side
_WHITE = 255


@dataclass(frozen=True, slots=True)
class RenderSettings:
    max_source_pixels: int = 50_000_000  # also the largest image any step may make
    max_frames: int = 500  # more frames than this: the first frame as a still
    max_animation_pixels: int = 50_000_000  # width x height x frames; beyond: the first frame
    max_output_side: int = 4096
    avif_effort: int = 0
    # False: JPEGs are decoded at the smallest DCT scale quality allows (``jpeg.py``). True:
    # libvips ``thumbnail`` for every format, which keeps a factor of 2 for the Lanczos step.
    exact_shrink: bool = False
    # The lowest quality meeting ``quality_target`` per rendition (``autoquality.py``) for
    # URLs without q; else the format's fixed default.
    auto_quality: bool = False
    quality_target: float = autoquality.DEFAULT_TARGET
    auto_quality_lower_only: bool = False  # never above the format's fixed (Save-Data) default


JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Rendition:
    body: bytes
    format: ImageFormat | None  # None: a JSON document about the original (tofu.render.documents)
    width: int
    height: int
    quality: int | None = None  # the encoder's (None: quality does not apply to the format)
    # Where the time went (not part of the result's identity).
    resize_seconds: float = field(default=0.0, compare=False)
    encode_seconds: float = field(default=0.0, compare=False)

    @property
    def media_type(self) -> str:
        return self.format.media_type if self.format is not None else JSON_MEDIA_TYPE


@dataclass(frozen=True, slots=True)
class Source:
    """What the header says, with width and height as displayed (after EXIF orientation)."""

    loader: str  # the format decoding it, as ImageFormat's value ("jpeg", "gif", "avif")
    width: int
    height: int
    has_alpha: bool
    needs_colour_transform: bool  # tagged with a profile other than sRGB, or CMYK
    frames: int = 1  # frames of an animation (GIF, WebP); width and height are one frame's
    orientation: int = 1  # EXIF 1-8
    bands: int = 3
    sample_bytes: int = 1  # 2 for 16-bit sources
    cmyk: bool = False
    progressive: bool = False  # JPEG: the whole image's coefficients are held while decoding
    icc_profile: bytes | None = field(default=None, repr=False)  # when it needs transforming

    @property
    def stored_size(self) -> tuple[int, int]:
        """Width and height as stored, before orientation."""
        if self.orientation >= 5:  # 5-8 turn the image by a quarter
            return self.height, self.width
        return self.width, self.height

    @property
    def turbo_decodable(self) -> bool:
        """A JPEG that libjpeg-turbo decodes to sRGB or grey itself (CMYK goes to libvips)."""
        return self.loader == "jpeg" and not self.cmyk and self.bands in (1, 3)

    @property
    def family(self) -> ImageFormat:
        """The still output when neither URL nor Accept chooses: the format table's, or PNG
        for a source with alpha when that has none."""
        output = FORMATS[ImageFormat(self.loader)].still_output
        return ImageFormat.PNG if self.has_alpha and not FORMATS[output].alpha else output


@dataclass(frozen=True, slots=True)
class Geometry:
    """The box to fit or cover (as libvips ``thumbnail`` takes it), the size the whole image is
    resized to, and an optional focal crop after it."""

    box_width: int
    box_height: int
    crop: str | None  # libvips "interesting": "centre" | "attention"
    upscale: bool
    focal: tuple[int, int, float, float] | None  # final width, height, focal x%, focal y%
    resized_width: int = 0  # the whole image, displayed orientation, before any crop
    resized_height: int = 0
    decode_scale: int = 8  # JPEG: decoded at decode_scale/8 of the stored size


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
        cmyk = header.interpretation == "cmyk"
        profile = header.get("icc-profile-data") if header.get_typeof("icc-profile-data") else None
        if profile is not None and _is_srgb_profile(profile):
            profile = None
        progressive = bool(header.get_typeof("jpeg-multiscan")) and header.get("jpeg-multiscan")
        bands = header.bands
        sample_bytes = 1 if header.format in ("uchar", "char") else 2
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
        source_format.value,
        width,
        height,
        has_alpha,
        needs_colour_transform=cmyk or profile is not None,
        frames=max(1, frames),
        orientation=orientation if 1 <= orientation <= 8 else 1,
        bands=bands,
        sample_bytes=sample_bytes,
        cmyk=cmyk,
        progressive=bool(progressive),
        icc_profile=profile,
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


Box = tuple[int, int, int, int]  # left, top, width, height


def layout(
    source: Source, size: Size, settings: RenderSettings, offset: tuple[int, int] = (0, 0)
) -> tuple[Size, Geometry]:
    """The geometry of rendering ``source`` (the original, or what a trim and a manual crop
    left of it, whose top-left corner is at ``offset`` in the original) at ``size``: the size
    with its operations' box rules resolved, and the plan."""
    size = resolve(size, source, settings, offset)
    return size, plan(source, size, settings)


def cut_box(
    width: int, height: int, ops: Operations, offset: tuple[int, int] = (0, 0)
) -> Box | None:
    """The manual crop (``ops.crop``, in the original's coordinates) within a ``width`` x
    ``height`` image whose top-left corner is at ``offset`` in the original: clamped to it, and
    None when nothing of it is inside (ignored, as thumbor does)."""
    if ops.crop is None:
        return None
    left, top, right, bottom = ops.crop
    left, right = (min(max(v - offset[0], 0), width) for v in (left, right))
    top, bottom = (min(max(v - offset[1], 0), height) for v in (top, bottom))
    if left >= right or top >= bottom:
        return None
    return left, top, right - left, bottom - top


def cut_source(source: Source, width: int, height: int) -> Source:
    """The description of a cut of ``source``: decoded whole, oriented and in sRGB, so nothing
    of the original's header applies any more but its pixel format."""
    return dataclasses.replace(
        source,
        width=width,
        height=height,
        needs_colour_transform=False,
        orientation=1,
        icc_profile=None,
        cmyk=False,
        progressive=False,
        bands=3 + source.has_alpha if source.cmyk else source.bands,
    )


def resolve(
    size: Size, source: Source, settings: RenderSettings, offset: tuple[int, int] = (0, 0)
) -> Size:
    """``size`` with its operations' box rules applied for this source, in the terms ``plan``
    knows: "orig" sides (at most ``max_output_side``), adaptive orientation, stretch (fit inside,
    then each side scaled to the box), full fit-in (cover without crop) and a focal box (in
    original pixels; ``offset`` is where the cut source starts)."""
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
    if ops.stretch and fit is Fit.COVER:
        # Resized to cover the box, no crop (as full fit-in), then the pipeline's ``stretch``
        # step shrinks the longer side to the box: each side only ever scaled down once.
        stretched = dataclasses.replace(size, fit=Fit.OUTSIDE, gravity=Gravity.CENTRE, focal=None)
        return resolve(stretched, source, settings, offset)
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
    return dataclasses.replace(
        size, width=width, height=height, fit=fit, gravity=gravity, focal=focal
    )


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


def plan(source: Source, size: Size, settings: RenderSettings) -> Geometry:
    """The box to thumbnail into. Never upscales unless the size says ``u``; a COVER box too
    large for the source shrinks, keeping its aspect ratio, so the crop is still exact.

    Refuses (422) a plan whose resized image, before cropping, would be larger than the
    largest source allowed: covering a box with a 1x2000 source would otherwise mean an image
    of 800 x 1.6 million pixels, seconds of CPU and gigabytes for a tiny output."""
    limit = settings.max_output_side
    if size.fit is Fit.INSIDE:
        geometry = Geometry(size.width or limit, size.height or limit, None, size.upscale, None)
        return _with_resized_size(geometry, source, settings)
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
        geometry = Geometry(cover_w, cover_h, None, True, (width, height, *size.focal))
    else:
        geometry = Geometry(width, height, size.gravity.value, True, None)
    return _with_resized_size(geometry, source, settings)


def _with_resized_size(geometry: Geometry, source: Source, settings: RenderSettings) -> Geometry:
    """``geometry`` with the size the whole image is resized to, as ``thumbnail`` computes it:
    one shrink factor for both axes, chosen to fit inside (or, with a crop, to cover) the box,
    and at least 1 unless upscaling is allowed."""
    hshrink = source.width / geometry.box_width
    vshrink = source.height / geometry.box_height
    shrink = min(hshrink, vshrink) if geometry.crop else max(hshrink, vshrink)
    if not geometry.upscale:
        shrink = max(shrink, 1.0)
    width = max(1, int(source.width / shrink + 0.5))
    height = max(1, int(source.height / shrink + 0.5))
    if width * height > settings.max_source_pixels:
        raise Unprocessable(
            f"resizing to {width}x{height} before cropping is over the "
            f"{settings.max_source_pixels} pixel limit"
        )
    scale = 8
    if source.loader == "jpeg":
        stored_width, stored_height = source.stored_size
        out_width, out_height = (height, width) if source.orientation >= 5 else (width, height)
        choose = jpeg.libvips_scale if settings.exact_shrink else jpeg.decode_scale
        scale = choose(stored_width, stored_height, out_width, out_height)
    return dataclasses.replace(
        geometry, resized_width=width, resized_height=height, decode_scale=scale
    )


def memory_bytes(source: Source, geometry: Geometry, *, whole: bool = False) -> int:
    """About the most memory a render holds at once: the decoded image (at the DCT scale for
    JPEG; whole for other formats, whose decoders or libvips hold a full frame, and with
    ``whole``), a progressive JPEG's coefficients for the whole image (two bytes per sample),
    and the resized image."""
    pixel = source.bands * source.sample_bytes
    resized = geometry.resized_width * geometry.resized_height * pixel
    if source.loader != "jpeg" or whole:
        return source.width * source.height * pixel + resized
    stored_width, stored_height = source.stored_size
    m = geometry.decode_scale
    decoded = math.ceil(stored_width * m / 8) * math.ceil(stored_height * m / 8) * pixel
    coefficients = stored_width * stored_height * source.bands * 2 if source.progressive else 0
    return decoded + coefficients + resized


def thumbnail(
    data: bytes, source: Source, geometry: Geometry, *, every_frame: bool = False
) -> pyvips.Image:
    """Decode, orient, colour-manage and resize to the planned size in one libvips call: the
    exact path, and the path for every source but plain JPEGs.

    ``thumbnail`` decodes with shrink-on-load (JPEG DCT scaling, WebP/AVIF subsampled decode)
    and resizes with a Lanczos kernel. Sources tagged with another profile (Display P3, Adobe
    RGB) and CMYK are converted to sRGB; untagged and sRGB-tagged ones are sRGB already.
    ``fail_on=error`` makes truncated and corrupt files fail instead of rendering grey. The
    crop is left to the pipeline's crop steps: inside ``thumbnail`` it computes the whole
    resized image at once, outside the reach of a deadline (an upscaled 1x2000 strip: a minute
    for one 1000x1000 crop).
    ``every_frame``: all frames of an animation, each resized alike, as one strip.
    """
    # A COVER box is planned as the resized size: fitting inside it is covering the box.
    width, height = (
        (geometry.resized_width, geometry.resized_height)
        if geometry.crop
        else (geometry.box_width, geometry.box_height)
    )
    options: dict[str, object] = {
        "height": height,
        "size": "both" if geometry.upscale else "down",
        "option_string": "n=-1,fail_on=error" if every_frame else "fail_on=error",
    }
    if source.needs_colour_transform:
        options["export_profile"] = "srgb"
    return pyvips.Image.thumbnail_buffer(data, width, **options)


def decode_scaled(data: bytes, source: Source, geometry: Geometry) -> pyvips.Image:
    """Shrink-on-load: decode a JPEG at the smallest DCT scale that still leaves the Lanczos
    step enough to work with (``jpeg.decode_scale``), in stored orientation."""
    stored_width, stored_height = source.stored_size
    return jpeg.decode(
        data, geometry.decode_scale, stored_width, stored_height, grey=source.bands == 1
    )


def resize(image: pyvips.Image, source: Source, geometry: Geometry) -> pyvips.Image:
    """Lanczos-3 to the planned size (still in stored orientation)."""
    width, height = geometry.resized_width, geometry.resized_height
    if source.orientation >= 5:
        width, height = height, width
    if (width, height) == (image.width, image.height):
        return image
    return image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")


def orient(image: pyvips.Image, source: Source) -> pyvips.Image:
    """Turn and flip as the EXIF orientation says (on the resized, so small, image)."""
    if source.orientation == 1:
        return image
    image = image.copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", source.orientation)
    return image.autorot()


def colour_manage(image: pyvips.Image, source: Source) -> pyvips.Image:
    """Sources tagged with a profile other than sRGB (Display P3, Adobe RGB) to sRGB, with
    the relative intent ``thumbnail`` uses; untagged and sRGB-tagged ones are sRGB already."""
    if source.icc_profile is None:
        return image
    image = image.copy()
    image.set_type(pyvips.GValue.blob_type, "icc-profile-data", source.icc_profile)
    return image.icc_transform("srgb", embedded=True, intent="relative")


def crop_window(image: pyvips.Image, geometry: Geometry) -> Box | None:
    """Where the COVER box lies in the resized image: centred, or where libvips' attention
    finds the most interesting region (that search reads the whole image); None for no crop."""
    if geometry.crop is None:
        return None
    width = min(geometry.box_width, image.width)
    height = min(geometry.box_height, image.height)
    if (width, height) == (image.width, image.height):
        return None
    if geometry.crop == "attention":
        found = image.smartcrop(width, height, interesting="attention")
        return -found.xoffset, -found.yoffset, width, height  # extract_area's offsets
    return (image.width - width) // 2, (image.height - height) // 2, width, height


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
