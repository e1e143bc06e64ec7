"""Rendering the operations thumbor URLs add, on synthesized images: the edge cases that the
side-by-side test against thumbor does not reach."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest
import pyvips

from tofu.errors import Unprocessable
from tofu.frontends.thumbor import parse_options
from tofu.render import RenderSettings, Rendition, render
from tofu.transform import ImageFormat

SETTINGS = RenderSettings()


def picture(width: int, height: int, *, frame: int = 0) -> bytes:
    """A noisy picture (so that crops and flips show), optionally on a white frame."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=40, seed=7).cast("uchar")
    image = noise.bandjoin([noise.rot("d180"), noise.flipver()]).copy(interpretation="srgb")
    if frame:
        image = image.embed(
            frame,
            frame,
            width + 2 * frame,
            height + 2 * frame,
            extend="background",
            background=[255, 255, 255],
        )
    return image.pngsave_buffer()


def run(data: bytes, path: str) -> Rendition:
    return render(data, parse_options(path + "/x.png", max_side=4096).size, SETTINGS)


def pixels(rendition: Rendition) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(rendition.body, "")


def test_trim_removes_the_frame_and_keeps_an_all_border_image() -> None:
    framed = run(picture(200, 100, frame=30), "trim")
    assert (framed.width, framed.height) == (200, 100)
    blank = pyvips.Image.black(50, 40).invert().copy(interpretation="b-w").pngsave_buffer()
    kept = run(blank, "trim")
    assert (kept.width, kept.height) == (50, 40)  # nothing would be left: not trimmed


def test_manual_crop_is_clamped_and_an_empty_one_ignored() -> None:
    data = picture(200, 100)
    assert (run(data, "50x20:500x500").width, run(data, "50x20:500x500").height) == (150, 80)
    outside = run(data, "300x300:400x400")  # nothing of the image inside: ignored, as thumbor
    assert (outside.width, outside.height) == (200, 100)


def test_a_crop_after_a_trim_is_still_in_the_originals_coordinates() -> None:
    """thumbor shifts the crop box by what the trim removed."""
    data = picture(200, 100, frame=30)
    cut = run(data, "trim/30x30:130x80")
    assert (cut.width, cut.height) == (100, 50)
    plain = pixels(run(picture(200, 100), "0x0:100x50"))
    assert (pixels(cut) - plain).abs().max() == 0
    clipped = run(data, "trim/0x0:100x50")  # the frame part of the box is gone
    assert (clipped.width, clipped.height) == (70, 20)


def test_flips_and_rotation_move_the_pixels() -> None:
    data = picture(64, 32)
    plain = pixels(run(data, "64x32"))
    assert (pixels(run(data, "-64x32")) - plain.fliphor()).abs().max() == 0
    assert (pixels(run(data, "64x-32")) - plain.flipver()).abs().max() == 0
    rotated = pixels(run(data, "64x32/filters:rotate(90)"))
    assert (rotated.width, rotated.height) == (32, 64)
    assert (rotated - plain.rot("d270")).abs().max() == 0  # counter-clockwise, as PIL


def test_adaptive_fit_in_turns_the_box() -> None:
    portrait_box = run(picture(400, 200), "adaptive-fit-in/100x150")
    assert (portrait_box.width, portrait_box.height) == (150, 75)
    assert (run(picture(400, 200), "fit-in/100x150").width, 100) == (100, 100)


def test_focal_box_outside_the_crop_falls_back_to_the_centre() -> None:
    data = picture(400, 200)
    centred = pixels(run(data, "0x0:200x200/100x50"))
    outside = pixels(run(data, "0x0:200x200/100x50/filters:focal(300x0:400x100)"))
    assert (outside - centred).abs().max() == 0


def test_round_corner_transparent_makes_corners_transparent() -> None:
    image = pixels(run(picture(100, 100), "100x100/filters:round_corner(20,0,0,0,1):format(png)"))
    assert image.hasalpha()
    assert image.getpoint(0, 0)[3] == 0 and image.getpoint(50, 50)[3] == 255


