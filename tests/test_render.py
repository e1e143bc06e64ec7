"""Rendering as a pure function: original bytes + size token -> encoded image.

Everything runs real libvips on synthesized images, the repository's sample photos and small
files from the shared corpus copied into tests/fixtures (see NOTICE).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pyvips

from tests.support.images import PDF, SVG, png_claiming
from tests.support.servers import FIXTURES, SAMPLES
from tofu.errors import Unprocessable, UnsupportedMediaType
from tofu.negotiate import Negotiated
from tofu.render import RenderSettings, Rendition, render
from tofu.render.encode import _PROGRESSIVE_MIN_PIXELS, DEFAULT_QUALITY
from tofu.render.steps import probe
from tofu.transform import ImageFormat
from tofu.urls import parse_size

DEFAULTS = RenderSettings()
PHOTO = SAMPLES / "recipes" / "1203423" / "5366e857.jpg"  # 1600x1000
PNGSUITE = sorted((FIXTURES / "pngsuite").glob("*.png"))
PNGSUITE_VALID = [p for p in PNGSUITE if not p.name.startswith("x")]
PNGSUITE_CORRUPT = [p for p in PNGSUITE if p.name.startswith("x")]
REFUSED = (Unprocessable, UnsupportedMediaType)

RED, GREEN, BLUE, GREY, WHITE = (220, 20, 20), (20, 200, 40), (30, 40, 210), (128, 128, 128), 255


def run(data: bytes, token: str, settings: RenderSettings = DEFAULTS, **kw: object) -> Rendition:
    return render(data, parse_size(token, settings.max_output_side), settings, **kw)  # type: ignore[arg-type]


def decode(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")


def pixels(image: pyvips.Image) -> np.ndarray:
    return np.asarray(image.numpy(), dtype=np.float64).reshape(image.height, image.width, -1)


def from_array(array: np.ndarray) -> pyvips.Image:
    image = pyvips.Image.new_from_array(np.ascontiguousarray(array, dtype=np.uint8))
    return image.copy(interpretation="srgb" if image.bands >= 3 else "b-w")


def solid(width: int, height: int, colour: tuple[int, ...]) -> np.ndarray:
    return np.tile(np.array(colour, dtype=np.uint8), (height, width, 1))


def gradient(width: int, height: int) -> pyvips.Image:
    """A smooth, detailed, non-square test picture."""
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    r = 255 * x * np.ones_like(y)
    g = 255 * y * np.ones_like(x)
    b = 127.5 + 127.5 * np.sin(12 * x + 7 * y)
    return from_array(np.dstack([r, g, b]))


def near(actual: np.ndarray | list[float], expected: tuple[int, ...], tolerance: float) -> bool:
    """The first ``len(expected)`` values of ``actual`` are each within ``tolerance``."""
    difference = np.asarray(actual)[: len(expected)] - np.asarray(expected)
    return bool(np.all(np.abs(difference) <= tolerance))


@pytest.fixture(scope="module")
def synthetic_jpeg() -> bytes:
    return gradient(1200, 800).jpegsave_buffer(Q=90)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return PHOTO.read_bytes()


# --- geometry ---------------------------------------------------------------------------------

SYNTHETIC_SIZES = {  # source 1200x800
    "280": (280, 187),
    "x200": (300, 200),
    "650s": (650, 433),
    "894x1461s": (894, 596),
    "280x194": (280, 187),
    "280x194c": (280, 194),
    "40x40c": (40, 40),
    "40c": (40, 40),
    "750x500cq60": (750, 500),
    "280x194a": (280, 194),
    "280x194f30-60": (280, 194),
    "280x194f0-100": (280, 194),
    "280@2x": (560, 373),
    "280x194c@1.5x": (420, 291),
    "1200": (1200, 800),
    "4000": (1200, 800),  # never upscaled
    "x4000": (1200, 800),
    "3000x3000s": (1200, 800),
    "1800x1800su": (1800, 1200),
    "2400u": (2400, 1600),
    "2400x1200c": (1200, 600),  # too small to cover: the box shrinks, aspect kept
    "1600x1600c": (800, 800),
    "2400x1200f30-60": (1200, 600),
    "2400x1200a": (1200, 600),
    "2400x1200cu": (2400, 1200),
}

PHOTO_SIZES = {  # source 1600x1000
    "280": (280, 175),
    "650s": (650, 406),
    "894x1461s": (894, 559),
    "280x194c": (280, 194),
    "40x40c": (40, 40),
    "750x500cq60": (750, 500),
    "x200": (320, 200),
    "280x194a": (280, 194),
    "280x194f30-60": (280, 194),
    "280@2x": (560, 350),
    "2000": (1600, 1000),
    "3200x1000c": (1600, 500),
}


@pytest.mark.parametrize(("token", "expected"), SYNTHETIC_SIZES.items())
def test_output_size_synthetic(
    synthetic_jpeg: bytes, token: str, expected: tuple[int, int]
) -> None:
    result = run(synthetic_jpeg, token)
    image = decode(result.body)
    assert (result.width, result.height) == expected
    assert (image.width, image.height) == expected
    assert result.format is ImageFormat.JPEG


@pytest.mark.parametrize(("token", "expected"), PHOTO_SIZES.items())
def test_output_size_photo(photo: bytes, token: str, expected: tuple[int, int]) -> None:
    result = run(photo, token)
    assert (result.width, result.height) == expected
    assert decode(result.body).width == expected[0]


@pytest.mark.parametrize(
    ("source", "box"),
    [((1000, 1600), (280, 194)), ((997, 613), (301, 97)), ((333, 777), (123, 457))],
)
@pytest.mark.parametrize("mode", ["c", "a", "f0-0", "f100-100", "f50-50", "f10-90"])
def test_cover_crops_are_exact_for_any_aspect(
    source: tuple[int, int], box: tuple[int, int], mode: str
) -> None:
    data = gradient(*source).jpegsave_buffer(Q=75)
    result = run(data, f"{box[0]}x{box[1]}{mode}")
    assert (result.width, result.height) == box


@pytest.mark.parametrize(
    "token", ["280", "x200", "650s", "280x194", "280x194c", "280x194a", "280x194f50-50", "40c"]
)
def test_never_upscales_without_u(token: str) -> None:
    data = gradient(50, 30).pngsave_buffer()
    result = run(data, token)
    assert result.width <= 50 and result.height <= 30
    assert result.width == 50 or result.height == 30  # as large as the source allows
    upscaled = run(data, token + "u")
    assert upscaled.width > 50 or upscaled.height > 30


@pytest.mark.parametrize("token", ["280x194c", "280x194a", "280x194f20-80", "40x400c", "400x40c"])
def test_cover_on_a_too_small_source_keeps_the_requested_aspect(token: str) -> None:
    data = gradient(50, 30).pngsave_buffer()
    size = parse_size(token, 4096)
    assert size.width is not None and size.height is not None
    result = run(data, token)
    assert result.width <= 50 and result.height <= 30
    assert result.width == 50 or result.height == 30
    # Rounding to whole pixels moves the ratio by at most half a pixel on either side.
    ratio = size.width / size.height
    assert (result.width - 0.5) / (result.height + 0.5) <= ratio
    assert ratio <= (result.width + 0.5) / max(result.height - 0.5, 0.5)


def striped(width: int, height: int, horizontal: bool) -> bytes:
    """Three equal bands red | green | blue, left to right (or top to bottom)."""
    if horizontal:
        third = width // 3
        bands = [solid(third, height, c) for c in (RED, GREEN, BLUE)]
        return from_array(np.hstack(bands)).pngsave_buffer()
    third = height // 3
    bands = [solid(width, third, c) for c in (RED, GREEN, BLUE)]
    return from_array(np.vstack(bands)).pngsave_buffer()


@pytest.mark.parametrize(
    ("horizontal", "token", "colour"),
    [
        (True, "200x200f0-50", RED),
        (True, "200x200f10-50", RED),
        (True, "200x200f50-50", GREEN),
        (True, "200x200f100-50", BLUE),
        (True, "200x200f90-0", BLUE),
        (True, "200x200c", GREEN),
        (False, "200x200f50-0", RED),
        (False, "200x200f50-100", BLUE),
        (False, "200x200f0-50", GREEN),
        (False, "200x200c", GREEN),
    ],
)
def test_focal_point_crop_keeps_the_points_side(
    horizontal: bool, token: str, colour: tuple[int, int, int]
) -> None:
    data = striped(1200, 400, True) if horizontal else striped(400, 1200, False)
    result = run(data, token)
    assert (result.width, result.height) == (200, 200)
    mean = pixels(decode(result.body)).mean(axis=(0, 1))
    assert near(mean, colour, 3), mean


def test_smart_crop_keeps_the_interesting_region() -> None:
    flat = solid(1200, 400, GREY)
    rng = np.random.default_rng(7)
    flat[100:300, 950:1150] = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = from_array(flat).pngsave_buffer()

    def detailed_fraction(token: str) -> float:
        image = pixels(decode(run(data, token).body))
        return float((np.abs(image - 128).max(axis=2) > 10).mean())

    assert detailed_fraction("200x200c") == 0  # the centre is flat grey
    # The patch is 100x100 of the 200x200 output once scaled: the crop moved onto all of it.
    assert detailed_fraction("200x200a") > 0.24


# --- orientation ------------------------------------------------------------------------------


def upright_picture() -> np.ndarray:
    """120x80 grey, red top-left corner, blue top-right corner."""
    picture = solid(120, 80, GREY)
    picture[:20, :30] = RED
    picture[:20, -30:] = BLUE
    return picture


# How each EXIF orientation stores the upright picture (TIFF 6.0 / EXIF 2.32, tag 0x0112):
# the first stored row is the visual top (1-4) or a visual side (5-8).
STORED_AS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: np.fliplr,  # row 0 top, column 0 right
    3: lambda a: np.rot90(a, 2),  # row 0 bottom, column 0 right
    4: np.flipud,  # row 0 bottom, column 0 left
    5: lambda a: a.transpose(1, 0, 2),  # row 0 left, column 0 top
    6: lambda a: np.rot90(a, 1),  # row 0 right, column 0 top
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # row 0 right, column 0 bottom
    8: lambda a: np.rot90(a, -1),  # row 0 left, column 0 bottom
}


def oriented_jpeg(orientation: int) -> bytes:
    image = from_array(STORED_AS[orientation](upright_picture())).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return image.jpegsave_buffer(Q=95)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("token", ["60", "x40", "60x40c", "60s"])
def test_exif_orientation_comes_out_upright(orientation: int, token: str) -> None:
    data = oriented_jpeg(orientation)
    assert decode(data).get("orientation") == orientation
    result = run(data, token)
    image = decode(result.body)
    assert (image.width, image.height) == (60, 40)
    assert image.get_typeof("orientation") == 0  # metadata stripped: browsers must not rotate
    top_left, top_right = image.getpoint(4, 4), image.getpoint(55, 4)
    bottom_left, bottom_right = image.getpoint(4, 35), image.getpoint(55, 35)
    assert near(top_left, RED, 40), top_left
    assert near(top_right, BLUE, 40), top_right
    assert near(bottom_left, GREY, 20) and near(bottom_right, GREY, 20)


# --- colour -----------------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_srgb() -> None:
    data = (FIXTURES / "color" / "cmyk-sample.jpg").read_bytes()
    source = decode(data)
    assert source.interpretation == "cmyk" and source.bands == 4
    result = run(data, "100")
    image = decode(result.body)
    assert result.format is ImageFormat.JPEG
    assert image.bands == 3 and image.interpretation == "srgb"
    # The picture is red lettering on a dark background.
    rgb = pixels(image)
    reference = pixels(
        source.icc_transform("srgb", input_profile="cmyk").resize(image.width / source.width)
    )
    assert np.abs(rgb.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 4
    redness = rgb[..., 0] - rgb[..., 1:].max(axis=2)
    assert redness.max() > 120  # the letters are red, not cyan or grey
    assert rgb.mean() < 80  # the background is dark


PATCHES = [(200, 30, 30), (30, 180, 60), (40, 60, 200), (230, 200, 40)]


def tagged(profile: str) -> pyvips.Image:
    """Four sRGB colour patches stored in ``profile``'s space, with the profile embedded."""
    srgb = from_array(np.hstack([solid(50, 100, c) for c in PATCHES]))
    return srgb.icc_transform(profile, input_profile="srgb", embedded=False).cast("uchar")


