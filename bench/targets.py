"""One operation, each server's URL for it.

A rendition is named once as a tofu size token (``512s``, ``280x194c@2x``, ``750x500cq60``);
tofu's own parser turns it into a ``Size`` (DPR folded into the box), and here that becomes the
equivalent thumbor, nginx image_filter, ceiling and sharp path. JPEG quality is always explicit (80
unless the token says otherwise), so every server encodes at the same quality.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import quote

from tofu.transform import Fit, Size
from tofu.urls import build_path, parse_size

DEFAULT_JPEG_QUALITY = 80
MAX_SIDE = 8192


class Kind(StrEnum):
    TOFU = "tofu"
    THUMBOR = "thumbor"
    NGINX = "nginx"  # image_filter (bare or behind proxy_cache)
    CEILING = "ceiling"
    SHARP = "sharp"  # bench/sharp_server.js, the ceiling's path scheme
    STATIC = "static"  # nginx serving one prepared file


def size_of(token: str) -> Size:
    return parse_size(token, MAX_SIDE)


def _quality(size: Size, explicit: bool = True) -> int:
    """The quality a URL names: the token's, else 80 when ``explicit``, else 0 (none: each
    server's default for the format it answers)."""
    return size.quality or (DEFAULT_JPEG_QUALITY if explicit else 0)


def thumbor_path(key: str, size: Size, explicit_quality: bool = True) -> str:
    """``/unsafe/[fit-in/]WxH/filters:quality(Q):no_upscale()/KEY``. Width alone is ``Wx0``
    (height follows); COVER is thumbor's default crop (centred, smart detection off). No
    quality filter when none is named (thumbor's QUALITY, WEBP_QUALITY, AVIF_QUALITY)."""
    quality = _quality(size, explicit_quality)
    filters = (f"filters:quality({quality}):" if quality else "filters:") + "no_upscale()"
    w, h = size.width or 0, size.height or 0
    fit_in = size.fit is Fit.INSIDE and w and h
    return f"/unsafe/{'fit-in/' if fit_in else ''}{w}x{h}/{filters}/{quote(key)}"


def nginx_path(key: str, size: Size) -> str:
    """``/resize/W/H/Q/KEY`` or ``/crop/W/H/Q/KEY`` for the generated image_filter config;
    ``-`` for an open side."""
    op = "crop" if size.fit is Fit.COVER else "resize"
    w = str(size.width) if size.width else "-"
    h = str(size.height) if size.height else "-"
    return f"/{op}/{w}/{h}/{_quality(size)}/{quote(key)}"


def ceiling_path(key: str, size: Size, explicit_quality: bool = True) -> str:
    """``/W/H/CROP/Q/KEY`` for bench/ceiling.py and bench/sharp_server.js (0 for an open side,
    CROP 0 or 1; Q 0: the format's default, sharp only)."""
    crop = 1 if size.fit is Fit.COVER else 0
    quality = _quality(size, explicit_quality)
    return f"/{size.width or 0}/{size.height or 0}/{crop}/{quality}/{quote(key)}"


def path_for(
    kind: Kind,
    key: str,
    token: str,
    *,
    static_path: str = "/rendition.jpg",
    explicit_quality: bool = True,
) -> str:
    """The path ``kind`` serves ``key`` at ``token`` under (static: always the one file).
    ``explicit_quality`` False: only a token's own q is named (tofu's URLs never add one)."""
    if kind is Kind.TOFU:
        return build_path(key, token)
    if kind is Kind.STATIC:
        return static_path
    size = size_of(token)
    if kind is Kind.THUMBOR:
        return thumbor_path(key, size, explicit_quality)
    if kind is Kind.NGINX:
        return nginx_path(key, size)
    return ceiling_path(key, size, explicit_quality)


def paths_for(kind: Kind, pairs: list[tuple[str, str]], **kwargs: Any) -> list[str]:
    cache: dict[tuple[str, str], str] = {}
    out = []
    for pair in pairs:
        path = cache.get(pair)
        if path is None:
            path = cache[pair] = path_for(kind, *pair, **kwargs)
        out.append(path)
    return out