def test_fill_pads_to_the_box_and_merges_alpha_only_when_asked() -> None:
    data = picture(100, 50)
    filled = run(data, "fit-in/200x200/filters:fill(blue)")
    image = pixels(filled)
    assert (image.width, image.height) == (200, 200)
    assert image.getpoint(5, 5)[:3] == pytest.approx([0, 0, 255], abs=3)
    assert filled.format is ImageFormat.PNG


def test_max_bytes_gives_up_above_quality_10_and_keeps_the_first_encoding() -> None:
    data = picture(300, 300)
    first = run(data, "300x300/filters:format(jpeg)")
    tiny = run(data, "300x300/filters:format(jpeg):max_bytes(10)")
    assert tiny.body == first.body
    fitted = run(data, f"300x300/filters:format(jpeg):max_bytes({len(first.body) // 2})")
    assert len(fitted.body) <= len(first.body) // 2


def test_gif_output() -> None:
    gif = run(picture(120, 80), "60x40/filters:format(gif)")
    assert gif.format is ImageFormat.GIF and gif.body[:6] == b"GIF89a"
    assert (pixels(gif).width, pixels(gif).height) == (60, 40)


def test_a_corrupt_original_with_a_cut_is_still_a_422() -> None:
    data = picture(200, 100)[:300]
    with pytest.raises(Unprocessable):
        run(data, "trim")


def test_orig_sides_stay_within_the_output_limit() -> None:
    data = picture(300, 100)
    settings = RenderSettings(max_output_side=200)
    size = parse_options("origxorig/x.png", max_side=200).size
    result = render(data, size, settings)
    assert (result.width, result.height) == (200, 100)


def test_a_huge_blur_sigma_renders() -> None:
    result = run(picture(64, 64), "64x64/filters:blur(150,99999999)")
    assert (result.width, result.height) == (64, 64)


@functools.cache
def _photo_png(interlaced: bool) -> bytes:
    image = pyvips.Image.new_from_buffer(picture(1200, 800), "")
    return bytes(image.pngsave_buffer(interlace=interlaced))


@pytest.mark.parametrize(
    ("path", "turn"),
    [
        ("800x-533", lambda a: a[::-1]),
        ("-800x-533", lambda a: a[::-1, ::-1]),
        ("800x533/filters:rotate(90)", lambda a: np.rot90(a)),
        ("800x533/filters:rotate(180)", lambda a: np.rot90(a, 2)),
        ("800x533/filters:rotate(270)", lambda a: np.rot90(a, 3)),
    ],
)
@pytest.mark.parametrize("interlaced", [False, True])
def test_png_flips_and_turns_render(path: str, turn: Callable, interlaced: bool) -> None:
    """A PNG decoded sequentially, then flipped or turned (which reads the bottom rows first):
    was a 422 "out of order read"."""
    data = _photo_png(interlaced)
    plain = np.asarray(pixels(run(data, "800x533")).numpy())
    turned = np.asarray(pixels(run(data, path)).numpy())
    assert np.abs(turned.astype(int) - turn(plain)).max() <= 1


async def test_a_png_flip_over_http_is_not_a_cached_422(make_client, tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "photo.png").write_bytes(picture(1200, 800))
    client = await make_client(origin=(str(tmp_path),), dev=True)
    for path in ("/unsafe/800x-533/b/photo.png", "/unsafe/filters:rotate(90)/b/photo.png"):
        response = await client.get(path)
        assert response.status == 200, await response.text()


def test_fill_auto_on_a_grey_picture_with_alpha_renders() -> None:
    """fill(auto) measured a grey-and-alpha picture's alpha as its second colour band: a 500
    (IndexError) found by the live fuzz."""
    grey = pyvips.Image.new_from_buffer(picture(40, 30), "").colourspace("b-w")
    data = grey.bandjoin(200).cast("uchar").pngsave_buffer()
    filled = pixels(run(data, "fit-in/60x60/filters:fill(auto,true):grayscale()"))
    assert (filled.width, filled.height) == (60, 60)
