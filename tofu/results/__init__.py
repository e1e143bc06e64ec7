"""Result tiers: rendered renditions kept beyond a worker's memory, so that a restarted node, or
another node, serves what was rendered before instead of rendering it again.

The memory LRU (``tofu.service``) stays the first tier; behind it, in order, the node's disk
tier (``--disk-cache``, ``disk``) and the fleet's shared store (``--result-store``, ``s3``).
A tier is one file implementing ``ResultTier``; ``STORES`` says which backend a store URL's
scheme belongs to. ``Tiers`` consults them in order and writes to them in the background.

Rules every tier follows:

- The key is the canonical rendition (``Transform`` + negotiated format, as the memory cache's
  key, never the URL's signature, so a key rotation keeps every tier), the render settings
  that change output, and ``FORMAT_VERSION``.
- An entry carries the version of the original it was rendered from. It is served only when
  no other version of that original is known: the node learns the latest version whenever it
  fetches the original (for any rendition of it), and an older entry is then a miss, replaced
  by the next render. A node that knows no version yet (just restarted) serves what it has.
- Entries are checked on read (length, digest, key): a damaged, truncated or foreign entry is a
  miss and is removed, never served.
- A tier never fails a request: its errors are counted (``tofu_tier_errors``), logged once per
  kind, and the request goes on to the next tier or a render.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import logging
import struct
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from tofu.renditions import encode_rendition

if TYPE_CHECKING:
    from tofu.config import Config
    from tofu.metrics import Metrics
    from tofu.negotiate import Negotiated
    from tofu.render import RenderSettings
    from tofu.transform import Transform

log = logging.getLogger("tofu")

# Bump when a code change alters the bytes a rendition renders to: every stored entry is then
# a miss (and is overwritten or evicted in time).
FORMAT_VERSION = 1
# backend module by --result-store URL scheme; the disk tier is tofu.results.disk
STORES = {"s3": "tofu.results.s3"}
MAX_PENDING_WRITES = 256  # background writes under way; beyond, a write is dropped (counted)
CLOSE_SECONDS = 5.0  # at shutdown, how long pending writes may still take

_MAGIC = b"TOFURES1"
_LENGTHS = struct.Struct(">IQ")  # header bytes, body bytes
_DIGEST_BYTES = 16


class Rendered(Protocol):
    """What a tier keeps of a rendition (``tofu.service.Entry`` is one)."""

    @property
    def body(self) -> bytes: ...
    @property
    def media_type(self) -> str: ...
    @property
    def etag(self) -> str: ...
    @property
    def version(self) -> str: ...  # of the original
    @property
    def last_modified(self) -> float | None: ...  # of the original, POSIX time
    @property
    def quality(self) -> int | None: ...  # the encoder's (X-Image-Quality)


@dataclass(frozen=True, slots=True)
class Stored:
    """A rendition as read back from a tier."""

    body: bytes
    media_type: str
    etag: str
    version: str
    last_modified: float | None
    quality: int | None
    tier: str  # which tier it came from


class Damaged(ValueError):
    """Bytes that are not an entry for the key asked: truncated, altered, or something else."""


class ResultTier(Protocol):
    """One place renditions are kept. Neither method raises: a failure is counted, logged once
    and taken as a miss (``get``) or a write not made (``put``)."""

    name: str  # the ``tier`` label of its metrics

    async def get(self, key: str) -> Stored | None: ...

    async def put(self, key: str, entry: Rendered) -> None: ...

    async def close(self) -> None: ...


class StoreBackend(Protocol):
    """What a --result-store backend module provides."""

    def open_store(self, url: str, config: Config, metrics: Metrics) -> ResultTier: ...


def rendition_key(
    transform: Transform, negotiated: Negotiated | None, settings: RenderSettings
) -> str:
    """The key of a rendition in every tier: hex, the same in every process, node and run."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"tofu rendition {FORMAT_VERSION}\n".encode())
    digest.update(repr(settings).encode())  # a frozen dataclass of ints and bools: a stable repr
    digest.update(encode_rendition(transform, negotiated))
    return digest.hexdigest()


def encode_entry(key: str, entry: Rendered) -> bytes:
    """An entry's bytes: magic, lengths, a JSON header (key included), the body, and a digest
    of all of it, so that a truncated, altered or foreign file is recognised."""
    header = json.dumps(
        {
            "key": key,
            "media_type": entry.media_type,
            "etag": entry.etag,
            "version": entry.version,
            "last_modified": entry.last_modified,
            "quality": entry.quality,
        },
        separators=(",", ":"),
    ).encode()
    data = _MAGIC + _LENGTHS.pack(len(header), len(entry.body)) + header + entry.body
    return data + hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest()


