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
# thumbor's built-in filters and autojpg, which it ships without enabling.
THUMBOR_FILTERS = (
    "from thumbor.filters import BUILTIN_FILTERS\n"
    'FILTERS = BUILTIN_FILTERS + ["thumbor.filters.autojpg"]\n'
)
# The default watermark of the second tofu (--watermark), on the framed picture only.
DEFAULT_WATERMARK = "framed=mark.png,-20,center,25"


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
    # A watermark easy to find: a 40x30 magenta block with a transparent 20x10 hole.
    block = pyvips.Image.black(40, 30).new_from_image([255, 0, 255, 255])
    hole = pyvips.Image.black(20, 10).new_from_image([0, 0, 0, 0])
    block.insert(hole, 10, 10).cast("uchar").copy(interpretation="srgb").pngsave(
        str(root / "mark.png")
    )


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
        extra_config=f"SECURITY_KEY = {KEY!r}\nRESPECT_ORIENTATION = True\n{THUMBOR_FILTERS}",
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


@pytest.fixture(scope="module")
def lenient(
    servers: tuple[Running, TofuProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TofuProcess]:
    """A second tofu over the same originals: --thumbor-lenient, and a default watermark."""
    workdir = tmp_path_factory.mktemp("thumbor-lenient")
    origin = servers[1].args[servers[1].args.index("--origin") + 1]
    tofu = start_tofu(
        [
            *("--origin", origin, "--thumbor-unsafe", "--thumbor-lenient", "--workers", "1"),
            *("--watermark", DEFAULT_WATERMARK, "--sizes", "300s"),
        ],
        workdir,
    )
    yield tofu
    tofu.stop()


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


# thumbor's other built-in filters, each with its effect measured against thumbor's too.
FILTER_URLS = [
    "300x200/filters:sharpen(2,1.0,true)/photo.jpg",
    "300x200/filters:sharpen(5,2,false)/photo.jpg",
    "300x200/filters:saturation(1.8)/photo.jpg",
    "300x200/filters:saturation(0.2)/photo.jpg",
    "300x200/filters:rgb(20,-10,40)/photo.jpg",
    "300x200/filters:equalize()/photo.jpg",
    "300x200/filters:colorize(40,60,20,ff0000)/photo.jpg",
    "300x200/filters:proportion(0.5)/photo.jpg",
    "300x200/filters:stretch()/photo.jpg",
    "300x600/filters:stretch()/photo.jpg",
    "300x200/filters:convolution(1;2;1;2;4;2;1;2;1,3,true)/photo.jpg",
    "300x200/filters:convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)/photo.jpg",
    "300x200/filters:curve([(0,0),(255,255)],[(0,50),(16,51),(32,69),(58,85),(92,120),"
    "(128,170),(140,186),(167,225),(192,245),(225,255),(244,255),(255,254)],[(0,0),(16,2),"
    "(32,18),(64,59),(92,116),(128,182),(167,211),(192,227),(224,240),(244,247),(255,252)],"
    "[(0,48),(16,50),(62,77),(92,110),(128,144),(140,153),(167,180),(192,192),(224,217),"
    "(244,225),(255,225)])/photo.jpg",
    "300x200/filters:max_age(60)/photo.jpg",
    "300x200/filters:autojpg()/framed.png",
]
# Positions (pixels, edges, centre, percentages, repeat), alpha and ratios.
WATERMARK_URLS = [
    "300x200/filters:watermark(mark.png,10,10,0)/photo.jpg",
    "300x200/filters:watermark(mark.png,-10,-20,50)/photo.jpg",
    "300x200/filters:watermark(mark.png,-0,-0,0)/photo.jpg",
    "300x200/filters:watermark(mark.png,center,center,30)/photo.jpg",
    "300x200/filters:watermark(mark.png,20p,-20p,0)/photo.jpg",
    "300x200/filters:watermark(mark.png,-30,10p,0)/photo.jpg",
    "300x200/filters:watermark(mark.png,repeat,repeat,40,20,20)/photo.jpg",
    "300x200/filters:watermark(mark.png,repeat,10,0,none,15)/photo.jpg",
    "300x200/filters:watermark(mark.png,-30,repeat,0,10,none)/photo.jpg",
    "600x400/filters:watermark(mark.png,repeat,repeat,0)/photo.jpg",
    "300x200/filters:watermark(mark.png,-50,-50,0,50,50)/photo.jpg",
    "300x200/filters:watermark(mark.png,repeat,repeat,0,60,none)/photo.jpg",
    "300x200/filters:watermark(mark.png,10,10,0):watermark(logo.png,-10,-10,0,30,30)/photo.jpg",
    "fit-in/300x300/filters:watermark(mark.png,10,10,0):format(png)/logo.png",
]
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
    "300x200/smart/photo.jpg",
    *FILTER_URLS,
    *WATERMARK_URLS,
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


def _plain(path: str) -> str:
    """``path`` without its filters."""
    head, _, rest = path.partition("filters:")
    return head + rest.split(")/", 1)[1] if rest else path


def _difference(image: pyvips.Image, plain: pyvips.Image) -> np.ndarray:
    return np.abs(as_rgb(image).astype(int) - as_rgb(plain).astype(int)).sum(axis=2)


# Filters whose effect is a change of pixels at the same size (measured against the plain URL).
EFFECT_URLS = [
    path
    for path in FILTER_URLS
    if not any(name in path for name in ("proportion", "stretch", "max_age", "autojpg"))
]


@pytest.mark.parametrize("path", EFFECT_URLS)
def test_filters_change_the_picture_as_thumbors_do(
    servers: tuple[Running, TofuProcess], path: str
) -> None:
    """Not ignored: each filter changes the picture about as much as thumbor's does, and the
    changes look alike (SSIM of the two difference images)."""
    effects = []
    for server in servers:
        image = decode(fetch(server.url, "/unsafe/" + path).body)
        plain = decode(fetch(server.url, "/unsafe/" + _plain(path)).body)
        effects.append(_difference(image, plain))
    theirs, ours = effects
    assert theirs.mean() > 3, "thumbor's filter does something"
    assert 0.8 <= ours.mean() / theirs.mean() <= 1.25, (ours.mean(), theirs.mean())
    score = structural_similarity(
        theirs.astype(float), ours.astype(float), data_range=float(max(theirs.max(), 1))
    )
    assert score >= 0.8, f"SSIM of the changes {score:.3f}"


def _mark_mask(base: str, path: str) -> np.ndarray:
    """Where the watermark changed the picture."""
    image = decode(fetch(base, "/unsafe/" + path).body)
    plain = decode(fetch(base, "/unsafe/" + _plain(path)).body)
    return _difference(image, plain) > 90


@pytest.mark.parametrize("path", WATERMARK_URLS)
def test_watermarks_land_where_thumbors_do(servers: tuple[Running, TofuProcess], path: str) -> None:
    thumbor, tofu = servers
    theirs, ours = _mark_mask(thumbor.url, path), _mark_mask(tofu.url, path)
    assert theirs.sum() > 50
    overlap = (theirs & ours).sum() / (theirs | ours).sum()
    assert overlap >= 0.95, f"the watermarks overlap {overlap:.2f}"


def test_noise_has_thumbors_spread_and_the_same_url_the_same_bytes(
    servers: tuple[Running, TofuProcess],
) -> None:
    tofu = servers[1]
    path = "/unsafe/300x200/filters:noise(40):format(png)/photo.jpg"
    spreads = []
    for server in servers:
        image = decode(fetch(server.url, path).body)
        plain = decode(fetch(server.url, "/unsafe/300x200/filters:format(png)/photo.jpg").body)
        spreads.append((as_rgb(image).astype(int) - as_rgb(plain).astype(int)).std())
    assert spreads[1] == pytest.approx(spreads[0], rel=0.25), spreads
    # Deterministic: the same URL gives the same bytes (from another worker, after a restart).
    first = fetch(tofu.url, "/unsafe/300x200/filters:noise(30,7)/photo.jpg").body
    again = fetch(tofu.url, "/unsafe/300x200/filters:noise(30,7):quality(80)/photo.jpg").body
    assert first == again


def test_extract_focal_renders_as_the_focal_box(servers: tuple[Running, TofuProcess]) -> None:
    """thumbor's documented extract_focal: the original is the inner URL's image, its crop
    the focal box. thumbor 7.8 itself answers 404 (it percent-encodes the inner URL's ':'
    before the filter looks for the crop); tofu renders what the documentation says."""
    thumbor, tofu = servers
    inner = "localhost:8888/unsafe/1200x600:1600x1000/photo.jpg"
    extracted = fetch(tofu.url, f"/unsafe/300x200/filters:extract_focal()/{inner}")
    focal = fetch(thumbor.url, "/unsafe/300x200/filters:focal(1200x600:1600x1000)/photo.jpg")
    assert fetch(thumbor.url, f"/unsafe/300x200/filters:extract_focal()/{inner}").status == 404
    assert extracted.status == 200
    score = structural_similarity(
        as_rgb(decode(focal.body)), as_rgb(decode(extracted.body)), channel_axis=2, data_range=255
    )
    assert score >= MIN_SSIM


def test_max_age_sets_cache_control(servers: tuple[Running, TofuProcess]) -> None:
    thumbor, tofu = servers
    path = "/unsafe/300x200/filters:max_age(60)/photo.jpg"
    for server, expected in ((thumbor, "max-age=60,public"), (tofu, "public, max-age=60")):
        with urllib.request.urlopen(server.url + path, timeout=60) as response:
            assert response.headers["Cache-Control"] == expected
    # Never longer than --max-age (a year): the default, immutable, is kept.
    with urllib.request.urlopen(
        tofu.url + "/unsafe/300x200/filters:max_age(999999999)/photo.jpg", timeout=60
    ) as response:
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("300x200/filters:frame(mark.png)/photo.jpg", b"frame"),
        ("300x200/filters:nosuchfilter(1):quality(70)/photo.jpg", b"nosuchfilter"),
        ("300x200/filters:redeye()/photo.jpg", b"redeye"),
    ],
)
def test_filters_not_rendered_are_refused_by_name_unless_lenient(
    servers: tuple[Running, TofuProcess], lenient: TofuProcess, path: str, named: bytes
) -> None:
    thumbor, tofu = servers
    refused = fetch(tofu.url, "/unsafe/" + path)
    assert refused.status == 400 and named in refused.body
    # --thumbor-lenient: ignored, as thumbor ignores what it does not know (frame aside:
    # thumbor renders it, so thumbor's picture is not the reference for it).
    ignored = fetch(lenient.url, "/unsafe/" + path)
    plain = fetch(tofu.url, "/unsafe/" + _plain(path).replace("nosuchfilter(1):", ""))
    assert ignored.status == 200
    if named != b"frame":
        theirs = fetch(thumbor.url, "/unsafe/" + path)
        assert theirs.status == 200
    assert decode(ignored.body).width == decode(plain.body).width


