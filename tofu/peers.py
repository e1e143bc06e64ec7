"""Routing misses between the worker processes of one node.

Each worker process has its own caches, and SO_REUSEPORT spreads connections over the workers
regardless of URL, so without routing every worker would render the hot set itself: N times
the render work, and each cache a copy of the others. Instead every rendition has one owner
worker (a stable hash of its URL and negotiated format). A worker that misses asks the owner
over a Unix socket; the owner renders it (coalesced, cached) and the asking worker keeps a copy,
so later hits stay local. An owner that cannot be reached (restarting) is rendered around.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime

import aiohttp

from tofu.errors import error_for_status
from tofu.negotiate import Negotiated
from tofu.service import Entry

PEER_HEADER = "X-Tofu-Peer"  # marks a request from a sibling worker: never routed on
VERSION_HEADER = "X-Tofu-Version"  # the original's version, on answers to siblings


class Peers:
    def __init__(self, index: int, socket_paths: Sequence[str]) -> None:
        self.index = index
        self._paths = list(socket_paths)
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def owner(self, raw_path: str, negotiated: Negotiated | None) -> int:
        key = raw_path if negotiated is None else f"{raw_path}|{negotiated.tag}"
        return zlib.crc32(key.encode()) % len(self._paths)

    async def fetch(
        self, owner: int, raw_path: str, accept: str, hints: Mapping[str, str] | None = None
    ) -> Entry | None:
        """The owner's rendition, its error, or None when the owner cannot be reached.
        ``hints``: the client hint headers, so that the owner adapts the size alike."""
        session = self._sessions.get(owner)
        if session is None:
            connector = aiohttp.UnixConnector(path=self._paths[owner])
            session = self._sessions[owner] = aiohttp.ClientSession(connector=connector)
        headers = {**(hints or {}), "Accept": accept, PEER_HEADER: "1"}
        started = time.perf_counter()
        try:
            async with session.get(f"http://tofu{raw_path}", headers=headers) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError):
            return None
        if response.status != 200:
            raise error_for_status(response.status, body.decode(errors="replace").strip())
        modified = response.headers.get("Last-Modified")
        return Entry(
            body=body,
            media_type=response.headers["Content-Type"],
            etag=response.headers["ETag"],
            version=response.headers.get(VERSION_HEADER, ""),
            last_modified=parsedate_to_datetime(modified).timestamp() if modified else None,
            last_modified_http=modified,
            phases={"peer": time.perf_counter() - started},
        )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