def p3_tagged(fmt: str) -> bytes:
    p3 = tagged("p3")
    assert p3.get_typeof("icc-profile-data")
    return p3.jpegsave_buffer(Q=98) if fmt == "jpeg" else p3.pngsave_buffer()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_display_p3_is_converted_to_srgb_and_metadata_stripped(fmt: str) -> None:
    data = p3_tagged(fmt)
    stored = decode(data)
    # The stored numbers differ from sRGB: a renderer ignoring the profile would get them wrong.
    assert max(abs(a - b) for a, b in zip(stored.getpoint(25, 50), PATCHES[0], strict=True)) > 10
    result = run(data, "100")
    image = decode(result.body)
    for field in ("icc-profile-data", "exif-data", "xmp-data", "iptc-data"):
        assert image.get_typeof(field) == 0, field
    assert image.interpretation == "srgb" and image.bands == 3
    for index, colour in enumerate(PATCHES):
        centre = image.getpoint(12 + 25 * index, 25)
        assert near(centre, colour, 6), (colour, centre)


@pytest.mark.parametrize(
    ("profile", "transformed"), [("srgb", False), ("p3", True), ("cmyk", True)]
)
def test_only_non_srgb_profiles_are_colour_transformed(profile: str, transformed: bool) -> None:
    data = tagged(profile).jpegsave_buffer(Q=98)
    assert probe(data, RenderSettings()).needs_colour_transform is transformed


