"""The URL grammar: size tokens (Cookpad's and tofu's extensions) and request paths."""

from __future__ import annotations

import pytest

from tofu.errors import BadRequest
from tofu.transform import Fit, Gravity, ImageFormat, Size, Transform
from tofu.urls import build_path, parse_path, parse_size

MAX_SIDE = 4096
SIGNATURE = "wqzEUwaL_GVURSUitJj3COO1bcNqTGNlvfqrJo_Jpn0"  # 43 URL-safe base64 characters


def size(token: str) -> Size:
    return parse_size(token, MAX_SIDE)


# Every token Cookpad's CDN URLs use, with what it means.
COOKPAD_TOKENS = {
    "280": Size(280, None),  # width 280, height follows the aspect ratio
    "650s": Size(650, 650, Fit.INSIDE),  # fit inside a 650x650 box
    "894x1461s": Size(894, 1461, Fit.INSIDE),  # fit inside the box
    "280x194c": Size(280, 194, Fit.COVER, Gravity.CENTRE),  # cover, centre crop to exactly WxH
    "40x40c": Size(40, 40, Fit.COVER, Gravity.CENTRE),
    "750x500cq60": Size(750, 500, Fit.COVER, Gravity.CENTRE, quality=60),
}

EXTENSION_TOKENS = {
    "x200": Size(None, 200),  # height 200, width follows
    "280x194": Size(280, 194, Fit.INSIDE),
    "280x194a": Size(280, 194, Fit.COVER, Gravity.ATTENTION),  # smart crop
    "280x194f30-60": Size(280, 194, Fit.COVER, Gravity.FOCAL, focal=(30, 60)),
    "280x194f0-100": Size(280, 194, Fit.COVER, Gravity.FOCAL, focal=(0, 100)),
    "40c": Size(40, 40, Fit.COVER),  # a single side with a mode: a square box
    "x40c": Size(40, 40, Fit.COVER),
    "280q1": Size(280, None, quality=1),
    "280q100": Size(280, None, quality=100),
    "280u": Size(280, None, upscale=True),
    "280@2x": Size(560, None),  # DPR folded into the box
    "280@1.5x": Size(420, None),
    "x200@2x": Size(None, 400),
    "280x194c@2x": Size(560, 388, Fit.COVER),
    "650s@1.5x": Size(975, 975, Fit.INSIDE),
    "2048@2x": Size(4096, None),  # exactly the limit after DPR
    "280@4x": Size(1120, None),
    "280.webp": Size(280, None, format=ImageFormat.WEBP),
    "280.avif": Size(280, None, format=ImageFormat.AVIF),
    "280.png": Size(280, None, format=ImageFormat.PNG),
    "280.jpeg": Size(280, None, format=ImageFormat.JPEG),
    "280.jpg": Size(280, None, format=ImageFormat.JPEG),
    "280x194cq60u@2x.webp": Size(
        560, 388, Fit.COVER, quality=60, upscale=True, format=ImageFormat.WEBP
    ),
}


@pytest.mark.parametrize(
    ("token", "expected"), [*COOKPAD_TOKENS.items(), *EXTENSION_TOKENS.items()]
)
def test_size_token_means(token: str, expected: Size) -> None:
    assert size(token) == expected


@pytest.mark.parametrize(
    ("token", "same_as"),
    [
        ("280x194", "280x194s"),  # no mode means "fit inside"
        ("650s", "650x650"),
        ("650s", "650x650s"),
        ("40c", "40x40c"),
        ("280@2x", "560"),
        ("280x194c@2x", "560x388c"),
        ("x200@2x", "x400"),
        ("280.jpg", "280.jpeg"),
        ("280q60u.webp", "280.webpuq60"),  # options in any order
        ("280@1x", "280"),
    ],
)
def test_spellings_of_one_rendition_are_equal(token: str, same_as: str) -> None:
    assert size(token) == size(same_as)
    assert hash(size(token)) == hash(size(same_as))