def test_the_default_watermark_is_thumbors_watermark_filter(
    servers: tuple[Running, TofuProcess], lenient: TofuProcess
) -> None:
    """--watermark PREFIX=KEY,x,y,alpha renders as thumbor's filter with those arguments, on
    keys with the prefix only, and on top of a URL's own watermark."""
    thumbor, tofu = servers
    arguments = DEFAULT_WATERMARK.partition("=")[2]
    path = "fit-in/300x300/framed.png"
    theirs = _mark_mask(thumbor.url, f"fit-in/300x300/filters:watermark({arguments})/framed.png")
    plain = decode(fetch(tofu.url, "/unsafe/" + path).body)
    ours = _difference(decode(fetch(lenient.url, "/unsafe/" + path).body), plain) > 90
    assert theirs.sum() > 50
    assert (theirs & ours).sum() / (theirs | ours).sum() >= 0.95
    # The tofu grammar too (one canonical rendition: the same bytes), and not on other keys.
    assert fetch(lenient.url, "/300s/framed.png").body == fetch(lenient.url, "/unsafe/" + path).body
    photo = "/unsafe/300x200/photo.jpg"
    assert fetch(lenient.url, photo).body == fetch(tofu.url, photo).body
    # A URL's own watermark stays, with the default over it.
    both = "fit-in/300x300/filters:watermark(mark.png,10,10,0)/framed.png"
    combined = _difference(decode(fetch(lenient.url, "/unsafe/" + both).body), plain) > 90
    own = _mark_mask(tofu.url, both)
    assert (combined & own).sum() >= 0.85 * own.sum()
    assert (combined & ours).sum() >= 0.85 * ours.sum()
