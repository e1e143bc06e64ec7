"""Client Hints (Sec-CH-DPR, Sec-CH-Width and their legacy names) and Save-Data: the size and
quality they choose, the rounding and the caps, the cache key they fold into and Vary."""

from __future__ import annotations

import time
import urllib.request

import pytest
import pyvips

from tofu.hints import ACCEPT_CH, Adapt, ClientHints
from tofu.transform import ImageFormat, Size
from tofu.urls import parse_path, parse_size

from .support.servers import SAMPLES

PHOTO = "/recipes/1203423/{token}/5366e857.jpg"  # 1600x1000
MAX_SIDE = 4096
HINTS = ClientHints(client_hints=True, save_data=True, max_side=MAX_SIDE)


def adapt(token: str, headers: dict[str, str], hints: ClientHints = HINTS) -> tuple[Size, tuple]:
    parsed = parse_path(PHOTO.format(token=token), max_side=MAX_SIDE, expect_signature=False)
    transform, vary = hints.adapt(parsed.transform, parsed.adapt, headers)
    return transform.size, vary


# --- the grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [("280", Adapt.DPR), ("280x194c", Adapt.DPR), ("280@2x", Adapt.NONE), ("280w", Adapt.WIDTH),
     ("280x194cwq60", Adapt.WIDTH), ("x200", Adapt.DPR)],
)  # fmt: skip
def test_size_token_says_which_hints_apply(token: str, expected: Adapt) -> None:
    parsed = parse_path(PHOTO.format(token=token), max_side=MAX_SIDE, expect_signature=False)
    assert parsed.adapt is expected
    assert parsed.transform.size == parse_size(
        token.replace("w", ""), MAX_SIDE
    )  # w: no other effect


# --- DPR --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dpr", "width"),
    [("1", 280), ("1.25", 420), ("1.5", 420), ("1.75", 560), ("2", 560), ("2.625", 840),
     ("3", 840), ("3.5", 1120), ("4", 1120), ("9", 1120), ("0.5", 280), ("0", 280),
     ("-2", 280), ("nan", 280), ("inf", 280), ("two", 280), ("", 280)],
)  # fmt: skip
def test_dpr_hint_is_clamped_and_rounded_up_to_a_step(dpr: str, width: int) -> None:
    size, vary = adapt("280x194c", {"Sec-CH-DPR": dpr})
    assert (size.width, size.height) == (width, round(194 * width / 280))
    assert vary == ("Sec-CH-DPR", "DPR", "Save-Data")


def test_dpr_hint_equals_the_same_dpr_in_the_url() -> None:
    """The hint folds into the cache key: 280 with DPR 2 is the rendition 280@2x (and 560)."""
    hinted, _ = adapt("280x194c", {"Sec-CH-DPR": "2"})
    assert hinted == parse_size("280x194c@2x", MAX_SIDE) == parse_size("560x388c", MAX_SIDE)


def test_legacy_dpr_header_and_precedence() -> None:
    assert adapt("280", {"DPR": "2"})[0].width == 560
    assert adapt("280", {"Sec-CH-DPR": "3", "DPR": "2"})[0].width == 840
    assert adapt("280", {"Sec-CH-DPR": "bad", "DPR": "2"})[0].width == 560


# Numbers Python's float() reads but a hint never holds: a hint is ASCII digits with at most one
# dot, anything else is malformed (and ignored, as every malformed hint is).
@pytest.mark.parametrize(
    "value",
    ["1_0", "2_0", "1e1", "1E1", "+3", "0x2", "\u0663", "\uff13", "2.0.0", "inf", "NaN", "3 3"],
)
def test_hint_numbers_are_parsed_strictly(value: str) -> None:
    for headers in ({"Sec-CH-DPR": value}, {"DPR": value}):
        assert adapt("280", headers)[0].width == 280, (headers, adapt("280", headers)[0])
    assert adapt("600w", {"Sec-CH-Width": value})[0].width == 600
    assert adapt("600w", {"Width": value})[0].width == 600
    # The next header in precedence then applies, as for any malformed hint.
    assert adapt("280", {"Sec-CH-DPR": value, "DPR": "2"})[0].width == 560


@pytest.mark.parametrize(("value", "width"), [("2", 560), ("2.", 560), (".5", 280), (" 1.5 ", 420)])
def test_plain_decimal_hints_still_parse(value: str, width: int) -> None:
    assert adapt("280", {"Sec-CH-DPR": value})[0].width == width


def test_url_dpr_wins_over_the_hint() -> None:
    size, vary = adapt("280@2x", {"Sec-CH-DPR": "3"})
    assert size.width == 560
    assert "Sec-CH-DPR" not in vary


