"""thumbor URLs: the grammar (cases from libthumbor's tests, cross-checked against libthumbor's
own parser), the canonical key, signing with vectors minted by the real libthumbor, the
configuration and the HTTP surface (in process)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pyvips
from aiohttp.test_utils import TestClient
from libthumbor import CryptoURL
from libthumbor.url import Url
from libthumbor.url_signers.base64_hmac_sha1 import UrlSigner

from tofu.config import Config, ConfigError
from tofu.errors import BadRequest, Forbidden
from tofu.frontends import Frontends, build_frontends
from tofu.frontends.thumbor import ThumborFrontend, parse_options, sign
from tofu.keys import Key
from tofu.transform import (
    NO_OPERATIONS,
    Colorize,
    Convolution,
    Curve,
    Fill,
    FillKind,
    Fit,
    Gravity,
    ImageFormat,
    Operations,
    RoundCorner,
    Sharpen,
    Size,
    Transform,
    Trim,
    TrimCorner,
    Watermark,
)
from tofu.urls import ParsedPath, parse_path

from .support.servers import SAMPLES

KEY = "my-security-key"
IMAGE = "recipes/1/cups.jpg"  # 1600x1000 in samples/
MakeClient = Callable[..., Awaitable[TestClient]]


def ops(**fields: Any) -> Operations:
    return Operations(**fields)


# (path after /unsafe/, the Size it means). The option combinations are libthumbor's
# tests/test_url_composer.py, test_url.py and test_cryptourl.py cases.
GRAMMAR_CASES: list[tuple[str, Size]] = [
    ("a.jpg", Size(None, None)),
    ("300x0/a.jpg", Size(300, None)),
    ("0x300/a.jpg", Size(None, 300)),
    ("200x300/a.jpg", Size(200, 300, Fit.COVER)),
    ("origx0/a.jpg", Size(None, None)),
    ("0xorig/a.jpg", Size(None, None)),
    ("100xorig/a.jpg", Size(100, None, Fit.COVER, operations=ops(original_height=True))),
    ("origx100/a.jpg", Size(None, 100, Fit.COVER, operations=ops(original_width=True))),
    (
        "origxorig/a.jpg",
        Size(None, None, Fit.COVER, operations=ops(original_width=True, original_height=True)),
    ),
    ("200x300/smart/a.jpg", Size(200, 300, Fit.COVER, Gravity.ATTENTION)),
    ("fit-in/200x300/a.jpg", Size(200, 300)),
    ("fit-in/200x0/a.jpg", Size(200, None)),
    ("adaptive-fit-in/200x300/a.jpg", Size(200, 300, operations=ops(adaptive=True))),
    ("full-fit-in/200x300/a.jpg", Size(200, 300, Fit.OUTSIDE)),
    (
        "adaptive-full-fit-in/200x300/a.jpg",
        Size(200, 300, Fit.OUTSIDE, operations=ops(adaptive=True)),
    ),
    ("fit-in/200x300/smart/a.jpg", Size(200, 300)),  # nothing to crop
    ("-0x0/a.jpg", Size(None, None, operations=ops(flip_horizontal=True))),
    ("-200x0/a.jpg", Size(200, None, operations=ops(flip_horizontal=True))),
    ("0x-0/a.jpg", Size(None, None, operations=ops(flip_vertical=True))),
    ("0x-200/a.jpg", Size(None, 200, operations=ops(flip_vertical=True))),
    (
        "-0x-0/a.jpg",
        Size(None, None, operations=ops(flip_horizontal=True, flip_vertical=True)),
    ),
    (
        "-200x-300/a.jpg",
        Size(200, 300, Fit.COVER, operations=ops(flip_horizontal=True, flip_vertical=True)),
    ),
    ("left/a.jpg", Size(None, None)),  # no box: nothing to align
    ("left/top/a.jpg", Size(None, None)),
    ("200x300/left/a.jpg", Size(200, 300, Fit.COVER, Gravity.FOCAL, (0.0, 50.0))),
    ("200x300/top/a.jpg", Size(200, 300, Fit.COVER, Gravity.FOCAL, (50.0, 0.0))),
    ("200x300/right/bottom/a.jpg", Size(200, 300, Fit.COVER, Gravity.FOCAL, (100.0, 100.0))),
    ("200x300/center/middle/a.jpg", Size(200, 300, Fit.COVER)),
    ("200x300/left/smart/a.jpg", Size(200, 300, Fit.COVER, Gravity.ATTENTION)),
    ("trim/a.jpg", Size(None, None, operations=ops(trim=Trim()))),
    (
        "trim:bottom-right:15/a.jpg",
        Size(None, None, operations=ops(trim=Trim(TrimCorner.BOTTOM_RIGHT, 15))),
    ),
    ("trim:top-left/a.jpg", Size(None, None, operations=ops(trim=Trim(TrimCorner.TOP_LEFT)))),
    ("trim:15/a.jpg", Size(None, None, operations=ops(trim=Trim(TrimCorner.TOP_LEFT, 15)))),
    ("10x20:30x40/a.jpg", Size(None, None, operations=ops(crop=(10, 20, 30, 40)))),
    ("0x0:0x0/a.jpg", Size(None, None)),  # thumbor: no crop
    ("30x20:10x40/a.jpg", Size(None, None)),  # empty box: ignored, as thumbor does
    (
        "10x20:30x40/fit-in/100x0/a.jpg",
        Size(100, None, operations=ops(crop=(10, 20, 30, 40))),
    ),
    (
        "filters:quality(20):brightness(10)/a.jpg",
        Size(None, None, quality=20, operations=ops(brightness=10)),
    ),
    ("300x0/filters:quality(150)/a.jpg", Size(300, None, quality=100)),
    ("300x0/filters:quality(abc)/a.jpg", Size(300, None)),  # bad arguments: ignored
    ("300x0/filters:format(webp)/a.jpg", Size(300, None, format=ImageFormat.WEBP)),
    ("300x0/filters:format(JPG)/a.jpg", Size(300, None, format=ImageFormat.JPEG)),
    ("300x0/filters:format(gif)/a.jpg", Size(300, None, format=ImageFormat.GIF)),
    ("300x0/filters:format(avif)/a.jpg", Size(300, None, format=ImageFormat.AVIF)),
    ("300x0/filters:format(heic)/a.jpg", Size(300, None)),  # not encoded by tofu: none
    ("300x0/filters:format(bmp)/a.jpg", Size(300, None)),  # thumbor: not allowed, none
    ("300x0/filters:no_upscale():strip_icc():strip_exif()/a.jpg", Size(300, None)),
    ("fit-in/300x300/filters:upscale()/a.jpg", Size(300, 300, upscale=True)),
    ("300x0/filters:grayscale()/a.jpg", Size(300, None, operations=ops(grayscale=True))),
    ("300x0/filters:rotate(90)/a.jpg", Size(300, None, operations=ops(rotate=90))),
    ("300x0/filters:rotate(450)/a.jpg", Size(300, None, operations=ops(rotate=90))),
    ("300x0/filters:rotate(-90)/a.jpg", Size(300, None, operations=ops(rotate=270))),
    ("300x0/filters:rotate(45)/a.jpg", Size(300, None)),  # thumbor: right angles only
    ("300x0/filters:max_bytes(5000)/a.jpg", Size(300, None, operations=ops(max_bytes=5000))),
    ("300x0/filters:blur(3)/a.jpg", Size(300, None, operations=ops(blur=(3, 3.0)))),
    ("300x0/filters:blur(3,1.5)/a.jpg", Size(300, None, operations=ops(blur=(3, 1.5)))),
    ("300x0/filters:blur(500)/a.jpg", Size(300, None, operations=ops(blur=(150, 150.0)))),
    ("300x0/filters:blur(0)/a.jpg", Size(300, None)),  # radius must be > 0
    ("300x0/filters:blur(2,-3)/a.jpg", Size(300, None, operations=ops(blur=(2, 3.0)))),
    # A huge sigma is a box blur of the radius: capped, so libvips' mask stays small.
    ("300x0/filters:blur(1,1000000)/a.jpg", Size(300, None, operations=ops(blur=(1, 7.0)))),
    ("300x0/filters:contrast(-40)/a.jpg", Size(300, None, operations=ops(contrast=-40))),
    (
        "300x0/filters:round_corner(20|40,255,0,0)/a.jpg",
        Size(300, None, operations=ops(round_corner=RoundCorner(20, 40, (255, 0, 0, 255)))),
    ),
    (
        "300x0/filters:round_corner(20,0,0,0,1)/a.jpg",
        Size(300, None, operations=ops(round_corner=RoundCorner(20, 20, (0, 0, 0, 0)))),
    ),
    (
        "fit-in/300x300/filters:fill(red)/a.jpg",
        Size(300, 300, operations=ops(fill=Fill(FillKind.COLOUR, (255, 0, 0, 255)))),
    ),
    (
        "fit-in/300x300/filters:fill(00ff00,true)/a.jpg",
        Size(300, 300, operations=ops(fill=Fill(FillKind.COLOUR, (0, 255, 0, 255), True))),
    ),
    (
        "fit-in/300x300/filters:fill(transparent)/a.jpg",
        Size(300, 300, operations=ops(fill=Fill(FillKind.COLOUR, (0, 0, 0, 0)))),
    ),
    (
        "fit-in/300x300/filters:fill(blur)/a.jpg",
        Size(300, 300, operations=ops(fill=Fill(FillKind.BLUR))),
    ),
    (
        "fit-in/300x300/filters:fill(auto)/a.jpg",
        Size(300, 300, operations=ops(fill=Fill(FillKind.AUTO))),
    ),
    (
        "300x200/filters:background_color(fff)/a.jpg",
        Size(300, 200, Fit.COVER, operations=ops(background=(255, 255, 255, 255))),
    ),
    (
        "300x200/filters:focal(10x20:110x220)/a.jpg",
        Size(300, 200, Fit.COVER, Gravity.FOCAL, operations=ops(focal_box=(10, 20, 110, 220))),
    ),
    ("300x0/filters:focal(10x20:110x220)/a.jpg", Size(300, None)),  # nothing is cropped
    ("10000x0/a.jpg", Size(4096, None)),  # clamped, as thumbor's MAX_WIDTH does
    (
        "300x0/filters:sharpen(2,1.5,true)/a.jpg",
        Size(300, None, operations=ops(sharpen=Sharpen(2.0, 1.5, True))),
    ),
    ("300x0/filters:saturation(1.5)/a.jpg", Size(300, None, operations=ops(saturation=1.5))),
    ("300x0/filters:saturation(1)/a.jpg", Size(300, None)),  # changes nothing
    ("300x0/filters:rgb(10,-20,0)/a.jpg", Size(300, None, operations=ops(rgb=(10, -20, 0)))),
    ("300x0/filters:rgb(0,0,0)/a.jpg", Size(300, None)),
    ("300x0/filters:equalize()/a.jpg", Size(300, None, operations=ops(equalize=True))),
    (
        "300x0/filters:colorize(10,20,30,ff8000)/a.jpg",
        Size(300, None, operations=ops(colorize=Colorize(10, 20, 30, (255, 128, 0)))),
    ),
    ("300x0/filters:proportion(0.5)/a.jpg", Size(300, None, operations=ops(proportion=0.5))),
    ("300x0/filters:proportion(1.5)/a.jpg", Size(300, None)),  # thumbor: (0, 1] only
    ("300x0/filters:proportion(1)/a.jpg", Size(300, None)),
    ("300x200/filters:stretch()/a.jpg", Size(300, 200, Fit.COVER, operations=ops(stretch=True))),
    ("300x0/filters:max_age(60)/a.jpg", Size(300, None, operations=ops(max_age=60))),
    ("300x0/filters:max_age(0)/a.jpg", Size(300, None, operations=ops(max_age=0))),
    ("300x0/filters:autojpg()/a.jpg", Size(300, None, operations=ops(auto_jpeg=True))),
    ("300x0/filters:autojpg(true)/a.jpg", Size(300, None, operations=ops(auto_jpeg=True))),
    ("300x0/filters:autojpg(0)/a.jpg", Size(300, None)),
    ("300x0/filters:noise(20)/a.jpg", Size(300, None, operations=ops(noise=(20, 0)))),
    ("300x0/filters:noise(20,7)/a.jpg", Size(300, None, operations=ops(noise=(20, 7)))),
    ("300x0/filters:noise(0)/a.jpg", Size(300, None)),
    (
        "300x0/filters:convolution(1;2;1;2;4;2;1;2;1,3)/a.jpg",
        Size(
            300,
            None,
            operations=ops(convolution=Convolution((1, 2, 1, 2, 4, 2, 1, 2, 1), 3, True)),
        ),
    ),
    (
        "300x0/filters:convolution(-1;0.5;-1,3,false)/a.jpg",
        Size(300, None, operations=ops(convolution=Convolution((-1, 0.5, -1), 3, False))),
    ),
    (
        "300x0/filters:curve([(0,0),(255,255)],[(0,9)],[(0,0),(128,200),(255,255)],[(0,0),(255,255)])/a.jpg",
        Size(
            300,
            None,
            operations=ops(
                curve=Curve(
                    ((0, 0), (255, 255)),
                    ((0, 9),),
                    ((0, 0), (128, 200), (255, 255)),
                    ((0, 0), (255, 255)),
                )
            ),
        ),
    ),
    (
        "300x0/filters:watermark(w/m.png,-10,20p,50)/a.jpg",
        Size(300, None, operations=ops(watermarks=(Watermark(Key("w/m.png"), "-10", "20p", 50),))),
    ),
    (
        "300x0/filters:watermark('w/m.png',-0,center,0,30,none):watermark(x.png,repeat,007,100,0,20)/a.jpg",
        Size(
            300,
            None,
            operations=ops(
                watermarks=(
                    Watermark(Key("w/m.png"), "-0", "center", 0, 30, None),
                    Watermark(Key("x.png"), "repeat", "7", 100, None, 20),
                )
            ),
        ),
    ),
    # Arguments that do not match the filter's pattern: ignored, as thumbor ignores them.
    ("300x0/filters:watermark(m.png,left,0,0)/a.jpg", Size(300, None)),
    ("300x0/filters:colorize(10,20,30)/a.jpg", Size(300, None)),
]


@pytest.mark.parametrize(("path", "size"), GRAMMAR_CASES)
def test_grammar_cases(path: str, size: Size) -> None:
    transform = parse_options(path, max_side=4096)
    assert transform == Transform("a.jpg", size)
    assert hash(transform) == hash(Transform("a.jpg", size))


@pytest.mark.parametrize(("path", "size"), GRAMMAR_CASES)
def test_grammar_parts_agree_with_libthumbor(path: str, size: Size) -> None:
    """libthumbor's own parser (the specification) splits every case the same way."""
    theirs = Url.parse_decrypted(path)
    assert theirs is not None
    assert theirs["image"] == "a.jpg"
    ours = parse_options(path, max_side=4096).size
    assert ours.operations.flip_horizontal == theirs["horizontal_flip"]
    assert ours.operations.flip_vertical == theirs["vertical_flip"]
    assert (ours.operations.trim is not None) == bool(theirs["trim"])
    crop = theirs["crop"]
    if ours.operations.crop is not None:
        assert ours.operations.crop == (crop["left"], crop["top"], crop["right"], crop["bottom"])
    if theirs["fit_in"]:
        assert ours.fit is (Fit.OUTSIDE if theirs["full"] else Fit.INSIDE)
        assert ours.operations.adaptive == theirs["adaptive"]
    if ours.gravity is Gravity.ATTENTION:
        assert theirs["smart"]
    if isinstance(theirs["width"], int) and theirs["width"] and ours.width:
        assert ours.width == min(theirs["width"], 4096)