def test_srgb_tagged_source_keeps_its_colours() -> None:
    image = decode(run(tagged("srgb").jpegsave_buffer(Q=98), "100").body)
    assert image.get_typeof("icc-profile-data") == 0
    for index, colour in enumerate(PATCHES):
        assert near(image.getpoint(12 + 25 * index, 25), colour, 6), colour


def test_exif_xmp_and_iptc_are_stripped() -> None:
    data = (FIXTURES / "color" / "cmyk-sample.jpg").read_bytes()
    source = decode(data)
    assert source.get_typeof("exif-data") and source.get_typeof("xmp-data")
    for token in ("50", "50.png", "50.webp"):
        image = decode(run(data, token).body)
        for field in ("exif-data", "xmp-data", "iptc-data", "icc-profile-data"):
            assert image.get_typeof(field) == 0, (token, field)


@pytest.mark.parametrize(("bands", "interpretation"), [(3, "rgb16"), (1, "grey16")])
@pytest.mark.parametrize("token", ["64", "64.jpeg", "64.webp"])
def test_16_bit_png_becomes_8_bit(bands: int, interpretation: str, token: str) -> None:
    ramp = np.linspace(0, 65535, 128 * 96, dtype=np.uint16).reshape(96, 128, 1)
    values = np.repeat(ramp, bands, axis=2)
    image = pyvips.Image.new_from_array(values).copy(interpretation=interpretation)
    data = image.pngsave_buffer(bitdepth=16)
    assert decode(data).format == "ushort"
    result = run(data, token)
    out = decode(result.body)
    assert out.format == "uchar"
    assert (out.width, out.height) == (64, 48)
    plane = pixels(out)[..., 0]
    assert plane.min() < 10 and plane.max() > 245  # the full range maps onto 0-255
    # The middle of the ramp is mid grey, not 1/256 of it or clipped.
    assert abs(plane[24, :].mean() - 127.5) < 15


