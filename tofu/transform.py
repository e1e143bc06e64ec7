"""The canonical description of one rendition: what to fetch and what to make of it.

A ``Transform`` is immutable and hashable; it is produced only by ``tofu.urls`` (and adapted to
the client's hints by ``tofu.hints``) and is the cache key (together with the negotiated output
format and the original's version).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from tofu.formats import ImageFormat
from tofu.keys import Key

__all__ = ["Fit", "Gravity", "ImageFormat", "Output", "Size", "Transform", "Watermark"]


class Output(enum.Enum):
    """What a rendition is: pixels, or a JSON document about the original (part of the cache
    key: the same original and box give different bytes)."""

    IMAGE = "image"
    INFO = "info"  # tofu's info document: size, format, dominant colour, BlurHash, ThumbHash
    THUMBOR_META = "thumbor-meta"  # thumbor's meta/ document for the size asked


class Fit(enum.Enum):
    """How the output box is filled."""

    INSIDE = "inside"  # scale to fit inside width x height (either may be open), aspect kept
    COVER = "cover"  # scale to cover width x height exactly, then crop the overflow
    OUTSIDE = "outside"  # scale to cover width x height, keeping all of it (no crop)


class Gravity(enum.Enum):
    """Which part of the image a COVER crop keeps."""

    CENTRE = "centre"
    ATTENTION = "attention"  # libvips smart crop: the most interesting region
    FOCAL = "focal"  # keep a given focal point as close to the centre as possible


class TrimCorner(enum.Enum):
    """Whose colour ``trim`` removes from the edges."""

    TOP_LEFT = "top-left"
    BOTTOM_RIGHT = "bottom-right"


@dataclass(frozen=True, slots=True)
class Trim:
    """Cut away the border that has the corner pixel's colour (within ``tolerance``)."""

    corner: TrimCorner = TrimCorner.TOP_LEFT
    tolerance: int = 0  # colour difference still counted as the border (libvips find_trim)


# (red, green, blue, alpha), 0-255 each.
Colour = tuple[int, int, int, int]


class FillKind(enum.Enum):
    COLOUR = "colour"
    BLUR = "blur"  # the picture itself, blurred and stretched over the box
    AUTO = "auto"  # the picture's median colour


@dataclass(frozen=True, slots=True)
class Fill:
    """Pad a fit-inside result to the full requested box."""

    kind: FillKind
    colour: Colour = (0, 0, 0, 0)  # only with FillKind.COLOUR
    # Composite a transparent picture onto the fill; otherwise its alpha is dropped.
    merge_alpha: bool = False


@dataclass(frozen=True, slots=True)
class RoundCorner:
    radius_x: int
    radius_y: int
    colour: Colour  # what the cut corners show; alpha 0 makes them transparent


@dataclass(frozen=True, slots=True)
class Sharpen:
    """thumbor's wavelet sharpen (Marco Rossini's GIMP plugin): five levels of detail, each
    amplified by ``amount * exp(-(level - radius)^2 / 1.5) + 1``."""

    amount: float
    radius: float
    luminance_only: bool


@dataclass(frozen=True, slots=True)
class Colorize:
    """Blend each channel towards ``colour`` by its percentage (0-100)."""

    red: int
    green: int
    blue: int
    colour: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Convolution:
    """A kernel of ``columns`` columns (odd rows and columns), edges extended, optionally
    divided by its sum; applied to every band, alpha included (thumbor's ``_convolution``)."""

    matrix: tuple[float, ...]
    columns: int
    normalize: bool


# A curve: (input, output) control points, 0-255, inputs strictly increasing.
CurvePoints = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Curve:
    """thumbor's ``curve``: a cubic spline through each list of points as a lookup table; the
    channel's own curve first, then ``all`` on every channel."""

    all: CurvePoints
    red: CurvePoints
    green: CurvePoints
    blue: CurvePoints


@dataclass(frozen=True, slots=True)
class Watermark:
    """An image from the origin composited over the rendition, with thumbor's arguments:
    ``x``/``y`` are ``center``, ``repeat``, pixels (``-N``: from the right/bottom edge, ``-0``
    included) or a percentage of the image (``20p``, ``-20p``); ``alpha`` 0-100 is the
    transparency added; ``width``/``height`` (percent of the image, None: free) bound the
    watermark's size, its aspect ratio kept."""

    key: Key
    x: str
    y: str
    alpha: int = 0
    width: int | None = None
    height: int | None = None


# A configured default watermark's arguments after its key when it gives none (--watermark):
# the bottom-right corner, 10 pixels in, opaque, at its own size.
DEFAULT_WATERMARK_PLACEMENT = "-10,-10,0"