def test_dpr_hint_never_exceeds_the_output_limit() -> None:
    size, _ = adapt("1500x1000c", {"Sec-CH-DPR": "4"})
    assert (size.width, size.height) == (4096, 2731)  # scaled down to --max-output-side


def test_hints_are_ignored_when_off() -> None:
    off = ClientHints(client_hints=False, save_data=False, max_side=MAX_SIDE)
    size, vary = adapt("280w", {"Sec-CH-DPR": "2", "Sec-CH-Width": "900", "Save-Data": "on"}, off)
    assert size == parse_size("280", MAX_SIDE)
    assert vary == ()


# --- width ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "width"),
    [("600", 600), ("601", 675), ("1200", 1200), ("300", 300), ("290", 300), ("10", 75),
     ("2400", 2400), ("5000", 2400), ("2401", 2400)],
)  # fmt: skip
def test_width_hint_rounds_up_to_an_eighth_and_caps_at_box_times_max_dpr(
    hint: str, width: int
) -> None:
    size, vary = adapt("600x400cw", {"Sec-CH-Width": hint, "Sec-CH-DPR": "3"})
    assert (size.width, size.height) == (width, round(400 * width / 600))
    assert vary == ("Sec-CH-Width", "Width", "Sec-CH-DPR", "DPR", "Save-Data")


def test_width_hint_only_for_sizes_that_ask_for_it() -> None:
    size, vary = adapt("600", {"Sec-CH-Width": "300"})
    assert size.width == 600
    assert "Sec-CH-Width" not in vary


def test_without_a_width_hint_the_dpr_hint_applies() -> None:
    assert adapt("600w", {"Sec-CH-DPR": "2"})[0].width == 1200
    assert adapt("600w", {"Width": "450"})[0].width == 450  # legacy name
    assert adapt("600w", {})[0].width == 600


# --- Save-Data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "header", "save_data", "varies"),
    [
        ("280", "on", True, True),
        ("280", "On ", True, True),
        ("280", "off", False, True),
        ("280", None, False, True),
        ("280q90", "on", False, False),  # the URL's quality wins: nothing to vary
        ("280.png", "on", False, False),  # lossless: quality does not apply
        ("280.webp", "on", True, True),
    ],
)
def test_save_data(token: str, header: str | None, save_data: bool, varies: bool) -> None:
    size, vary = adapt(token, {"Save-Data": header} if header is not None else {})
    assert size.save_data is save_data
    assert ("Save-Data" in vary) is varies


def test_save_data_lowers_the_default_quality() -> None:
    from tofu.render import RenderSettings, render

    data = (SAMPLES / "recipes" / "1203423" / "5366e857.jpg").read_bytes()
    for fmt, quality in ((ImageFormat.JPEG, 55), (ImageFormat.WEBP, 55), (ImageFormat.AVIF, 45)):
        thrifty = render(data, Size(400, None, format=fmt, save_data=True), RenderSettings())
        explicit = render(data, Size(400, None, format=fmt, quality=quality), RenderSettings())
        default = render(data, Size(400, None, format=fmt), RenderSettings())
        assert thrifty.body == explicit.body
        assert len(thrifty.body) < 0.75 * len(default.body)


# --- over HTTP --------------------------------------------------------------------------------


def _size(body: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(body, "")
    return image.width, image.height


async def test_hints_over_http_with_vary_and_accept_ch(make_client) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True, client_hints=True, save_data=True)
    path = PHOTO.format(token="280x194c")
    plain = await client.get(path, headers={"Accept": "*/*"})
    assert plain.headers["Accept-CH"] == ACCEPT_CH
    assert plain.headers["Vary"] == "Accept, Sec-CH-DPR, DPR, Save-Data"
    assert _size(await plain.read()) == (280, 194)
    # The same URL with other hints: not the cached 1x rendition.
    for dpr, expected in (("2", (560, 388)), ("3", (840, 582)), ("1", (280, 194))):
        response = await client.get(path, headers={"Sec-CH-DPR": dpr})
        assert _size(await response.read()) == expected
    thrifty = await client.get(path, headers={"Save-Data": "on", "Accept": "*/*"})
    assert len(await thrifty.read()) < len(await plain.read())
    width = await client.get(PHOTO.format(token="400w"), headers={"Sec-CH-Width": "700"})
    assert _size(await width.read()) == (700, 438)
    assert "Sec-CH-Width, Width" in width.headers["Vary"]
    fixed = await client.get(PHOTO.format(token="280@2x.jpg"), headers={"Sec-CH-DPR": "3"})
    assert _size(await fixed.read()) == (560, 350)
    assert fixed.headers["Vary"] == "Save-Data"  # format and DPR fixed by the URL
    fixed = await client.get(PHOTO.format(token="280@2xq70.jpg"), headers={"Save-Data": "on"})
    assert "Vary" not in fixed.headers  # format, DPR and quality all fixed by the URL


