"""Result/original caches, coalescing and HTTP caching semantics (in-process server)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import pyvips

from tests.support.metrics import metric
from tests.support.origins import CountingOrigin
from tests.support.servers import SAMPLES
from tofu.cache import BytesLRU, SingleFlight
from tofu.errors import NotFound

PHOTO_KEY = "recipes/1203423/5366e857.jpg"

CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_17_ACCEPT = (
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
    "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
)
SAFARI_13_ACCEPT = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
CURL_ACCEPT = "*/*"


@pytest.fixture
def origin_dir(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    shutil.copytree(SAMPLES, root)
    return root


# --- BytesLRU and SingleFlight ------------------------------------------------------------


def test_bytes_lru_stays_under_its_byte_bound_and_evicts_least_recent() -> None:
    evictions: list[int] = []
    lru: BytesLRU[str, bytes] = BytesLRU(1000, len, on_evict=lambda: evictions.append(1))
    for name in "abcd":
        assert lru.put(name, b"x" * 300)
        assert lru.bytes <= 1000
    assert lru.get("a") is None  # the oldest went first
    assert len(evictions) == 1
    lru.get("b")  # b is now the most recent: c goes next
    lru.put("e", b"y" * 300)
    assert lru.get("c") is None
    assert lru.get("b") is not None and lru.get("d") is not None and lru.get("e") is not None
    assert lru.bytes == 900


def test_bytes_lru_refuses_entries_over_its_item_share() -> None:
    lru: BytesLRU[str, bytes] = BytesLRU(1000, len, max_item_fraction=0.1)
    assert not lru.put("big", b"x" * 101)
    assert lru.put("small", b"x" * 100)
    assert lru.get("big") is None and lru.bytes == 100


def test_bytes_lru_of_size_zero_holds_nothing() -> None:
    lru: BytesLRU[str, bytes] = BytesLRU(0, len)
    assert not lru.put("a", b"x")
    assert lru.get("a") is None


async def test_single_flight_shares_one_execution() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(flight.run("k", work) for _ in range(20)))
    assert calls == 1
    assert [value for value, _ in results] == [42] * 20
    assert sum(joined for _, joined in results) == 19
    assert len(flight) == 0


async def test_single_flight_cancelled_waiter_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(flight.run("k", work))
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert await second == ("done", True)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_single_flight_error_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    attempts = 0

    async def failing() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.02)
        raise NotFound("gone")

    outcomes = await asyncio.gather(
        *(flight.run("k", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, NotFound) for o in outcomes)
    assert attempts == 1

    async def working() -> str:
        return "back"

    assert await flight.run("k", working) == ("back", False)


# --- coalescing through the server ----------------------------------------------------------


async def test_fifty_identical_requests_make_one_fetch_and_one_render(make_client, origin_dir):
    origin = CountingOrigin(origin_dir, delay=0.2)
    client = await make_client(origin, origin=(str(origin_dir),), dev=True)
    url = "/recipes/1203423/280x194c/5366e857.jpg"

    async def get() -> tuple[int, bytes]:
        response = await client.get(url)
        return response.status, await response.read()

    results = await asyncio.gather(*(get() for _ in range(50)))
    assert {status for status, _ in results} == {200}
    assert len({body for _, body in results}) == 1
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_origin_fetches_total") == 1
    assert metric(text, "tofu_renders_total") == 1
    assert metric(text, "tofu_coalesced_total", 'stage="render"') == 49
    assert origin.fetches == [PHOTO_KEY]


async def test_three_sizes_of_one_fresh_original_make_one_fetch(make_client, origin_dir):
    origin = CountingOrigin(origin_dir, delay=0.2)
    client = await make_client(origin, origin=(str(origin_dir),), dev=True)
    sizes = ["280x194c", "650s", "750x500cq60"]
    responses = await asyncio.gather(
        *(client.get(f"/recipes/1203423/{size}/5366e857.jpg") for size in sizes)
    )
    assert [r.status for r in responses] == [200, 200, 200]
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_origin_fetches_total") == 1
    assert metric(text, "tofu_renders_total") == 3
    assert origin.fetches == [PHOTO_KEY]


async def test_failed_render_is_delivered_to_all_waiters_and_not_cached(make_client, tmp_path):
    root = tmp_path / "origin"
    (root / "a").mkdir(parents=True)
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    origin = CountingOrigin(root, delay=0.1)
    client = await make_client(origin, origin=(str(root),), dev=True, originals_cache_size=0)
    responses = await asyncio.gather(*(client.get("/a/280/bad.jpg") for _ in range(10)))
    assert {r.status for r in responses} == {422}
    assert len(origin.fetches) == 1
    again = await client.get("/a/280/bad.jpg")
    assert again.status == 422
    assert len(origin.fetches) == 2  # errors are not cached


# --- the result cache -----------------------------------------------------------------------


async def test_second_request_is_a_hit_without_origin_or_render(make_client, origin_dir):
    origin = CountingOrigin(origin_dir)
    client = await make_client(origin, origin=(str(origin_dir),), dev=True)
    url = "/recipes/1203423/280x194c/5366e857.jpg"
    first = await client.get(url)
    second = await client.get(url)
    assert await first.read() == await second.read()
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_renders_total") == 1
    assert metric(text, "tofu_cache_hits_total", 'cache="result"') == 1
    assert metric(text, "tofu_cache_misses_total", 'cache="result"') == 1
    assert len(origin.fetches) == 1


async def test_cache_stays_within_its_bound_and_honours_lru(make_client, origin_dir):
    bound = 40_000
    origin = CountingOrigin(origin_dir)
    client = await make_client(
        origin, origin=(str(origin_dir),), dev=True, cache_size=bound, cache_item_max=1.0
    )
    widths = list(range(100, 400, 20))  # 15 renditions of a few KB each: more than the bound
    for width in widths:
        assert (await client.get(f"/recipes/1203423/{width}/5366e857.jpg")).status == 200
        # Keep the first one recently used: LRU must keep it while evicting others.
        assert (await client.get(f"/recipes/1203423/{widths[0]}/5366e857.jpg")).status == 200
    text = await (await client.get("/metrics")).text()
    assert 0 < metric(text, "tofu_cache_bytes", 'cache="result"') <= bound
    assert metric(text, "tofu_cache_evictions_total", 'cache="result"') > 0
    renders = metric(text, "tofu_renders_total")
    assert renders == len(widths)  # the hot first width was never rendered again
    assert (await client.get(f"/recipes/1203423/{widths[1]}/5366e857.jpg")).status == 200
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_renders_total") == renders + 1  # an old, cold one was evicted


async def test_cache_size_zero_renders_every_time(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True, cache_size=0)
    for _ in range(3):
        assert (await client.get("/recipes/1203423/280/5366e857.jpg")).status == 200
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_renders_total") == 3


async def test_changed_original_is_not_served_stale_once_fetched_anew(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True, originals_cache_size=0)
    photo = origin_dir / PHOTO_KEY
    old = await (await client.get("/recipes/1203423/280/5366e857.jpg")).read()
    # Replace the original with a different picture (different size and mtime).
    pyvips.Image.black(400, 300).jpegsave(str(photo))
    # Another size fetches the original anew and learns its new version ...
    new_other = await client.get("/recipes/1203423/100/5366e857.jpg")
    assert pyvips.Image.new_from_buffer(await new_other.read(), "").height == 75
    # ... so the cached rendition of the old version is not served any more.
    refreshed = await (await client.get("/recipes/1203423/280/5366e857.jpg")).read()
    assert refreshed != old
    assert pyvips.Image.new_from_buffer(refreshed, "").height == 210


async def test_missing_originals_are_remembered_briefly(make_client, origin_dir):
    origin = CountingOrigin(origin_dir)
    client = await make_client(origin, origin=(str(origin_dir),), dev=True, not_found_ttl=60)
    for _ in range(5):
        response = await client.get("/nope/280/missing.jpg")
        assert response.status == 404
        assert response.headers["Cache-Control"].startswith("public, max-age=")
    assert origin.fetches == ["nope/missing.jpg"]


# --- HTTP semantics ----------------------------------------------------------------------


async def test_etag_and_if_none_match_give_304_without_body(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    url = "/recipes/1203423/280x194c/5366e857.jpg"
    first = await client.get(url)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert "Last-Modified" in first.headers
    assert int(first.headers["Content-Length"]) == len(await first.read())
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    other = await client.get(url, headers={"If-None-Match": '"something-else"'})
    assert other.status == 200
    since = await client.get(url, headers={"If-Modified-Since": first.headers["Last-Modified"]})
    assert since.status == 304


async def test_head_has_the_get_headers_and_no_body(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    url = "/recipes/1203423/280x194c/5366e857.jpg"
    get = await client.get(url)
    head = await client.head(url)
    assert head.status == 200
    assert await head.read() == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control"):
        assert head.headers[name] == get.headers[name]
    missing = await client.head("/nope/280/missing.jpg")
    assert missing.status == 404


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (CHROME_ACCEPT, "image/avif"),
        (SAFARI_17_ACCEPT, "image/avif"),
        (SAFARI_13_ACCEPT, "image/jpeg"),
        (CURL_ACCEPT, "image/jpeg"),
        ("image/avif;q=0,image/webp,*/*", "image/webp"),
        ("image/avif;q=0, image/webp;q=0, */*", "image/jpeg"),
        ("", "image/jpeg"),
    ],
)
async def test_accept_negotiation(make_client, origin_dir, accept, media_type):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    response = await client.get(
        "/recipes/1203423/280x194c/5366e857.jpg", headers={"Accept": accept}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == media_type
    assert response.headers["Vary"] == "Accept"
    body = await response.read()
    loaded = pyvips.Image.new_from_buffer(body, "")
    assert (loaded.width, loaded.height) == (280, 194)
    expected_loader = {"image/avif": "heif", "image/webp": "webp", "image/jpeg": "jpeg"}
    assert expected_loader[media_type] in loaded.get("vips-loader")


async def test_no_vary_when_the_url_names_the_format(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    response = await client.get(
        "/recipes/1203423/280x194c.webp/5366e857.jpg", headers={"Accept": CHROME_ACCEPT}
    )
    assert response.headers["Content-Type"] == "image/webp"
    assert "Vary" not in response.headers


async def test_negotiation_can_be_turned_off(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True, negotiate=())
    response = await client.get(
        "/recipes/1203423/280x194c/5366e857.jpg", headers={"Accept": CHROME_ACCEPT}
    )
    assert response.headers["Content-Type"] == "image/jpeg"
    assert "Vary" not in response.headers


async def test_negotiated_variants_are_cached_separately(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    url = "/recipes/1203423/280x194c/5366e857.jpg"
    for accept in (CHROME_ACCEPT, CURL_ACCEPT, CHROME_ACCEPT, CURL_ACCEPT):
        await client.get(url, headers={"Accept": accept})
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_renders_total") == 2
    assert metric(text, "tofu_cache_hits_total", 'cache="result"') == 2


async def test_error_responses_cache_briefly_or_not_at_all(make_client, origin_dir):
    client = await make_client(origin=(str(origin_dir),), dev=True)
    bad = await client.get("/recipes/1203423/0x0/5366e857.jpg")
    assert bad.status == 400
    assert bad.headers["Content-Type"].startswith("text/plain")
    assert "immutable" not in bad.headers["Cache-Control"]


async def test_a_coalesced_render_runs_until_its_latest_waiters_deadline(origin_dir: Path) -> None:
    """A sibling's request nearly out of time (``seconds_left``) starts a render; a client
    request joins it. The first gets its 504 at its own deadline, the render goes on for the
    second (issue 17: the first caller's deadline used to kill it for everyone)."""
    from tofu.config import Config
    from tofu.errors import OriginTimeout
    from tofu.metrics import Metrics
    from tofu.service import ImageService
    from tofu.urls import parse_path

    origin = CountingOrigin(origin_dir, delay=0.5)
    service = ImageService(
        Config(origin=(str(origin_dir),), dev=True, request_timeout=10.0), origin, Metrics()
    )
    transform = parse_path(
        "/recipes/1203423/280x194c/5366e857.jpg", max_side=4096, expect_signature=False
    ).transform
    try:
        hurried = asyncio.create_task(service.produce(transform, None, seconds_left=0.2))
        await asyncio.sleep(0.05)
        patient = asyncio.create_task(service.produce(transform, None))
        with pytest.raises(OriginTimeout):
            await hurried
        entry, result = await patient
        assert result == "coalesced" and entry.body
        assert origin.fetches == [PHOTO_KEY]  # one fetch, one render, for both
    finally:
        await service.close()
