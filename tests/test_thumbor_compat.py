"""Side by side with the real thumbor 7 (from PyPI, in its own virtualenv, file loader over a
temporary directory) and a real ``tofu serve`` over the same originals: for each URL the same
status class, output size and format, and pictures that look alike (SSIM >= 0.8; smart crop is
exempt, thumbor without detectors crops the centre). Each server starts once for the module.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pyvips
from libthumbor import CryptoURL
from skimage.metrics import structural_similarity

from bench.servers import Running, ensure_thumbor, start_thumbor

from .support.servers import FIXTURES, SAMPLES, TofuProcess, start_tofu

KEY = "compat-security-key-of-32-bytes!"
MIN_SSIM = 0.8


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str


def fetch(base: str, path: str) -> Reply:
    request = urllib.request.Request(base + path)  # no Accept: neither server negotiates
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Reply(response.status, response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), exc.headers.get("Content-Type", ""))


def make_originals(root: Path) -> None:
    root.mkdir()
    shutil.copy(SAMPLES / "recipes" / "1203423" / "5366e857.jpg", root / "photo.jpg")  # 1600x1000
    shutil.copy(SAMPLES / "logos" / "rgba.png", root / "logo.png")  # 128x128, transparent
    # A 600x400 picture on a 40 px white frame, for trim (PNG: no JPEG noise in the frame).
    picture = pyvips.Image.new_from_file(str(root / "photo.jpg")).thumbnail_image(
        600, height=400, crop="centre"
    )
    framed = picture.embed(40, 40, 680, 480, extend="background", background=[255, 255, 255])
    framed.pngsave(str(root / "framed.png"))
    (root / "notes.txt").write_text("not an image\n")
    shutil.copy(FIXTURES / "animated" / "cogs.gif", root / "cogs.gif")  # 85x77, 5 frames
    # The photo stored turned a quarter, with EXIF orientation 6 to show it upright.
    turned = pyvips.Image.new_from_file(str(root / "photo.jpg")).rot90().copy()
    turned.set_type(pyvips.GValue.gint_type, "orientation", 6)
    turned.jpegsave(str(root / "oriented.jpg"), Q=90)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, TofuProcess]]:
    workdir = tmp_path_factory.mktemp("thumbor-compat")
    origin = workdir / "originals"
    make_originals(origin)
    ensure_thumbor()
    thumbor = start_thumbor(
        "thumbor",
        origin,
        workdir,
        result_storage=False,
        processes=1,
        extra_config=f"SECURITY_KEY = {KEY!r}\nRESPECT_ORIENTATION = True\n",
    )
    try:
        tofu = start_tofu(
            ["--origin", str(origin), "--thumbor-key", KEY, "--thumbor-unsafe", "--workers", "1"],
            workdir,
        )
    except BaseException:
        thumbor.stop()
        raise
    yield thumbor, tofu
    tofu.stop()
    thumbor.stop()


def decode(body: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(body, "")


def as_rgb(image: pyvips.Image) -> np.ndarray:
    """sRGB, 8-bit, alpha flattened onto white: what a page shows."""
    if image.hasalpha():
        image = image.flatten(background=[255] * (image.bands - 1))
    image = image.colourspace("srgb")
    if image.bands > 3:
        image = image.extract_band(0, n=3)
    return np.ndarray(
        buffer=image.cast("uchar").write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, 3),
    )


# Every part of the grammar and every filter of the issue, as an app would send them.
URLS = [
    "300x200/photo.jpg",
    "300x0/photo.jpg",
    "0x200/photo.jpg",
    "photo.jpg",
    "fit-in/300x300/photo.jpg",
    "adaptive-fit-in/200x300/photo.jpg",
    "full-fit-in/300x300/photo.jpg",
    "adaptive-full-fit-in/200x300/photo.jpg",
    "-300x200/photo.jpg",
    "300x-200/photo.jpg",
    "-300x-200/photo.jpg",
    "100x100:900x700/photo.jpg",
    "100x100:900x700/300x0/photo.jpg",
    "trim/framed.png",
    "trim:bottom-right:10/fit-in/300x300/framed.png",
    "200x200/right/photo.jpg",
    "300x100/left/bottom/photo.jpg",
    "300x100/top/photo.jpg",
    "origx200/photo.jpg",
    "300xorig/photo.jpg",
    "300x200/filters:quality(50)/photo.jpg",
    "300x200/filters:format(webp)/photo.jpg",
    "300x200/filters:format(png)/photo.jpg",
    "300x200/filters:format(gif)/photo.jpg",
    "300x200/filters:format(avif)/photo.jpg",
    "100x100/filters:background_color(white):format(jpeg)/logo.png",
    "fit-in/300x300/filters:fill(red)/photo.jpg",
    "fit-in/300x300/filters:fill(00ff00)/photo.jpg",
    "fit-in/300x300/filters:fill(blur)/photo.jpg",
    "fit-in/300x300/filters:fill(auto)/photo.jpg",
    "fit-in/300x300/filters:fill(transparent):format(png)/photo.jpg",
    "300x200/filters:focal(0x0:400x400)/photo.jpg",
    "300x200/filters:focal(1200x600:1600x1000)/photo.jpg",
    "fit-in/400x400/filters:upscale()/logo.png",
    "300x300/filters:no_upscale()/logo.png",
    "300x200/filters:grayscale()/photo.jpg",
    "300x200/filters:strip_icc():strip_exif()/photo.jpg",
    "300x200/filters:rotate(90)/photo.jpg",
    "300x200/filters:rotate(180)/photo.jpg",
    "300x200/filters:max_bytes(6000)/photo.jpg",
    "300x200/filters:blur(5)/photo.jpg",
    "300x200/filters:brightness(30)/photo.jpg",
    "300x200/filters:contrast(40)/photo.jpg",
    "300x200/filters:round_corner(30,255,255,255)/photo.jpg",
    "fit-in/100x100/filters:background_color(red)/logo.png",
    "300x200/filters:nosuchfilter(1):quality(70)/photo.jpg",
    "300x200/smart/photo.jpg",
]
SSIM_EXEMPT = {"300x200/smart/photo.jpg"}


@pytest.mark.parametrize("path", URLS)
def test_same_output_as_thumbor(servers: tuple[Running, TofuProcess], path: str) -> None:
    thumbor, tofu = servers
    theirs = fetch(thumbor.url, "/unsafe/" + path)
    ours = fetch(tofu.url, "/unsafe/" + path)
    assert theirs.status == 200, (theirs.status, theirs.body[:200])
    assert ours.status == 200, ours.body[:200]
    assert ours.content_type == theirs.content_type
    their_image, our_image = decode(theirs.body), decode(ours.body)
    assert (our_image.width, our_image.height) == (their_image.width, their_image.height)
    if "max_bytes(" in path:
        assert len(ours.body) <= 6000 and len(theirs.body) <= 6000
    if path not in SSIM_EXEMPT:
        score = structural_similarity(
            as_rgb(their_image), as_rgb(our_image), channel_axis=2, data_range=255
        )
        assert score >= MIN_SSIM, f"SSIM {score:.3f}"


def test_signed_urls_from_libthumbor(servers: tuple[Running, TofuProcess]) -> None:
    thumbor, tofu = servers
    crypto = CryptoURL(key=KEY)
    for options in (
        {"width": 300, "height": 200},
        {"fit_in": True, "width": 200, "height": 200, "filters": ["format(webp)", "quality(60)"]},
        {"crop": ((100, 100), (900, 700)), "width": 150, "flip": True},
    ):
        path = crypto.generate(image_url="photo.jpg", **options)
        theirs, ours = fetch(thumbor.url, path), fetch(tofu.url, path)
        assert (theirs.status, ours.status) == (200, 200), path
        assert ours.content_type == theirs.content_type
        assert decode(ours.body).width == decode(theirs.body).width


@pytest.mark.parametrize(
    "path",
    [
        "/unsafe/300x200/missing.jpg",  # 404 both
        "/unsafe/300x200/notes.txt",  # not an image
        "/" + "A" * 27 + "=/300x200/photo.jpg",  # bad signature
        "/unsafe/-300x-200/missing/",  # no such original
    ],
)
def test_bad_urls_get_the_same_status_class(
    servers: tuple[Running, TofuProcess], path: str
) -> None:
    thumbor, tofu = servers
    theirs, ours = fetch(thumbor.url, path), fetch(tofu.url, path)
    assert theirs.status // 100 == ours.status // 100 == 4, (theirs.status, ours.status)


def test_documented_differences(servers: tuple[Running, TofuProcess]) -> None:
    """docs/thumbor.md's "deliberate differences", checked against thumbor itself."""
    thumbor, tofu = servers
    # No upscaling unless asked: thumbor enlarges the 128x128 logo to fill 300x200; tofu
    # crops it to the box's aspect ratio at the source's scale.
    theirs, ours = (fetch(s.url, "/unsafe/300x200/logo.png") for s in (thumbor, tofu))
    assert (decode(theirs.body).width, decode(theirs.body).height) == (300, 200)
    assert (decode(ours.body).width, decode(ours.body).height) == (128, 85)
    # ... unless the URL asks for it (thumbor's upscale() filter).
    ours = fetch(tofu.url, "/unsafe/300x200/filters:upscale()/logo.png")
    assert (decode(ours.body).width, decode(ours.body).height) == (300, 200)
    # Transparency into JPEG: thumbor drops the alpha band, showing the colour hidden under
    # transparent pixels (grey in this logo); tofu flattens onto white.
    path = "/unsafe/100x100/filters:format(jpeg)/logo.png"
    theirs, ours = (fetch(s.url, path) for s in (thumbor, tofu))
    assert theirs.content_type == ours.content_type == "image/jpeg"
    assert max(decode(theirs.body).getpoint(0, 0)) < 200
    assert min(decode(ours.body).getpoint(0, 0)) > 250
    # meta/: thumbor 7 reports the processed size as the source's; tofu the original's.
    theirs, ours = (fetch(s.url, "/unsafe/meta/300x200/photo.jpg") for s in (thumbor, tofu))
    their_source = json.loads(theirs.body)["thumbor"]["source"]
    our_source = json.loads(ours.body)["thumbor"]["source"]
    assert (their_source["width"], their_source["height"]) == (300, 200)
    assert (our_source["width"], our_source["height"]) == (1600, 1000)
    # meta/ with trim: refused (the document is computed from the header).
    assert fetch(tofu.url, "/unsafe/meta/trim/framed.png").status == 400