@dataclass(frozen=True, slots=True)
class Operations:
    """Edits beyond scaling and cropping to the box (thumbor URLs have them). The defaults mean
    "none", so that a rendition without any is the same cache key whatever its URL grammar.

    Geometry before scaling: ``trim``, then ``crop`` (in source pixels, after EXIF orientation);
    the box: ``adaptive``, ``original_width``/``original_height``, ``focal_box``; after scaling,
    in this order: ``stretch`` (to the box, aspect not kept), ``proportion``, flips, ``rotate``,
    ``grayscale``, ``brightness``, ``contrast``, ``rgb``, ``saturation``, ``colorize``,
    ``equalize``, ``curve``, ``convolution``, ``sharpen``, ``blur``, ``noise``,
    ``round_corner``, ``fill``, ``background``, ``watermarks``; when encoding: ``auto_jpeg``,
    ``max_bytes``; in the response: ``max_age``.
    """

    trim: Trim | None = None
    crop: tuple[int, int, int, int] | None = None  # left, top, right, bottom (exclusive)
    adaptive: bool = False  # swap the box's sides when its orientation is not the source's
    original_width: bool = False  # the box's width is the (cropped) source's
    original_height: bool = False
    focal_box: tuple[int, int, int, int] | None = None  # source pixels: left, top, right, bottom
    flip_horizontal: bool = False
    flip_vertical: bool = False
    rotate: int = 0  # counter-clockwise degrees: 0, 90, 180 or 270
    grayscale: bool = False
    brightness: int = 0  # percent of full scale added to every channel
    contrast: int = 0  # -100..100; 0 keeps it
    blur: tuple[int, float] | None = None  # radius, sigma (pixels)
    round_corner: RoundCorner | None = None
    fill: Fill | None = None
    background: Colour | None = None  # what transparent parts are flattened onto
    max_bytes: int | None = None  # lower the quality until the JPEG/WebP fits
    stretch: bool = False  # a cover box is filled by scaling each side alone (no crop)
    proportion: float | None = None  # the result scaled by this (0-1]
    rgb: tuple[int, int, int] | None = None  # percent of full scale added to each channel
    saturation: float | None = None  # 1 keeps, 0 grey, >1 more saturated
    colorize: Colorize | None = None
    equalize: bool = False  # per-channel histogram equalisation
    curve: Curve | None = None
    convolution: Convolution | None = None
    sharpen: Sharpen | None = None
    noise: tuple[int, int] | None = None  # amount (0-100), seed: the same URL, the same noise
    watermarks: tuple[Watermark, ...] = ()  # composited in order
    auto_jpeg: bool = False  # a still PNG output without transparency becomes JPEG
    max_age: int | None = None  # Cache-Control max-age for this rendition (seconds)

    @property
    def cuts_source(self) -> bool:
        """Whether the source is cut before scaling (so shrink-on-load cannot be used)."""
        return self.trim is not None or self.crop is not None


NO_OPERATIONS = Operations()


@dataclass(frozen=True, slots=True)
class Size:
    """The size token of a URL, parsed and canonicalised (DPR already folded into the box)."""

    width: int | None
    height: int | None
    fit: Fit = Fit.INSIDE
    gravity: Gravity = Gravity.CENTRE
    focal: tuple[float, float] | None = None  # percent of width, height; only with Gravity.FOCAL
    quality: int | None = None  # None: the output format's default
    format: ImageFormat | None = None  # None: negotiated, or the source's family
    upscale: bool = False
    save_data: bool = False  # the client sent Save-Data: on; the format's lower default quality
    operations: Operations = NO_OPERATIONS
    output: Output = Output.IMAGE
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.focal is not None:
            # One spelling of a point, whichever grammar gave it (tofu's whole percents,
            # thumbor's alignments), so that equal sizes also serialise alike.
            object.__setattr__(self, "focal", (float(self.focal[0]), float(self.focal[1])))
        object.__setattr__(self, "_hash", _hash_fields(self))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class Transform:
    """One rendition: the original's key at the origin and the size to render it at."""

    key: Key  # built by tofu.keys.parse_key where the URL is parsed
    size: Size
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", _hash_fields(self))

    def __hash__(self) -> int:
        return self._hash


def _hash_fields(obj: Any) -> int:
    """The hash of a frozen dataclass's compared fields, computed once in ``__post_init__``:
    these objects are hashed on every cache lookup."""
    return hash(tuple(getattr(obj, f.name) for f in fields(obj) if f.compare))
