"""When S3 misbehaves: unreachable, silent, throttling, failing, cutting bodies short.

Unit level: ``S3Origin`` against ``FakeS3``, which counts the requests it receives. End to end:
``tofu serve`` against the same fake (and against a closed port), checking statuses, that a
stalled fetch does not hold up other requests, the error metrics, and that readiness ignores
the origin.
Times are measured only to bound them by the configured deadline plus a margin.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
import pyvips

from tests.support.s3 import (
    FakeS3,
    Reply,
    ResetMidBody,
    Stall,
    counts_delta,
    origin_error_counts,
    s3_env,
)
from tests.support.servers import SAMPLES, TofuProcess, free_port, start_tofu
from tofu.errors import NotFound, OriginError, OriginTimeout, Unprocessable
from tofu.origins.s3 import S3Origin
from tofu.signing import signed_path

SECRET = "faults-secret-0123456789abcdefghijkl"
JPEG = (SAMPLES / "recipes/1203423/5366e857.jpg").read_bytes()
MARGIN = 3.0  # seconds of slack on a loaded machine, on top of a deadline


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def make_origin(aws_env: None) -> AsyncIterator[Callable[..., S3Origin]]:
    made: list[S3Origin] = []

    def make(
        endpoint_url: str,
        *,
        bucket: str = "fake",
        timeout: float = 5.0,
        retries: int = 2,
        max_bytes: int = 1 << 20,
    ) -> S3Origin:
        store = S3Origin(
            bucket,
            "",
            endpoint_url=endpoint_url,
            timeout=timeout,
            retries=retries,
            max_bytes=max_bytes,
            pool_size=4,
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


# --- S3Origin against the fake -------------------------------------------------------------


async def test_slowdown_twice_then_success(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin]
) -> None:
    fake_s3.script(
        "a.jpg", Reply(503, code="SlowDown"), Reply(503, code="SlowDown"), Reply(200, JPEG)
    )
    original = await make_origin(fake_s3.endpoint_url, retries=2).fetch("a.jpg")
    assert original.data == JPEG
    assert original.version == f"fake-{len(JPEG)}"
    assert original.last_modified == 1_700_000_000
    assert fake_s3.gets("a.jpg") == 3


@pytest.mark.parametrize("retries", [0, 2])
async def test_always_500_fails_after_retries_plus_one(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin], retries: int
) -> None:
    fake_s3.script("a.jpg", Reply(500, code="InternalError"))
    store = make_origin(fake_s3.endpoint_url, retries=retries)
    with pytest.raises(OriginError) as caught:
        await store.fetch("a.jpg")
    assert f"after {retries + 1} attempts" in caught.value.reason
    assert fake_s3.gets("a.jpg") == retries + 1


async def test_reset_mid_body_is_retried(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin]
) -> None:
    fake_s3.script("a.jpg", ResetMidBody(len(JPEG), 1000), Reply(200, JPEG))
    original = await make_origin(fake_s3.endpoint_url).fetch("a.jpg")
    assert original.data == JPEG
    assert fake_s3.gets("a.jpg") == 2


async def test_refusals_are_not_retried(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin]
) -> None:
    fake_s3.script("denied.jpg", Reply(403, code="AccessDenied"))
    store = make_origin(fake_s3.endpoint_url, retries=3)
    with pytest.raises(OriginError):
        await store.fetch("denied.jpg")
    with pytest.raises(NotFound):
        await store.fetch("missing.jpg")
    assert fake_s3.gets("denied.jpg") == 1
    assert fake_s3.gets("missing.jpg") == 1


async def test_over_max_bytes_is_refused_without_reading(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin]
) -> None:
    # Announces 64 MB, sends 1 KB and stalls: reading the body would run into the deadline.
    fake_s3.script("huge.jpg", Stall(length=64 << 20, sent=1024))
    fake_s3.script("small.jpg", Reply(200, b"small"))
    store = make_origin(fake_s3.endpoint_url, timeout=5.0, max_bytes=1 << 20)
    started = time.monotonic()
    with pytest.raises(Unprocessable):
        await store.fetch("huge.jpg")
    assert time.monotonic() - started < 5.0
    assert (await store.fetch("small.jpg")).data == b"small"
    assert fake_s3.gets("huge.jpg") == 1


async def test_unannounced_length_is_bounded(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin]
) -> None:
    fake_s3.script("chunked.jpg", Reply(200, JPEG, chunked=True))
    fake_s3.script("chunked-big.jpg", Reply(200, bytes(len(JPEG) + 1), chunked=True))
    store = make_origin(fake_s3.endpoint_url, max_bytes=len(JPEG))
    assert (await store.fetch("chunked.jpg")).data == JPEG
    with pytest.raises(Unprocessable):
        await store.fetch("chunked-big.jpg")


@pytest.mark.parametrize("stall", [Stall(), Stall(length=len(JPEG), sent=100)])
async def test_silence_hits_the_deadline(
    fake_s3: FakeS3, make_origin: Callable[..., S3Origin], stall: Stall
) -> None:
    fake_s3.script("slow.jpg", stall)
    store = make_origin(fake_s3.endpoint_url, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OriginTimeout):
        await store.fetch("slow.jpg")
    assert 0.5 <= time.monotonic() - started < 0.5 + MARGIN


async def test_unreachable_fails_fast(make_origin: Callable[..., S3Origin]) -> None:
    store = make_origin(f"http://127.0.0.1:{free_port()}", timeout=5.0, retries=2)
    started = time.monotonic()
    with pytest.raises(OriginError):
        await store.fetch("a.jpg")
    assert time.monotonic() - started < 5.0
    with pytest.raises(Exception):  # noqa: B017 - any failure: the readiness probe's "not ready"
        await store.check()


# --- through `tofu serve` ------------------------------------------------------------------

FETCH_TIMEOUT = 2.0


def tofu_args(endpoint_url: str, *extra: str) -> list[str]:
    return [
        "--origin",
        "s3://fake",
        "--s3-endpoint-url",
        endpoint_url,
        "--secret",
        SECRET,
        "--workers",
        "1",
        "--max-renders",
        "4",  # a fetch holds a render slot: leave some free while two fetches stall
        "--fetch-retries",
        "2",
        "--drain-seconds",
        "0",
        *extra,
    ]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeS3]:
    server = FakeS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tofu_fake(fake: FakeS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TofuProcess]:
    tofu = start_tofu(
        tofu_args(fake.endpoint_url, "--fetch-timeout", str(FETCH_TIMEOUT)),
        tmp_path_factory.mktemp("tofu-faults"),
        env=s3_env(),
    )
    yield tofu
    tofu.stop()


def image_path(key: str, size: str = "120x80c") -> str:
    directory, _, name = key.rpartition("/")
    return signed_path(f"/{directory}/{size}/{name}", SECRET)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_throttled_then_served(fake: FakeS3, tofu_fake: TofuProcess) -> None:
    fake.script(
        "p/flaky.jpg", Reply(503, code="SlowDown"), Reply(503, code="SlowDown"), Reply(200, JPEG)
    )
    status, body = get(tofu_fake.url + image_path("p/flaky.jpg"))
    assert status == 200, body
    image = pyvips.Image.new_from_buffer(body, "")
    assert (image.width, image.height) == (120, 80)
    assert fake.gets("p/flaky.jpg") == 3


def test_failing_origin_is_502_after_bounded_retries(fake: FakeS3, tofu_fake: TofuProcess) -> None:
    fake.script("p/broken.jpg", Reply(500, code="InternalError"))
    before = origin_error_counts(tofu_fake.url)
    status, body = get(tofu_fake.url + image_path("p/broken.jpg"))
    assert status == 502, body
    assert fake.gets("p/broken.jpg") == 3  # --fetch-retries 2
    assert counts_delta(before, origin_error_counts(tofu_fake.url)) == {"error": 1}


def test_reset_mid_body_is_retried_end_to_end(fake: FakeS3, tofu_fake: TofuProcess) -> None:
    fake.script("p/reset.jpg", ResetMidBody(len(JPEG), 4096), Reply(200, JPEG))
    status, body = get(tofu_fake.url + image_path("p/reset.jpg"))
    assert status == 200, body
    assert fake.gets("p/reset.jpg") == 2


async def test_silent_origin_is_504_and_others_are_still_served(
    fake: FakeS3, tofu_fake: TofuProcess
) -> None:
    fake.script("p/silent.jpg", Stall())
    fake.script("p/stuck.jpg", Stall(length=len(JPEG), sent=512))
    fake.script("p/good.jpg", Reply(200, JPEG))
    before = origin_error_counts(tofu_fake.url)
    async with aiohttp.ClientSession(base_url=tofu_fake.url) as http:

        async def fetch(path: str) -> tuple[int, float]:
            started = time.monotonic()
            async with http.get(path) as response:
                await response.read()
                return response.status, time.monotonic() - started

        silent = asyncio.create_task(fetch(image_path("p/silent.jpg")))
        stuck = asyncio.create_task(fetch(image_path("p/stuck.jpg")))
        await asyncio.sleep(0.2)  # both fetches are under way
        assert (await fetch("/healthz"))[0] == 200
        assert (await fetch(image_path("p/good.jpg")))[0] == 200
        assert not stuck.done(), "served while the stalled fetches were still waiting"
        for status, seconds in await asyncio.gather(silent, stuck):
            assert status == 504
            assert FETCH_TIMEOUT - 0.3 <= seconds < FETCH_TIMEOUT + MARGIN
    assert counts_delta(before, origin_error_counts(tofu_fake.url)) == {"timeout": 2}


def test_readiness_ignores_the_origin(fake: FakeS3, tofu_fake: TofuProcess) -> None:
    """An origin outage must not take the node out of the balancer (issue 16)."""
    assert get(tofu_fake.url + "/readyz")[0] == 200
    fake.down()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert get(tofu_fake.url + "/readyz")[0] == 200
            time.sleep(0.2)
    finally:
        fake.up()


def test_unreachable_origin_is_502_quickly(tmp_path_factory: pytest.TempPathFactory) -> None:
    fetch_timeout = 5.0
    tofu = start_tofu(
        tofu_args(f"http://127.0.0.1:{free_port()}", "--fetch-timeout", str(fetch_timeout)),
        tmp_path_factory.mktemp("tofu-unreachable"),
        env=s3_env(),
    )
    try:
        assert get(tofu.url + "/readyz")[0] == 200  # the node itself is fine
        before = origin_error_counts(tofu.url)
        started = time.monotonic()
        status, body = get(tofu.url + image_path("p/any.jpg"))
        elapsed = time.monotonic() - started
        assert status == 502, body
        assert elapsed < fetch_timeout  # refused connections do not wait for the deadline
        assert counts_delta(before, origin_error_counts(tofu.url)) == {"error": 1}
        assert get(tofu.url + "/healthz")[0] == 200
    finally:
        tofu.stop()