def decode_entry(key: str, data: bytes, tier: str) -> Stored:
    """The entry ``encode_entry`` made for ``key``; ``Damaged`` for anything else."""
    fixed = len(_MAGIC) + _LENGTHS.size
    if len(data) < fixed + _DIGEST_BYTES or not data.startswith(_MAGIC):
        raise Damaged("not a tofu result entry")
    header_bytes, body_bytes = _LENGTHS.unpack_from(data, len(_MAGIC))
    if len(data) != fixed + header_bytes + body_bytes + _DIGEST_BYTES:
        raise Damaged("truncated or extended")
    content, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.blake2b(content, digest_size=_DIGEST_BYTES).digest() != digest:
        raise Damaged("digest mismatch")
    try:
        header = json.loads(data[fixed : fixed + header_bytes])
        stored = Stored(
            body=data[fixed + header_bytes : -_DIGEST_BYTES],
            media_type=str(header["media_type"]),
            etag=str(header["etag"]),
            version=str(header["version"]),
            last_modified=(
                None if header["last_modified"] is None else float(header["last_modified"])
            ),
            # Absent from entries written before it was kept.
            quality=None if header.get("quality") is None else int(header["quality"]),
            tier=tier,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Damaged(f"bad header: {exc}") from None
    if header.get("key") != key:
        raise Damaged("an entry for another key")
    return stored


class Tiers:
    """The result tiers behind the memory cache, consulted in order. Writes run in the
    background: a response never waits for one."""

    def __init__(
        self, tiers: Sequence[ResultTier], settings: RenderSettings, metrics: Metrics
    ) -> None:
        self._tiers = list(tiers)
        self._settings = settings
        self._metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()
        for tier in self._tiers:  # every series from the start, zeros included
            for counter in (metrics.tier_hits, metrics.tier_misses, metrics.tier_stale):
                counter.labels(tier.name)
            metrics.tier_writes.labels(tier.name)
            metrics.tier_evictions.labels(tier.name)

    async def get(
        self, transform: Transform, negotiated: Negotiated | None, latest_version: str | None
    ) -> Stored | None:
        """The rendition from the first tier that has it made from ``latest_version`` of the
        original (any version when None); copied into the tiers before that one."""
        key = rendition_key(transform, negotiated, self._settings)
        for i, tier in enumerate(self._tiers):
            started = time.perf_counter()
            try:
                stored = await tier.get(key)
            except Exception as exc:  # a tier's contract is not to raise; if it does, a miss
                self._unexpected(tier, exc)
                stored = None
            if stored is None:
                self._metrics.tier_misses.labels(tier.name).inc()
                continue
            if latest_version is not None and stored.version != latest_version:
                self._metrics.tier_misses.labels(tier.name).inc()
                self._metrics.tier_stale.labels(tier.name).inc()
                continue
            self._metrics.tier_hits.labels(tier.name).inc()
            self._metrics.tier_hit_seconds.labels(tier.name).observe(time.perf_counter() - started)
            for earlier in self._tiers[:i]:
                self._background(earlier, earlier.put(key, stored))
            return stored
        return None

    def put(self, transform: Transform, negotiated: Negotiated | None, entry: Rendered) -> None:
        """Write ``entry`` to every tier, in the background."""
        key = rendition_key(transform, negotiated, self._settings)
        for tier in self._tiers:
            self._background(tier, tier.put(key, entry))

    def _background(self, tier: ResultTier, write: Coroutine[Any, Any, None]) -> None:
        if len(self._pending) >= MAX_PENDING_WRITES:
            write.close()
            self._metrics.tier_errors.labels(tier.name, "dropped").inc()
            return
        task = asyncio.ensure_future(write)
        self._pending.add(task)
        task.add_done_callback(lambda done: self._written(tier, done))

    def _written(self, tier: ResultTier, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._unexpected(tier, exc)

    def _unexpected(self, tier: ResultTier, exc: BaseException) -> None:
        self._metrics.tier_errors.labels(tier.name, "error").inc()
        log.warning("result tier %s failed: %r", tier.name, exc)

    async def close(self) -> None:
        """Let pending writes finish (for a few seconds at most), then close every tier."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=CLOSE_SECONDS)
            for task in self._pending:
                task.cancel()
        for tier in self._tiers:
            await tier.close()


def open_tiers(config: Config, metrics: Metrics) -> Tiers | None:
    """The tiers ``config`` asks for, in order (disk, then the store); None without any."""
    from tofu.render_pool import render_settings

    tiers: list[ResultTier] = []
    if config.disk_cache:
        from tofu.results.disk import DiskTier

        tiers.append(
            DiskTier(
                config.disk_cache,
                config.disk_cache_size,
                int(config.disk_cache_size * config.cache_item_max),
                metrics,
            )
        )
    if config.result_store:
        scheme = config.result_store.partition("://")[0].lower()
        backend = cast(StoreBackend, importlib.import_module(STORES[scheme]))
        tiers.append(backend.open_store(config.result_store, config, metrics))
    return Tiers(tiers, render_settings(config), metrics) if tiers else None


class OnceLog:
    """Logs each kind of tier failure once per process (a failing disk fails every request)."""

    def __init__(self, tier: str) -> None:
        self._tier = tier
        self._logged: set[str] = set()

    def __call__(self, kind: str, exc: BaseException | str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(
                "result tier %s: %s (%s); serving without it where needed, counted in "
                "tofu_tier_errors{tier=%r,kind=%r}, logged once",
                self._tier,
                kind,
                exc,
                self._tier,
                kind,
            )