def rgba_png() -> bytes:
    """Left half opaque red, right half fully transparent."""
    picture = np.zeros((60, 80, 4), dtype=np.uint8)
    picture[:, :40] = (*RED, 255)
    picture[:, 40:] = (0, 0, 0, 0)
    return from_array(picture).pngsave_buffer()


@pytest.mark.parametrize(("token", "fmt"), [("40", ImageFormat.PNG), ("40.webp", ImageFormat.WEBP)])
def test_rgba_keeps_alpha_where_the_format_has_it(token: str, fmt: ImageFormat) -> None:
    result = run(rgba_png(), token)
    image = decode(result.body)
    assert result.format is fmt
    assert image.bands == 4
    assert image.getpoint(5, 15)[3] == 255
    assert image.getpoint(35, 15)[3] == 0
    assert near(image.getpoint(5, 15), RED, 3 if fmt is ImageFormat.PNG else 12)


@pytest.mark.parametrize("token", ["40.jpeg", "40.jpg"])
def test_rgba_to_jpeg_is_flattened_on_white(token: str) -> None:
    result = run(rgba_png(), token)
    image = decode(result.body)
    assert result.format is ImageFormat.JPEG
    assert image.bands == 3
    assert near(image.getpoint(5, 15), RED, 12)
    assert near(image.getpoint(35, 15), (WHITE,) * 3, 3)  # transparent became white, not black


