"""Routing misses between the worker processes of one node.

Each worker process has its own caches, and SO_REUSEPORT spreads connections over the workers
regardless of URL, so without routing every worker would render the hot set itself: N times
the render work, and each cache a copy of the others. Instead every rendition has one owner
worker: a stable hash of the canonical rendition (``Transform`` + negotiated format, the key
the caches use), so every spelling and signature of one rendition has the same owner. A worker
that misses sends the owner exactly that rendition (never a URL to parse again) over the
owner's Unix socket; the owner produces it (coalesced, cached) and the asking worker keeps a
copy, so later hits stay local. An owner that cannot be reached (restarting) is rendered
around, within what is left of the same request deadline.

The peer protocol exists only on those sockets, in a private directory the master creates
(``tofu.runner``): nothing a client sends to the public port is taken for a peer request.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from tofu.errors import BadRequest, TofuError, error_for_status
from tofu.negotiate import Negotiated
from tofu.renditions import Rendition, decode_rendition, encode_rendition
from tofu.service import Entry, FetchFromOwner, ImageService
from tofu.transform import Transform

__all__ = ["PeerHandler", "Peers", "Rendition", "decode_rendition", "encode_rendition", "owner_of"]

RENDER_PATH = "/render"
MAX_REQUEST_BYTES = 64 << 10  # an encoded rendition is a key and a few fields
# Headers of the peer protocol (on the Unix socket only).
TIMEOUT_HEADER = "Tofu-Timeout"  # seconds left of the client request's deadline
VERSION_HEADER = "Tofu-Version"  # the original's version
MODIFIED_HEADER = "Tofu-Last-Modified"  # the original's POSIX mtime, exactly
QUALITY_HEADER = "Tofu-Quality"  # the encoder's quality (the client sees X-Image-Quality)


# --- who owns a rendition ---------------------------------------------------------------


def owner_of(encoded: bytes, workers: int) -> int:
    """The index of the worker that owns the rendition ``encoded`` (stable across processes
    and runs, unlike ``hash()``)."""
    digest = hashlib.blake2b(encoded, digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


# --- the asking side -----------------------------------------------------------------------


class Peers:
    """This worker's view of its siblings: who owns what, and a client per sibling socket."""

    def __init__(self, index: int, socket_paths: Sequence[str]) -> None:
        self.index = index
        self._paths = list(socket_paths)
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def owner(self, transform: Transform, negotiated: Negotiated | None) -> int:
        return owner_of(encode_rendition(transform, negotiated), len(self._paths))

    def route(self, transform: Transform, negotiated: Negotiated | None) -> FetchFromOwner | None:
        """How to fetch this rendition from its owner, or None when this worker owns it.
        Called on misses only: a hit never encodes or hashes anything."""
        encoded = encode_rendition(transform, negotiated)
        owner = owner_of(encoded, len(self._paths))
        if owner == self.index:
            return None
        return functools.partial(self.fetch, owner, encoded)

    async def fetch(self, owner: int, encoded: bytes, seconds_left: float) -> Entry | None:
        """The owner's rendition, its error, or None when the owner cannot be reached.
        ``seconds_left``: what is left of the client request's deadline."""
        session = self._sessions.get(owner)
        if session is None:
            connector = aiohttp.UnixConnector(path=self._paths[owner])
            session = self._sessions[owner] = aiohttp.ClientSession(connector=connector)
        headers = {"Content-Type": "application/json", TIMEOUT_HEADER: repr(max(seconds_left, 0.0))}
        started = time.perf_counter()
        try:
            async with session.post(
                f"http://tofu{RENDER_PATH}", data=encoded, headers=headers
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError):
            return None
        if response.status != 200:
            raise error_for_status(response.status, body.decode(errors="replace").strip())
        modified = response.headers.get(MODIFIED_HEADER)
        last_modified = float(modified) if modified else None
        return Entry.create(
            body,
            response.headers["Content-Type"],
            response.headers[VERSION_HEADER],
            last_modified,
            {"peer": time.perf_counter() - started},
            etag=response.headers["ETag"],
            quality=int(quality) if (quality := response.headers.get(QUALITY_HEADER)) else None,
        )

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


# --- the owning side -----------------------------------------------------------------------


class PeerHandler:
    """Serves sibling workers on this worker's Unix socket: ``POST /render`` with an encoded
    rendition; answers the rendition's body with its metadata in headers, or the error's
    status and one-line reason. Never routes on, never counts a client request (the asking
    worker does); the result-cache lookup is counted here, where it happens."""

    def __init__(self, service: ImageService) -> None:
        self._service = service

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if request.method != "POST" or request.raw_path != RENDER_PATH:
            return web.Response(status=404, text="not a peer request\n")
        try:
            if (request.content_length or 0) > MAX_REQUEST_BYTES:
                raise BadRequest("peer request too large")
            try:
                transform, negotiated = decode_rendition(await request.read())
                seconds_left = float(request.headers.get(TIMEOUT_HEADER, "nan"))
            except ValueError as exc:
                raise BadRequest(f"malformed peer request: {exc}") from None
            if not (math.isfinite(seconds_left) and seconds_left >= 0):
                raise BadRequest(f"malformed peer request: bad {TIMEOUT_HEADER}")
            entry = self._service.cached(transform, negotiated)
            if entry is None:
                entry, _ = await self._service.produce(
                    transform, negotiated, seconds_left=seconds_left
                )
        except TofuError as exc:
            return web.Response(status=exc.status, text=exc.reason + "\n")
        headers = {"ETag": entry.etag, VERSION_HEADER: entry.version}
        if entry.last_modified is not None:
            headers[MODIFIED_HEADER] = repr(entry.last_modified)
        if entry.quality is not None:
            headers[QUALITY_HEADER] = str(entry.quality)
        return web.Response(body=entry.body, content_type=entry.media_type, headers=headers)
