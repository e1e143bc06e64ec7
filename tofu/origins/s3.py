"""Originals from S3 (or anything that speaks it: MinIO, SeaweedFS, Ceph).

One long-lived aiobotocore client per process. botocore's own retries are off so that the
policy is visible here: every fetch has one deadline; throttling, 5xx answers, resets and
timeouts are retried a bounded number of times with exponential backoff and full jitter;
then the request fails cleanly with 502 (error) or 504 (deadline). A missing key is 404; an
original over the byte limit is 422, refused from its Content-Length before the body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tofu.errors import NotFound, OriginError
from tofu.keys import origin_key
from tofu.origins import Original
from tofu.origins.policy import (
    CHUNK,
    RETRYABLE_STATUS,
    Retryable,
    RetryPolicy,
    first_byte,
    read_bounded,
)
from tofu.origins.sources import Source

if TYPE_CHECKING:
    from tofu.config import Config

_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}


_OPTIONS = ("endpoint_url", "region")


def parse_source(text: str) -> Source:
    """``s3://BUCKET[/PREFIX][?endpoint_url=URL&region=NAME]``."""
    parts = urlsplit(text)
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"{text!r} names no bucket")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", bucket):
        raise ValueError(f"{text!r}: {bucket!r} is not a bucket name")
    if parts.fragment:
        raise ValueError(f"{text!r}: an S3 source has no #fragment")
    try:
        options = parse_qsl(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"{text!r}: the options are not NAME=VALUE&...") from None
    for name, value in options:
        if name not in _OPTIONS:
            raise ValueError(f"{text!r}: unknown option {name!r} (known: {', '.join(_OPTIONS)})")
        if name == "endpoint_url" and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"{text!r}: endpoint_url must be an http(s):// URL")
    if len({name for name, _ in options}) != len(options):
        raise ValueError(f"{text!r}: an option is given twice")
    location = f"s3://{bucket}{parts.path}".rstrip("/")
    return Source("s3", location, tuple(options))


def open_source(source: Source, config: Config) -> S3Origin:
    bucket, _, prefix = source.location.removeprefix("s3://").partition("/")
    return S3Origin(
        bucket,
        prefix,
        endpoint_url=source.option("endpoint_url") or config.s3_endpoint_url,
        region=source.option("region"),
        timeout=config.fetch_timeout,
        retries=config.fetch_retries,
        max_bytes=config.max_source_bytes,
        pool_size=max(10, config.max_renders + config.max_queue),
    )


class S3Origin:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None,
        region: str | None = None,
        timeout: float,
        retries: int,
        max_bytes: int,
        pool_size: int,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url
        self._region = region
        self._timeout = timeout
        self._policy = RetryPolicy(timeout, retries)
        self._max_bytes = max_bytes
        self._pool_size = pool_size
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()

    async def _open(self) -> Any:
        async with self._opening:
            if self._client is None:
                session = get_session()
                config = AioConfig(
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    retries={"total_max_attempts": 1},
                    max_pool_connections=self._pool_size,
                    # MinIO, SeaweedFS and Ceph are addressed by path: a virtual-hosted
                    # bucket.localhost or bucket.10.0.0.5 name would not resolve.
                    s3={"addressing_style": "path"} if self._endpoint_url else None,
                )
                region = self._region or session.get_config_variable("region") or "us-east-1"
                self._client = await self._exit_stack.enter_async_context(
                    session.create_client(
                        "s3", endpoint_url=self._endpoint_url, region_name=region, config=config
                    )
                )
        return self._client

    async def connect(self) -> None:
        """Create the client now (botocore loads its service model: a few hundred ms), so that
        a caller's deadline covers requests only."""
        if self._client is None:
            await self._open()

    async def fetch(self, key: str) -> Original:
        key = origin_key(key)  # nothing outside the prefix, whatever the store does with ".."
        client = self._client or await self._open()
        return await self._policy.run(lambda: self._get(client, key), "S3")

    async def _get(self, client: Any, key: str) -> Original:
        try:
            response = await client.get_object(Bucket=self._bucket, Key=self._prefix + key)
            first_byte()
            body = response["Body"]
            try:
                data = await read_bounded(
                    _chunks(body), response.get("ContentLength"), self._max_bytes
                )
            finally:
                await body.aclose()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":  # misconfiguration, not a missing original
                raise OriginError(f"S3 bucket {self._bucket!r} does not exist") from None
            if code in _NOT_FOUND_CODES or status == 404:
                raise NotFound(f"no original at {key!r}") from None
            if status in RETRYABLE_STATUS or code in _RETRYABLE_CODES:
                raise Retryable(f"{status} {code}") from None
            raise OriginError(f"S3 refused GetObject: {status} {code}") from None
        except (BotoCoreError, aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            # Connection refused or reset, a read timeout, a body cut short.
            raise Retryable(type(exc).__name__) from None
        modified = response.get("LastModified")
        return Original(
            data,
            version=str(response.get("ETag", "")).strip('"') or f"len-{len(data)}",
            last_modified=modified.timestamp() if modified else None,
        )

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (the shared result store writes renditions with it)."""
        client = self._client or await self._open()
        await self._policy.run(lambda: self._put(client, key, data), "S3")

    async def _put(self, client: Any, key: str, data: bytes) -> None:
        try:
            await client.put_object(
                Bucket=self._bucket,
                Key=self._prefix + key,
                Body=data,
                ContentType="application/octet-stream",
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status in RETRYABLE_STATUS or code in _RETRYABLE_CODES:
                raise Retryable(f"{status} {code}") from None
            raise OriginError(f"S3 refused PutObject: {status} {code}") from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise Retryable(type(exc).__name__) from None

    async def check(self) -> None:
        client = self._client or await self._open()
        async with asyncio.timeout(self._timeout):
            await client.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        await self._exit_stack.aclose()
        self._client = None


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    while chunk := await body.read(CHUNK):
        yield chunk