def resolve(frontends: Frontends, raw_path: str) -> ParsedPath:
    """What the image handler does: the claiming front end parses and verifies."""
    frontend = frontends.select(raw_path)
    parsed = frontend.parse(raw_path)
    frontend.verify(parsed)
    return parsed


def test_a_thumbor_url_and_the_tofu_url_for_it_are_one_cache_key() -> None:
    config = Config(origin=(str(SAMPLES),), dev=True)
    frontends = build_frontends(config)
    thumbor = resolve(frontends, "/unsafe/300x200/recipes/1/cups.jpg").transform
    tofu = resolve(frontends, "/recipes/1/300x200c/cups.jpg").transform
    assert thumbor == tofu and hash(thumbor) == hash(tofu)
    assert thumbor.size.operations is NO_OPERATIONS
    pairs = [
        ("/unsafe/fit-in/300x200/recipes/1/cups.jpg", "/recipes/1/300x200/cups.jpg"),
        ("/unsafe/300x0/recipes/1/cups.jpg", "/recipes/1/300/cups.jpg"),
        ("/unsafe/0x200/recipes/1/cups.jpg", "/recipes/1/x200/cups.jpg"),
        ("/unsafe/300x200/smart/recipes/1/cups.jpg", "/recipes/1/300x200a/cups.jpg"),
        (
            "/unsafe/300x200/filters:quality(60):format(webp)/recipes/1/cups.jpg",
            "/recipes/1/300x200cq60.webp/cups.jpg",
        ),
        ("/unsafe/300x200/left/top/recipes/1/cups.jpg", "/recipes/1/300x200f0-0/cups.jpg"),
    ]
    for thumbor_path, tofu_path in pairs:
        assert resolve(frontends, thumbor_path).transform == resolve(frontends, tofu_path).transform


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("300x0/some%2Fpath%2Fimg.jpg", "some/path/img.jpg"),
        ("300x0/my%20photo.jpg", "my photo.jpg"),
        ("300x0/image.jpg%3Fts%3D1", "image.jpg?ts=1"),
        ("300x0/caf%C3%A9.jpg", "café.jpg"),
        ("300x0//a/b.jpg", "a/b.jpg"),  # thumbor's file loader strips leading slashes
        ("trim::15/a.jpg", "trim::15/a.jpg"),  # not a trim in libthumbor's pattern either
    ],
)
def test_image_keys(path: str, key: str) -> None:
    assert parse_options(path, max_side=4096).key == key


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("meta/trim/300x200/a.jpg", "meta/ with trim"),
        ("debug/a.jpg", "debug/"),
        ("300x0/http%3A%2F%2Fexample.com%2Fa.jpg", "not a URL"),
        ("300x0/https://example.com/a.jpg", "not a URL"),
        ("300x0/../secret.jpg", "dot segment"),
        ("300x0/%2e%2e/secret.jpg", "dot segment"),
        ("300x0/a/%2E/b.jpg", "dot segment"),
        ("300x0/%FF.jpg", "UTF-8"),
        ("", "no original image"),
        ("fit-in/300x300/filters:fill(nocolour)/a.jpg", "unknown colour"),
        ("300x0/filters:frame(f.png)/a.jpg", "frame (a nine-patch border"),
        ("300x0/filters:unknown(1):quality(50)/a.jpg", "unknown filter 'unknown'"),
        ("300x0/filters:quality(50):redeye()/a.jpg", "unknown filter 'redeye'"),
        ("300x0/filters:Quality(50)/a.jpg", "unknown filter 'Quality'"),
        ("300x0/filters:watermark(../m.png,0,0,0)/a.jpg", "dot segment"),
        ("300x0/filters:watermark(http://e.com/m.png,0,0,0)/a.jpg", "not a URL"),
    ],
)
def test_bad_urls_are_400_with_the_reason(path: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(reason)):
        parse_options(path, max_side=4096)