async def test_errors_that_depend_on_request_headers_carry_vary(make_client) -> None:
    """A 422 that only a 4x DPR causes is cached 5 minutes: without Vary a shared cache would
    give it to every client of the URL. Errors before any header is consulted vary on nothing."""
    client = await make_client(
        origin=(str(SAMPLES),), dev=True, client_hints=True, save_data=True,
        max_source_pixels=2_000_000,
    )  # fmt: skip
    path = PHOTO.format(token="1000x1000cu")
    assert (await client.get(path, headers={"Sec-CH-DPR": "1"})).status == 200
    refused = await client.get(path, headers={"Sec-CH-DPR": "4"})
    assert refused.status == 422
    assert refused.headers["Cache-Control"] == "public, max-age=300"
    assert refused.headers["Vary"] == "Accept, Sec-CH-DPR, DPR, Save-Data"
    fixed = await client.get(PHOTO.format(token="1000x1000cu@4x.jpg"))  # nothing to negotiate
    assert fixed.status == 422 and fixed.headers["Vary"] == "Save-Data"
    malformed = await client.get(PHOTO.format(token="0x0"), headers={"Sec-CH-DPR": "4"})
    assert malformed.status == 400 and "Vary" not in malformed.headers


async def test_errors_after_accept_negotiation_vary_on_accept(make_client) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True, max_source_pixels=2_000_000)
    refused = await client.get(PHOTO.format(token="4000x4000cu"), headers={"Accept": "*/*"})
    assert refused.status == 422 and refused.headers["Vary"] == "Accept"


async def test_save_data_is_in_vary_only_where_it_changes_the_bytes(make_client) -> None:
    """Save-Data lowers the default quality of lossy formats; a PNG's bytes are the same."""
    client = await make_client(origin=(str(SAMPLES),), dev=True, client_hints=True, save_data=True)
    png = "/logos/64x64c/rgba.png"
    plain = await client.get(png, headers={"Accept": "image/png"})
    thrifty = await client.get(png, headers={"Accept": "image/png", "Save-Data": "on"})
    assert plain.headers["Content-Type"] == thrifty.headers["Content-Type"] == "image/png"
    assert await plain.read() == await thrifty.read()
    assert plain.headers["Vary"] == thrifty.headers["Vary"] == "Accept, Sec-CH-DPR, DPR"
    etag = thrifty.headers["ETag"]
    again = await client.get(png, headers={"Save-Data": "on", "If-None-Match": etag})
    assert again.status == 304 and again.headers["Vary"] == "Accept, Sec-CH-DPR, DPR"
    # Negotiated to WebP, the same URL's quality does depend on Save-Data.
    webp = await client.get(png, headers={"Accept": "image/webp", "Save-Data": "on"})
    assert webp.headers["Content-Type"] == "image/webp"
    assert webp.headers["Vary"] == "Accept, Sec-CH-DPR, DPR, Save-Data"


async def test_hints_off_by_default(make_client) -> None:
    client = await make_client(origin=(str(SAMPLES),), dev=True)
    response = await client.get(
        PHOTO.format(token="280"), headers={"Sec-CH-DPR": "2", "Save-Data": "on"}
    )
    assert "Accept-CH" not in response.headers
    assert response.headers["Vary"] == "Accept"
    assert _size(await response.read()) == (280, 175)


def test_sibling_workers_render_with_the_clients_hints(tofu_process) -> None:
    """A miss routed to the owner worker carries the hints: otherwise the owner would render the
    1x size and the asking worker would cache it under the 2x key."""
    tofu = tofu_process(
        ["--origin", str(SAMPLES), "--dev", "--workers", "2", "--drain-seconds", "0",
         "--client-hints", "--save-data"]
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while tofu.log().count("tofu listening") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    for width in range(200, 212):
        for dpr in ("2", "1"):  # a new connection each: SO_REUSEPORT spreads them
            request = urllib.request.Request(
                f"{tofu.url}{PHOTO.format(token=f'{width}x100c')}",
                headers={"Sec-CH-DPR": dpr, "Accept": "image/webp"},
            )
            with urllib.request.urlopen(request) as response:
                assert _size(response.read()) == (width * int(dpr), 100 * int(dpr))
    assert tofu.stop() == 0