@pytest.mark.parametrize(
    ("token", "other"),
    [
        ("280", "280x280"),  # width only is not a square box
        ("280x194c", "280x194a"),
        ("280x194c", "280x194s"),
        ("280x194f30-60", "280x194f60-30"),
        ("280", "280u"),
        ("280", "280q80"),  # explicit default quality is still another rendition
        ("280", "280.jpeg"),
    ],
)
def test_different_renditions_are_different(token: str, other: str) -> None:
    assert size(token) != size(other)


def test_transform_is_a_usable_cache_key() -> None:
    a = Transform("recipes/1/cups.jpg", size("280x194c"))
    b = Transform("recipes/1/cups.jpg", size("280x194c"))
    c = Transform("recipes/2/cups.jpg", size("280x194c"))
    cache = {a: "rendered"}
    assert b in cache
    assert c not in cache
    assert len({a, b, c}) == 2
    with pytest.raises(AttributeError):
        a.key = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("0", "at least 1"),
        ("0x100", "at least 1"),
        ("100x0c", "at least 1"),
        ("100000", "4096 px limit"),
        ("4097", "4096 px limit"),
        ("x4097", "4096 px limit"),
        ("2049@2x", "4096 px limit"),  # the limit applies after DPR
        ("280q0", "quality must be 1-100"),
        ("280q101", "quality must be 1-100"),
        ("280@5x", "DPR must be 1-4"),
        ("280@0.5x", "DPR must be 1-4"),
        ("280.bmp", "unknown format 'bmp'"),
        ("280ww", "w given twice"),
        ("x200w", "w needs a width"),
        ("280w@2x", "w needs a width and no @ DPR"),
        ("280.tiff", "unknown format"),
        ("280x194f101-50", "focal point"),
        ("280x194f50-101", "focal point"),
        ("", "no width or height"),
        ("abc", "no width or height"),
        ("s", "no width or height"),
        ("-280", "no width or height"),
        ("280zz", "cannot parse 'zz'"),
        ("280x", "cannot parse"),
        ("280X194", "cannot parse"),
        ("280x194c5", "cannot parse"),
        ("280q", "cannot parse"),
        ("280@2", "cannot parse"),
        ("280 ", "cannot parse"),
        ("280.JPG", "cannot parse"),
        ("1234567", "cannot parse"),
        ("280q60q70", "quality given twice"),
        ("280@2x@2x", "DPR given twice"),
        ("280.webp.png", "format given twice"),
        ("280uu", "upscale given twice"),
    ],
)
def test_bad_size_token_is_a_bad_request_with_its_reason(token: str, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        size(token)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason
    assert caught.value.status == 400


def test_max_side_is_the_configured_one() -> None:
    assert parse_size("1000", 1000) == Size(1000, None)
    with pytest.raises(BadRequest, match="1000 px limit"):
        parse_size("1001", 1000)


# --- paths ------------------------------------------------------------------------------------


def test_path_key_is_prefix_plus_name() -> None:
    parsed = parse_path(
        "/recipes/1203423/280x194c/5366e857.jpg", max_side=MAX_SIDE, expect_signature=False
    )
    assert parsed.signature is None
    assert parsed.signed_path == "/recipes/1203423/280x194c/5366e857.jpg"
    assert parsed.transform == Transform("recipes/1203423/5366e857.jpg", size("280x194c"))


def test_path_without_prefix() -> None:
    parsed = parse_path("/280/cups.jpg", max_side=MAX_SIDE, expect_signature=False)
    assert parsed.transform == Transform("cups.jpg", size("280"))


def test_path_segments_are_percent_decoded_into_the_key() -> None:
    parsed = parse_path(
        "/my%20recipes/280/caf%C3%A9%20au%20lait.jpg", max_side=MAX_SIDE, expect_signature=False
    )
    assert parsed.transform.key == "my recipes/café au lait.jpg"
    assert parsed.signed_path == "/my%20recipes/280/caf%C3%A9%20au%20lait.jpg"  # still raw


def test_signature_segment_is_taken_only_when_expected() -> None:
    path = f"/{SIGNATURE}/recipes/1/280/cups.jpg"
    signed = parse_path(path, max_side=MAX_SIDE, expect_signature=True)
    assert signed.signature == SIGNATURE
    assert signed.signed_path == "/recipes/1/280/cups.jpg"
    assert signed.transform.key == "recipes/1/cups.jpg"

    unsigned = parse_path(path, max_side=MAX_SIDE, expect_signature=False)
    assert unsigned.signature is None
    assert unsigned.signed_path == path
    assert unsigned.transform.key == f"{SIGNATURE}/recipes/1/cups.jpg"


@pytest.mark.parametrize(
    "first_segment",
    [SIGNATURE[:-1], SIGNATURE + "A", SIGNATURE[:-1] + "=", SIGNATURE[:-1] + "+", "recipes"],
)
def test_segment_that_is_not_a_signature_stays_in_the_key(first_segment: str) -> None:
    parsed = parse_path(f"/{first_segment}/280/cups.jpg", max_side=MAX_SIDE, expect_signature=True)
    assert parsed.signature is None
    assert parsed.transform.key == f"{first_segment}/cups.jpg"


def test_signature_needs_size_and_name_after_it() -> None:
    parsed = parse_path(f"/{SIGNATURE}/280/cups.jpg", max_side=MAX_SIDE, expect_signature=True)
    assert parsed.signature == SIGNATURE
    assert parsed.transform.key == "cups.jpg"
    with pytest.raises(BadRequest):  # the signature would be the size token
        parse_path(f"/{SIGNATURE}/cups.jpg", max_side=MAX_SIDE, expect_signature=True)


@pytest.mark.parametrize(
    "path",
    [
        "/recipes/../280/x.jpg",
        "/../280/x.jpg",
        "/recipes/280/..",
        "/./280/x.jpg",
        "/recipes/./1/280/x.jpg",
        "/%2e%2e/280/x.jpg",
        "/%2E%2E/280/x.jpg",
        "/.%2e/280/x.jpg",
        "/%2e/280/x.jpg",
        "/..%2F..%2Fetc/280/passwd",
        "/recipes%2F1/280/x.jpg",
        "/recipes/280/..%2f..%2fetc%2fpasswd",
        "/recipes\\..\\..\\etc/280/passwd",
        "/recipes/280/..%5c..%5cpasswd",
        "/recipes/280/x.jpg%00.png",
        "/recipes/280/%00",
        "/recipes/280/%ff.jpg",  # not UTF-8
        "/recipes/280/%c3%28.jpg",  # invalid UTF-8 sequence
        "//280/x.jpg",  # empty segment
        "/recipes//280/x.jpg",
        "/recipes/280/",
        "/recipes/280%2F/x.jpg",
    ],
)
def test_traversal_and_odd_segments_are_bad_requests(path: str) -> None:
    for expect_signature in (False, True):
        with pytest.raises(BadRequest):
            parse_path(path, max_side=MAX_SIDE, expect_signature=expect_signature)


@pytest.mark.parametrize("path", ["", "recipes/280/x.jpg", "/", "/x.jpg", "/280"])
def test_path_shape_is_checked(path: str) -> None:
    with pytest.raises(BadRequest):
        parse_path(path, max_side=MAX_SIDE, expect_signature=False)


def test_dotted_names_that_are_not_dot_segments_are_fine() -> None:
    parsed = parse_path("/.well/280/...jpg", max_side=MAX_SIDE, expect_signature=False)
    assert parsed.transform.key == ".well/...jpg"


@pytest.mark.parametrize(
    ("key", "token"),
    [
        ("recipes/1203423/5366e857.jpg", "280x194c"),
        ("cups.jpg", "650s"),
        ("my recipes/café au lait.jpg", "280@2x.webp"),
        ("a/b/c/d/100% real?.png", "x200"),
    ],
)
def test_build_path_round_trips_through_parse_path(key: str, token: str) -> None:
    path = build_path(key, token)
    assert path.startswith("/")
    parsed = parse_path(path, max_side=MAX_SIDE, expect_signature=False)
    assert parsed.transform == Transform(key, size(token))
    assert parsed.signed_path == path