@pytest.mark.parametrize(
    "filters", ["frame(f.png)", "unknown(1)", "redeye()", "Quality(50)", "(1)"]
)
def test_lenient_ignores_what_is_not_rendered(filters: str) -> None:
    """--thumbor-lenient: thumbor's own treatment of what it does not know."""
    path = f"300x0/filters:{filters}:quality(50)/a.jpg"
    assert parse_options(path, max_side=4096, lenient=True).size == Size(300, None, quality=50)


def test_every_thumbor_builtin_filter_is_rendered_or_refused_by_name() -> None:
    """thumbor 7's BUILTIN_FILTERS (its source, in the side-by-side suite's thumbor): each
    one parses to an effect or is refused with a reason that names it, never ignored."""
    builtin = {
        "brightness": "brightness(10)", "colorize": "colorize(1,2,3,ff0000)",
        "contrast": "contrast(10)", "rgb": "rgb(1,2,3)", "round_corner": "round_corner(5,0,0,0)",
        "quality": "quality(50)", "noise": "noise(5)", "watermark": "watermark(m.png,0,0,0)",
        "equalize": "equalize()", "fill": "fill(red)", "sharpen": "sharpen(1,1,true)",
        "strip_exif": "strip_exif()", "strip_icc": "strip_icc()", "frame": "frame(f.png)",
        "grayscale": "grayscale()", "rotate": "rotate(90)", "format": "format(webp)",
        "max_bytes": "max_bytes(1000)", "convolution": "convolution(1,1)", "blur": "blur(2)",
        "extract_focal": "extract_focal()", "focal": "focal(1x1:9x9)",
        "no_upscale": "no_upscale()", "saturation": "saturation(2)", "max_age": "max_age(5)",
        "curve": "curve([(0,0)],[(0,0)],[(0,0)],[(0,0)])",
        "background_color": "background_color(red)",
        "upscale": "upscale()", "proportion": "proportion(0.5)", "stretch": "stretch()",
    }  # fmt: skip
    # Filters tofu does anyway (strip_*: all metadata goes; no_upscale: the default) or that
    # need more of the URL to show (extract_focal: an inner URL).
    no_difference = {"strip_exif", "strip_icc", "no_upscale", "extract_focal"}
    plain = parse_options("300x200/m.png", max_side=4096)
    for name, call in builtin.items():
        path = f"300x200/filters:{call}/m.png"
        if name == "frame":
            with pytest.raises(BadRequest, match=name):
                parse_options(path, max_side=4096)
            continue
        parsed = parse_options(path, max_side=4096)
        assert (parsed == plain) is (name in no_difference), name


