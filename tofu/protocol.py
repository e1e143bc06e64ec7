"""HTTP/1 at the connection level: aiohttp's low-level server with tofu's treatment of requests
that never reach a handler.

- Malformed requests (a lowercase or unknown method, an over-long request line or header, a NUL
  or other invalid byte in the target, TLS sent to the plain port...) get a plain one-line 4xx
  that does not echo the request, and one access-log line naming the problem; no traceback.
- Absolute-form targets (``GET http://host/path``, RFC 9112 section 3.2.2) are served as their
  path.
- Every answer says ``HTTP/1.1`` (RFC 9110 section 6.2: the highest version tofu conforms to;
  aiohttp repeats the request's, "HTTP/0.9 200 OK"). HTTP/1.0 clients are served as such
  (keep-alive as they asked, and said so; tofu's responses all have a length, so none is
  chunked); other versions (0.9, a request line without one, 2.0 in text) get a one-line 505.
- A connection that has not sent a complete request within ``idle_timeout`` seconds of opening
  or of its previous response (idle, or trickling its headers) is closed: aiohttp's keep-alive
  timer, which runs until a request's headers are complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import HttpVersion, HttpVersion10, HttpVersion11, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMethod, InvalidURLError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from tofu.server import REQUEST_LOG, RequestLog

# Room for the method, query string and version around the longest allowed path.
_REQUEST_LINE_SLACK = 4096
# The version a request came with (the request itself now says 1.1).
_CLIENT_VERSION = web.RequestKey("tofu_client_version", HttpVersion)
_UNSPOKEN_REASON = "HTTP version not supported: tofu speaks HTTP/1.1 and HTTP/1.0"


def _refusal(exc: BaseException | None) -> tuple[int, str]:
    """Status and one-line reason for a request the parser refused, never quoting it."""
    if isinstance(exc, LineTooLong):
        # The parser raises this for the target and for headers alike; its first argument is
        # the start of the offending text: a target starts with "/" or a scheme.
        start = exc.args[0] if exc.args else b""
        if isinstance(start, bytes | bytearray) and start[:1] in (b"/", b"h", b"H"):
            return 414, "request target too long"
        return 431, "request header too long"
    if isinstance(exc, BadHttpMethod):
        return 400, "bad request method (methods are upper case: GET, HEAD)"
    if isinstance(exc, InvalidURLError):
        return 400, "bad request target"
    return 400, "bad request: not valid HTTP/1.1"


class _Protocol(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)  # a bug: traceback
        status, reason = _refusal(exc)
        request[REQUEST_LOG] = RequestLog(error=reason)  # the access log's one line says why
        response = web.Response(
            status=status, text=reason + "\n", headers={"Cache-Control": "no-store"}
        )
        response.force_close()
        return response


class Server(web.Server):
    """``web.Server`` with the behaviour described in the module docstring."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        idle_timeout: float,
        max_path_length: int,
        **kwargs: Any,
    ) -> None:
        self._handler = handler
        super().__init__(
            self._handle,
            request_factory=self._request,
            keepalive_timeout=idle_timeout,
            max_line_size=max_path_length + _REQUEST_LINE_SLACK,
            **kwargs,
        )

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if not message.path.startswith("/") and message.url.absolute:
            message = message._replace(path=message.url.raw_path_qs)
        version = message.version
        if version != HttpVersion11:
            # The status line is written from the request's version. Keep-alive was decided by
            # the parser from the client's own version (message.should_close).
            message = message._replace(version=HttpVersion11)
        request = web.BaseRequest(message, payload, protocol, writer, task, self._loop)
        request[_CLIENT_VERSION] = version  # set always: a missing key costs an exception
        return request

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        version = request[_CLIENT_VERSION]
        if version == HttpVersion11:
            return await self._handler(request)
        if version != HttpVersion10:
            request[REQUEST_LOG] = RequestLog(error=_UNSPOKEN_REASON)
            refusal = web.Response(
                status=505, text=_UNSPOKEN_REASON + "\n", headers={"Cache-Control": "no-store"}
            )
            refusal.force_close()
            return refusal
        response = await self._handler(request)
        # A 1.0 client keeps the connection only when the answer says so (aiohttp says it to
        # requests that are 1.0, which this one no longer is).
        if request.keep_alive and response.keep_alive is not False:
            response.headers.setdefault("Connection", "keep-alive")
        return response
