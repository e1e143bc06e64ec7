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
import operator
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tofu.errors import BadRequest, TofuError, error_for_status
from tofu.negotiate import Negotiated
from tofu.service import Entry, FetchFromOwner, ImageService
from tofu.transform import Transform

RENDER_PATH = "/render"
MAX_REQUEST_BYTES = 64 << 10  # an encoded rendition is a key and a few fields
# Headers of the peer protocol (on the Unix socket only).
TIMEOUT_HEADER = "Tofu-Timeout"  # seconds left of the client request's deadline
VERSION_HEADER = "Tofu-Version"  # the original's version
MODIFIED_HEADER = "Tofu-Last-Modified"  # the original's POSIX mtime, exactly
QUALITY_HEADER = "Tofu-Quality"  # the encoder's quality (the client sees X-Image-Quality)

Rendition = tuple[Transform, Negotiated | None]


# --- the wire form of a rendition ----------------------------------------------------------


def encode_rendition(transform: Transform, negotiated: Negotiated | None) -> bytes:
    """The canonical encoding: equal renditions give equal bytes (sorted keys, no spaces)."""
    document = {"transform": _encode_transform(transform), "negotiated": _encode_format(negotiated)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def decode_rendition(data: bytes) -> Rendition:
    """The rendition ``encode_rendition`` encoded; ``ValueError`` for anything else (unknown or
    missing fields, wrong types, duplicate keys, NaN)."""
    try:
        document = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    _expect_keys(document, {"transform", "negotiated"})
    return _decode_transform(document["transform"]), _decode_format(document["negotiated"])


def owner_of(encoded: bytes, workers: int) -> int:
    """The index of the worker that owns the rendition ``encoded`` (stable across processes
    and runs, unlike ``hash()``)."""
    digest = hashlib.blake2b(encoded, digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


# A codec per type hint, built once from the dataclasses' field types, so that a field added to
# Transform or Size needs no code here as long as its type is among these: str, int, bool,
# float, a str subclass that validates (tofu.keys.Key), an Enum, a tuple of those, a frozen
# dataclass, or an optional/union of them.
_Encode = Callable[[Any], Any]
_Decode = Callable[[Any], Any]


@functools.cache
def _codec(hint: Any) -> tuple[_Encode, _Decode]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _union_codec(hint)
    if isinstance(hint, type) and is_dataclass(hint):
        return _dataclass_codec(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_codec(hint)
    if typing.get_origin(hint) is tuple:
        return _tuple_codec(hint)
    if hint in (str, int, bool):
        return _identity, functools.partial(_exact, hint)
    if isinstance(hint, type) and issubclass(hint, str):
        # Its constructor validates (ValueError): a sibling's key is checked like a URL's.
        return str, lambda data: hint(_exact(str, data))
    if hint is float:
        return _identity, _finite_float
    raise TypeError(f"cannot encode a field of type {hint!r} for a peer")


def _union_codec(hint: Any) -> tuple[_Encode, _Decode]:
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(arms) < len(typing.get_args(hint))
    codecs = [(typing.get_origin(a) or a, *_codec(a)) for a in arms]

    def encode(value: Any) -> Any:
        if value is None:
            return None
        return next(enc for kind, enc, _ in codecs if isinstance(value, kind))(value)

    def decode(data: Any) -> Any:
        if data is None and optional:
            return None
        for _, _, dec in codecs:
            try:
                return dec(data)
            except ValueError:
                continue
        raise ValueError(f"{data!r} is none of {hint!r}")

    return encode, decode


def _dataclass_codec(cls: type) -> tuple[_Encode, _Decode]:
    hints = typing.get_type_hints(cls)
    # Fields a constructor takes; derived ones (a cached hash) are recomputed on arrival.
    wire = [(f.name, *_codec(hints[f.name])) for f in fields(cls) if f.init]
    names = {name for name, _, _ in wire}

    def encode(value: Any) -> Any:
        return {name: enc(getattr(value, name)) for name, enc, _ in wire}

    def decode(data: Any) -> Any:
        _expect_keys(data, names)
        values = {name: dec(data[name]) for name, _, dec in wire}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid {cls.__name__}: {exc}") from None

    return encode, decode


def _enum_codec(cls: type[enum.Enum]) -> tuple[_Encode, _Decode]:
    def decode(data: Any) -> Any:
        try:
            return cls(data)
        except ValueError:
            raise ValueError(f"{data!r} is not a {cls.__name__}") from None

    return operator.attrgetter("value"), decode


def _tuple_codec(hint: Any) -> tuple[_Encode, _Decode]:
    args = typing.get_args(hint)
    variadic = len(args) == 2 and args[1] is Ellipsis
    codecs = [_codec(args[0])] if variadic else [_codec(a) for a in args]

    def per_item(length: int) -> list[tuple[_Encode, _Decode]]:
        return codecs * length if variadic else codecs

    def encode(value: Any) -> Any:
        return [enc(v) for (enc, _), v in zip(per_item(len(value)), value, strict=True)]

    def decode(data: Any) -> Any:
        if not isinstance(data, list) or (not variadic and len(data) != len(codecs)):
            raise ValueError(f"expected a list of {len(codecs)} items, got {data!r}")
        return tuple(dec(d) for (_, dec), d in zip(per_item(len(data)), data, strict=True))

    return encode, decode


def _identity(value: Any) -> Any:
    return value


def _exact(kind: type, data: Any) -> Any:
    # Exact types: JSON's true is no int, 1 is no str.
    if type(data) is not kind:
        raise ValueError(f"expected {kind.__name__}, got {data!r}")
    return data


def _finite_float(data: Any) -> float:
    if type(data) not in (int, float) or not math.isfinite(data):
        raise ValueError(f"expected a number, got {data!r}")
    return float(data)


_encode_transform, _decode_transform = _codec(Transform)
_encode_format, _decode_format = _codec(Negotiated | None)


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
