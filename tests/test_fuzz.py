"""Fuzzing both URL grammars and the hint headers (Hypothesis), in process and against a live
``tofu serve``.

In process: whatever the path, ``Frontends.select(path).parse`` and ``.verify`` either give a
``ParsedPath`` or raise a ``TofuError`` under 500 with a one-line reason; a parsed rendition is
canonical (its canonical URL parses to the same ``Transform``); hints and ``Accept`` never
raise and never push a size past ``--max-output-side``.

Live: a real ``tofu serve`` over small synthesized originals (a JPEG, a PNG with alpha, an
animated GIF), with both grammars open: no 5xx, no traceback in its log, every 200 decodes as
the ``Content-Type`` it declares, and a second render of the same request gives the same bytes
(the result cache is off, so both are renders).

The number of cases per test is ``TOFU_FUZZ_EXAMPLES`` (tests/support/fuzz.py).
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import json
import math
import string
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import numpy as np
import pytest
import pyvips
from hypothesis import event, given
from hypothesis import strategies as st

from tofu.config import Config
from tofu.errors import TofuError
from tofu.formats import BY_NAME
from tofu.frontends import Frontends, build_frontends
from tofu.frontends.thumbor import SUPPORTED_FILTERS, parse_options
from tofu.hints import HINT_HEADERS, Adapt, ClientHints
from tofu.negotiate import Negotiator
from tofu.render import render
from tofu.render.steps import RenderSettings
from tofu.transform import NO_OPERATIONS, Fit
from tofu.urls import ParsedPath, build_path, parse_path, size_token

from .support.fuzz import FUZZ, cases, example_paths
from .support.servers import TofuProcess, start_tofu

MAX_SIDE = 4096
SECRET = "fuzz-secret-0123456789abcdefghijklmnop"

# --- strategies ------------------------------------------------------------------------------

HUGE = "9" * 401
T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of ``choices``, each drawn about ``weight`` times as often as a weight of 1: mostly
    plausible input, so that parsing gets far, with the hostile kinds mixed in."""
    # (st.one_of would not do: it draws each distinct strategy alike, however often listed.)
    indices = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(indices).flatmap(lambda index: choices[index][1])


# Characters that have tripped parsers: separators, dots, encodings, NUL and controls, signs,
# underscores (int() reads "1_0"), non-ASCII digits, bidi and combining marks, astral planes.
ODD = ["/", ".", "..", "%", "%2F", "%2e", "%00", "\x00", "\n", "\\", "-", "+", "_", "x", ":",
       "(", ")", ",", "|", "'", "@", "?", "#", " ", "\u0663", "\uff13", "\u202e", "e\u0301",
       "\U0001f600", "\ufeff", "\u0131", "ß"]  # fmt: skip
odd_text = st.lists(
    st.one_of(st.sampled_from(ODD), st.text(max_size=4)), min_size=1, max_size=4
).map("".join)

digits = st.text("0123456789", min_size=1, max_size=12)
numbers = weighted(
    (6, st.integers(1, 700).map(str)),
    (1, st.integers(0, 10**7).map(str)),
    (1, digits),
    (1, st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(1, 4), st.integers(0, 999))),
    (1, st.sampled_from([HUGE, "0", "4096", "4097", "10000001", "2147483648"])),
)
signed = st.one_of(numbers, numbers.map(lambda n: "-" + n))
decimals = st.one_of(
    signed,
    st.builds(lambda a, b: f"{a}.{b}", signed, digits),
    st.sampled_from([".5", "5.", "1.5", "-0.0", "1e3", "nan", "inf", "1_0"]),
)


@st.composite
def percent_encoded(draw: st.DrawFn, text: str) -> str:
    """``text`` as sent, or with some or all of its characters percent-encoded."""
    how = draw(st.sampled_from(["raw", "raw", "quote", "all", "some"]))
    if how == "raw":
        return text
    if how == "quote":
        return quote(text, safe="/")
    if how == "all":
        return "".join(f"%{b:02X}" for b in text.encode())
    mask = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(quote(c, safe="") if m else c for c, m in zip(text, mask, strict=True))


