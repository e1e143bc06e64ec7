"""Per-key state of a worker is bounded in bytes, keys included (issue 8, finding 7): unique
long keys from unsigned clients, each a 404 or a one-off, must not grow a worker without bound.

Memory is measured with tracemalloc around the service alone (in process), so the bound is
checked against what Python really holds, not only against the caches' own accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import sys
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.support.metrics import metric
from tofu.cache import BytesMemo
from tofu.config import Config
from tofu.errors import NotFound, TofuError
from tofu.metrics import Metrics
from tofu.origins import Original
from tofu.service import NOT_FOUND_CACHE_BYTES, VERSIONS_BYTES, ImageService
from tofu.transform import Size, Transform

KEY_BYTES = 7_800  # the reproduction used 7.8 KB paths
SLACK = 2 << 20  # whatever else the service allocates meanwhile (threads, metrics, sets)


def long_key(i: int) -> str:
    return f"{i:08d}/" + "k" * KEY_BYTES + ".jpg"


async def grown_by(count: int, request: Callable[[int], Awaitable[object]]) -> int:
    """Bytes still held after ``count`` requests (each made with a fresh long key)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            with contextlib.suppress(TofuError):
                await request(i)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class MissingOriginals:
    """No key exists; counts the fetches (without keeping the keys)."""

    def __init__(self) -> None:
        self.fetches = 0

    async def fetch(self, key: str) -> Original:
        self.fetches += 1
        raise NotFound(f"no original at {key!r}")

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_negative_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    origin = MissingOriginals()
    metrics = Metrics()
    service = ImageService(Config(origin=(str(tmp_path),), dev=True, workers=1), origin, metrics)
    count = 3 * NOT_FOUND_CACHE_BYTES // 2 // KEY_BYTES
    try:
        grown = await grown_by(
            count, lambda i: service.produce(Transform(long_key(i), Size(100, None)), None)
        )
        assert origin.fetches == count
        assert grown < NOT_FOUND_CACHE_BYTES + SLACK, grown  # the keys alone: 1.5x the bound
        accounted = metric(metrics.exposition().decode(), "tofu_cache_bytes", 'cache="not_found"')
        assert NOT_FOUND_CACHE_BYTES / 2 < accounted <= NOT_FOUND_CACHE_BYTES
        # Still a cache: the latest 404 is answered without asking the origin again.
        latest = Transform(long_key(count - 1), Size(100, None))
        with pytest.raises(NotFound):
            await service.produce(latest, None)
        assert origin.fetches == count
    finally:
        await service.close()


class ManyOriginals:
    """Any key exists (as a few bytes that are not an image), each with its own version."""

    def __init__(self) -> None:
        self._versions = itertools.count()

    async def fetch(self, key: str) -> Original:
        return Original(b"not an image", f"{next(self._versions):040x}", 0.0)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_original_versions_memo_is_bounded_in_bytes(tmp_path: Path) -> None:
    config = Config(origin=(str(tmp_path),), dev=True, workers=1, originals_cache_size=0)
    service = ImageService(config, ManyOriginals(), Metrics())
    try:
        grown = await grown_by(
            3 * VERSIONS_BYTES // 2 // KEY_BYTES,
            lambda i: service.produce(Transform(long_key(i), Size(100, None)), None),
        )
        assert grown < VERSIONS_BYTES + SLACK, grown
    finally:
        await service.close()


def test_bytes_memo_accounts_keys_values_and_replacements() -> None:
    memo: BytesMemo[str, str] = BytesMemo(2_000)
    memo["key"] = "a" * 100
    memo["key"] = "b" * 10  # replaced: the old value no longer counts
    assert memo.bytes == sys.getsizeof("key") + sys.getsizeof("b" * 10) + BytesMemo.SLOT_BYTES
    for i in range(100):
        memo[f"{i:03d}" + "x" * 100] = "v"
        assert memo.bytes <= 2_000
    assert 0 < len(memo) < 100  # it forgot, then went on remembering


async def test_a_failed_render_lets_go_of_its_pixels_at_once(make_client, tmp_path: Path) -> None:
    """A render stopped by its deadline (504) frees its pixels when it stops: the exception
    that leaves the render thread must not keep the thread's frames, nor the cancellation the
    image it was computing (a 504 of one 4096x4096 upscale held 240 MB in process, 1.3 GB in
    a server, until later renders happened to free it)."""
    import pyvips

    from tofu.metrics import _libvips_tracked_memory

    tracked = _libvips_tracked_memory()
    assert tracked is not None
    root = tmp_path / "o"
    root.mkdir()
    noise = pyvips.Image.gaussnoise(1500, 1000).cast("uchar")
    noise.bandjoin([noise, noise]).jpegsave(str(root / "noise.jpg"))
    del noise
    client = await make_client(origin=(str(root),), dev=True, request_timeout=1.5)
    slow = (
        "/unsafe/4096x4096/filters:upscale():equalize():sharpen(100,10,false):blur(150,150)"
        ":format(webp):max_bytes(100)/noise.jpg"
    )
    cache = pyvips.cache_get_max()
    pyvips.cache_set_max(0)  # as a server runs libvips (tofu.render.runtime)
    try:
        before = tracked()
        async with client.get(slow) as response:
            assert response.status == 504
        # The render thread lets go just after the answer: a moment for it, nothing else.
        for _ in range(50):
            if tracked() - before < 16 << 20:
                break
            await asyncio.sleep(0.1)
        assert tracked() - before < 16 << 20, f"{(tracked() - before) >> 20} MB still held"
    finally:
        pyvips.cache_set_max(cache)
