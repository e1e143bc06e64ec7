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
import random
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from tofu.errors import NotFound, OriginError, OriginTimeout, Unprocessable
from tofu.origins import Original

_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_RETRYABLE_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"}
_BACKOFF_BASE = 0.05  # seconds; attempt n sleeps up to base * 2**n
_BACKOFF_CAP = 1.0
_CHUNK = 1 << 16  # read size when the length is not known up front


class _Retryable(Exception):
    """A failure worth another attempt; carries a short description of the cause."""


class S3Origin:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None,
        timeout: float,
        retries: int,
        max_bytes: int,
        pool_size: int,
    ) -> None:
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._endpoint_url = endpoint_url
        self._timeout = timeout
        self._retries = retries
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
                region = session.get_config_variable("region") or "us-east-1"
                self._client = await self._exit_stack.enter_async_context(
                    session.create_client(
                        "s3", endpoint_url=self._endpoint_url, region_name=region, config=config
                    )
                )
        return self._client

    async def fetch(self, key: str) -> Original:
        client = self._client or await self._open()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch_with_retries(client, key)
        except TimeoutError:
            raise OriginTimeout(f"S3 did not answer within {self._timeout:g}s") from None

    async def _fetch_with_retries(self, client: Any, key: str) -> Original:
        cause = ""
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(
                    random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))
                )
            try:
                return await self._get(client, key)
            except _Retryable as exc:
                cause = str(exc)
        raise OriginError(f"S3 GetObject failed after {self._retries + 1} attempts: {cause}")

    async def _get(self, client: Any, key: str) -> Original:
        try:
            response = await client.get_object(Bucket=self._bucket, Key=self._prefix + key)
            body = response["Body"]
            try:
                data = await self._read(body, response.get("ContentLength"))
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
            if status in _RETRYABLE_STATUS or code in _RETRYABLE_CODES:
                raise _Retryable(f"{status} {code}") from None
            raise OriginError(f"S3 refused GetObject: {status} {code}") from None
        except (BotoCoreError, aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            # Connection refused or reset, a read timeout, a body cut short.
            raise _Retryable(type(exc).__name__) from None
        modified = response.get("LastModified")
        return Original(
            data,
            version=str(response.get("ETag", "")).strip('"') or f"len-{len(data)}",
            last_modified=modified.timestamp() if modified else None,
        )

    async def _read(self, body: Any, length: int | None) -> bytes:
        """The whole body, never more than ``max_bytes`` of it: an announced length over the
        limit is refused before reading, an unannounced one as soon as the limit is passed."""
        if length is not None and length > self._max_bytes:
            raise Unprocessable(f"original is {length} bytes, over the {self._max_bytes} limit")
        if length is not None:
            data = await body.read()
            if len(data) != length:
                raise _Retryable(f"short read: {len(data)} of {length} bytes")
            return data
        chunks: list[bytes] = []
        size = 0
        while chunk := await body.read(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise Unprocessable(f"original is over the {self._max_bytes} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def check(self) -> None:
        client = self._client or await self._open()
        async with asyncio.timeout(self._timeout):
            await client.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        await self._exit_stack.aclose()
        self._client = None