def test_grey_alpha_to_jpeg_is_flattened_on_white() -> None:
    picture = np.zeros((20, 20, 2), dtype=np.uint8)
    picture[:, :10] = (0, 255)
    image = pyvips.Image.new_from_array(picture).copy(interpretation="b-w")
    result = run(image.pngsave_buffer(), "20.jpeg")
    out = decode(result.body)
    assert out.bands == 1
    assert out.getpoint(3, 10)[0] < 10 and out.getpoint(17, 10)[0] > 245


def test_sample_logo_keeps_its_transparency() -> None:
    data = (SAMPLES / "logos" / "rgba.png").read_bytes()
    assert decode(data).bands == 4
    image = decode(run(data, "64x64c").body)
    assert image.bands == 4
    alpha = pixels(image)[..., 3]
    assert alpha.min() < 255  # some of it is (partly) transparent


def animated_gif(frames: int = 3) -> bytes:
    colours = [RED, GREEN, BLUE] * frames
    strip = from_array(np.vstack([solid(40, 30, c) for c in colours[:frames]])).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 30)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100] * frames)
    return strip.gifsave_buffer()


@pytest.mark.parametrize("source_format", ["gif", "webp"])
@pytest.mark.parametrize("still", ["png", "jpg", "avif"])
def test_explicit_still_format_renders_the_first_frame(source_format: str, still: str) -> None:
    data = animated_gif()
    if source_format == "webp":
        data = pyvips.Image.new_from_buffer(data, "", n=-1).webpsave_buffer(lossless=True)
    assert decode(data).get("n-pages") == 3
    result = run(data, f"20.{still}")
    image = decode(result.body)
    assert (image.width, image.height) == (20, 15)  # one frame, not the whole strip
    assert image.get_typeof("n-pages") == 0 or image.get("n-pages") == 1
    assert near(image.getpoint(10, 7), RED, 12)


# --- formats ----------------------------------------------------------------------------------

MAGIC = {
    ImageFormat.JPEG: lambda b: b[:3] == b"\xff\xd8\xff",
    ImageFormat.PNG: lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    ImageFormat.WEBP: lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    ImageFormat.AVIF: lambda b: b[4:8] == b"ftyp" and b"avif" in b[8:32],
}


def source_in(fmt: str) -> bytes:
    image = gradient(160, 100)
    if fmt == "avif":
        return image.heifsave_buffer(compression="av1", effort=0)
    return image.write_to_buffer("." + fmt)


@pytest.mark.parametrize(
    ("source", "token", "negotiated", "expected"),
    [
        ("jpg", "80", None, ImageFormat.JPEG),  # the source's family
        ("png", "80", None, ImageFormat.PNG),
        ("gif", "80", None, ImageFormat.PNG),
        ("webp", "80", None, ImageFormat.WEBP),
        ("avif", "80", None, ImageFormat.JPEG),
        ("jpg", "80", ImageFormat.WEBP, ImageFormat.WEBP),  # Accept negotiated
        ("png", "80", ImageFormat.AVIF, ImageFormat.AVIF),
        ("jpg", "80.png", ImageFormat.AVIF, ImageFormat.PNG),  # the URL wins
        ("png", "80.jpeg", None, ImageFormat.JPEG),
        ("webp", "80.avif", ImageFormat.WEBP, ImageFormat.AVIF),
    ],
)
def test_output_format_and_bytes_match(
    source: str, token: str, negotiated: ImageFormat | None, expected: ImageFormat
) -> None:
    chosen = None if negotiated is None else Negotiated(negotiated, ImageFormat.WEBP)
    result = run(source_in(source), token, negotiated=chosen)
    assert result.format is expected
    assert MAGIC[expected](result.body)
    assert (decode(result.body).width, result.width) == (80, 80)


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PNGSUITE_VALID, ids=lambda p: p.name)
def test_every_valid_pngsuite_file_renders(path: Path) -> None:
    source = decode(path.read_bytes())
    for token in ("16", "24x24c.jpeg"):
        result = run(path.read_bytes(), token)
        image = decode(result.body)
        assert image.format == "uchar"
        assert (image.width, image.height) == (result.width, result.height)
        assert result.width <= max(source.width, 16)