# --- signing ---------------------------------------------------------------------------------

LIBTHUMBOR_OPTIONS: list[dict[str, Any]] = [
    {"width": 300, "height": 200},
    {"width": 300},
    {"height": 300, "flop": True},
    {"width": 300, "height": 200, "flip": True, "flop": True, "smart": True},
    {"fit_in": True, "width": 300, "height": 200},
    {"adaptive_full_fit_in": True, "width": 200, "height": 300},
    {"crop": ((10, 20), (300, 400)), "width": 100, "height": 100},
    {"trim": ("bottom-right", 15), "width": 100},
    {"halign": "left", "valign": "top", "width": 100, "height": 100},
    {"width": 100, "height": 100, "filters": ["quality(20)", "brightness(10)", "fill(blur)"]},
    {"width": 100, "filters": ["format(webp)", "round_corner(20|40,255,0,0)"]},
]


@pytest.mark.parametrize("options", LIBTHUMBOR_OPTIONS)
@pytest.mark.parametrize(
    "image", [IMAGE, "recipes/1/cups.jpg%3Fts%3D1", "my%20photos/caf%C3%A9.jpg"]
)
def test_urls_signed_by_libthumbor_verify(options: dict[str, Any], image: str) -> None:
    url = CryptoURL(key=KEY).generate(image_url=image, **options)
    frontend = ThumborFrontend([KEY], allow_unsafe=False, max_side=4096)
    assert frontend.claims(url)
    parsed = frontend.parse(url)
    frontend.verify(parsed)
    # The same bytes as libthumbor's signer (thumbor's base64_hmac_sha1).
    signature = url.split("/")[1]
    assert sign(parsed.signed_path, KEY) == signature
    assert UrlSigner(KEY).signature(parsed.signed_path).decode() == signature
    # Another key, a changed path, or another URL's signature: refused.
    for bad in (
        ThumborFrontend(["other-key"], allow_unsafe=False, max_side=4096),
        ThumborFrontend([], allow_unsafe=True, max_side=4096),
    ):
        with pytest.raises(Forbidden):
            bad.verify(parsed)
    tampered = url.replace("/recipes/", "/recipez/").replace("/my%20", "/my%21")
    with pytest.raises(Forbidden):
        frontend.verify(frontend.parse(tampered))
    other = CryptoURL(key=KEY).generate(image_url=image, width=999)
    reused = "/" + other.split("/")[1] + url[1 + len(signature) :]
    with pytest.raises(Forbidden):
        frontend.verify(frontend.parse(reused))


