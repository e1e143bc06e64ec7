"""Info documents (``/{prefix}/info/{name}``): what they say about stills, animations, oriented
and CMYK originals, placeholders that decode to the picture, and their HTTP life (signing,
caching, no negotiation)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import blurhash
import numpy as np
import pytest
import pyvips
import thumbhash
from aiohttp.test_utils import TestClient

from tests.support.images import animated_gif, png_claiming
from tests.support.metrics import metric
from tests.support.servers import FIXTURES, SAMPLES
from tofu.errors import Unprocessable, UnsupportedMediaType
from tofu.render import RenderSettings, render
from tofu.render.documents import blur_hash, dominant_colour, thumb_hash
from tofu.urls import parse_size

SETTINGS = RenderSettings()
PHOTO = SAMPLES / "recipes" / "1203423" / "5366e857.jpg"  # 1600x1000
PHOTO_INFO_PATH = "/recipes/1203423/info/5366e857.jpg"
SECRET = "info-test-secret-0123456789abcdefgh"
MakeClient = Callable[..., Awaitable[TestClient]]


def info(data: bytes) -> dict[str, Any]:
    rendition = render(data, parse_size("info", 4096), SETTINGS)
    assert rendition.media_type == "application/json"
    document: dict[str, Any] = json.loads(rendition.body)
    return document


def srgb_mean(data: bytes) -> np.ndarray:
    """The mean colour of the original as displayed (sRGB, first frame, alpha ignored)."""
    image = pyvips.Image.new_from_buffer(data, "")
    if image.interpretation == "cmyk":
        image = image.icc_transform("srgb", input_profile="cmyk")
    image = image.colourspace("srgb")
    return np.array([image.extract_band(band).avg() for band in range(3)])


def hex_colour(text: str) -> np.ndarray:
    assert len(text) == 7 and text[0] == "#"
    return np.array([int(text[i : i + 2], 16) for i in (1, 3, 5)])


def thumbhash_average(document: dict[str, Any]) -> np.ndarray:
    """The average colour a ThumbHash decoder reads (the thumbhash package's), 0-255 and alpha
    0-1."""
    decoded = list(base64.b64decode(document["thumbhash"]))
    red, green, blue, alpha = thumbhash.thumb_hash_to_average_rgba(decoded)
    return np.array([red * 255, green * 255, blue * 255, alpha])


def assert_placeholders_look_like(document: dict[str, Any], data: bytes) -> None:
    mean = srgb_mean(data)
    assert np.all(np.abs(thumbhash_average(document)[:3] - mean) <= 12), (
        thumbhash_average(document),
        mean,
    )
    across, down = blurhash.components(document["blurhash"])
    landscape = document["width"] >= document["height"]
    assert (across, down) == ((4, 3) if landscape else (3, 4))
    decoded = np.array(blurhash.decode(document["blurhash"], 16, 16), dtype=float)
    # BlurHash averages in linear light: a little brighter than the sRGB mean.
    assert np.all(np.abs(decoded.reshape(-1, 3).mean(axis=0) - mean) <= 30)


# --- the document --------------------------------------------------------------------------


def test_a_still_photo() -> None:
    data = PHOTO.read_bytes()
    document = info(data)
    assert {k: document[k] for k in ("width", "height", "format", "animated", "frames")} == {
        "width": 1600,
        "height": 1000,
        "format": "jpeg",
        "animated": False,
        "frames": 1,
    }
    assert document["has_alpha"] is False
    assert_placeholders_look_like(document, data)
    hex_colour(document["dominant_color"])


def test_an_animation() -> None:
    document = info((FIXTURES / "animated" / "cogs.gif").read_bytes())
    assert (document["width"], document["height"]) == (85, 77)
    assert (document["format"], document["animated"], document["frames"]) == ("gif", True, 5)
    flat = info(animated_gif(60, 40, 3))
    assert (flat["width"], flat["height"], flat["frames"], flat["animated"]) == (60, 40, 3, True)


@pytest.mark.parametrize("orientation", [6, 8])
def test_an_oriented_jpeg_is_described_upright(orientation: int) -> None:
    # 120x80 as displayed: stored 80 wide and 120 high, turned by its EXIF orientation.
    upright = np.zeros((80, 120, 3), dtype=np.uint8)
    upright[:, :60] = (220, 20, 20)
    upright[:, 60:] = (30, 40, 210)
    stored = np.rot90(upright, 1 if orientation == 6 else -1)
    image = pyvips.Image.new_from_array(np.ascontiguousarray(stored)).copy(interpretation="srgb")
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    document = info(image.jpegsave_buffer(Q=95))
    assert (document["width"], document["height"]) == (120, 80)
    # The placeholders are of the upright picture: landscape, red on the left.
    decoded = list(base64.b64decode(document["thumbhash"]))
    assert thumbhash.thumb_hash_to_approximate_aspect_ratio(decoded) > 1
    assert blurhash.components(document["blurhash"]) == (4, 3)
    left = np.array(blurhash.decode(document["blurhash"], 8, 4))[:, 0]
    assert left.mean(axis=0)[0] > left.mean(axis=0)[2]  # more red than blue on the left


def test_a_cmyk_jpeg_is_described_in_srgb() -> None:
    data = (FIXTURES / "color" / "cmyk-sample.jpg").read_bytes()
    document = info(data)
    assert (document["width"], document["height"], document["format"]) == (100, 100, "jpeg")
    assert_placeholders_look_like(document, data)


def test_transparency_reaches_the_thumbhash() -> None:
    data = (SAMPLES / "logos" / "rgba.png").read_bytes()
    document = info(data)
    assert document["has_alpha"] is True
    image = pyvips.Image.new_from_buffer(data, "")
    mean_alpha = image.extract_band(3).avg() / 255
    assert abs(thumbhash_average(document)[3] - mean_alpha) <= 0.1


def test_dominant_colour_is_the_most_common_not_the_mean() -> None:
    picture = np.zeros((60, 100, 3), dtype=np.uint8)
    picture[:, :60] = (200, 30, 30)  # 60 % red
    picture[:, 60:] = (30, 40, 210)
    image = pyvips.Image.new_from_array(picture).copy(interpretation="srgb")
    document = info(image.pngsave_buffer())
    assert np.all(np.abs(hex_colour(document["dominant_color"]) - (200, 30, 30)) <= 3)
    # Transparent pixels do not count: a mostly transparent blue over red shows red.
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:, :, :3] = (30, 40, 210)
    rgba[:3, :, :] = (200, 30, 30, 255)
    assert dominant_colour(rgba) == (200, 30, 30)


def test_thumbhash_of_an_opaque_image_matches_the_reference_encoder() -> None:
    """The thumbhash package's encoder is right for opaque images (its slip is in alpha):
    ours gives the same bytes but for a rounding of halves (JavaScript's, ours; Python's,
    theirs), so at most a unit in a few nibbles."""
    image = pyvips.Image.thumbnail(str(PHOTO), 32, height=32)
    rgba = np.ndarray(
        buffer=image.bandjoin(255).write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, 4),
    )
    ours = thumb_hash(rgba)
    theirs = bytes(thumbhash.rgba_to_thumb_hash(image.width, image.height, rgba.ravel().tolist()))
    assert len(ours) == len(theirs)
    assert ours[:5] == theirs[:5]  # the header: averages, scales, shape
    assert sum(a != b for a, b in zip(ours, theirs, strict=True)) <= 3


@pytest.mark.parametrize(
    "path", [PHOTO, SAMPLES / "logos" / "rgba.png", FIXTURES / "color" / "cmyk-sample.jpg"]
)
@pytest.mark.parametrize("turn", [False, True])
def test_blurhash_is_the_reference_encoders(path: Path, turn: bool) -> None:
    """The same string as the blurhash package's encoder (the reference's port), landscape and
    portrait, transparency flattened onto white."""
    image = pyvips.Image.thumbnail(str(path), 32, height=32, export_profile="srgb")
    image = image.rot90() if turn else image
    image = image if image.hasalpha() else image.bandjoin(255)
    rgba = np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, 4)
    )
    alpha = rgba[:, :, 3:4] / 255
    flat = rgba[:, :, :3] * alpha + 255 * (1 - alpha)
    across, down = (4, 3) if image.width >= image.height else (3, 4)
    assert blur_hash(rgba) == blurhash.encode(flat.tolist(), across, down)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not an image at all", UnsupportedMediaType),
        (png_claiming(30_000, 30_000), Unprocessable),  # over the pixel limit: from the header
        ((FIXTURES / "broken" / "truncated.jpg").read_bytes(), Unprocessable),
    ],
)
def test_bad_originals_are_refused_like_any_render(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        render(data, parse_size("info", 4096), SETTINGS)


def test_info_is_its_own_canonical_token() -> None:
    from tofu.urls import size_token

    assert size_token(parse_size("info", 4096)) == "info"
    for spelling in ("INFO", "info.json", "infoq50", "info@2x"):
        with pytest.raises(Exception, match="size token"):
            parse_size(spelling, 4096)


# --- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    shutil.copytree(SAMPLES, root)
    (root / "bad").mkdir()
    (root / "bad" / "notes.txt").write_bytes(b"not an image\n")
    (root / "bad" / "bomb.png").write_bytes(png_claiming(30_000, 30_000))
    return root


async def test_info_is_cached_like_a_rendition_and_never_negotiated(
    make_client: MakeClient, origin: Path
) -> None:
    client = await make_client(origin=(str(origin),), dev=True, client_hints=True, save_data=True)
    first = await client.get(PHOTO_INFO_PATH, headers={"Accept": "image/avif,image/webp"})
    assert first.status == 200
    assert first.headers["Content-Type"] == "application/json"
    assert "immutable" in first.headers["Cache-Control"]
    assert "Vary" not in first.headers
    document = await first.json()
    assert (document["width"], document["height"]) == (1600, 1000)
    # Another client, other hints: the same document, from the cache.
    second = await client.get(
        PHOTO_INFO_PATH, headers={"Accept": "image/jpeg", "Sec-CH-DPR": "2", "Save-Data": "on"}
    )
    assert await second.read() == await first.read()
    assert second.headers["ETag"] == first.headers["ETag"] and "Vary" not in second.headers
    revalidated = await client.get(
        PHOTO_INFO_PATH, headers={"If-None-Match": first.headers["ETag"]}
    )
    assert revalidated.status == 304
    exposition = await (await client.get("/metrics")).text()
    assert metric(exposition, "tofu_renders_total") == 1
    # The pixels of the same original are another rendition.
    picture = await client.get("/recipes/1203423/280/5366e857.jpg")
    assert picture.status == 200 and picture.content_type.startswith("image/")
    exposition = await (await client.get("/metrics")).text()
    assert metric(exposition, "tofu_renders_total") == 2


@pytest.mark.parametrize(
    ("path", "status"), [("/bad/info/notes.txt", 415), ("/bad/info/bomb.png", 422)]
)
async def test_info_of_a_bad_original_is_a_4xx_with_a_reason(
    make_client: MakeClient, origin: Path, path: str, status: int
) -> None:
    client = await make_client(origin=(str(origin),), dev=True)
    response = await client.get(path)
    assert response.status == status
    text = await response.text()
    assert text.count("\n") == 1 and response.content_type == "text/plain"
    assert (await client.get(PHOTO_INFO_PATH)).status == 200  # and the next one works


async def test_info_follows_the_signing_rules(make_client: MakeClient, origin: Path) -> None:
    from tofu.signing import url_for

    signed_only = await make_client(origin=(str(origin),), secret=(SECRET,))
    assert (await signed_only.get(PHOTO_INFO_PATH)).status == 403
    signed = url_for("recipes/1203423/5366e857.jpg", "info", SECRET)
    assert (await signed_only.get(signed)).status == 200
    allowlisted = await make_client(origin=(str(origin),), secret=(SECRET,), sizes=("info",))
    assert (await allowlisted.get(PHOTO_INFO_PATH)).status == 200
    assert (await allowlisted.get("/recipes/1203423/280/5366e857.jpg")).status == 403


async def test_presets_only_serves_info_as_a_preset(make_client: MakeClient, origin: Path) -> None:
    client = await make_client(
        origin=(str(origin),),
        preset=("card=280x194c", "placeholder=info"),
        presets_only=True,
    )
    assert (await client.get(PHOTO_INFO_PATH)).status == 403
    response = await client.get("/recipes/1203423/placeholder/5366e857.jpg")
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    assert (await response.json())["width"] == 1600
