"""Fault injection on the loopback: an HTTP proxy in front of a real server (SeaweedFS) that
can be taken down, answer 503s or delay every other GET; and a plain HTTP file server for the
HTTP origin that serves any path it is asked for (no protection of its own), so a key that
escaped BASE would be seen reaching a file outside it.

Both run their own event loop in a thread, so that ``tofu serve`` subprocesses and in-process
tests can use them alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class _Threaded:
    """An aiohttp server on 127.0.0.1 in a thread of its own."""

    port = 0

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def _setup(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        async def run() -> Any:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(15)

    def start(self) -> _Threaded:
        self._thread.start()
        self._call(self._setup())
        self.up()
        return self

    def up(self) -> None:
        """Listen (again, on the same port once one was chosen)."""

        async def listen() -> None:
            assert self._runner is not None
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()
            server = self._site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]

        self._call(listen())

    def down(self) -> None:
        """Stop listening and drop every connection: connections are refused."""

        async def close() -> None:
            if self._site is not None:
                await self._site.stop()
                self._site = None

        self._call(close())

    def stop(self) -> None:
        self.down()
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._call(self._cleanup())
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _cleanup(self) -> None:
        return None

    async def _cancel_all(self) -> None:
        """Handlers still sleeping (a held GET whose client went away) end here."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class FaultProxy(_Threaded):
    """Forwards every request to ``upstream`` as it came (Host included, so SigV4 signatures
    still verify), unless told to fail: ``status`` answers every GET itself (e.g. 503);
    ``delay_every`` (n, seconds) holds every n-th GET that long before forwarding it.
    ``gets`` counts the GETs of objects it received, ``delayed`` those it held."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.status: int | None = None
        self.delay_every: tuple[int, float] | None = None
        self.gets = 0
        self.delayed = 0
        self._session: aiohttp.ClientSession | None = None

    def reset(self) -> None:
        self.status = None
        self.delay_every = None
        self.gets = 0
        self.delayed = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        is_get = request.method == "GET" and request.path.strip("/").count("/") >= 1
        if is_get:
            self.gets += 1
            if self.status is not None:
                return web.Response(
                    status=self.status,
                    content_type="application/xml",
                    text="<Error><Code>ServiceUnavailable</Code><Message>fault</Message></Error>",
                )
            if self.delay_every and self.gets % self.delay_every[0] == 0:
                self.delayed += 1
                await asyncio.sleep(self.delay_every[1])
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=await request.read() or None,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=out)

    async def _cleanup(self) -> None:
        if self._session is not None:
            await self._session.close()


class FileServer(_Threaded):
    """Serves ``root``'s files at their paths, naively (``..`` is not resolved away): what a
    careless origin server does. ``paths`` records every path a GET asked for, decoded (HEADs,
    the origin probe's, go to ``heads``); ``special`` maps a path to a handler of its own."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.paths: list[str] = []
        self.heads: list[str] = []
        self.special: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = unquote(request.raw_path.partition("?")[0])
        (self.heads if request.method == "HEAD" else self.paths).append(path)
        if path in self.special:
            return await self.special[path](request)
        data = _read(str(self.root) + path)  # deliberately no normalisation
        if data is None:
            return web.Response(status=404, text="not found")
        kind = "image/jpeg" if path.endswith(".jpg") else "application/octet-stream"
        return web.Response(body=data, content_type=kind)


def _read(path: str) -> bytes | None:
    """A small local file (the test server's, blocking is fine), or None."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A ``FileServer`` over a fresh directory (``file_server.root``)."""
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root=root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