def test_pinned_vector_from_libthumbor() -> None:
    """Minted once with libthumbor 2.0.2: CryptoURL(key="my-security-key").generate(
    width=300, height=200, image_url="my.server.com/some/path/to/image.jpg")."""
    url = "/8ammJH8D-7tXy6kU3lTvoXlhu4o=/300x200/my.server.com/some/path/to/image.jpg"
    assert (
        CryptoURL(key=KEY).generate(
            width=300, height=200, image_url="my.server.com/some/path/to/image.jpg"
        )
        == url
    )
    frontend = ThumborFrontend([KEY], allow_unsafe=False, max_side=4096)
    frontend.verify(frontend.parse(url))


def test_rotation_and_an_encoded_padding_character() -> None:
    url = CryptoURL(key="new-key").generate(image_url=IMAGE, width=100)
    frontend = ThumborFrontend(["old-key", "new-key"], allow_unsafe=False, max_side=4096)
    frontend.verify(frontend.parse(url))
    encoded = url.replace("=/", "%3D/", 1)
    assert frontend.claims(encoded)
    frontend.verify(frontend.parse(encoded))


def test_unsafe_needs_permission() -> None:
    closed = ThumborFrontend([KEY], allow_unsafe=False, max_side=4096)
    with pytest.raises(Forbidden, match="unsafe"):
        closed.verify(closed.parse("/unsafe/300x200/a.jpg"))
    opened = ThumborFrontend([], allow_unsafe=True, max_side=4096)
    opened.verify(opened.parse("/unsafe/300x200/a.jpg"))