def test_pngsuite_is_all_there() -> None:
    assert len(PNGSUITE_VALID) == 161
    assert len(PNGSUITE_CORRUPT) == 14


@pytest.mark.parametrize("path", PNGSUITE_CORRUPT, ids=lambda p: p.name)
def test_corrupt_pngsuite_files_are_refused(path: Path) -> None:
    with pytest.raises(REFUSED):
        run(path.read_bytes(), "16")


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.gif", "broken.png"])
def test_broken_files_are_unprocessable(name: str) -> None:
    with pytest.raises(Unprocessable):
        run((FIXTURES / "broken" / name).read_bytes(), "64")


@pytest.mark.parametrize("fmt", ["jpg", "png", "gif", "webp"])
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.5, 0.9, 0.99])
def test_truncated_originals_are_refused(fmt: str, fraction: float) -> None:
    data = pyvips.Image.new_from_file(str(PHOTO)).resize(0.2).write_to_buffer("." + fmt)
    with pytest.raises(REFUSED):
        run(data[: int(len(data) * fraction)], "64")


# --- JPEG leniency: the fast path (libjpeg-turbo) accepts what libvips accepts ---------------

BOTH_PATHS = [DEFAULTS, RenderSettings(exact_shrink=True)]


def intact_jpeg(progressive: bool, grey: bool = False) -> bytes:
    photo = pyvips.Image.new_from_file(str(PHOTO)).resize(0.25)  # 400x250
    if grey:
        photo = photo.colourspace("b-w")
    return photo.jpegsave_buffer(Q=85, interlace=progressive)


def libvips_renders(data: bytes) -> bool:
    """Whether libvips, as tofu calls it (``fail_on=error``), decodes ``data`` whole."""
    try:
        pyvips.Image.new_from_buffer(data, "", fail_on="error").copy_memory()
    except pyvips.Error:
        return False
    return True


@pytest.mark.parametrize(
    ("progressive", "grey"), [(False, False), (True, False), (False, True)],
    ids=["baseline", "progressive", "grey"],
)  # fmt: skip
@pytest.mark.parametrize("marker", [b"\xff\xdb", b"\xff\xda"], ids=["DQT", "SOS"])
@pytest.mark.parametrize("settings", BOTH_PATHS, ids=["fast", "exact"])
@pytest.mark.parametrize("token", ["64", "280"])
def test_extraneous_bytes_before_a_marker_render_on_both_paths(
    progressive: bool, grey: bool, marker: bytes, settings: RenderSettings, token: str
) -> None:
    """libjpeg's "Corrupt JPEG data: 3 extraneous bytes before marker 0xdb" is a warning:
    libvips, Pillow and browsers render the picture, and so does each of tofu's paths."""
    intact = intact_jpeg(progressive, grey)
    at = intact.index(marker)  # the first of them
    damaged = intact[:at] + b"\x00\x11\x22" + intact[at:]
    assert libvips_renders(damaged)
    expected = run(intact, token, settings)
    rendition = run(damaged, token, settings)
    assert (rendition.width, rendition.height) == (expected.width, expected.height)
    difference = np.abs(pixels(decode(rendition.body)) - pixels(decode(expected.body)))
    assert difference.mean() < 4.0  # the same picture (the decoders scale it differently)


def tiny_fine_jpeg() -> bytes:
    """80x50 at Q98 without chroma subsampling: libvips decodes every row of it without reading
    past the scan, so it renders the file without its EOI (libjpeg-turbo, strict, does not)."""
    photo = pyvips.Image.new_from_file(str(PHOTO)).resize(0.05)
    return photo.jpegsave_buffer(Q=98, optimize_coding=True, subsample_mode="off")


