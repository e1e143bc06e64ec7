"""Every operation of a thumbor URL applies to every frame of an animation, as it does to a
still: each frame of the animated rendition matches the still rendition of that frame (the
same URL on the frame alone), the frames, their delays and the loop count are kept, and the
operation really changed the picture (the plain rendition differs)."""

from __future__ import annotations

import numpy as np
import pytest
import pyvips

from tofu.frontends.thumbor import parse_options
from tofu.render import RenderSettings, Rendition, render
from tofu.transform import ImageFormat

from .support.images import animated_gif

DELAYS = [40, 80, 120, 160]
ANIMATION = animated_gif(80, 60, 4, delay=DELAYS, border=8)
SETTINGS = RenderSettings()


# A watermark with a transparent hole, for the watermark filter (mark.png in its URLs).
MARK = (
    pyvips.Image.black(16, 12)
    .new_from_image([255, 0, 255, 255])
    .insert(pyvips.Image.black(8, 4).new_from_image([0, 0, 0, 0]), 4, 4)
    .cast("uchar")
    .copy(interpretation="srgb")
    .pngsave_buffer()
)


def run(data: bytes, path: str) -> Rendition:
    size = parse_options(path + "/x.gif", max_side=4096).size
    marks = [MARK] * len(size.operations.watermarks)
    return render(data, size, SETTINGS, watermarks=marks)


def frames_of(body: bytes) -> list[np.ndarray]:
    image = pyvips.Image.new_from_buffer(body, "")
    if image.get_typeof("n-pages") and image.get("n-pages") > 1:
        image = pyvips.Image.new_from_buffer(body, "", n=-1)
    height = image.get("page-height") if image.get_typeof("page-height") else image.height
    if image.bands < 3:
        image = image.colourspace("srgb")  # grey: as three colour bands, to compare
    pixels = np.asarray(image.numpy()).reshape(image.height, image.width, -1).astype(int)
    return [pixels[top : top + height] for top in range(0, image.height, height)]


def still_frame(index: int) -> bytes:
    """Frame ``index`` of the animation, alone, as a PNG."""
    return bytes(pyvips.Image.new_from_buffer(ANIMATION, "", page=index).pngsave_buffer())


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of the colour bands (GIF quantisation and dithering: a few)."""
    assert a.shape[:2] == b.shape[:2], (a.shape, b.shape)
    return float(np.abs(a[..., :3] - b[..., :3]).mean())


@pytest.mark.parametrize(
    "path",
    [
        "-60x40",  # horizontal flip
        "60x-40",  # vertical flip
        "-60x-40",
        "60x40/filters:rotate(90)",
        "60x40/filters:rotate(180)",
        "60x40/filters:rotate(270)",
        "60x40/filters:grayscale()",
        "60x40/filters:brightness(40)",
        "60x40/filters:contrast(60)",
        "60x40/filters:blur(4)",
        "60x40/filters:round_corner(15,255,0,0)",
        "fit-in/100x100/filters:fill(red)",
        "fit-in/100x100/filters:fill(blur)",
        "trim/60x0",
        "10x10:70x50/60x0",  # manual crop
        "trim/0x0:50x30/60x0",  # trim, then a crop in the original's coordinates
        "60x40/filters:sharpen(5,1,false)",
        "60x40/filters:saturation(2.5)",
        "60x40/filters:rgb(40,-30,20)",
        "60x40/filters:colorize(60,10,80,00ff00)",
        "60x40/filters:equalize()",
        "60x40/filters:curve([(0,0),(255,255)],[(0,90),(255,255)],[(0,0),(255,90)],[(0,0),(255,255)])",
        "60x40/filters:convolution(-1;-1;-1;-1;8;-1;-1;-1;-1,3,false)",
        "60x40/filters:noise(80,3)",
        "60x60/filters:stretch()",
        "60x40/filters:proportion(0.5)",
        "60x40/filters:watermark(mark.png,-5,center,20)",
        "60x40/filters:watermark(mark.png,repeat,repeat,0,20,20)",
    ],
)
def test_an_operation_applies_to_every_frame_as_to_a_still(path: str) -> None:
    result = run(ANIMATION, path)
    assert result.format is ImageFormat.GIF
    image = pyvips.Image.new_from_buffer(result.body, "", n=-1)
    assert image.get("n-pages") == 4
    assert list(image.get("delay")) == DELAYS
    assert image.get("loop") == 0
    plain = frames_of(run(ANIMATION, path.split("/")[-1].lstrip("-").replace("x-", "x")).body)
    changed = False
    for index, frame in enumerate(frames_of(result.body)):
        still = frames_of(run(still_frame(index), path).body)[0]
        assert difference(frame, still) < 6, (path, index)
        changed = changed or frame.shape != plain[index].shape
        changed = changed or difference(frame, plain[index]) > 6
    assert changed, path  # not the plain rendition


def test_fill_auto_uses_the_first_frames_colour_for_every_frame() -> None:
    result = run(ANIMATION, "fit-in/100x100/filters:fill(auto)")
    frames = frames_of(result.body)
    assert len(frames) == 4 and all(f.shape[:2] == (100, 100) for f in frames)
    first = frames_of(run(still_frame(0), "fit-in/100x100/filters:fill(auto)").body)[0]
    assert difference(frames[0], first) < 6
    corners = {tuple(f[0, 0, :3] // 8) for f in frames}
    assert len(corners) == 1  # one fill colour: frames do not flicker


def test_max_bytes_lowers_an_animations_quality() -> None:
    plain = run(ANIMATION, "60x40/filters:format(webp)")
    limited = run(ANIMATION, f"60x40/filters:format(webp):max_bytes({len(plain.body) * 2 // 3})")
    assert pyvips.Image.new_from_buffer(limited.body, "", n=-1).get("n-pages") == 4
    assert len(limited.body) < len(plain.body)
