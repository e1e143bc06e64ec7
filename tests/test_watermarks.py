"""Watermarks through the whole service: the watermark is an original (fetched from the same
origins, cached and coalesced with the originals), probed within the originals' limits before
decoding, counted in the render's memory, and part of the rendition's identity. Placement
against thumbor itself is in test_thumbor_compat.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pyvips

from tofu.frontends.thumbor import parse_options
from tofu.keys import Key
from tofu.peers import decode_rendition, encode_rendition
from tofu.render import RenderSettings, prepare, render
from tofu.render.watermark import placement
from tofu.transform import Watermark

from .support.metrics import metric_sum


def _png(width: int, height: int, colour: list[int]) -> bytes:
    image = pyvips.Image.black(width, height).new_from_image(colour).cast("uchar")
    return bytes(image.copy(interpretation="srgb").pngsave_buffer())


PHOTO = _png(300, 200, [40, 120, 200])
MARK = _png(40, 30, [255, 0, 255, 255])


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "photo.png").write_bytes(PHOTO)
    (tmp_path / "p" / "other.png").write_bytes(PHOTO)
    (tmp_path / "mark.png").write_bytes(MARK)
    (tmp_path / "big.png").write_bytes(_png(500, 400, [0, 0, 0, 255]))
    return tmp_path


async def _metrics(client) -> str:  # type: ignore[no-untyped-def]
    return await (await client.get("/metrics")).text()


async def test_a_watermark_is_fetched_once_and_cached_as_an_original(make_client, origin) -> None:
    client = await make_client(origin=(str(origin),), dev=True)
    paths = [
        f"/unsafe/{size}/filters:watermark(mark.png,-10,-10,0)/p/{name}"
        for size in ("100x100", "120x80", "fit-in/90x90")
        for name in ("photo.png", "other.png")
    ]
    # Concurrent misses: one fetch of the watermark (coalesced), then hits of the originals.
    responses = await asyncio.gather(*(client.get(path) for path in paths))
    assert [r.status for r in responses] == [200] * len(paths)
    assert metric_sum(await _metrics(client), "tofu_origin_fetches_total") == 3


async def test_a_missing_watermark_is_a_404_naming_it(make_client, origin) -> None:
    client = await make_client(origin=(str(origin),), dev=True)
    response = await client.get("/unsafe/100x100/filters:watermark(nothere.png,0,0,0)/p/photo.png")
    assert response.status == 404
    assert "watermark" in await response.text() and "nothere.png" in await response.text()


async def test_a_watermark_key_is_validated_like_any_key(make_client, origin) -> None:
    client = await make_client(origin=(str(origin),), dev=True)
    for mark in ("../mark.png", "a//b.png", "http://example.com/m.png"):
        response = await client.get(f"/unsafe/100x100/filters:watermark({mark},0,0,0)/p/photo.png")
        assert response.status == 400, mark


async def test_a_huge_watermark_is_refused_before_decoding(make_client, origin) -> None:
    client = await make_client(origin=(str(origin),), dev=True, max_source_pixels=100_000)
    response = await client.get("/unsafe/100x100/filters:watermark(big.png,0,0,0)/p/photo.png")
    assert response.status == 422
    assert "watermark 'big.png'" in await response.text()
    plain = await client.get("/unsafe/100x100/p/photo.png")
    assert plain.status == 200  # the original itself is within the limit


def test_the_watermark_counts_in_the_renders_memory() -> None:
    settings = RenderSettings()
    size = parse_options("300x200/filters:watermark(big.png,0,0,0)/x.png", max_side=4096).size
    plain = prepare(PHOTO, parse_options("300x200/x.png", max_side=4096).size, settings)
    marked = prepare(PHOTO, size, settings, watermarks=[_png(500, 400, [0, 0, 0, 255])])
    assert marked.memory_bytes - plain.memory_bytes >= 500 * 400 * 4


def test_the_watermark_is_part_of_the_rendition_and_travels_to_peers() -> None:
    paths = [
        "300x200/filters:watermark(m/a.png,-0,20p,30,10,none)/x.png",
        "300x200/filters:watermark(m/a.png,-0,20p,31,10,none)/x.png",
        "300x200/filters:watermark(m/b.png,-0,20p,30,10,none)/x.png",
        "300x200/filters:watermark(m/a.png,0,20p,30,10,none)/x.png",
        "300x200/x.png",
    ]
    transforms = [parse_options(path, max_side=4096) for path in paths]
    assert len(set(transforms)) == len(paths)
    # Spelled differently, the same watermark: one rendition.
    same = parse_options("300x200/filters:watermark('m/a.png',-00,020p,30,10,none)/x.png", 4096)
    assert same == transforms[0]
    for transform in transforms:
        assert decode_rendition(encode_rendition(transform, None))[0] == transform


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        ("10", "20", (10, 20, 1, 1)),
        ("-10", "-20", (300 - 40 - 10, 200 - 30 - 20, 1, 1)),
        ("-0", "-0", (260, 170, 1, 1)),  # the right and bottom edges
        ("center", "center", (130, 85, 1, 1)),
        ("20p", "-50p", (60, 200 - 30 - 100, 1, 1)),
        ("repeat", "0", (0, 0, 7, 1)),  # 300 // 40
        ("0", "repeat", (0, 0, 1, 6)),  # 200 // 30
    ],
)
def test_placement_follows_thumbor(x: str, y: str, expected: tuple[int, int, int, int]) -> None:
    tiling = placement(300, 200, 40, 30, Watermark(Key("m"), x, y))
    assert (tiling.left, tiling.top, tiling.count_x, tiling.count_y) == expected


def test_repeat_spreads_the_remainder_between_tiles() -> None:
    tiling = placement(300, 200, 40, 30, Watermark(Key("m"), "repeat", "repeat"))
    # thumbor: 7 tiles over 300 px leave 20 px, 3 px between tiles (20 // 6).
    assert (tiling.pitch_x, tiling.pitch_y) == (43, 30 + 20 // 5)
    many = placement(1000, 1000, 10, 10, Watermark(Key("m"), "repeat", "repeat"))
    assert (many.count_x, many.count_y) == (6, 6)  # thumbor's cap beyond 100 tiles


def test_alpha_makes_the_watermark_transparent() -> None:
    def centre(alpha: int) -> list[float]:
        path = f"100x100/filters:watermark(m.png,center,center,{alpha})/x.png"
        result = render(PHOTO, parse_options(path, 4096).size, RenderSettings(), watermarks=[MARK])
        return pyvips.Image.new_from_buffer(result.body, "").getpoint(50, 50)

    assert centre(0)[:3] == [255, 0, 255]
    assert centre(100)[:3] == [40, 120, 200]
    half = centre(50)
    assert 130 <= half[0] <= 160 and 150 <= half[2] <= 240