def encoded(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.flatmap(percent_encoded)


names = weighted(
    (8, st.sampled_from(["a.jpg", "x.png", "recipes", "1", ".well", "...jpg", "café au lait.jpg"])),
    (1, odd_text),
    (1, st.text(max_size=10)),
)


# tofu's size token: dimensions, a mode, options, in any order and number.
dpr = st.one_of(st.sampled_from(["1", "1.5", "2", "4", "4.01", "0", "9.99", "1.25", "10"]), digits)
fmt = st.one_of(st.sampled_from(sorted(BY_NAME)), st.text(string.ascii_lowercase, max_size=6))
percent = weighted((4, st.integers(0, 100).map(str)), (1, numbers))
option = weighted(
    (2, percent.map(lambda n: "q" + n)),
    (1, st.just("u")),
    (1, st.just("w")),
    (2, dpr.map(lambda d: f"@{d}x")),
    (2, fmt.map(lambda f: "." + f)),
    (1, odd_text),
)
mode = weighted(
    (4, st.sampled_from(["", "s", "c", "a"])),
    (1, st.just("f")),
    (2, st.builds(lambda x, y: f"f{x}-{y}", percent, percent)),
)


def size_tokens_with(
    sides: st.SearchStrategy[str],
    modes: st.SearchStrategy[str],
    options: st.SearchStrategy[str],
) -> st.SearchStrategy[str]:
    side = weighted((3, sides), (1, st.just("")))
    return st.builds(
        lambda w, h, m, opts: w + ("" if h is None else "x" + h) + m + "".join(opts),
        side,
        weighted((1, st.none()), (1, side)),
        modes,
        st.lists(options, max_size=3, unique=True),
    )


# Plain tokens (small sides, well-formed options) get parsing and rendering far; the rest are
# hostile, raw or percent-encoded.
small = st.integers(1, 600).map(str)
plain_options = st.sampled_from(["q60", "q1", "q100", "u", "w", "@2x", "@1.5x", ".webp", ".png",
                                 ".jpg", ".avif", ".gif"])  # fmt: skip
plain_modes = st.sampled_from(["", "s", "c", "a", "f30-60", "f0-100", "f100-0"])
size_tokens = weighted(
    (3, size_tokens_with(small, plain_modes, plain_options)),
    (1, size_tokens_with(numbers, mode, option)),
    (1, encoded(size_tokens_with(numbers, mode, option))),
)
signatures = st.one_of(
    st.text(string.ascii_letters + string.digits + "-_", min_size=43, max_size=43),
    st.text(string.ascii_letters + string.digits + "-_", min_size=27, max_size=27).map(
        lambda s: s + "="
    ),
)


def tofu_paths(keys: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``/[signature/]{prefix...}/{size}/{name}``, each part possibly odd or encoded."""

    def path(signature: str | None, key: str, token: str) -> str:
        *prefix, name = key.split("/")
        return "/" + "/".join([*([signature] if signature else []), *prefix, token, name])

    return st.builds(
        path,
        st.one_of(st.none(), st.none(), st.none(), signatures),
        keys,
        size_tokens,
    )


tofu_keys = st.lists(weighted((3, names), (1, encoded(names))), min_size=1, max_size=3).map(
    "/".join
)


# thumbor's grammar: every part, every filter, arbitrary arguments.
filter_args = weighted(
    (2, percent),
    (1, signed),
    (1, decimals),
    (2, st.sampled_from(["true", "False", "1", "0", "red", "transparent", "blur", "auto", "fff",
                     "00ff00", "nocolour", "webp", "gif", "heic", "'png'", "20|40", "1x2:3x4",
                     f"{HUGE}x0:{HUGE}x1", "0x0:0x0"])),
    (1, odd_text),
)  # fmt: skip
filter_names = weighted(
    (8, st.sampled_from(sorted(SUPPORTED_FILTERS))),
    (1, st.sampled_from(["watermark", "sharpen", "unknown", "fill ", "Quality"])),
    (1, odd_text),
)
filter_calls = st.builds(
    lambda name, args, close: f"{name}({','.join(args)}{')' if close else ''}",
    filter_names,
    st.lists(filter_args, max_size=5),
    st.sampled_from([True, True, True, False]),
)


def thumbor_parts_with(numbers: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    """Any of thumbor's URL parts, numbers drawn from ``numbers``."""
    return st.fixed_dictionaries(
        {},
        optional={
            "meta": st.sampled_from(["meta", "debug", "", "", "", "", "", ""]),
            "trim": st.builds(
                lambda corner, tolerance: "trim" + corner + tolerance,
                st.sampled_from(["", ":top-left", ":bottom-right", ":middle"]),
                st.one_of(st.just(""), numbers.map(lambda n: ":" + n)),
            ),
            "crop": st.builds(
                lambda a, b, c, d: f"{a}x{b}:{c}x{d}", numbers, numbers, numbers, numbers
            ),
            "fit": st.sampled_from(
                ["fit-in", "adaptive-fit-in", "full-fit-in", "adaptive-full-fit-in"]
            ),
            "dims": st.builds(
                lambda hf, w, vf, h: f"{hf}{w}x{vf}{h}",
                st.sampled_from(["", "-"]),
                weighted((4, numbers), (1, st.just("")), (1, st.just("orig"))),
                st.sampled_from(["", "-"]),
                weighted((4, numbers), (1, st.just("")), (1, st.just("orig"))),
            ),
            "halign": st.sampled_from(["left", "center", "right"]),
            "valign": st.sampled_from(["top", "middle", "bottom"]),
            "smart": st.just("smart"),
            "filters": st.lists(filter_calls, min_size=1, max_size=3).map(
                lambda calls: "filters:" + ":".join(calls)
            ),
        },
    )


thumbor_parts = weighted(
    (3, thumbor_parts_with(small)),
    (1, thumbor_parts_with(numbers)),
    (
        1,
        thumbor_parts_with(numbers).flatmap(
            lambda parts: st.fixed_dictionaries({k: percent_encoded(v) for k, v in parts.items()})
        ),
    ),
)
_THUMBOR_ORDER = ("meta", "trim", "crop", "fit", "dims", "halign", "valign", "smart", "filters")


def thumbor_paths(images: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``/(unsafe|SIGNATURE)/...parts.../IMAGE``; parts (filters above all) possibly encoded."""

    def path(first: str, parts: dict[str, str], image: str, junk: list[str]) -> str:
        ordered = [parts[name] for name in _THUMBOR_ORDER if parts.get(name)]
        return "/" + "/".join([first, *ordered, *junk, image])

    return st.builds(
        path,
        weighted((4, st.just("unsafe")), (1, signatures)),
        thumbor_parts,
        images,
        st.one_of(
            st.just([]), st.just([]), st.just([]), st.lists(odd_text, min_size=1, max_size=1)
        ),
    )


thumbor_images = weighted(
    (4, st.lists(names, min_size=1, max_size=3).map("/".join)),
    (1, encoded(st.lists(names, min_size=1, max_size=3).map("/".join))),
    (1, st.sampled_from(["http://example.com/a.jpg", "//a.jpg", "a/../b.jpg", "%2e%2e/x.jpg"])),
)

# Hint headers: numbers as browsers send them, and everything float() or a parser might mistake.
hint_values = st.one_of(
    decimals,
    st.sampled_from(["1_0", "2_0", "1e1", "+3", "0x2", "\u0663", "\uff13", "2.0.0", " 2 ",
                     "\t1.5", "on", "On ", "off", "", "999999999999999999999", "0.000001"]),
    odd_text,
)  # fmt: skip
accept_values = st.one_of(
    st.lists(
        st.builds(
            lambda media, q: media + q,
            st.sampled_from(["image/avif", "image/webp", "image/*", "*/*", "image/png", "text/html",
                             "image/AVIF", "image/webp;q", "", ","]),
            st.one_of(st.just(""), decimals.map(lambda d: ";q=" + d)),
        ),
        max_size=5,
    ).map(",".join),
    odd_text,
)  # fmt: skip
headers = st.dictionaries(
    st.sampled_from([*HINT_HEADERS, "Accept"]),
    st.one_of(hint_values, accept_values),
    max_size=6,
)


def ascii_header(value: str) -> bool:
    """Whether a header value can go on the wire as is (visible ASCII, spaces, tabs)."""
    return all(c == "\t" or 0x20 <= ord(c) < 0x7F for c in value)


# --- in process ------------------------------------------------------------------------------

# Both grammars open (as --dev --thumbor-unsafe), and both closed behind keys (production).
OPEN = build_frontends(Config(origin=(".",), dev=True, thumbor_unsafe=True, workers=1))
SIGNED = build_frontends(Config(origin=(".",), secret=(SECRET,), thumbor_key=(SECRET,), workers=1))


def parse_or_refuse(frontends: Frontends, path: str) -> ParsedPath | None:
    """The verified parse of ``path``, or ``None`` when it is refused with a 4xx."""
    frontend = frontends.select(path)
    try:
        parsed = frontend.verify(frontend.parse(path))
    except TofuError as exc:
        assert 400 <= exc.status < 500, (path, exc.status, exc.reason)
        assert "\n" not in exc.reason and len(exc.reason) <= TofuError.MAX_REASON
        event(f"refused {exc.status}")
        return None
    event(f"parsed by {type(frontend).__name__}")
    return parsed


def assert_canonical(parsed: ParsedPath) -> None:
    """A rendition that tofu's grammar can name parses back from its canonical URL."""
    transform = parsed.transform
    size = transform.size
    if size.operations != NO_OPERATIONS or size.fit is Fit.OUTSIDE:
        return  # only thumbor's grammar names these: it has no canonical spelling
    if size.width is None and size.height is None:
        return  # the original's own size: no size token for it
    width_hint = parsed.adapt is Adapt.WIDTH
    token = size_token(size, width_hint=width_hint)
    again = parse_path(build_path(transform.key, token), max_side=MAX_SIDE, expect_signature=False)
    assert again.transform == transform, (token, again.transform, transform)
    assert (again.adapt is Adapt.WIDTH) == width_hint
    assert size_token(again.transform.size, width_hint=width_hint) == token


def numbers_in(value: object) -> Iterator[int | float]:
    """Every number in a ``Transform`` (its dataclasses, tuples and fields)."""
    if isinstance(value, bool | str | enum.Enum) or value is None:
        return
    if isinstance(value, int | float):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from numbers_in(item)
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            if field.compare:  # not the cached hash
                yield from numbers_in(getattr(value, field.name))


def assert_renderable_numbers(parsed: ParsedPath) -> None:
    """No number a renderer would hand to libvips (C ints, doubles) beyond what they hold."""
    for number in numbers_in(parsed.transform):
        assert abs(number) < 2**31 and math.isfinite(number), (parsed.transform, number)


def check_path(path: str) -> None:
    for frontends in (OPEN, SIGNED):
        parsed = parse_or_refuse(frontends, path)
        if parsed is not None:
            assert_renderable_numbers(parsed)
            assert_canonical(parsed)


@FUZZ
@given(tofu_paths(tofu_keys))
def test_tofu_urls_parse_or_are_refused_with_a_4xx(path: str) -> None:
    cases["tofu grammar (in process)"] += 1
    check_path(path)


@FUZZ
@given(thumbor_paths(thumbor_images))
def test_thumbor_urls_parse_or_are_refused_with_a_4xx(path: str) -> None:
    cases["thumbor grammar (in process)"] += 1
    check_path(path)


@FUZZ
@given(st.text(max_size=60).map(lambda text: "/" + text))
def test_any_path_parses_or_is_refused_with_a_4xx(path: str) -> None:
    cases["arbitrary paths (in process)"] += 1
    check_path(path)


HINTS = ClientHints(client_hints=True, save_data=True, max_side=MAX_SIDE)
NEGOTIATOR = Negotiator(Config().negotiate)


@FUZZ
@given(st.one_of(tofu_paths(tofu_keys), thumbor_paths(thumbor_images)), headers)
def test_hints_and_accept_never_fail_nor_exceed_the_limits(
    path: str, request_headers: dict[str, str]
) -> None:
    cases["hint and Accept headers (in process)"] += 1
    parsed = parse_or_refuse(OPEN, path)
    if parsed is None:
        return
    NEGOTIATOR.choose(request_headers.get("Accept", ""))
    transform, vary = HINTS.adapt(parsed.transform, parsed.adapt, request_headers)
    assert set(vary) <= set(HINT_HEADERS)
    size, before = transform.size, parsed.transform.size
    assert transform.key == parsed.transform.key
    for side, was in ((size.width, before.width), (size.height, before.height)):
        assert (side is None) == (was is None)
        if side is not None and was is not None:
            assert 1 <= side <= max(MAX_SIDE, was)


# --- a live server ---------------------------------------------------------------------------

IMAGES = ["fuzz/photo.jpg", "fuzz/alpha.png", "fuzz/anim.gif"]
LIVE_MAX_SIDE = 512  # every output small, so each case renders in milliseconds
LOADER_TYPES = {"jpegload": "image/jpeg", "pngload": "image/png", "webpload": "image/webp",
                "gifload": "image/gif", "heifload": "image/avif"}  # fmt: skip


def write_originals(root: Path) -> None:
    """A 64x48 photo-like JPEG, a 40x40 PNG with graded alpha, a 4-frame 24x20 GIF."""
    (root / "fuzz").mkdir()
    y, x = np.mgrid[0:48, 0:64]
    photo = np.dstack([x * 4, y * 5, (x + y) * 2]).astype(np.uint8)
    photo_image = pyvips.Image.new_from_array(photo).copy(interpretation="srgb")
    (root / "fuzz/photo.jpg").write_bytes(photo_image.jpegsave_buffer(Q=90))
    y, x = np.mgrid[0:40, 0:40]
    rgba = np.dstack([x * 6, 255 - y * 6, np.full_like(x, 90), (x + y) * 3]).astype(np.uint8)
    alpha = pyvips.Image.new_from_array(rgba).copy(interpretation="srgb")
    (root / "fuzz/alpha.png").write_bytes(alpha.pngsave_buffer())
    frames = [np.full((20, 24, 3), (60 * i, 200 - 40 * i, 30 + 50 * i), np.uint8) for i in range(4)]
    for i, frame in enumerate(frames):
        frame[5 + i : 12 + i, 4:10] = 255  # a square moving down, so frames differ in shape too
    strip = pyvips.Image.new_from_array(np.vstack(frames)).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 20)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [50, 60, 70, 80])
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    (root / "fuzz/anim.gif").write_bytes(strip.gifsave_buffer())


def serve_originals(tmp_path_factory: pytest.TempPathFactory) -> TofuProcess:
    """``tofu serve`` over ``write_originals`` with both grammars open, every hint on, no
    result cache (every request renders, so asking twice compares two renders) and a short
    deadline."""
    root = tmp_path_factory.mktemp("fuzz-originals")
    write_originals(root)
    args = ["--origin", str(root), "--dev", "--thumbor-unsafe", "--client-hints", "--save-data",
            "--request-timeout", "5", "--max-output-side", str(LIVE_MAX_SIDE), "--cache-size", "0",
            "--workers", "1", "--drain-seconds", "0"]  # fmt: skip
    return start_tofu(args, tmp_path_factory.mktemp("fuzz-logs"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TofuProcess]:
    tofu = serve_originals(tmp_path_factory)
    yield tofu
    tofu.stop()


def on_the_wire(path: str) -> str:
    """``path`` as a client can send it: what is not visible ASCII percent-encoded ("%" itself
    stays, so malformed escapes reach the server as they are)."""
    return "".join(c if 0x21 <= ord(c) < 0x7F else quote(c, safe="") for c in path)


def get(tofu: TofuProcess, path: str, request_headers: dict[str, str]) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", tofu.port, timeout=30)
    try:
        connection.request("GET", path, headers=request_headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def decoded_type(body: bytes) -> str:
    """The media type of ``body`` by the libvips loader that decodes it (every frame)."""
    image = pyvips.Image.new_from_buffer(body, "", fail_on="error")
    loader = image.get("vips-loader").removesuffix("_buffer")
    if loader in ("gifload", "webpload"):
        image = pyvips.Image.new_from_buffer(body, "", n=-1, fail_on="error")
    image.copy_memory()  # decode every pixel (of every frame)
    return LOADER_TYPES.get(loader, loader)


# Well-formed requests for the live server, so that most cases render: every filter with
# arguments in (or at the edge of) its range, small boxes, every grammar part.
def ints(low: int, high: int) -> st.SearchStrategy[str]:
    """Mostly ``low``-``high``; sometimes just outside, or a number no C type holds."""
    edges = [str(low - 1), str(high + 1), HUGE, "0" * 30 + str(high)]
    return weighted((2, st.integers(low, high).map(str)), (1, st.sampled_from(edges)))


def call(name: str, *args: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*args).map(lambda values: f"{name}({','.join(values)})")


colours = st.sampled_from(["red", "fff", "00ff00", "transparent", "blur", "auto", "white"])
booleans = st.sampled_from(["true", "false", "1", "0"])
kernels = st.sampled_from(
    ["1;2;1;2;4;2;1;2;1", "-1;-1;-1;-1;8;-1;-1;-1;-1", "1", "0;0;0", "1;1", ";".join(["1"] * 225)]
)
curves = st.sampled_from(
    ["[(0,0),(255,255)]", "[(0,50),(128,200),(255,30)]", "[(10,10)]", "[]", "[(5,5),(5,9)]"]
)
marks = st.sampled_from(["fuzz/alpha.png", "fuzz/photo.jpg", "fuzz/anim.gif", "fuzz/missing.png"])
positions = weighted(
    (3, ints(-80, 80)),
    (1, ints(-100, 100).map(lambda n: n + "p")),
    (1, st.sampled_from(["center", "repeat", "-0", "-0p"])),
)
ratios = weighted((3, ints(0, 100)), (1, st.just("none")))
plain_filters = st.one_of(
    call("quality", ints(0, 100)),
    call("format", st.sampled_from(["jpeg", "png", "webp", "avif", "gif", "heic"])),
    call("fill", colours),
    call("fill", colours, st.sampled_from(["true", "false", "1"])),
    call("focal", st.builds(lambda a, b, c, d: f"{a}x{b}:{c}x{d}", *[ints(0, 70)] * 4)),
    *(call(name) for name in ("upscale", "no_upscale", "grayscale", "strip_icc", "strip_exif")),
    call("rotate", st.sampled_from(["0", "90", "180", "270", "-90", "450", "45"])),
    call("max_bytes", ints(0, 20000)),
    call("blur", ints(1, 150)),
    call("blur", ints(1, 20), st.sampled_from(["0", "0.5", "3", "-2", "1000"])),
    call("brightness", ints(-100, 100)),
    call("contrast", ints(-100, 100)),
    call("round_corner", st.sampled_from(["5", "20|40", "0", "512"]), *[ints(0, 255)] * 3),
    call("round_corner", ints(1, 30), *[ints(0, 255)] * 3, st.sampled_from(["1", "0"])),
    call("background_color", colours),
    call("sharpen", *[st.sampled_from(["0", "1.5", "10", "100", "101", "-1"])] * 2, booleans),
    call("saturation", st.sampled_from(["0", "0.5", "1", "2.5", "-1", "100", "1e3", HUGE])),
    call("rgb", *[ints(-100, 100)] * 3),
    call("colorize", *[ints(0, 100)] * 3, st.sampled_from(["ff0000", "00ff00", "fff", "red"])),
    call("proportion", st.sampled_from(["0", "0.01", "0.5", "1", "2", "-0.5"])),
    call("noise", ints(0, 100)),
    call("noise", ints(0, 100), ints(0, 2**31 - 1)),
    call("convolution", kernels, st.sampled_from(["1", "3", "5", "2", "15"]), booleans),
    call("curve", *[curves] * 4),
    call("max_age", ints(0, 10**9)),
    call("autojpg", booleans),
    call("watermark", marks, positions, positions, ints(0, 100)),
    call("watermark", marks, positions, positions, ints(0, 100), ratios, ratios),
    *(call(name) for name in ("equalize", "stretch", "extract_focal", "autojpg")),
)
plain_thumbor_parts = st.fixed_dictionaries(
    {},
    optional={
        "trim": st.builds(
            lambda corner, tolerance: f"trim{corner}{tolerance}",
            st.sampled_from(["", ":top-left", ":bottom-right"]),
            st.one_of(st.just(""), ints(0, 442).map(lambda t: ":" + t)),
        ),
        "crop": st.builds(lambda a, b, c, d: f"{a}x{b}:{c}x{d}", *[ints(0, 70)] * 4),
        "fit": st.sampled_from(
            ["fit-in", "adaptive-fit-in", "full-fit-in", "adaptive-full-fit-in"]
        ),
        "dims": st.builds(
            lambda hf, w, vf, h: f"{hf}{w}x{vf}{h}",
            st.sampled_from(["", "-"]),
            weighted((4, ints(0, 600)), (1, st.just("orig"))),
            st.sampled_from(["", "-"]),
            weighted((4, ints(0, 600)), (1, st.just("orig"))),
        ),
        "halign": st.sampled_from(["left", "center", "right"]),
        "valign": st.sampled_from(["top", "middle", "bottom"]),
        "smart": st.just("smart"),
        "filters": st.lists(plain_filters, min_size=1, max_size=5).map(
            lambda calls: "filters:" + ":".join(calls)
        ),
    },
)
plain_live_paths = st.one_of(
    st.builds(
        lambda token, image: f"/fuzz/{token}/{image.removeprefix('fuzz/')}",
        size_tokens_with(ints(1, 250), plain_modes, plain_options),
        st.sampled_from(IMAGES),
    ),
    st.builds(
        lambda parts, image: (
            "/" + "/".join(["unsafe", *(parts[n] for n in _THUMBOR_ORDER if n in parts), image])
        ),
        plain_thumbor_parts,
        st.sampled_from(IMAGES),
    ),
)
live_images = weighted((6, st.sampled_from(IMAGES)), (1, names))
live_paths = weighted(
    (4, plain_live_paths),
    (1, tofu_paths(live_images.map(lambda image: image if "/" in image else f"fuzz/{image}"))),
    (1, thumbor_paths(live_images)),
)
wire_headers = headers.map(lambda h: {k: v for k, v in h.items() if ascii_header(v)})


# The findings of issue 17 that reached the renderer (a 500 and a traceback each), always
# tried besides the generated cases.
KNOWN = [
    f"/unsafe/300x200/filters:brightness({HUGE})/fuzz/photo.jpg",
    f"/unsafe/300x200/filters:contrast(-{HUGE})/fuzz/alpha.png",
    f"/unsafe/300x200/filters:round_corner({HUGE},0,0,0)/fuzz/photo.jpg",
    f"/unsafe/trim:{HUGE}/300x200/fuzz/photo.jpg",
    f"/unsafe/300x200/filters:focal(0x0:{HUGE}x1)/fuzz/photo.jpg",
]


@FUZZ
@given(path=live_paths, request_headers=wire_headers)
@example_paths(KNOWN)
def test_live_server_answers_4xx_or_good_images(
    live: TofuProcess, path: str, request_headers: dict[str, str]
) -> None:
    path = on_the_wire(path)
    cases["live server"] += 1
    log_before = live.log_path.stat().st_size
    status, content_type, body = get(live, path, request_headers)
    event(f"status {status}")
    assert status < 500, (path, request_headers, status, body[:300])
    with open(live.log_path, "rb") as log:
        log.seek(log_before)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written, (path, written[-3000:])
    if status != 200:
        return
    if content_type == "application/json":
        json.loads(body)  # a document about the original (thumbor's meta/, tofu's info)
    else:
        assert decoded_type(body) == content_type, (path, request_headers)
    again = get(live, path, request_headers)
    assert again == (status, content_type, body), (path, request_headers, "not deterministic")


def test_a_smart_crop_of_an_unresized_jpeg_is_deterministic(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Found by the live fuzz: ``64x49a`` of a 64x48 JPEG, rendered four times, gave four
    pictures (and in process, on a 1600x1000 photo, a segfault): the smart crop read the
    decoded pixels after their buffer was freed."""
    tofu = serve_originals(tmp_path_factory)
    try:
        bodies = {get(tofu, "/fuzz/64x49a/photo.jpg", {})[2] for _ in range(4)}
    finally:
        tofu.stop()
    assert len(bodies) == 1


def test_fill_auto_of_grey_with_alpha_renders(tmp_path: Path) -> None:
    """Found by the live fuzz: ``/unsafe/filters:fill(auto):grayscale()/fuzz/alpha.png`` was a
    500 with a traceback (IndexError: the median colour read alpha as a colour band)."""
    write_originals(tmp_path)
    data = (tmp_path / "fuzz/alpha.png").read_bytes()
    transform = parse_options("fit-in/100x100/filters:fill(auto):grayscale()/a.png", 512)
    rendition = render(data, transform.size, RenderSettings(max_output_side=512), None)
    image = pyvips.Image.new_from_buffer(rendition.body, "")
    assert (image.width, image.height) == (100, 100)