META_URLS = [
    "meta/photo.jpg",
    "meta/oriented.jpg",
    "meta/cogs.gif",
    "meta/logo.png",
    "meta/300x200/photo.jpg",
    "meta/300x200/oriented.jpg",
    "meta/fit-in/300x200/photo.jpg",
    "meta/full-fit-in/300x200/photo.jpg",
    "meta/300x0/photo.jpg",
    "meta/-300x-200/photo.jpg",
    "meta/100x100:900x700/300x200/photo.jpg",
    "meta/200x200/right/photo.jpg",
    "meta/300x200/filters:focal(0x0:400x400)/photo.jpg",
    "meta/fit-in/100x100/cogs.gif",
]


def _numbers(value: object) -> object:
    """thumbor writes some sizes as floats (300.0): compare them as the integers they are."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("path", META_URLS)
def test_meta_as_thumbor_answers_it(servers: tuple[Running, TofuProcess], path: str) -> None:
    """Every field both produce is equal: the operations (crops in source pixels, resize,
    flips), the target, the frame count, and the source's size where thumbor reports it
    (with no operation: thumbor 7 reports the processed size there)."""
    thumbor, tofu = servers
    theirs, ours = fetch(thumbor.url, "/unsafe/" + path), fetch(tofu.url, "/unsafe/" + path)
    assert (theirs.status, ours.status) == (200, 200), ours.body[:200]
    assert theirs.content_type.startswith("application/json")
    assert ours.content_type == "application/json"
    their_meta = _numbers(json.loads(theirs.body)["thumbor"])
    our_meta = json.loads(ours.body)["thumbor"]
    assert isinstance(their_meta, dict)
    assert our_meta["operations"] == their_meta["operations"]
    assert our_meta["target"] == their_meta["target"]
    assert our_meta["source"]["frameCount"] == their_meta["source"]["frameCount"]
    if not their_meta["operations"]:
        for side in ("width", "height"):
            assert our_meta["source"][side] == their_meta["source"][side]