@pytest.mark.parametrize(
    ("data", "libvips_verdict"),
    [
        (intact_jpeg(progressive=False)[:-2], False),
        (intact_jpeg(progressive=True)[:-2], False),
        (tiny_fine_jpeg()[:-2], True),
    ],
    ids=["baseline", "progressive", "tiny-q98"],
)
@pytest.mark.parametrize("token", ["32", "280"])
def test_a_missing_eoi_marker_is_judged_as_libvips_judges_it_on_both_paths(
    data: bytes, libvips_verdict: bool, token: str
) -> None:
    """A file missing only its final EOI marker: libvips (8.18) renders it when it could decode
    every row without reading past the data, and refuses it otherwise ("premature end of JPEG
    image", as for a truncated file); both paths give libvips' verdict."""
    assert libvips_renders(data) is libvips_verdict
    verdicts = []
    for settings in BOTH_PATHS:
        try:
            run(data, token, settings)
            verdicts.append(True)
        except Unprocessable:
            verdicts.append(False)
    assert verdicts == [libvips_verdict] * 2


@pytest.mark.parametrize("settings", BOTH_PATHS, ids=["fast", "exact"])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_truncated_jpegs_are_422_on_both_paths(settings: RenderSettings, fraction: float) -> None:
    fixture = (FIXTURES / "broken" / "truncated.jpg").read_bytes()
    with pytest.raises(Unprocessable):
        run(fixture, "64", settings)
    for progressive in (False, True):
        data = intact_jpeg(progressive)
        with pytest.raises(Unprocessable):
            run(data[: int(len(data) * fraction)], "280", settings)