def test_shapes_claimed() -> None:
    frontend = ThumborFrontend([KEY], allow_unsafe=False, max_side=4096)
    assert frontend.claims("/unsafe/a.jpg")
    assert frontend.claims("/" + "A" * 27 + "=/a.jpg")
    assert not frontend.claims("/" + "A" * 43 + "/recipes/300/a.jpg")  # a tofu signature
    assert not frontend.claims("/recipes/1/300x200c/cups.jpg")
    assert not frontend.claims("/unsafely/300/a.jpg")


# --- configuration -------------------------------------------------------------------------


def test_thumbor_keys_are_taken_byte_for_byte() -> None:
    first, second = "a key, with commas" + "x" * 14, " spaced " + "y" * 24
    config = Config.load({"origin": str(SAMPLES), "thumbor_key": [first, second]}, {})
    assert config.thumbor_key == (first, second)
    from_env = Config.load({"origin": str(SAMPLES)}, {"TOFU_THUMBOR_KEY": f"{first}\n{second}\n"})
    assert from_env.thumbor_key == (first, second)
    assert from_env.describe()["thumbor_key"] == ["********", "********"]


def test_a_thumbor_key_or_unsafe_thumbor_urls_alone_are_valid_setups() -> None:
    Config.load({"origin": str(SAMPLES), "thumbor_key": ["k" * 32]}, {})
    Config.load({"origin": str(SAMPLES), "thumbor_unsafe": True}, {})
    with pytest.raises(ConfigError, match="--thumbor-key"):
        Config.load({"origin": str(SAMPLES)}, {})


