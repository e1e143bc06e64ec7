"""thumbor's URL grammar and URL signing, as thumbor 7 and libthumbor define them.

    /(unsafe|SIGNATURE)/[trim[:top-left|bottom-right][:TOLERANCE]/][AxB:CxD/]
        [adaptive-][full-]fit-in/][-]W|orig x [-]H|orig/][left|center|right/][top|middle|bottom/]
        [smart/][filters:NAME(ARGS)[:NAME(ARGS)...]/]IMAGE

The pattern is libthumbor's ``Url.regex``; IMAGE is the original's key in the configured origin
(plain or percent-encoded). ``SIGNATURE`` is thumbor's: HMAC-SHA1 with the security key over the
path after the signature segment exactly as it arrived (still percent-encoded), in URL-safe
base64 with its ``=`` padding (28 characters). Everything maps onto tofu's ``Size`` and its
``Operations``: a plain ``WxH`` (thumbor crops to fill the box) is tofu's ``WxHc``, so
``/unsafe/300x200/a.jpg`` and ``/300x200c/a.jpg`` are one cache entry.

Filters parse as thumbor parses them: one whose arguments do not match its pattern is
ignored. Every built-in filter of thumbor 7 is rendered but ``frame`` (a nine-patch border),
which is refused with a 400 that names it, as is a filter thumbor does not have built in:
silently different output is worse than a refusal for a migration. ``lenient`` (the
``--thumbor-lenient`` switch) ignores both instead, as thumbor ignores what it does not know.
``meta/`` answers thumbor's JSON description of the rendition
(``tofu.render.documents.thumbor_meta``; not with ``trim``); ``debug/`` is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

import webcolors

from tofu.errors import BadRequest, Forbidden
from tofu.formats import BY_NAME
from tofu.hints import Adapt
from tofu.keys import Key, parse_key
from tofu.transform import (
    DEFAULT_WATERMARK_PLACEMENT,
    NO_OPERATIONS,
    Colorize,
    Colour,
    Convolution,
    Curve,
    CurvePoints,
    Fill,
    FillKind,
    Fit,
    Gravity,
    ImageFormat,
    Operations,
    Output,
    RoundCorner,
    Sharpen,
    Size,
    Transform,
    Trim,
    TrimCorner,
    Watermark,
)
from tofu.urls import ParsedPath, bounded_int, clamped_int

# A signature segment: 27 base64url characters and the "=" padding, which clients may send
# percent-encoded.
SIGNATURE_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]{27}(?:=|%3[dD])")
UNSAFE = "unsafe"

# libthumbor's Url.regex(has_unsafe_or_hash=False), group for group.
_URL_RE = re.compile(
    r"(?:(?P<debug>debug)/)?"
    r"(?:(?P<meta>meta)/)?"
    r"(?:(?P<trim>trim(?::(?:top-left|bottom-right))?(?::\d+)?)/)?"
    r"(?:(?P<crop_left>\d+)x(?P<crop_top>\d+):(?P<crop_right>\d+)x(?P<crop_bottom>\d+)/)?"
    r"(?:(?P<adaptive>adaptive-)?(?P<full>full-)?(?P<fit_in>fit-in)/)?"
    r"(?:(?P<horizontal_flip>-)?(?P<width>(?:\d+|orig))?"
    r"x(?P<vertical_flip>-)?(?P<height>(?:\d+|orig))?/)?"
    r"(?:(?P<halign>left|right|center)/)?"
    r"(?:(?P<valign>top|bottom|middle)/)?"
    r"(?:(?P<smart>smart)/)?"
    r"(?:filters:(?P<filters>.+?\))/)?"
    r"(?P<image>.+)"
)
_HALIGN = {"left": 0.0, "center": 50.0, "right": 100.0}
_VALIGN = {"top": 0.0, "middle": 50.0, "bottom": 100.0}
# Ranges of numbers in the URL. Where thumbor documents a range (brightness, contrast, trim's
# tolerance) or its C code needs one (round_corner's colour bytes), a number outside it is a
# 400; where thumbor clamps (sizes, quality, blur's radius and sigma), tofu clamps alike. The
# rest are bounded generously, so that no later stage sees a number it cannot convert.
_MAX_BLUR_RADIUS = 150  # thumbor's cap
_MAX_TRIM_TOLERANCE = 442  # thumbor's: the largest RGB distance, sqrt(3) * 255
_MAX_ROTATION = 3600  # degrees; thumbor takes angles modulo 360
_MAX_BYTES = 2**31 - 1
_MAX_COORDINATE = 10_000_000  # source pixels (crop and focal boxes): libvips' VIPS_MAX_COORD
_MAX_SIGMA_PER_RADIUS = 7.0
_MAX_SIGMA = 1000.0  # libvips' gaussblur limit
_MAX_SHARPEN_AMOUNT = 100.0  # thumbor's typical values: 0-10
_MAX_SHARPEN_RADIUS = 10.0  # the level amplified most; thumbor's has 5 levels (0-4)
_MAX_SATURATION = 100.0
_MAX_KERNEL_SIDE = 15  # convolution: up to 15x15 (thumbor has no limit: 225 taps a pixel)
_MAX_KERNEL_VALUE = 1e6
_MAX_WATERMARKS = 4  # per URL, the configured default watermark besides
_MAX_AGE = 10 * 365 * 86400  # max_age(seconds) beyond is this (--max-age bounds it again)
# thumbor 7's thumbor.filters.BUILTIN_FILTERS (autojpg ships beside them, not enabled).
_THUMBOR_BUILTIN = frozenset(
    {
        "brightness", "colorize", "contrast", "rgb", "round_corner", "quality", "noise",
        "watermark", "equalize", "fill", "sharpen", "strip_exif", "strip_icc", "frame",
        "grayscale", "rotate", "format", "max_bytes", "convolution", "blur", "extract_focal",
        "focal", "no_upscale", "saturation", "max_age", "curve", "background_color", "upscale",
        "proportion", "stretch",
    }
)  # fmt: skip
# thumbor's built-in filters tofu does not render, and why.
REFUSED_FILTERS = {
    "frame": "frame (a nine-patch border image around the picture) is not supported",
}

# thumbor's filter argument patterns (thumbor.filters.BaseFilter).
_POSITIVE = r"[\d]+"
_POSITIVE_NON_ZERO = r"[\d]*[1-9][\d]*"
_NUMBER = r"[-]?[\d]+"
_DECIMAL = r"[-]?(?:(?:[\d]+\.?[\d]*)|(?:[\d]*\.?[\d]+))"
_BOOLEAN = r"[Tt]rue|[Ff]alse|1|0"
_STRING = r"(?:'.+?')|(?:[^,]+?)"
_WORD = r"[\w]+"


def _filter_re(name: str, *params: str, required: int | None = None) -> re.Pattern[str]:
    """The pattern thumbor compiles for a filter: ``name(p1, p2...)``, parameters after the
    first ``required`` optional (thumbor's ``compile_regex``)."""
    required = len(params) if required is None else required
    parts = []
    for i, param in enumerate(params):
        comma = "," if i else ""
        optional = "?" if i >= required else ""
        parts.append(rf"(?:{comma}\s*({param})\s*){optional}")
    return re.compile(rf"{name}\({''.join(parts)}\)")


def _boolean(text: str | None) -> bool:
    return text in ("true", "True", "1")


class _Request:
    """What a thumbor URL asks for, gathered while parsing (mutable; becomes a ``Size``)."""

    def __init__(self, max_side: int) -> None:
        self.max_side = max_side  # the largest output side: the bound of output-pixel arguments
        self.quality: int | None = None
        self.format: ImageFormat | None = None
        self.upscale = False
        self.operations: dict[str, Any] = {}
        self.extract_focal = False
        self.watermarks: list[Watermark] = []


def _quality(request: _Request, value: str) -> None:
    # Clamped to 1-100, as thumbor's encoders clamp it.
    request.quality = max(clamped_int(value, 100), 1)


def _format(request: _Request, value: str) -> None:
    # As thumbor: a format it does not know (or tofu cannot encode: heic, heif) means "none".
    request.format = BY_NAME.get(value.strip("'").lower())


def _fill(request: _Request, colour: str, merge: str | None = None) -> None:
    if colour == "blur":
        fill = Fill(FillKind.BLUR, merge_alpha=_boolean(merge))
    elif colour == "auto":
        fill = Fill(FillKind.AUTO, merge_alpha=_boolean(merge))
    else:
        fill = Fill(FillKind.COLOUR, parse_colour(colour), _boolean(merge))
    request.operations["fill"] = fill


def _focal(request: _Request, box: str) -> None:
    parsed = re.match(r"(\d+)x(\d+):(\d+)x(\d+)", box.strip("'"))
    if parsed:
        left, top, right, bottom = (
            bounded_int(v, 0, _MAX_COORDINATE, "focal(LxT:RxB) coordinates")
            for v in parsed.groups()
        )
        if right - left and bottom - top:
            request.operations["focal_box"] = (left, top, right, bottom)


def _upscale(request: _Request) -> None:
    request.upscale = True


def _no_upscale(request: _Request) -> None:
    request.upscale = False  # tofu never upscales unless asked


def _flag(name: str) -> Callable[[_Request], None]:
    def set_flag(request: _Request) -> None:
        request.operations[name] = True

    return set_flag


def _ignore(request: _Request) -> None:
    """strip_icc, strip_exif: tofu strips all metadata anyway (after converting to sRGB)."""


def _rotate(request: _Request, value: str) -> None:
    degrees = bounded_int(value, -_MAX_ROTATION, _MAX_ROTATION, "rotate(angle)")
    if degrees % 90 == 0:  # thumbor ignores other angles
        request.operations["rotate"] = degrees % 360


def _max_bytes(request: _Request, value: str) -> None:
    request.operations["max_bytes"] = bounded_int(value, 0, _MAX_BYTES, "max_bytes(bytes)")


def _blur(request: _Request, radius: str, sigma: str | None = None) -> None:
    size = clamped_int(radius, _MAX_BLUR_RADIUS)
    spread = abs(float(sigma)) if sigma else 0.0  # thumbor squares it; 0 means the radius
    # Beyond a few radii the truncated Gaussian is a box blur already; capping it keeps the
    # libvips mask within the radius (an unbounded sigma would make it unbounded).
    sigma_cap = min(_MAX_SIGMA_PER_RADIUS * size, _MAX_SIGMA)
    request.operations["blur"] = (size, min(spread or size, sigma_cap))


def _brightness(request: _Request, value: str) -> None:
    request.operations["brightness"] = bounded_int(value, -100, 100, "brightness(amount)")


def _contrast(request: _Request, value: str) -> None:
    request.operations["contrast"] = bounded_int(value, -100, 100, "contrast(amount)")


def _round_corner(
    request: _Request, radius: str, red: str, green: str, blue: str, transparent: str | None = None
) -> None:
    text_x, _, text_y = radius.partition("|")
    radius_x, radius_y = (
        bounded_int(text, 0, request.max_side, "round_corner(radius)")
        for text in (text_x, text_y or text_x)
    )
    # Bytes in thumbor's C code (which fails on anything larger).
    r, g, b = (bounded_int(c, 0, 255, "round_corner(r,g,b)") for c in (red, green, blue))
    alpha = 0 if _boolean(transparent) else 255
    request.operations["round_corner"] = RoundCorner(radius_x, radius_y, (r, g, b, alpha))


def _background_color(request: _Request, colour: str) -> None:
    request.operations["background"] = parse_colour(colour)


def bounded_float(text: str, low: float, high: float, what: str) -> float:
    """``text`` (a decimal a filter pattern matched) within ``low``-``high``, else a 400."""
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise BadRequest(f"{what} must be {low:g} to {high:g}")
    return value


def _sharpen(request: _Request, amount: str, radius: str, luminance_only: str) -> None:
    request.operations["sharpen"] = Sharpen(
        bounded_float(amount, 0, _MAX_SHARPEN_AMOUNT, "sharpen(amount)"),
        bounded_float(radius, 0, _MAX_SHARPEN_RADIUS, "sharpen(radius)"),
        _boolean(luminance_only),
    )


def _saturation(request: _Request, change: str) -> None:
    value = bounded_float(change, -_MAX_SATURATION, _MAX_SATURATION, "saturation(change)")
    request.operations["saturation"] = None if value == 1 else value


def _rgb(request: _Request, red: str, green: str, blue: str) -> None:
    deltas = tuple(bounded_int(v, -100, 100, "rgb(r,g,b)") for v in (red, green, blue))
    request.operations["rgb"] = deltas if any(deltas) else None


def _colorize(request: _Request, red: str, green: str, blue: str, colour: str) -> None:
    red_, green_, blue_ = (bounded_int(v, 0, 100, "colorize(r%,g%,b%)") for v in (red, green, blue))
    text = colour.strip("'")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", text):
        raise BadRequest(f"colorize(fill) must be six hex digits (rrggbb), got {colour!r}")
    rgb = bytes.fromhex(text)
    request.operations["colorize"] = Colorize(red_, green_, blue_, (rgb[0], rgb[1], rgb[2]))


def _proportion(request: _Request, value: str) -> None:
    proportion = float(value)
    if 0 < proportion < 1:  # thumbor ignores others (1 changes nothing)
        request.operations["proportion"] = proportion


def _extract_focal(request: _Request) -> None:
    request.extract_focal = True


def _max_age(request: _Request, value: str) -> None:
    # Any number, as thumbor takes it; the response never says more than --max-age.
    request.operations["max_age"] = clamped_int(value, _MAX_AGE)


def _autojpg(request: _Request, enabled: str | None = None) -> None:
    request.operations["auto_jpeg"] = enabled is None or _boolean(enabled)


def _noise(request: _Request, amount: str, seed: str | None = None) -> None:
    level = bounded_int(amount, 0, 100, "noise(amount)")
    request.operations["noise"] = (
        (level, bounded_int(seed or "0", 0, 2**31 - 1, "noise(seed)")) if level else None
    )


def _convolution(
    request: _Request, matrix: str, columns: str, normalize: str | None = None
) -> None:
    width = bounded_int(columns, 1, _MAX_KERNEL_SIDE, "convolution(columns)")
    items = matrix.split(";")
    if len(items) > _MAX_KERNEL_SIDE**2 or len(items) % width or len(items) // width % 2 == 0:
        raise BadRequest(
            "convolution(matrix, columns) must be a kernel of odd columns and odd rows, "
            f"up to {_MAX_KERNEL_SIDE}x{_MAX_KERNEL_SIDE}"
        )
    if width % 2 == 0:
        raise BadRequest("convolution(columns) must be odd")
    values = tuple(
        bounded_float(v, -_MAX_KERNEL_VALUE, _MAX_KERNEL_VALUE, "convolution(matrix) values")
        for v in items
    )
    request.operations["convolution"] = Convolution(
        values, width, normalize is None or _boolean(normalize)
    )


def _curve_points(text: str) -> CurvePoints:
    points = tuple(
        (bounded_int(x, 0, 255, "curve points"), bounded_int(y, 0, 255, "curve points"))
        for x, y in re.findall(r"\((\d+),(\d+)\)", text)
    )
    if not points or any(a[0] >= b[0] for a, b in itertools.pairwise(points)):
        raise BadRequest("a curve must have points with strictly increasing inputs")
    return points


def _curve(request: _Request, all_: str, red: str, green: str, blue: str) -> None:
    request.operations["curve"] = Curve(*(_curve_points(c) for c in (all_, red, green, blue)))


def _watermark_position(text: str, what: str) -> str:
    """thumbor's position, canonical: center, repeat, or [-]N[p] without leading zeros (the
    sign kept: ``-0`` is the right or bottom edge)."""
    if text in ("center", "repeat"):
        return text
    sign, digits, percent = re.fullmatch(r"(-?)(\d+)(p?)", text).groups()  # type: ignore[union-attr]
    high = 100 if percent else _MAX_COORDINATE
    return f"{sign}{bounded_int(digits, 0, high, what)}{percent}"


def _watermark_ratio(text: str | None, what: str) -> int | None:
    if text is None or text == "none":
        return None
    return bounded_int(text, 0, 100, what) or None  # thumbor: 0 is none


def parse_watermark(
    image: str,
    x: str,
    y: str,
    alpha: str,
    width: str | None = None,
    height: str | None = None,
) -> Watermark:
    """thumbor's ``watermark(image, x, y, alpha[, w_ratio, h_ratio])`` arguments, checked."""
    return Watermark(
        _image_key(image.strip("'")),
        _watermark_position(x, "watermark(x)"),
        _watermark_position(y, "watermark(y)"),
        bounded_int(alpha, 0, 100, "watermark(alpha)"),
        _watermark_ratio(width, "watermark(w_ratio)"),
        _watermark_ratio(height, "watermark(h_ratio)"),
    )


def watermark_setting(text: str) -> tuple[str, Watermark]:
    """``PREFIX=KEY[,x,y,alpha[,w_ratio,h_ratio]]`` (``--watermark``): the key prefix and
    the watermark, its arguments as thumbor's filter takes them; ``ValueError`` otherwise."""
    prefix, equals, arguments = text.partition("=")
    if not equals:
        raise ValueError(f"{text!r} is not PREFIX=KEY[,x,y,alpha[,w_ratio,h_ratio]]")
    if "," not in arguments:
        arguments += "," + DEFAULT_WATERMARK_PLACEMENT
    pattern, _ = _FILTERS["watermark"]
    match = pattern.fullmatch(f"watermark({arguments})")
    if match is None:
        raise ValueError(
            f"{arguments!r} is not KEY,x,y,alpha[,w_ratio,h_ratio] (x, y: [-]N, [-]Np, center "
            "or repeat; alpha 0-100; ratios 0-100 or none)"
        )
    try:
        return prefix, parse_watermark(*match.groups())
    except BadRequest as exc:
        raise ValueError(exc.reason) from None


def _watermark(request: _Request, *arguments: str | None) -> None:
    if len(request.watermarks) == _MAX_WATERMARKS:
        raise BadRequest(f"at most {_MAX_WATERMARKS} watermarks in a URL")
    request.watermarks.append(parse_watermark(*arguments))  # type: ignore[arg-type]


_Apply = Callable[..., None]
_POSITION = r"(?:-?\d+p?)|center|repeat"
_RATIO = r"(?:-?\d+)|none"
_CURVE = r"\[(?:\(\d+,\d+\),?)*\]"
_FILTERS: dict[str, tuple[re.Pattern[str], _Apply]] = {
    "quality": (_filter_re("quality", _POSITIVE), _quality),
    "format": (_filter_re("format", _STRING), _format),
    "fill": (_filter_re("fill", _WORD, _BOOLEAN, required=1), _fill),
    "focal": (_filter_re("focal", _STRING), _focal),
    "upscale": (_filter_re("upscale"), _upscale),
    "no_upscale": (_filter_re("no_upscale"), _no_upscale),
    "grayscale": (_filter_re("grayscale"), _flag("grayscale")),
    "strip_icc": (_filter_re("strip_icc"), _ignore),
    "strip_exif": (_filter_re("strip_exif"), _ignore),
    "rotate": (_filter_re("rotate", _NUMBER), _rotate),
    "max_bytes": (_filter_re("max_bytes", _POSITIVE), _max_bytes),
    "blur": (_filter_re("blur", _POSITIVE_NON_ZERO, _DECIMAL, required=1), _blur),
    "brightness": (_filter_re("brightness", _NUMBER), _brightness),
    "contrast": (_filter_re("contrast", _NUMBER), _contrast),
    "round_corner": (
        _filter_re(
            "round_corner",
            r"[\d]+(?:\|[\d]+)?",
            _POSITIVE,
            _POSITIVE,
            _POSITIVE,
            _BOOLEAN,
            required=4,
        ),
        _round_corner,
    ),
    "background_color": (_filter_re("background_color", _WORD), _background_color),
    "sharpen": (_filter_re("sharpen", _DECIMAL, _DECIMAL, _BOOLEAN), _sharpen),
    "saturation": (_filter_re("saturation", _DECIMAL), _saturation),
    "rgb": (_filter_re("rgb", _NUMBER, _NUMBER, _NUMBER), _rgb),
    "equalize": (_filter_re("equalize"), _flag("equalize")),
    "colorize": (
        _filter_re("colorize", _POSITIVE, _POSITIVE, _POSITIVE, _STRING),
        _colorize,
    ),
    "proportion": (_filter_re("proportion", _DECIMAL), _proportion),
    "stretch": (_filter_re("stretch"), _flag("stretch")),
    "extract_focal": (_filter_re("extract_focal"), _extract_focal),
    "max_age": (_filter_re("max_age", _POSITIVE), _max_age),
    "autojpg": (_filter_re("autojpg", _BOOLEAN, required=0), _autojpg),
    "noise": (_filter_re("noise", _POSITIVE, _POSITIVE, required=1), _noise),
    "convolution": (
        _filter_re(
            "convolution",
            r"-?\d+(?:\.\d*)?(?:;-?\d+(?:\.\d*)?)*",
            _POSITIVE_NON_ZERO,
            _BOOLEAN,
            required=2,
        ),
        _convolution,
    ),
    "curve": (_filter_re("curve", _CURVE, _CURVE, _CURVE, _CURVE), _curve),
    "watermark": (
        _filter_re(
            "watermark", _STRING, _POSITION, _POSITION, _POSITIVE, _RATIO, _RATIO, required=4
        ),
        _watermark,
    ),
}
SUPPORTED_FILTERS = frozenset(_FILTERS)


def parse_colour(text: str) -> Colour:
    """A colour as thumbor's ``fill`` and ``background_color`` take it: a CSS name, hex digits
    without the ``#`` (3 or 6), or ``transparent``."""
    name = text.strip("'").lower()
    if name == "transparent":
        return (0, 0, 0, 0)
    try:
        red, green, blue = webcolors.name_to_rgb(name)
    except ValueError:
        try:
            red, green, blue = webcolors.hex_to_rgb("#" + name)
        except ValueError:
            raise BadRequest(f"unknown colour {text!r}") from None
    return (red, green, blue, 255)


def _apply_filters(request: _Request, filters: str, *, lenient: bool) -> None:
    """thumbor's ``FiltersFactory.create_instances``: split on ``):``, ignore what cannot be
    parsed, apply the rest in order. A filter tofu does not render is a 400 naming it, unless
    ``lenient``: ignored then, as thumbor ignores what it does not know."""
    if not filters:
        return
    parts = filters.split("):")
    for i, part in enumerate(parts):
        name = part.split("(")[0]
        known = _FILTERS.get(name)
        if known is None:
            if lenient:
                continue
            if name in REFUSED_FILTERS:
                raise BadRequest(f"filter {REFUSED_FILTERS[name]} (--thumbor-lenient ignores it)")
            if name not in _THUMBOR_BUILTIN:
                raise BadRequest(
                    f"unknown filter {name[:40]!r}: not one of thumbor's built-in filters "
                    "(--thumbor-lenient ignores it)"
                )
            continue
        text = part if i == len(parts) - 1 else part + ")"
        pattern, apply = known
        match = pattern.match(text)
        if match is None:
            continue
        apply(request, *match.groups())


def _image_key(raw: str) -> Key:
    try:
        key = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("image path is not valid percent-encoded UTF-8") from None
    if re.match(r"[a-z][a-z0-9+.-]*://", key, re.IGNORECASE):
        raise BadRequest("image must be a key in the origin, not a URL (no HTTP loader)")
    return parse_key(key.lstrip("/"))  # thumbor's file loader strips leading slashes


def parse_options(path: str, max_side: int, *, lenient: bool = False) -> Transform:
    """Parse a thumbor path after its ``unsafe``/signature segment (no leading slash)."""
    match = _URL_RE.fullmatch(path)
    if match is None:  # only when the image part is empty
        raise BadRequest("no original image was specified in the URL")
    if match["meta"] and match["trim"]:
        # The document is computed from the header; what a trim leaves only the pixels tell.
        raise BadRequest("meta/ with trim is not supported")
    if match["debug"]:
        raise BadRequest("debug/ is not supported")
    # Tornado decodes each group of the route before thumbor sees it.
    filters = unquote(match["filters"] or "")

    request = _Request(max_side)
    ops: dict[str, Any] = {}
    if match["trim"]:
        parts = match["trim"].split(":")[1:]
        corner = TrimCorner.TOP_LEFT
        if parts and parts[0] in ("top-left", "bottom-right"):
            corner = TrimCorner(parts.pop(0))
        tolerance = bounded_int(parts[0], 0, _MAX_TRIM_TOLERANCE, "trim tolerance") if parts else 0
        ops["trim"] = Trim(corner, tolerance)
    if match["crop_left"] is not None:
        box = tuple(
            bounded_int(match[g], 0, _MAX_COORDINATE, "crop (LxT:RxB) coordinates")
            for g in ("crop_left", "crop_top", "crop_right", "crop_bottom")
        )
        left, top, right, bottom = box
        if any(box) and left < right and top < bottom:
            ops["crop"] = (left, top, right, bottom)
    ops["flip_horizontal"] = bool(match["horizontal_flip"])
    ops["flip_vertical"] = bool(match["vertical_flip"])
    _apply_filters(request, filters, lenient=lenient)
    ops.update(request.operations)
    image = match["image"]
    if request.extract_focal:
        inner = _extract_focal_url(image)
        if inner is not None:
            image, ops["focal_box"] = inner
    if request.watermarks:
        ops["watermarks"] = tuple(request.watermarks)

    # thumbor clamps sizes to MAX_WIDTH/MAX_HEIGHT; tofu's limit is --max-output-side.
    width_text, height_text = match["width"], match["height"]
    width = clamped_int(width_text, max_side) if width_text and width_text != "orig" else 0
    height = clamped_int(height_text, max_side) if height_text and height_text != "orig" else 0
    original_width, original_height = width_text == "orig", height_text == "orig"

    fit_in = bool(match["fit_in"])
    gravity, focal = Gravity.CENTRE, None
    if fit_in:
        fit = Fit.OUTSIDE if match["full"] else Fit.INSIDE
        ops["adaptive"] = bool(match["adaptive"])
        # "orig" leaves that side of the box open (width or height 0): no limit there.
    elif (width or original_width) and (height or original_height):
        fit = Fit.COVER
        if "focal_box" in ops:
            gravity = Gravity.FOCAL
        elif match["smart"]:
            gravity = Gravity.ATTENTION
        else:
            focal = (_HALIGN[match["halign"] or "center"], _VALIGN[match["valign"] or "middle"])
            if focal != (50.0, 50.0):
                gravity = Gravity.FOCAL
            else:
                focal = None
        ops["original_width"], ops["original_height"] = original_width, original_height
    else:
        # One side (the other follows the aspect ratio) or none (the source's size): "orig"
        # on one side with the other open is the source's size too.
        fit = Fit.INSIDE
    if gravity is not Gravity.FOCAL:
        ops.pop("focal_box", None)  # nothing is cropped around it
    size = Size(
        width=width or None,
        height=height or None,
        fit=fit,
        gravity=gravity,
        focal=focal,
        quality=request.quality,
        format=request.format,
        upscale=request.upscale,
        operations=_canonical(Operations(**ops)),
        output=Output.THUMBOR_META if match["meta"] else Output.IMAGE,
    )
    return Transform(_image_key(image), size)


_EXTRACT_DOMAIN_RE = re.compile(r"^(https?://)?.*?/")
_EXTRACT_URL_RE = re.compile(r"/?(?:(?:(?P<unsafe>unsafe)|(?P<hash>.+?))/)?" + _URL_RE.pattern)
_EXTRACT_MAX_LEVEL = 10


def _extract_focal_url(url: str) -> tuple[str, tuple[int, int, int, int]] | None:
    """thumbor's ``extract_focal``: the image part is itself a thumbor URL (after a host
    segment) with a manual crop; the original is its image and the crop its focal box."""
    for _ in range(_EXTRACT_MAX_LEVEL):
        url = _EXTRACT_DOMAIN_RE.sub("", url, count=1)
        parts = _EXTRACT_URL_RE.match(url)
        if parts is None or not (parts["image"] and (parts["hash"] or parts["unsafe"])):
            return None
        if parts["crop_left"] is not None:
            left, top, right, bottom = (
                bounded_int(parts[g], 0, _MAX_COORDINATE, "extract_focal crop coordinates")
                for g in ("crop_left", "crop_top", "crop_right", "crop_bottom")
            )
            return parts["image"], (left, top, right, bottom)
        url = parts["image"]
    return None


def _canonical(ops: Operations) -> Operations:
    # The one "no operations" value, so renders skip their steps by identity-free equality.
    return NO_OPERATIONS if ops == NO_OPERATIONS else ops


def sign(path: str, key: str | bytes) -> str:
    """thumbor's signature of ``path`` (the URL after the signature segment, as sent, no leading
    slash): libthumbor's ``CryptoURL`` and thumbor's ``base64_hmac_sha1`` signer."""
    secret = key.encode() if isinstance(key, str) else key
    digest = hmac.new(secret, path.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode()


class ThumborFrontend:
    """Claims ``/unsafe/...`` and ``/SIGNATURE/...``; verifies against every ``keys`` entry
    (rotation); unsafe URLs only when ``allow_unsafe``."""

    def __init__(
        self, keys: Iterable[str], *, allow_unsafe: bool, max_side: int, lenient: bool = False
    ) -> None:
        self._keys = [k.encode() for k in keys]
        self._allow_unsafe = allow_unsafe
        self._max_side = max_side
        self._lenient = lenient

    def claims(self, raw_path: str) -> bool:
        first = raw_path[1:].partition("/")[0]
        return first == UNSAFE or SIGNATURE_SEGMENT_RE.fullmatch(first) is not None

    def parse(self, raw_path: str) -> ParsedPath:
        first, _, rest = raw_path[1:].partition("/")
        signature = None if first == UNSAFE else unquote(first)
        transform = parse_options(rest, self._max_side, lenient=self._lenient)
        # Client hints never rescale a thumbor URL: its crop boxes are in source pixels.
        return ParsedPath(signature, rest, transform, size_token="", adapt=Adapt.NONE)

    def verify(self, parsed: ParsedPath) -> ParsedPath:
        if parsed.signature is None:
            if not self._allow_unsafe:
                raise Forbidden("unsafe thumbor URLs are not allowed (--thumbor-unsafe)")
            return parsed
        given = parsed.signature
        for key in self._keys:
            if hmac.compare_digest(sign(parsed.signed_path, key), given):
                return parsed
        raise Forbidden("invalid thumbor signature")
