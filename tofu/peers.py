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

import enum
import functools
import hashlib
import json
import math
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web

from tofu.errors import BadRequest, TofuError, error_for_status
from tofu.service import Entry, FetchFromOwner, ImageService
from tofu.transform import ImageFormat, Transform

RENDER_PATH = "/render"
MAX_REQUEST_BYTES = 64 << 10  # an encoded rendition is a key and a few fields
# Headers of the peer protocol (on the Unix socket only).
TIMEOUT_HEADER = "Tofu-Timeout"  # seconds left of the client request's deadline
VERSION_HEADER = "Tofu-Version"  # the original's version
MODIFIED_HEADER = "Tofu-Last-Modified"  # the original's POSIX mtime, exactly

Rendition = tuple[Transform, ImageFormat | None]


# --- the wire form of a rendition ----------------------------------------------------------


def encode_rendition(transform: Transform, negotiated: ImageFormat | None) -> bytes:
    """The canonical encoding: equal renditions give equal bytes (sorted keys, no spaces)."""
    document = {
        "transform": _to_json(transform, Transform),
        "negotiated": _to_json(negotiated, ImageFormat | None),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_rendition(data: bytes) -> Rendition:
    """The rendition ``encode_rendition`` encoded; ``ValueError`` for anything else (unknown or
    missing fields, wrong types, duplicate keys, NaN)."""
    try:
        document = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    _expect_keys(document, {"transform", "negotiated"})
    transform = _from_json(document["transform"], Transform)
    negotiated = _from_json(document["negotiated"], ImageFormat | None)
    return transform, negotiated


def owner_of(encoded: bytes, workers: int) -> int:
    """The index of the worker that owns the rendition ``encoded`` (stable across processes
    and runs, unlike ``hash()``)."""
    digest = hashlib.blake2b(encoded, digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _to_json(value: Any, hint: Any) -> Any:
    """``value`` as JSON data, driven by its type hint (so new dataclass fields need no code
    here as long as their types are among these)."""
    if _is_union(hint):
        if value is None:
            return None
        arm = next(a for a in typing.get_args(hint) if a is not type(None) and _fits(value, a))
        return _to_json(value, arm)
    if isinstance(hint, type) and is_dataclass(hint):
        hints = _hints(hint)
        return {f.name: _to_json(getattr(value, f.name), hints[f.name]) for f in _wire_fields(hint)}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value.value
    if typing.get_origin(hint) is tuple:
        items = _tuple_item_hints(hint, len(value))
        return [_to_json(item, item_hint) for item, item_hint in zip(value, items, strict=True)]
    if hint in (str, int, bool, float):
        return value
    raise TypeError(f"cannot encode a field of type {hint!r} for a peer")


def _from_json(data: Any, hint: Any) -> Any:
    if _is_union(hint):
        arms = typing.get_args(hint)
        if data is None and type(None) in arms:
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _from_json(data, arm)
            except ValueError:
                continue
        raise ValueError(f"{data!r} is none of {hint!r}")
    if isinstance(hint, type) and is_dataclass(hint):
        wire = _wire_fields(hint)
        _expect_keys(data, {f.name for f in wire})
        values = {f.name: _from_json(data[f.name], _hints(hint)[f.name]) for f in wire}
        try:
            return hint(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid {hint.__name__}: {exc}") from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise ValueError(f"{data!r} is not a {hint.__name__}") from None
    if typing.get_origin(hint) is tuple:
        if not isinstance(data, list):
            raise ValueError(f"expected a list, got {data!r}")
        items = _tuple_item_hints(hint, len(data))
        return tuple(_from_json(item, each) for item, each in zip(data, items, strict=True))
    # Exact types: JSON's true is no int, 1 is no str.
    if hint is float and type(data) in (int, float) and math.isfinite(data):
        return float(data)
    if hint in (str, int, bool) and type(data) is hint:
        return data
    raise ValueError(f"expected {getattr(hint, '__name__', hint)}, got {data!r}")


def _wire_fields(cls: type) -> list[Any]:
    # Fields a constructor takes; derived ones (a cached hash) are recomputed on arrival.
    return [f for f in fields(cls) if f.init]


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    return isinstance(value, origin)


def _tuple_item_hints(hint: Any, length: int) -> list[Any]:
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return [args[0]] * length
    if len(args) != length:
        raise ValueError(f"expected {len(args)} items, got {length}")
    return list(args)


def _expect_keys(data: Any, keys: set[str]) -> None:
    if not isinstance(data, dict) or set(data) != keys:
        raise ValueError(f"expected an object with exactly {sorted(keys)}, got {data!r}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key")
    return document


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


# --- the asking side -----------------------------------------------------------------------


class Peers:
    """This worker's view of its siblings: who owns what, and a client per sibling socket."""

    def __init__(self, index: int, socket_paths: Sequence[str]) -> None:
        self.index = index
        self._paths = list(socket_paths)
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def owner(self, transform: Transform, negotiated: ImageFormat | None) -> int:
        return owner_of(encode_rendition(transform, negotiated), len(self._paths))

    def route(self, transform: Transform, negotiated: ImageFormat | None) -> FetchFromOwner | None:
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
        headers = {"Content-Type": "application/json", TIMEOUT_HEADER: f"{seconds_left:.3f}"}
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
        return Entry(
            body=body,
            media_type=response.headers["Content-Type"],
            etag=response.headers["ETag"],
            version=response.headers[VERSION_HEADER],
            last_modified=last_modified,
            last_modified_http=(
                formatdate(last_modified, usegmt=True) if last_modified is not None else None
            ),
            phases={"peer": time.perf_counter() - started},
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
            if not (math.isfinite(seconds_left) and seconds_left > 0):
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
        return web.Response(body=entry.body, content_type=entry.media_type, headers=headers)