def test_tofu_urls_keep_their_meaning_when_thumbor_is_off() -> None:
    config = Config(origin=(str(SAMPLES),), sizes=("300",))
    parsed = resolve(build_frontends(config), "/unsafe/300/a.jpg")
    assert (
        parsed.transform
        == parse_path("/unsafe/300/a.jpg", max_side=4096, expect_signature=False).transform
    )
    assert parsed.transform.key == "unsafe/a.jpg"


# --- HTTP ----------------------------------------------------------------------------------


async def _get(client: TestClient, path: str) -> tuple[int, bytes, str]:
    async with client.get(path) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


def _dimensions(body: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.width, image.height


async def test_dev_mode_serves_unsafe_urls(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    status, body, content_type = await _get(client, f"/unsafe/300x200/{IMAGE}")
    assert (status, content_type, _dimensions(body)) == (200, "image/jpeg", (300, 200))
    status, body, content_type = await _get(
        client, f"/unsafe/fit-in/200x200/filters:format(png):rotate(90)/{IMAGE}"
    )
    assert (status, content_type, _dimensions(body)) == (200, "image/png", (125, 200))


async def test_production_mode(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), thumbor_key=("k1", "k2"))
    signed = CryptoURL(key="k2").generate(image_url=IMAGE, width=300, height=200)
    status, body, _ = await _get(client, signed)
    assert status == 200 and _dimensions(body) == (300, 200)
    for path, reason in [
        (f"/unsafe/300x200/{IMAGE}", "unsafe thumbor URLs are not allowed"),
        (CryptoURL(key="k3").generate(image_url=IMAGE, width=300), "invalid thumbor signature"),
        (signed.replace("300x200", "300x201"), "invalid thumbor signature"),
        ("/recipes/1/300x200c/cups.jpg", "size not in the allowlist"),  # tofu's grammar: closed
    ]:
        status, body, _ = await _get(client, path)
        assert status == 403 and body.decode().startswith(reason), path
    status, _, _ = await _get(client, "/unsafe/meta/trim/a.jpg")
    assert status == 400  # malformed before unauthorised, as for tofu's own URLs


async def test_thumbor_unsafe_flag_opens_unsafe_urls(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), secret=("s",), thumbor_unsafe=True)
    status, _, _ = await _get(client, f"/unsafe/300x0/{IMAGE}")
    assert status == 200
    status, body, content_type = await _get(client, f"/unsafe/meta/300x0/{IMAGE}")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["thumbor"]["target"] == {"width": 300, "height": 188}


