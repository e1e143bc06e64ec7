"""Animated sources stay animated: every frame resized and cropped alike, delays and loop count
kept, within the frames and pixels budget; otherwise (or for an explicit still format) the
first frame as a still. Synthesized animations plus two small GIFs from the libvips test suite
(tests/fixtures/animated, see NOTICE)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import pyvips

from tofu.errors import Unprocessable, UnsupportedMediaType
from tofu.negotiate import Negotiated, Negotiator
from tofu.render import RenderSettings, Rendition, render
from tofu.transform import ImageFormat
from tofu.urls import parse_size

from .support.servers import FIXTURES

CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
OLD_ACCEPT = "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"  # no WebP, no AVIF
NEGOTIATOR = Negotiator((ImageFormat.AVIF, ImageFormat.WEBP))
CHROME = NEGOTIATOR.choose(CHROME_ACCEPT)
OLD = NEGOTIATOR.choose(OLD_ACCEPT)

# Frame colours; each frame is 120x60 with a red left third, its own colour in the middle
# and a blue right third, so a crop shows which frame and which part it came from.
MIDDLES = [(20, 200, 40), (240, 220, 30), (250, 250, 250), (20, 20, 20)]
RED, BLUE = (220, 20, 20), (30, 40, 210)
DELAYS = [40, 80, 120, 160]
LOOP = 3


def frame(middle: tuple[int, int, int]) -> np.ndarray:
    pixels = np.zeros((60, 120, 3), dtype=np.uint8)
    pixels[:, :40], pixels[:, 40:80], pixels[:, 80:] = RED, middle, BLUE
    return pixels


def animation(fmt: str = "gif", frames: int = 4) -> bytes:
    strip = pyvips.Image.new_from_array(np.vstack([frame(m) for m in MIDDLES[:frames]]))
    strip = strip.copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 60)
    strip.set_type(pyvips.GValue.array_int_type, "delay", DELAYS[:frames])
    strip.set_type(pyvips.GValue.gint_type, "loop", LOOP)
    if fmt == "webp":
        return strip.webpsave_buffer(lossless=True)
    return strip.gifsave_buffer()


def run(
    data: bytes,
    token: str,
    negotiated: Negotiated | None = None,
    settings: RenderSettings | None = None,
) -> Rendition:
    settings = settings or RenderSettings()
    return render(data, parse_size(token, settings.max_output_side), settings, negotiated)


def frames_of(body: bytes) -> list[np.ndarray]:
    image = pyvips.Image.new_from_buffer(body, "", n=-1)
    height = image.get("page-height") if image.get_typeof("page-height") else image.height
    pixels = np.asarray(image.numpy()).reshape(image.height, image.width, -1)
    return [pixels[top : top + height] for top in range(0, image.height, height)]


def meta(body: bytes, name: str) -> object:
    return pyvips.Image.new_from_buffer(body, "", n=-1).get(name)


def close(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 30) -> bool:
    return bool(np.all(np.abs(pixel[:3].astype(int) - colour) <= tolerance))


@pytest.mark.parametrize(
    ("source", "negotiated", "expected"),
    [
        ("gif", None, ImageFormat.GIF),  # the source's own format
        ("webp", None, ImageFormat.WEBP),
        ("gif", CHROME, ImageFormat.WEBP),  # WebP when accepted, though AVIF is preferred
        ("webp", OLD, ImageFormat.GIF),  # else GIF
    ],
)
def test_animation_is_kept_with_its_delays_and_loop(
    source: str, negotiated: Negotiated | None, expected: ImageFormat
) -> None:
    result = run(animation(source), "60", negotiated)
    assert result.format is expected
    assert (result.width, result.height) == (60, 30)
    assert meta(result.body, "n-pages") == 4
    assert list(meta(result.body, "delay")) == DELAYS  # type: ignore[call-overload]
    assert meta(result.body, "loop") == LOOP
    frames = frames_of(result.body)
    assert [f.shape[:2] for f in frames] == [(30, 60)] * 4
    for pixels, middle in zip(frames, MIDDLES, strict=True):
        assert close(pixels[15, 30], middle)  # each frame is its own, in order


@pytest.mark.parametrize(
    ("token", "size", "edges"),
    [
        ("40x40c", (40, 40), None),  # centred: the middle of every frame
        ("30x60c", (30, 60), None),
        ("40x40f0-50", (40, 40), (RED, None)),  # focal point at the left edge: red on the left
        ("40x40f100-50", (40, 40), (None, BLUE)),  # at the right edge: blue on the right
    ],
)
def test_every_frame_is_cropped_alike(
    token: str, size: tuple[int, int], edges: tuple[object, object] | None
) -> None:
    result = run(animation(), token, CHROME)
    assert result.format is ImageFormat.WEBP
    frames = frames_of(result.body)
    assert len(frames) == 4
    assert {f.shape[1::-1] for f in frames} == {size}
    for pixels, middle in zip(frames, MIDDLES, strict=True):
        h, w = pixels.shape[:2]
        if edges is None:
            assert close(pixels[h // 2, w // 2], middle)  # this frame's own middle
        else:
            left, right = edges
            assert close(pixels[h // 2, 2], left or middle)  # type: ignore[arg-type]
            assert close(pixels[h // 2, w - 3], right or middle)  # type: ignore[arg-type]


def test_smart_crop_uses_the_first_frames_window_for_all_frames() -> None:
    # A detailed patch on the left of frame 0 and on the right of frame 1, grey elsewhere:
    # cropping each frame by itself would follow the patch; one window keeps frame 0's.
    rng = np.random.default_rng(7)
    frames = np.full((2, 60, 120, 3), 128, dtype=np.uint8)
    frames[0, 10:50, 5:35] = rng.integers(0, 255, (40, 30, 3))
    frames[1, 10:50, 85:115] = rng.integers(0, 255, (40, 30, 3))
    strip = pyvips.Image.new_from_array(frames.reshape(120, 120, 3)).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", 60)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100])
    data = strip.webpsave_buffer(lossless=True)
    first, second = frames_of(run(data, "40x60a", None).body)
    assert first[..., :3].std() > 20  # the patch
    assert second[..., :3].std() < 5  # the same (left) window of frame 1: plain grey


@pytest.mark.parametrize(("still", "fmt"), [("png", ImageFormat.PNG), ("jpg", ImageFormat.JPEG),
                                             ("avif", ImageFormat.AVIF)])  # fmt: skip
def test_explicit_still_format_gives_the_first_frame(still: str, fmt: ImageFormat) -> None:
    result = run(animation(), f"60.{still}", CHROME)
    assert result.format is fmt
    image = pyvips.Image.new_from_buffer(result.body, "")
    assert (image.width, image.height) == (60, 30)
    assert not image.get_typeof("n-pages") or image.get("n-pages") == 1
    assert close(np.asarray(image.numpy())[15, 30], MIDDLES[0])


@pytest.mark.parametrize("explicit", ["webp", "gif"])
def test_explicit_animated_format_animates(explicit: str) -> None:
    result = run(animation("webp" if explicit == "gif" else "gif"), f"60.{explicit}", OLD)
    assert result.format is ImageFormat(explicit)
    assert meta(result.body, "n-pages") == 4


@pytest.mark.parametrize(
    "settings",
    [
        RenderSettings(max_frames=3),  # 4 frames
        RenderSettings(max_animation_pixels=120 * 60 * 4 - 1),  # one pixel over
    ],
    ids=["frames", "pixels"],
)
@pytest.mark.parametrize(
    ("negotiated", "still"),
    [(None, ImageFormat.PNG), (CHROME, ImageFormat.AVIF), (OLD, ImageFormat.PNG)],
)
def test_over_budget_gives_the_first_frame_as_a_still(
    settings: RenderSettings, negotiated: Negotiated | None, still: ImageFormat
) -> None:
    result = run(animation(), "60", negotiated, settings)
    assert result.format is still
    image = pyvips.Image.new_from_buffer(result.body, "")
    assert (image.width, image.height) == (60, 30)
    assert not image.get_typeof("n-pages") or image.get("n-pages") == 1
    assert close(np.asarray(image.numpy())[15, 30], MIDDLES[0])


def test_budget_admits_exactly_its_limit() -> None:
    settings = RenderSettings(max_frames=4, max_animation_pixels=120 * 60 * 4)
    assert meta(run(animation(), "60", None, settings).body, "n-pages") == 4


def test_default_budget_admits_35_frames_of_800x800() -> None:
    from tofu.render.animated import within_budget
    from tofu.render.steps import Source

    assert within_budget(Source("gif", 800, 800, False, False, frames=35), RenderSettings())
    assert not within_budget(Source("gif", 800, 800, False, False, frames=80), RenderSettings())


@pytest.mark.parametrize("name", ["cogs.gif", "dispose-background.gif"])
def test_real_animated_gifs_keep_frames_delays_and_loop(name: str) -> None:
    data = (FIXTURES / "animated" / name).read_bytes()
    source = pyvips.Image.new_from_buffer(data, "", n=-1)
    result = run(data, "50x50c", OLD)  # GIF out, so delays compare exactly
    assert result.format is ImageFormat.GIF
    out = pyvips.Image.new_from_buffer(result.body, "", n=-1)
    assert (out.width, out.get("page-height")) == (50, 50)
    assert out.get("n-pages") == source.get("n-pages")
    assert list(out.get("delay")) == list(source.get("delay"))
    assert out.get("loop") == source.get("loop")


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
def animated_root(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "stickers").mkdir(parents=True)
    (root / "stickers" / "wave.gif").write_bytes(animation("gif"))
    shutil.copy(FIXTURES / "animated" / "cogs.gif", root / "stickers" / "cogs.gif")
    return root


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [(CHROME_ACCEPT, "image/webp"), (OLD_ACCEPT, "image/gif"), ("*/*", "image/gif")],
)
async def test_animated_over_http(make_client, animated_root, accept, media_type) -> None:
    client = await make_client(origin=(str(animated_root),), dev=True)
    response = await client.get("/stickers/60x30c/wave.gif", headers={"Accept": accept})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == media_type
    assert response.headers["Vary"] == "Accept"
    body = await response.read()
    assert meta(body, "n-pages") == 4
    assert list(meta(body, "delay")) == DELAYS  # type: ignore[call-overload]


async def test_over_budget_over_http_is_a_still(make_client, animated_root) -> None:
    client = await make_client(origin=(str(animated_root),), dev=True, max_frames=2)
    response = await client.get("/stickers/60/wave.gif", headers={"Accept": CHROME_ACCEPT})
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/avif"
    image = pyvips.Image.new_from_buffer(await response.read(), "")
    assert (image.width, image.height) == (60, 30)


@pytest.mark.parametrize("fmt", ["gif", "webp"])
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("negotiated", [None, CHROME])
def test_truncated_animations_are_refused_cleanly(
    fmt: str, fraction: float, negotiated: Negotiated | None
) -> None:
    data = animation(fmt)
    cut = data[: int(len(data) * fraction)]
    try:
        result = run(cut, "60x40c", negotiated)
    except (Unprocessable, UnsupportedMediaType):
        return  # a clear 4xx
    assert result.body  # libvips decoded what was there: still a valid image
    assert pyvips.Image.new_from_buffer(result.body, "").width == 60
