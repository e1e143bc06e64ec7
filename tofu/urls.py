"""The URL grammar: the one parser from a request path to a canonical ``Transform``.

    /[{signature}/]{prefix...}/{size}/{name}   renders the original at key {prefix...}/{name}

The size token (TOFU style, compatible with Cookpad's CDN tokens)::

    size   := dims [mode] {option}
    dims   := W | "x" H | W "x" H
    mode   := "s"                 fit inside the box (W alone means a W x W box)
            | "c"                 cover the box and crop it, centred
            | "a"                 cover and crop around the most interesting region (smart crop)
            | "f" X "-" Y         cover and crop around a focal point, X and Y in percent
    option := "q" N               output quality 1-100
            | "u"                 allow upscaling (never done otherwise)
            | "@" D "x"           device pixel ratio 1-4 (e.g. @2x, @1.5x)
            | "w"                 width from the Width client hint (--client-hints); needs a
                                  width and no "@"
            | "." FORMAT          jpeg | jpg | png | webp | avif | gif

Without a mode, ``W`` alone sets the width (height follows the aspect ratio) and ``WxH`` fits inside
the box. The query string never affects the output (apps add cache busters), so it is ignored.

Where a size token goes, a URL may also name a preset (``--preset card=280x194c``: the same
``Size`` as its token, so one cache entry), or say ``info``: a JSON document about the original
(dimensions, format, dominant colour, BlurHash, ThumbHash) instead of pixels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from tofu.errors import BadRequest
from tofu.formats import BY_NAME, ImageFormat
from tofu.hints import Adapt
from tofu.keys import Key, parse_key
from tofu.transform import Fit, Gravity, Output, Size, Transform

# HMAC-SHA256 in unpadded URL-safe base64.
SIGNATURE_RE = re.compile(r"[A-Za-z0-9_-]{43}")

_DIMS_MODE_RE = re.compile(
    r"(?P<w>[0-9]{1,6})?(?:x(?P<h>[0-9]{1,6}))?"
    r"(?P<mode>s|c|a|f(?P<fx>[0-9]{1,3})-(?P<fy>[0-9]{1,3}))?"
)
_OPTION_RE = re.compile(
    r"q(?P<q>[0-9]{1,3})|(?P<u>u)|@(?P<dpr>[0-9](?:\.[0-9]{1,2})?)x|(?P<w>w)"
    # Known formats first, so that options may follow one (".webpq60"); else the unknown name.
    rf"|\.(?P<fmt>{'|'.join(sorted(BY_NAME, key=len, reverse=True))}|[a-z0-9]{{1,5}})"
)
_MODES = {"s": Fit.INSIDE, "c": Fit.COVER, "a": Fit.COVER, "f": Fit.COVER}
_GRAVITIES = {"c": Gravity.CENTRE, "a": Gravity.ATTENTION, "f": Gravity.FOCAL}
MAX_DPR = 4.0
INFO_TOKEN = "info"
# The size of an info document: no box (the document describes the original as it is).
INFO_SIZE = Size(width=None, height=None, output=Output.INFO)
# A preset's name: a URL segment that needs no encoding and reads as a name.
# How every size token starts (a width, or x and a height); anything else is no size at all
# (nor is a number of 7 digits or more, such as an ID: no side is a million pixels).
_SIZE_START_RE = re.compile(r"x?[0-9]{1,6}(?![0-9])")
PRESET_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class ParsedPath:
    """A request path split into what signing needs and what rendering needs."""

    signature: str | None  # the signature segment, when the URL carries one
    signed_path: str  # the raw path the signature covers: everything after the signature
    transform: Transform
    size_token: str  # the size segment as sent (still percent-encoded)
    adapt: Adapt = Adapt.DPR  # which client hints may change the size (tofu.hints)
    preset: str | None = None  # the preset's name, when the size segment named one

    @property
    def spec(self) -> SizeSpec:
        """The size as an allowlist would name it."""
        return SizeSpec(self.transform.size, width_hint=self.adapt is Adapt.WIDTH)

    def unsigned(self) -> ParsedPath:
        """The same path read without a signature: a signature-shaped first segment is then
        the first segment of the key (it is URL-safe base64, so it decodes to itself)."""
        if self.signature is None:
            return self
        return ParsedPath(
            None,
            f"/{self.signature}{self.signed_path}",
            Transform(Key(f"{self.signature}/{self.transform.key}"), self.transform.size),
            self.size_token,
            self.adapt,
            self.preset,
        )


def bounded_int(text: str, low: int, high: int, what: str) -> int:
    """``text`` (digits with an optional sign, as a grammar's pattern matched it) as an integer
    within ``low``-``high``; ``BadRequest`` naming ``what`` otherwise. The digits are counted
    before converting, so a number of any length is refused without being converted (Python
    refuses to convert over 4,300 digits) and no later stage meets a value beyond the range."""
    digits = text.lstrip("+-").lstrip("0")
    if len(digits) <= max(len(str(abs(low))), len(str(abs(high)))):
        value = int(text)
        if low <= value <= high:
            return value
    raise BadRequest(f"{what} must be {low} to {high}")


def clamped_int(text: str, high: int) -> int:
    """``text`` (digits only) as an integer, values above ``high`` (of any length) as ``high``."""
    digits = text.lstrip("0")
    return high if len(digits) > len(str(high)) else min(int(text), high)


def parse_size(token: str, max_side: int) -> Size:
    """Parse one size token; ``BadRequest`` with the reason when it is not valid."""
    return _parse_size(token, max_side)[0]


@dataclass(frozen=True, slots=True)
class SizeSpec:
    """A size as an allowlist names it: the size, and whether the Width client hint may set
    its width (the ``w`` option), since ``600`` and ``600w`` are different URLs to allow."""

    size: Size
    width_hint: bool = False

    @property
    def token(self) -> str:
        return size_token(self.size, width_hint=self.width_hint)


def parse_size_spec(token: str, max_side: int) -> SizeSpec:
    """Parse one allowlist entry; ``BadRequest`` with the reason when it is not valid."""
    size, adapt = _parse_size(token, max_side)
    return SizeSpec(size, width_hint=adapt is Adapt.WIDTH)


@dataclass(frozen=True, slots=True)
class Preset:
    """A named size (``--preset NAME=SIZE``): a URL naming it gets exactly the size's token's
    ``Size`` and client-hint rules."""

    name: str
    size: Size
    adapt: Adapt

    @property
    def token(self) -> str:
        """The canonical spelling of its size (``tofu config`` shows it)."""
        return size_token(self.size, width_hint=self.adapt is Adapt.WIDTH)


def parse_preset(text: str, max_side: int) -> Preset:
    """``NAME=SIZE`` as a preset; ``ValueError`` with the reason when the name is not a plain
    lowercase name (letters, digits, ``-``, ``_``), reads as a size token itself (``280``,
    ``x1``, ``info``: a URL could not tell them apart), or the size is not a valid token."""
    name, equals, token = text.partition("=")
    name, token = name.strip(), token.strip()
    if not equals or not name or not token:
        raise ValueError(f"{text!r} is not NAME=SIZE (e.g. card=280x194c)")
    if PRESET_NAME_RE.fullmatch(name) is None:
        raise ValueError(
            f"preset name {name!r}: use lowercase letters, digits, - and _, starting with a "
            "letter (at most 64)"
        )
    try:
        _parse_size(name, max_side)
    except BadRequest:
        pass
    else:
        raise ValueError(f"preset name {name!r} reads as a size token; choose a name")
    try:
        size, adapt = _parse_size(token, max_side)
    except BadRequest as exc:
        raise ValueError(f"preset {name!r}: {exc.reason}") from None
    return Preset(name, size, adapt)


def _parse_size(token: str, max_side: int) -> tuple[Size, Adapt]:
    """The size and which client hints may change it."""
    if token == INFO_TOKEN:
        return INFO_SIZE, Adapt.NONE  # a document about the original: no box to adapt
    head = _DIMS_MODE_RE.match(token)
    assert head is not None  # every part of the pattern is optional
    width = int(head["w"]) if head["w"] else None
    height = int(head["h"]) if head["h"] else None
    if width is None and height is None:
        raise BadRequest(f"size token {token!r} has no width or height")
    if width == 0 or height == 0:
        raise BadRequest(f"size token {token!r}: width and height must be at least 1")
    mode = (head["mode"] or "")[:1]
    fit = _MODES.get(mode, Fit.INSIDE)
    gravity = _GRAVITIES.get(mode, Gravity.CENTRE)
    focal = None
    if mode == "f":
        focal = (int(head["fx"]), int(head["fy"]))
        if focal[0] > 100 or focal[1] > 100:
            raise BadRequest(f"size token {token!r}: focal point must be within 0-100 percent")
    if mode in ("s", "c", "a", "f") and (width is None or height is None):
        width = height = width or height  # "650s", "40c": a square box

    quality = dpr = fmt = None
    upscale = width_hint = False
    pos = head.end()
    while pos < len(token):
        opt = _OPTION_RE.match(token, pos)
        if opt is None:
            raise BadRequest(f"size token {token!r}: cannot parse {token[pos:]!r}")
        if opt["q"] is not None:
            if quality is not None:
                raise BadRequest(f"size token {token!r}: quality given twice")
            quality = int(opt["q"])
            if not 1 <= quality <= 100:
                raise BadRequest(f"size token {token!r}: quality must be 1-100")
        elif opt["u"] is not None:
            if upscale:
                raise BadRequest(f"size token {token!r}: upscale given twice")
            upscale = True
        elif opt["w"] is not None:
            if width_hint:
                raise BadRequest(f"size token {token!r}: w given twice")
            width_hint = True
        elif opt["dpr"] is not None:
            if dpr is not None:
                raise BadRequest(f"size token {token!r}: DPR given twice")
            dpr = float(opt["dpr"])
            if not 1.0 <= dpr <= MAX_DPR:
                raise BadRequest(f"size token {token!r}: DPR must be 1-{MAX_DPR:g}")
        else:
            if fmt is not None:
                raise BadRequest(f"size token {token!r}: format given twice")
            fmt = BY_NAME.get(opt["fmt"])
            if fmt is None:
                raise BadRequest(f"size token {token!r}: unknown format {opt['fmt']!r}")
        pos = opt.end()

    if width_hint and (width is None or dpr is not None):
        raise BadRequest(f"size token {token!r}: w needs a width and no @ DPR")
    if dpr is not None:
        width = round(width * dpr) if width is not None else None
        height = round(height * dpr) if height is not None else None
    if max(width or 0, height or 0) > max_side:
        raise BadRequest(f"size token {token!r}: larger than the {max_side} px limit")
    adapt = Adapt.WIDTH if width_hint else Adapt.NONE if dpr is not None else Adapt.DPR
    size = Size(
        width=width,
        height=height,
        fit=fit,
        gravity=gravity,
        focal=focal,
        quality=quality,
        format=fmt,
        upscale=upscale,
    )
    return size, adapt


_MODE_LETTERS = {Gravity.CENTRE: "c", Gravity.ATTENTION: "a"}
_EXTENSIONS = {ImageFormat.JPEG: "jpg"}


def size_token(size: Size, *, width_hint: bool = False) -> str:
    """The canonical spelling of ``size``, the one an unsigned URL must use: no leading zeros,
    no DPR (already folded into the box), a box always with its mode letter (``650s``,
    ``894x1461s``, ``40c``) and the side only once when it is square, then ``q``, ``u``, ``w``
    and the format (``.jpg`` for JPEG), in that order. ``parse_size`` gives ``size`` back."""
    if size.output is Output.INFO:
        return INFO_TOKEN
    width, height = size.width, size.height
    if size.fit is Fit.INSIDE and (width is None or height is None):
        dims = f"{width}" if height is None else f"x{height}"
    else:
        if size.fit is Fit.INSIDE:
            mode = "s"
        elif size.gravity is Gravity.FOCAL and size.focal is not None:
            mode = f"f{size.focal[0]:g}-{size.focal[1]:g}"
        else:
            mode = _MODE_LETTERS[size.gravity]
        dims = f"{width}{mode}" if width == height else f"{width}x{height}{mode}"
    quality = f"q{size.quality}" if size.quality is not None else ""
    upscale = "u" if size.upscale else ""
    hint = "w" if width_hint else ""
    fmt = f".{_EXTENSIONS.get(size.format, size.format.value)}" if size.format else ""
    return dims + quality + upscale + hint + fmt


def _decode_segment(raw: str) -> str:
    try:
        segment = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("path is not valid percent-encoded UTF-8") from None
    if "/" in segment:  # %2F: one segment of the URL is one name of the key
        raise BadRequest("path has an encoded separator")
    return segment


def parse_path(
    raw_path: str,
    *,
    max_side: int,
    expect_signature: bool,
    presets: Mapping[str, Preset] | None = None,
) -> ParsedPath:
    """Parse a raw (still percent-encoded) request path, without its query string; a size
    segment that names one of ``presets`` takes that preset's size."""
    if not raw_path.startswith("/"):
        raise BadRequest("path must start with /")
    segments = raw_path[1:].split("/")
    signature = None
    if expect_signature and len(segments) >= 3 and SIGNATURE_RE.fullmatch(segments[0]):
        signature = segments.pop(0)
    if len(segments) < 2:
        raise BadRequest("expected /{prefix...}/{size}/{name}")
    *prefix, token, name = segments
    key = parse_key("/".join(_decode_segment(s) for s in [*prefix, name]))
    decoded = _decode_segment(token)
    preset = presets.get(decoded) if presets else None
    if preset is not None:
        size, adapt = preset.size, preset.adapt
    else:
        try:
            size, adapt = _parse_size(decoded, max_side)
        except BadRequest:
            if _SIZE_START_RE.match(decoded):
                raise  # a size token with a mistake: its own reason says which
            raise BadRequest(
                f"no size before the file name: {decoded!r} is not a size token "
                "(e.g. /recipes/1/280x194c/photo.jpg)"
            ) from None
    signed_path = "/" + "/".join(segments)
    return ParsedPath(
        signature,
        signed_path,
        Transform(key, size),
        token,
        adapt,
        preset.name if preset is not None else None,
    )


def build_path(key: str, size_token: str) -> str:
    """The unsigned path for ``key`` at ``size_token``: ``/{prefix...}/{size}/{name}``."""
    segments = key.strip("/").split("/")
    *prefix, name = segments
    return "/" + "/".join(quote(s, safe="") for s in [*prefix, size_token, name])