async def test_one_render_for_a_thumbor_url_and_its_tofu_twin(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    first = await _get(client, f"/unsafe/300x200/{IMAGE}")
    second = await _get(client, "/recipes/1/300x200c/cups.jpg")
    assert first == second and first[0] == 200
    async with client.get("/metrics") as response:
        metrics = await response.text()
    assert re.search(r"^tofu_renders_total 1\.0$", metrics, re.MULTILINE), metrics


# --- numbers at the boundary ------------------------------------------------------------------

HUGE = "9" * 401  # past every C integer and double: a 500 with a traceback before ranges

# Each filter argument and numeric URL part outside its range: a 400 at parse time naming the
# part, so no render ever sees the value (thumbor's ranges where its docs give one).
OUT_OF_RANGE: list[tuple[str, str]] = [
    (f"300x0/filters:brightness({HUGE})/a.jpg", "brightness"),
    ("300x0/filters:brightness(101)/a.jpg", "brightness"),
    (f"300x0/filters:brightness(-{HUGE})/a.jpg", "brightness"),
    (f"300x0/filters:contrast({HUGE})/a.jpg", "contrast"),
    ("300x0/filters:contrast(-101)/a.jpg", "contrast"),
    (f"300x0/filters:round_corner({HUGE},0,0,0)/a.jpg", "round_corner"),
    (f"300x0/filters:round_corner(20|{HUGE},0,0,0)/a.jpg", "round_corner"),
    ("300x0/filters:round_corner(20,256,0,0)/a.jpg", "round_corner"),
    (f"300x0/filters:round_corner(20,0,0,{HUGE})/a.jpg", "round_corner"),
    (f"trim:{HUGE}/300x0/a.jpg", "trim"),
    ("trim:top-left:443/300x0/a.jpg", "trim"),
    (f"300x200/filters:focal(0x0:{HUGE}x1)/a.jpg", "focal"),
    ("300x200/filters:focal(0x0:10000001x1)/a.jpg", "focal"),
    (f"{HUGE}x0:{HUGE}x1/300x0/a.jpg", "crop"),
    (f"300x0/filters:rotate({HUGE})/a.jpg", "rotate"),
    (f"300x0/filters:max_bytes({HUGE})/a.jpg", "max_bytes"),
    ("300x0/filters:sharpen(101,1,true)/a.jpg", "sharpen(amount)"),
    (f"300x0/filters:sharpen(1,{HUGE},true)/a.jpg", "sharpen(radius)"),
    (f"300x0/filters:saturation({HUGE})/a.jpg", "saturation"),
    ("300x0/filters:saturation(-101)/a.jpg", "saturation"),
    ("300x0/filters:rgb(101,0,0)/a.jpg", "rgb"),
    (f"300x0/filters:rgb(0,0,-{HUGE})/a.jpg", "rgb"),
    ("300x0/filters:colorize(101,0,0,ff0000)/a.jpg", "colorize"),
    ("300x0/filters:colorize(1,0,0,red)/a.jpg", "colorize(fill)"),
    ("300x0/filters:colorize(1,0,0,ff00)/a.jpg", "colorize(fill)"),
    ("300x0/filters:noise(101)/a.jpg", "noise(amount)"),
    (f"300x0/filters:noise(10,{HUGE})/a.jpg", "noise(seed)"),
    ("300x0/filters:convolution(1;1,2)/a.jpg", "convolution"),
    ("300x0/filters:convolution(1;1;1;1;1;1,3)/a.jpg", "convolution"),  # 2 rows
    (f"300x0/filters:convolution({';'.join(['1'] * 289)},17)/a.jpg", "convolution"),
    (f"300x0/filters:convolution(1;{HUGE};1,3)/a.jpg", "convolution(matrix)"),
    ("300x0/filters:curve([(0,0),(256,255)],[],[],[])/a.jpg", "curve"),
    ("300x0/filters:curve([(9,0),(5,255)],[(0,0)],[(0,0)],[(0,0)])/a.jpg", "curve"),
    ("300x0/filters:curve([],[(0,0)],[(0,0)],[(0,0)])/a.jpg", "curve"),
    ("300x0/filters:watermark(m.png,0,0,101)/a.jpg", "watermark(alpha)"),
    (f"300x0/filters:watermark(m.png,{HUGE},0,0)/a.jpg", "watermark(x)"),
    ("300x0/filters:watermark(m.png,0,101p,0)/a.jpg", "watermark(y)"),
    ("300x0/filters:watermark(m.png,0,0,0,101,none)/a.jpg", "watermark(w_ratio)"),
    ("300x0/filters:watermark(m.png,0,0,0,none,-5)/a.jpg", "watermark(h_ratio)"),
    (
        "300x0/filters:" + ":".join(["watermark(m.png,0,0,0)"] * 5) + "/a.jpg",
        "at most 4 watermarks",
    ),
]


@pytest.mark.parametrize(("path", "part"), OUT_OF_RANGE)
def test_numbers_out_of_range_are_400_naming_the_part(path: str, part: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(part)) as caught:
        parse_options(path, max_side=4096)
    assert len(caught.value.reason) < 120, caught.value.reason  # one short line, not the number


# Where thumbor clamps (sizes to MAX_WIDTH, quality, blur's radius to 150, its sigma), huge
# values clamp.
CLAMPED: list[tuple[str, Size]] = [
    (f"{HUGE}x0/a.jpg", Size(4096, None)),
    (f"300x0/filters:blur({HUGE})/a.jpg", Size(300, None, operations=ops(blur=(150, 150.0)))),
    (f"300x0/filters:blur(2,{HUGE})/a.jpg", Size(300, None, operations=ops(blur=(2, 14.0)))),
    ("300x0/filters:quality(0)/a.jpg", Size(300, None, quality=1)),
    (f"300x0/filters:quality({HUGE})/a.jpg", Size(300, None, quality=100)),
    # Any lifetime, as thumbor takes it (the response says at most --max-age).
    (f"300x0/filters:max_age({HUGE})/a.jpg", Size(300, None, operations=ops(max_age=315360000))),
]


@pytest.mark.parametrize(("path", "size"), CLAMPED)
def test_numbers_thumbor_clamps_are_clamped(path: str, size: Size) -> None:
    assert parse_options(path, max_side=4096).size == size


async def test_huge_filter_numbers_over_http_are_one_line_400s(make_client: MakeClient) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    for path, part in OUT_OF_RANGE:
        status, body, _ = await _get(client, f"/unsafe/{path.replace('a.jpg', IMAGE)}")
        text = body.decode()
        assert status == 400 and part in text and text.count("\n") == 1, (path, status, text)
    status, _, _ = await _get(client, f"/unsafe/300x200/{IMAGE}")
    assert status == 200
