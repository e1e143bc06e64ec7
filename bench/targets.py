"""One operation, each server's URL for it.

A rendition is named once as a tofu size token (``512s``, ``280x194c@2x``, ``750x500cq60``);
tofu's own parser turns it into a ``Size`` (DPR folded into the box), and here that becomes the
equivalent thumbor, nginx image_filter, ceiling and sharp path. JPEG quality is always explicit (80
unless the token says otherwise), so every server encodes at the same quality.
"""

from __future__ import annotations

from enum import StrEnum
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


def _quality(size: Size) -> int:
    return size.quality or DEFAULT_JPEG_QUALITY


def thumbor_path(key: str, size: Size) -> str:
    """``/unsafe/[fit-in/]WxH/filters:quality(Q):no_upscale()/KEY``. Width alone is ``Wx0``
    (height follows); COVER is thumbor's default crop (centred, smart detection off)."""
    filters = f"filters:quality({_quality(size)}):no_upscale()"
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


def ceiling_path(key: str, size: Size) -> str:
    """``/W/H/CROP/Q/KEY`` for bench/ceiling.py and bench/sharp_server.js (0 for an open side,
    CROP 0 or 1)."""
    crop = 1 if size.fit is Fit.COVER else 0
    return f"/{size.width or 0}/{size.height or 0}/{crop}/{_quality(size)}/{quote(key)}"


def path_for(kind: Kind, key: str, token: str, *, static_path: str = "/rendition.jpg") -> str:
    """The path ``kind`` serves ``key`` at ``token`` under (static: always the one file)."""
    if kind is Kind.TOFU:
        return build_path(key, token)
    if kind is Kind.STATIC:
        return static_path
    size = size_of(token)
    if kind is Kind.THUMBOR:
        return thumbor_path(key, size)
    if kind is Kind.NGINX:
        return nginx_path(key, size)
    return ceiling_path(key, size)


def paths_for(kind: Kind, pairs: list[tuple[str, str]], **kwargs: str) -> list[str]:
    cache: dict[tuple[str, str], str] = {}
    out = []
    for pair in pairs:
        path = cache.get(pair)
        if path is None:
            path = cache[pair] = path_for(kind, *pair, **kwargs)
        out.append(path)
    return out