def test_random_damage_never_raises_anything_else() -> None:
    rng = random.Random(1234)
    originals = [source_in(fmt) for fmt in ("jpg", "png", "gif", "webp")]
    outcomes = {"rendered": 0, "refused": 0}
    for _ in range(120):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            run(bytes(data), "48x48c")
            outcomes["rendered"] += 1
        except REFUSED:
            outcomes["refused"] += 1
    # Anything but a refusal would have propagated; check the damage did reach the decoders.
    assert outcomes["refused"] > 10, outcomes


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world\n",
        b"<!doctype html><html><body>404</body></html>",
        SVG,
        b"<svg" + SVG[SVG.index(b"<svg") + 4 :],
        PDF,
        b"\x00" * 4096,
        b"GIF89a",
        b"\xff\xd8",
        b"\x89PNG\r\n\x1a\n",
    ],
    ids=["empty", "text", "html", "svg-xml", "svg", "pdf", "zeros", "gif", "jpeg-soi", "png-sig"],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(REFUSED) as caught:
        run(data, "64")
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize("data", [SVG, PDF, b"hello, world\n"], ids=["svg", "pdf", "text"])
def test_svg_pdf_and_text_are_unsupported_media(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        run(data, "64")
    assert caught.value.status == 415


def test_other_image_formats_are_unsupported() -> None:
    tiff = gradient(40, 30).tiffsave_buffer()
    with pytest.raises(UnsupportedMediaType):
        run(tiff, "20")


def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_claiming(30_000, 30_000)
    assert len(bomb) < 2_000
    with pytest.raises(Unprocessable, match="30000x30000, over the 50000000 pixel limit"):
        run(bomb, "280")
    with pytest.raises(Unprocessable, match="pixel limit"):
        probe(bomb, DEFAULTS)
    # probe reads the header only: with the limit lifted it accepts the file whose pixel data
    # is missing, which any decode would trip over.
    source = probe(bomb, RenderSettings(max_source_pixels=10**10))
    assert (source.width, source.height) == (30_000, 30_000)
    with pytest.raises(Unprocessable, match="cannot decode"):
        run(png_claiming(3_000, 3_000), "280", RenderSettings(max_source_pixels=10**10))


def test_pixel_limit_is_the_configured_one() -> None:
    data = gradient(300, 200).pngsave_buffer()
    assert run(data, "30", RenderSettings(max_source_pixels=60_000)).width == 30
    with pytest.raises(Unprocessable, match="300x200, over the 59999 pixel limit"):
        run(data, "30", RenderSettings(max_source_pixels=59_999))


# --- encoders ---------------------------------------------------------------------------------


def jpeg_segments(body: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the first scan."""
    assert body[:2] == b"\xff\xd8"
    segments, pos = [], 2
    while True:
        assert body[pos] == 0xFF
        marker = body[pos + 1]
        (length,) = struct.unpack(">H", body[pos + 2 : pos + 4])
        segments.append((marker, body[pos + 4 : pos + 2 + length]))
        if marker == 0xDA:  # start of scan
            return segments
        pos += 2 + length


# ITU-T T.81 Annex K, table K.1 (luminance), in natural order; libjpeg scales it by quality.
ANNEX_K_LUMINANCE = [
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
# Annex K, tables K.3 and K.5: the "typical" Huffman code lengths that unoptimised files use.
STANDARD_DC_LUMINANCE_BITS = bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
STANDARD_AC_LUMINANCE_BITS = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])


def zigzag_order() -> list[int]:
    cells = [(r, c) for r in range(8) for c in range(8)]
    cells.sort(key=lambda rc: (rc[0] + rc[1], rc[1] if (rc[0] + rc[1]) % 2 == 0 else rc[0]))
    return [r * 8 + c for r, c in cells]


def luminance_table_for(quality: int) -> list[int]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    natural = [min(max((v * scale + 50) // 100, 1), 255) for v in ANNEX_K_LUMINANCE]
    return [natural[i] for i in zigzag_order()]


def jpeg_luminance_table(body: bytes) -> list[int]:
    for marker, payload in jpeg_segments(body):
        if marker == 0xDB and payload[0] == 0:  # 8-bit table 0
            return list(payload[1:65])
    raise AssertionError("no luminance quantisation table")


@pytest.mark.parametrize(("token", "quality"), [("280", 80), ("750x500cq60", 60), ("280q95", 95)])
def test_jpeg_quality(photo: bytes, token: str, quality: int) -> None:
    assert DEFAULT_QUALITY[ImageFormat.JPEG] == 80
    body = run(photo, token).body
    assert jpeg_luminance_table(body) == luminance_table_for(quality)


def test_jpeg_has_optimized_huffman_tables(photo: bytes) -> None:
    body = run(photo, "120x120c").body  # small: baseline, where optimisation is a choice
    tables = [p for m, p in jpeg_segments(body) if m == 0xC4]
    assert tables
    dc_luminance = next(p for p in tables if p[0] == 0x00)[1:17]
    ac_luminance = next(p for p in tables if p[0] == 0x10)[1:17]
    assert dc_luminance != STANDARD_DC_LUMINANCE_BITS
    assert ac_luminance != STANDARD_AC_LUMINANCE_BITS
    # Sanity check of the detection: libvips without optimisation writes the standard tables.
    plain = decode(body).jpegsave_buffer(Q=80, optimize_coding=False)
    plain_tables = [p for m, p in jpeg_segments(plain) if m == 0xC4]
    assert next(p for p in plain_tables if p[0] == 0x00)[1:17] == STANDARD_DC_LUMINANCE_BITS


def test_jpeg_is_progressive_only_above_the_threshold(photo: bytes) -> None:
    side = math.isqrt(_PROGRESSIVE_MIN_PIXELS)
    assert side * side == _PROGRESSIVE_MIN_PIXELS

    def frame_marker(token: str) -> int:
        return next(m for m, _ in jpeg_segments(run(photo, token).body) if m in (0xC0, 0xC1, 0xC2))

    assert frame_marker(f"{side}x{side}c") == 0xC2  # progressive
    assert frame_marker(f"{side * 3}s") == 0xC2
    assert frame_marker(f"{side - 1}x{side}c") == 0xC0  # baseline
    assert frame_marker("40x40c") == 0xC0


@pytest.mark.parametrize("fmt", [ImageFormat.WEBP, ImageFormat.AVIF, ImageFormat.JPEG])
def test_default_quality_per_format(photo: bytes, fmt: ImageFormat) -> None:
    expected = {ImageFormat.JPEG: 80, ImageFormat.WEBP: 78, ImageFormat.AVIF: 62}[fmt]
    assert DEFAULT_QUALITY[fmt] == expected
    default = run(photo, f"160.{fmt.value}").body
    assert default == run(photo, f"160q{expected}.{fmt.value}").body
    lower = run(photo, f"160q{expected - 30}.{fmt.value}").body
    higher = run(photo, f"160q{min(expected + 15, 100)}.{fmt.value}").body
    assert len(lower) < len(default) < len(higher)


def test_png_is_lossless_whatever_the_quality() -> None:
    source = gradient(64, 48)
    data = source.pngsave_buffer()
    for token in ("64.png", "64q10.png", "64"):
        out = decode(run(data, token).body)
        assert np.array_equal(pixels(out), pixels(source))
