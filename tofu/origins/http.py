"""Originals from an HTTP(S) server under a fixed base URL: ``http(s)://HOST[:PORT]/BASE/``.

The host comes from the configuration only: a key is percent-encoded into one path below BASE
and refused (404, as the disk origin does) when it holds anything that could lead elsewhere
(dot segments, backslashes, empty segments, NUL: ``tofu.keys``), so no request can reach
another host or a file outside BASE. Redirects are followed only to such a path below BASE on
the same scheme, host and port, at most ``_MAX_REDIRECTS`` of them; any other ``Location``
(outside BASE, another host, malformed) is a 502. One aiohttp session per process (pooled
keep-alive connections); retries, the deadline and the bounded read are ``policy``'s, as for S3.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from yarl import URL

from tofu.errors import NotFound, OriginError, UnsupportedMediaType
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

_MAX_REDIRECTS = 3
_REDIRECT_STATUS = {301, 302, 303, 307, 308}
# Types that may hold an image; anything else (text/html error pages...) is not an original.
_GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream"}


def parse_source(text: str) -> Source:
    """``http(s)://HOST[:PORT]/BASE/``: no credentials, query or fragment; BASE gets its
    trailing slash."""
    parts = urlsplit(text)
    if not parts.hostname:
        raise ValueError(f"{text!r} names no host")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r}: credentials in an origin URL are not supported")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{text!r}: an HTTP origin has no query or fragment")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if not path.startswith("/") or "\\" in path or any(s in (".", "..") for s in path.split("/")):
        raise ValueError(f"{text!r}: BASE must be a plain /path/")
    return Source(parts.scheme.lower(), f"{parts.scheme.lower()}://{parts.netloc}{path}")


def open_source(source: Source, config: Config) -> HttpOrigin:
    return HttpOrigin(
        source.location,
        timeout=config.fetch_timeout,
        retries=config.fetch_retries,
        max_bytes=config.max_source_bytes,
        pool_size=max(10, config.max_renders + config.max_queue),
    )


def key_path(key: str) -> str:
    """``key`` as a percent-encoded relative path, or ``NotFound`` when it is not a plain
    sequence of names (nothing in it may climb out of BASE or name another host)."""
    segments = origin_key(key).split("/")
    # Everything but unreserved characters is encoded: "%2F", "@", "?", "#", ":" stay data.
    return "/".join(quote(s, safe="") for s in segments)


class HttpOrigin:
    def __init__(
        self, base: str, *, timeout: float, retries: int, max_bytes: int, pool_size: int
    ) -> None:
        self._base = URL(base, encoded=True)
        self._timeout = timeout
        self._policy = RetryPolicy(timeout, retries)
        self._max_bytes = max_bytes
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
                # Originals are images: ask for them as they are, and never unpack a body
                # (the byte limit is on what is read, a gzip bomb would pass it).
                headers={"Accept-Encoding": "identity"},
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def url(self, key: str) -> URL:
        url = URL(str(self._base) + key_path(key), encoded=True)
        # Belt and braces: the result must still be below BASE on the configured host.
        if url.origin() != self._base.origin() or not url.raw_path.startswith(self._base.raw_path):
            raise NotFound(f"no original at {key!r}")
        return url

    async def fetch(self, key: str) -> Original:
        url = self.url(key)
        return await self._policy.run(lambda: self._get(url, key), "HTTP origin")

    async def _get(self, url: URL, key: str) -> Original:
        session = self._client()
        try:
            for _ in range(_MAX_REDIRECTS + 1):
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in _REDIRECT_STATUS:
                        url = self._redirect(url, response.headers.get("Location", ""))
                        continue
                    return await self._original(response, key)
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            raise Retryable(type(exc).__name__) from None
        raise OriginError(f"HTTP origin: more than {_MAX_REDIRECTS} redirects")

    def _redirect(self, url: URL, location: str) -> URL:
        """Where a redirect from ``url`` leads: a plain path below BASE on the configured scheme,
        host and port, as a key's own URL is (checked as the server will read it, decoded), or
        ``OriginError`` (502) with the reason."""
        if not location:
            raise OriginError("HTTP origin: a redirect without Location")
        try:
            target = url.join(URL(location, encoded=True))
            origin = target.origin()  # a URL without a host (file:, data:...) raises here
        except ValueError:
            raise OriginError("HTTP origin: redirect to a malformed Location refused") from None
        if origin != self._base.origin():
            raise OriginError("HTTP origin: redirect to another host refused")
        if target.raw_user is not None or target.raw_password is not None:
            raise OriginError("HTTP origin: redirect with credentials refused")
        # The path below BASE must be a key's: a path outside BASE keeps its leading "/", an
        # empty segment; decoded, as a naive server reads "%2e%2e" or "%2F".
        try:
            key_path(unquote(target.raw_path.removeprefix(self._base.raw_path)))
        except NotFound:
            raise OriginError("HTTP origin: redirect outside BASE refused") from None
        return target.with_fragment(None)

    async def _original(self, response: aiohttp.ClientResponse, key: str) -> Original:
        status = response.status
        if status in (404, 410):
            raise NotFound(f"no original at {key!r}")
        if status in RETRYABLE_STATUS:
            raise Retryable(f"{status}")
        if status != 200:
            raise OriginError(f"HTTP origin answered {status}")
        first_byte()
        kind = response.content_type  # "application/octet-stream" when absent
        if not kind.startswith("image/") and kind not in _GENERIC_TYPES:
            raise UnsupportedMediaType(f"the origin's {key!r} is {kind}, not an image")
        data = await read_bounded(_chunks(response), response.content_length, self._max_bytes)
        etag = response.headers.get("ETag", "").removeprefix("W/").strip('"')
        modified = response.headers.get("Last-Modified")
        try:
            last_modified = email.utils.parsedate_to_datetime(modified or "").timestamp()
        except (TypeError, ValueError):
            last_modified = None
        # Without ETag or Last-Modified the content itself is the version.
        version = etag or modified or hashlib.blake2b(data, digest_size=12).hexdigest()
        return Original(data, version, last_modified)

    async def check(self) -> None:
        """Any answer but a 5xx from the host means it is up (BASE itself may well be 404)."""
        async with (
            asyncio.timeout(self._timeout),
            self._client().head(self._base, allow_redirects=False) as response,
        ):
            if response.status >= 500:
                raise OSError(f"HTTP origin answered {response.status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in response.content.iter_chunked(CHUNK):
        yield chunk
