"""The S3 origin against a real S3 server (SeaweedFS): in process, and through `tofu serve`."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pyvips
from aiobotocore.response import AioStreamingBody
from botocore.exceptions import ClientError

from tests.support.s3 import (
    ACCESS_KEY,
    SECRET_KEY,
    SeaweedFS,
    counts_delta,
    listening,
    origin_error_counts,
)
from tests.support.servers import SAMPLES, TofuProcess, start_tofu
from tofu.config import Config
from tofu.errors import NotFound, OriginError, Unprocessable
from tofu.metrics import Metrics
from tofu.origins import open_origin
from tofu.origins.s3 import S3Origin
from tofu.signing import signed_path

SAMPLE_KEY = "recipes/1203423/5366e857.jpg"
SAMPLE = SAMPLES / SAMPLE_KEY
SECRET = "s3-test-secret-0123456789abcdefghijk"


def origin(
    endpoint_url: str,
    bucket: str,
    prefix: str = "",
    *,
    timeout: float = 5.0,
    retries: int = 2,
    max_bytes: int = 32 << 20,
) -> S3Origin:
    return S3Origin(
        bucket,
        prefix,
        endpoint_url=endpoint_url,
        timeout=timeout,
        retries=retries,
        max_bytes=max_bytes,
        pool_size=4,
    )


# --- the server itself ---------------------------------------------------------------------


def test_seaweedfs_checks_signatures(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    assert seaweedfs.client().head_object(Bucket=s3_bucket, Key=SAMPLE_KEY)
    for access_key, secret_key, code in [
        (ACCESS_KEY, "wrong-secret", "SignatureDoesNotMatch"),
        ("nobody", SECRET_KEY, "InvalidAccessKeyId"),
    ]:
        with pytest.raises(ClientError) as caught:
            seaweedfs.client(access_key, secret_key).get_object(Bucket=s3_bucket, Key=SAMPLE_KEY)
        assert caught.value.response["Error"]["Code"] == code
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{seaweedfs.endpoint_url}/{s3_bucket}/{SAMPLE_KEY}", timeout=5)
    assert anonymous.value.code == 403


def test_seaweedfs_listens_only_where_told(seaweedfs: SeaweedFS) -> None:
    assert listening(seaweedfs.process.pid) == {("127.0.0.1", p) for p in seaweedfs.ports}


# --- S3Origin in process -------------------------------------------------------------------


@pytest.fixture
async def sample_origin(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> AsyncIterator[S3Origin]:
    store = origin(s3_endpoint_url, s3_bucket)
    yield store
    await store.close()


async def test_fetch_returns_the_object(
    sample_origin: S3Origin, seaweedfs: SeaweedFS, s3_bucket: str
) -> None:
    head = seaweedfs.client().head_object(Bucket=s3_bucket, Key=SAMPLE_KEY)
    original = await sample_origin.fetch(SAMPLE_KEY)
    again = await sample_origin.fetch(SAMPLE_KEY)  # the pooled connection is reusable
    await sample_origin.check()
    assert original.data == SAMPLE.read_bytes()
    assert original.version == head["ETag"].strip('"')
    assert original.last_modified == head["LastModified"].timestamp()
    assert abs(original.last_modified - time.time()) < 3600
    assert again == original


async def test_missing_key_is_not_found(sample_origin: S3Origin) -> None:
    with pytest.raises(NotFound) as caught:
        await sample_origin.fetch("recipes/1203423/missing.jpg")
    assert "recipes/1203423/missing.jpg" in caught.value.reason


@pytest.mark.parametrize("prefix", ["recipes", "/recipes/", "recipes/1203423"])
async def test_prefix_is_prepended(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str, prefix: str
) -> None:
    store = origin(s3_endpoint_url, s3_bucket, prefix)
    key = SAMPLE_KEY.removeprefix(prefix.strip("/") + "/")
    try:
        original = await store.fetch(key)
        with pytest.raises(NotFound) as caught:
            await store.fetch(SAMPLE_KEY)  # the prefix is not there twice
    finally:
        await store.close()
    assert original.data == SAMPLE.read_bytes()
    assert caught.value.reason == f"no original at {SAMPLE_KEY!r}"  # the key asked for


async def test_origin_url_with_prefix(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    config = Config(origin=(f"s3://{s3_bucket}/recipes/1203423",), s3_endpoint_url=s3_endpoint_url)
    store = open_origin(config, Metrics())
    try:
        original = await store.fetch("5366e857.jpg")
    finally:
        await store.close()
    assert original.data == SAMPLE.read_bytes()


async def test_localhost_endpoint_is_addressed_by_path(
    s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    store = origin(s3_endpoint_url.replace("127.0.0.1", "localhost"), s3_bucket)
    try:
        original = await store.fetch(SAMPLE_KEY)
    finally:
        await store.close()
    assert original.data == SAMPLE.read_bytes()


async def test_over_max_bytes_is_refused_before_reading(
    s3_credentials: None,
    s3_endpoint_url: str,
    s3_bucket: str,
    s3_put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_put("big/zeros.bin", bytes(3 << 20))
    s3_put("big/small.bin", b"small")
    reads: list[Any] = []
    real_read = AioStreamingBody.read

    async def spy(self: AioStreamingBody, amt: int | None = None) -> bytes:
        reads.append(amt)
        return await real_read(self, amt)

    monkeypatch.setattr(AioStreamingBody, "read", spy)
    store = origin(s3_endpoint_url, s3_bucket, max_bytes=1 << 20)
    try:
        with pytest.raises(Unprocessable) as caught:
            await store.fetch("big/zeros.bin")
        assert reads == []
        assert str(3 << 20) in caught.value.reason
        assert (await store.fetch("big/small.bin")).data == b"small"  # the origin still works
        assert reads  # (and the spy does see reads)
    finally:
        await store.close()


async def test_wrong_credentials_are_an_origin_error_tried_once(
    monkeypatch: pytest.MonkeyPatch, s3_credentials: None, s3_endpoint_url: str, s3_bucket: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    store = origin(s3_endpoint_url, s3_bucket, retries=3)
    client = await store._open()
    sent: list[str] = []
    client.meta.events.register("before-send.s3.GetObject", lambda **kw: sent.append("GET"))
    try:
        with pytest.raises(OriginError) as caught:
            await store.fetch(SAMPLE_KEY)
        with pytest.raises(ClientError):
            await store.check()  # and the readiness check fails
    finally:
        await store.close()
    assert "403" in caught.value.reason
    assert sent == ["GET"]


async def test_missing_bucket_is_an_origin_error(
    s3_credentials: None, s3_endpoint_url: str
) -> None:
    store = origin(s3_endpoint_url, "no-such-bucket")
    try:
        with pytest.raises(OriginError) as caught:
            await store.fetch(SAMPLE_KEY)
        with pytest.raises(ClientError):
            await store.check()
    finally:
        await store.close()
    assert "no-such-bucket" in caught.value.reason


# --- through `tofu serve` ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tofu_s3(
    tmp_path_factory: pytest.TempPathFactory,
    s3_endpoint_url: str,
    s3_env_vars: dict[str, str],
    s3_bucket: str,
    s3_put: Callable[..., str],
) -> Iterator[TofuProcess]:
    data = SAMPLE.read_bytes()
    s3_put("bad/notes.jpg", b"these are not the pixels you are looking for\n" * 20)
    s3_put("bad/truncated.jpg", data[: len(data) // 2])
    tofu = start_tofu(
        [
            "--origin",
            f"s3://{s3_bucket}",
            "--s3-endpoint-url",
            s3_endpoint_url,
            "--secret",
            SECRET,
            "--workers",
            "1",
            "--fetch-timeout",
            "5",
            "--drain-seconds",
            "0",
        ],
        tmp_path_factory.mktemp("tofu-s3"),
        env=s3_env_vars,
    )
    yield tofu
    tofu.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def assert_renders(tofu: TofuProcess, width: int, height: int = 194) -> None:
    path = signed_path(f"/recipes/1203423/{width}x{height}c/5366e857.jpg", SECRET)
    status, headers, body = get(tofu.url + path, {"Accept": "image/jpeg"})
    assert status == 200, (body, tofu.log()[-2000:])
    assert headers["Content-Type"] == "image/jpeg"
    image = pyvips.Image.new_from_buffer(body, "")
    assert (image.width, image.height) == (width, height)
    assert image.get("vips-loader") == "jpegload_buffer"


def test_serves_a_rendition_from_s3(tofu_s3: TofuProcess) -> None:
    assert_renders(tofu_s3, 280)
    status, _, body = get(tofu_s3.url + "/readyz")
    assert (status, body) == (200, b"ready\n")


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("recipes/1203423/nope.jpg", 404),
        ("bad/notes.jpg", 415),
        ("bad/truncated.jpg", 422),
    ],
)
def test_bad_originals_fail_cleanly(tofu_s3: TofuProcess, key: str, status: int) -> None:
    directory, _, name = key.rpartition("/")
    before = origin_error_counts(tofu_s3.url)
    got, headers, body = get(tofu_s3.url + signed_path(f"/{directory}/280x194c/{name}", SECRET))
    assert got == status, (body, tofu_s3.log()[-2000:])
    # a missing original is an origin error of its own kind; the others were fetched fine
    assert counts_delta(before, origin_error_counts(tofu_s3.url)) == (
        {"not_found": 1} if status == 404 else {}
    )
    assert headers["Content-Type"].startswith("text/plain")
    assert_renders(tofu_s3, 200 + status)  # a fresh render, not a cache hit, still works


def test_unsigned_is_forbidden(tofu_s3: TofuProcess) -> None:
    for path in [
        "/recipes/1203423/280x194c/5366e857.jpg",
        "/not-a-signature/recipes/1203423/280x194c/5366e857.jpg",
        signed_path("/recipes/1203423/280x194c/5366e857.jpg", "another-secret"),
    ]:
        status, _, _ = get(tofu_s3.url + path)
        assert status == 403, path
    assert_renders(tofu_s3, 100)


def test_log_has_no_credentials(tofu_s3: TofuProcess, s3_env_vars: dict[str, str]) -> None:
    assert s3_env_vars["AWS_SECRET_ACCESS_KEY"] not in tofu_s3.log()
