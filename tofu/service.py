"""The cache -> origin -> render stage: turns a ``Transform`` into a cached ``Entry``.

Hits are answered from memory on the event loop. Misses are admitted (a bounded number under
way, beyond it 503), coalesced (one fetch per original, one render per rendition, under the
latest deadline of the requests waiting for it), and rendered by the ``RenderPool``.

Result-cache metrics count each client request once per node: a hit where a cached rendition
answered it (the receiving worker's, or the owner worker's for a routed miss), a miss where it
was produced (counted by the worker that produced it or joined its production).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from cachetools import TTLCache

from tofu.cache import BytesLRU, BytesMemo, SingleFlight
from tofu.config import Config
from tofu.errors import NotFound, OriginTimeout, Overloaded
from tofu.metrics import Metrics
from tofu.negotiate import Negotiated
from tofu.origins import Origin, Original
from tofu.render_budget import RenderBudget
from tofu.render_pool import RenderPool
from tofu.results import open_tiers
from tofu.transform import Transform

_ENTRY_OVERHEAD = 300  # bytes of bookkeeping per cached entry beyond its body
# Per-key state is bounded in bytes, keys included: unsigned clients choose keys (404s).
NOT_FOUND_CACHE_BYTES = 16 << 20  # missing keys remembered (a few KB of path each at most)
VERSIONS_BYTES = 16 << 20  # latest version per origin key (~64k typical keys)
_NOT_FOUND_ENTRY_OVERHEAD = 256  # a TTLCache entry's links and dict slots, measured: ~200


# What the result cache did for a request (also the access log's and metrics' label).
# coalesced: joined a render under way; peer: a sibling worker rendered it (tofu.peers).
# disk, store: a result tier behind memory had it (tofu.results).
CacheResult = Literal["hit", "miss", "coalesced", "peer", "disk", "store"]
_PRODUCED_BY: tuple[CacheResult, ...] = ("peer", "disk", "store")  # phases naming the source
RenditionKey = tuple[Transform, Negotiated | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """A rendered response body and what HTTP needs to say about it. Build with ``create``."""

    body: bytes
    media_type: str
    etag: str
    version: str  # of the original it was rendered from
    last_modified: float | None  # POSIX time of the original
    last_modified_http: str | None  # the same as an HTTP date, formatted once
    phases: dict[str, float]  # seconds spent producing it here: fetch, queue, render, encode
    quality: int | None = None  # the encoder's quality (X-Image-Quality), where one applies

    @classmethod
    def create(
        cls,
        body: bytes,
        media_type: str,
        version: str,
        last_modified: float | None,
        phases: dict[str, float],
        etag: str | None = None,
        quality: int | None = None,
    ) -> Entry:
        """``etag`` None: computed from the body (given when a sibling already computed it)."""
        return cls(
            body=body,
            media_type=media_type,
            etag=etag or '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"',
            version=version,
            last_modified=last_modified,
            last_modified_http=(
                formatdate(last_modified, usegmt=True) if last_modified is not None else None
            ),
            phases=phases,
            quality=quality,
        )


# Asks the sibling worker that owns a rendition for it (``tofu.peers``), given the seconds left
# of the request's deadline: its Entry, its error raised, or None when it cannot be reached.
FetchFromOwner = Callable[[float], Awaitable[Entry | None]]


class ImageService:
    def __init__(
        self,
        config: Config,
        origin: Origin,
        metrics: Metrics,
        budget: RenderBudget | None = None,
    ) -> None:
        self._origin = origin
        self._metrics = metrics
        self._timeout = config.request_timeout
        self.pool = RenderPool(config, metrics, budget)
        self._max_in_progress = config.max_renders + config.max_queue
        self._in_progress = 0

        self._results: BytesLRU[RenditionKey, Entry] = BytesLRU(
            config.cache_size,
            lambda e: len(e.body) + _ENTRY_OVERHEAD,
            max_item_fraction=config.cache_item_max,
            on_evict=metrics.cache_evictions.labels("result").inc,
        )
        self._originals: BytesLRU[str, Original] = BytesLRU(
            config.originals_cache_size,
            lambda o: len(o.data) + _ENTRY_OVERHEAD,
            max_item_fraction=config.cache_item_max,
            on_evict=metrics.cache_evictions.labels("original").inc,
        )
        # Missing keys; each value is the entry's accounted size (TTLCache sizes values only).
        self._not_found: TTLCache[str, int] | None = (
            TTLCache(NOT_FOUND_CACHE_BYTES, config.not_found_ttl, getsizeof=int)
            if config.not_found_ttl
            else None
        )
        # Latest version seen per origin key: a rendition made from an older version is stale.
        self._versions: BytesMemo[str, str] = BytesMemo(VERSIONS_BYTES)
        self._renders: SingleFlight[RenditionKey, Entry] = SingleFlight()
        self._fetches: SingleFlight[str, Original] = SingleFlight()
        # The deadline of each render under way, which later requests for it extend.
        self._flights: dict[RenditionKey, _Flight] = {}
        self._tiers = open_tiers(config, metrics)  # behind memory: disk, store; None: neither

        m = metrics
        self._hit = {c: m.cache_hits.labels(c).inc for c in ("result", "original", "not_found")}
        self._miss = {c: m.cache_misses.labels(c).inc for c in ("result", "original")}

    def cached(self, transform: Transform, negotiated: Negotiated | None) -> Entry | None:
        """The cached rendition, if it is there and was made from the latest known version of
        its original. Synchronous: a hit never leaves the event loop's current step."""
        entry = self._results.get((transform, negotiated))
        if entry is not None and self._versions.get(transform.key, entry.version) == entry.version:
            self._hit["result"]()
            return entry
        return None  # counted as a miss by whichever worker produces it (``produce``)

    async def produce(
        self,
        transform: Transform,
        negotiated: Negotiated | None,
        owner: FetchFromOwner | None = None,
        seconds_left: float | None = None,
    ) -> tuple[Entry, CacheResult]:
        """After a miss: the rendition from the worker that ``owner`` asks, or, without one or
        when it cannot be reached, fetched and rendered here. Concurrent calls share the work.
        Each caller waits until its own deadline: ``--request-timeout`` from now, or
        ``seconds_left`` when shorter (what is left of a sibling worker's client request). The
        shared work runs until the latest deadline of those waiting for it, so a request nearly
        out of time (a sibling's) never cuts the render short for everyone who joined."""
        seconds = self._timeout if seconds_left is None else min(seconds_left, self._timeout)
        deadline = asyncio.get_running_loop().time() + seconds
        key = (transform, negotiated)
        flight = self._flights.get(key)
        if flight is not None:
            flight.extend(deadline)

        def start() -> Awaitable[Entry]:  # called only when no render of ``key`` is under way
            flight = self._flights[key] = _Flight(deadline)
            return self._fly(key, flight, owner)

        async with self._timeout_is_504(), asyncio.timeout_at(deadline):
            entry, joined = await self._renders.run(key, start)
        if joined:
            self._miss["result"]()
            self._metrics.coalesced.labels("render").inc()
            return entry, "coalesced"
        return entry, next((by for by in _PRODUCED_BY if by in entry.phases), "miss")

    async def _fly(self, key: RenditionKey, flight: _Flight, owner: FetchFromOwner | None) -> Entry:
        """The shared work of one rendition, stopped at the flight's deadline."""
        try:
            async with self._timeout_is_504(), asyncio.timeout_at(flight.deadline) as scope:
                flight.scope = scope
                if owner is not None:
                    # The owner counts this request's result-cache lookup, not this worker.
                    entry = await owner(flight.deadline - asyncio.get_running_loop().time())
                    if entry is not None:
                        self._metrics.peer_fetches.inc()
                        self._versions[key[0].key] = entry.version
                        self._store(key, entry)
                        return entry
                    # The owner is restarting: render here, within the same deadline.
                return await self._produce(key)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    @contextlib.asynccontextmanager
    async def _timeout_is_504(self) -> AsyncIterator[None]:
        try:
            yield
        except TimeoutError:
            raise OriginTimeout(f"rendering did not finish within {self._timeout:g}s") from None

    async def _produce(self, key: RenditionKey) -> Entry:
        transform, negotiated = key
        self._miss["result"]()
        if self._tiers is not None and (entry := await self._from_tiers(key)):
            return entry
        if self._not_found is not None and transform.key in self._not_found:
            self._hit["not_found"]()
            raise NotFound(f"no original at {transform.key!r}")
        # Admission: misses under way (fetching, waiting for a slot or rendering) are bounded;
        # beyond the bound, shed at once rather than pile up memory and latency.
        if self._in_progress >= self._max_in_progress:
            self._metrics.shed.inc()
            raise Overloaded("too many renders in progress, retry shortly")
        self._in_progress += 1
        phases: dict[str, float] = {}
        try:
            started = time.perf_counter()
            # No render slot is held while fetching: a slow origin must not idle the CPU. The
            # watermarks are originals too (fetched alongside, cached and coalesced alike).
            original, *marks = await asyncio.gather(
                self._original(transform.key),
                *(self._watermark(w.key) for w in transform.size.operations.watermarks),
            )
            phases["fetch"] = time.perf_counter() - started
            watermarks = tuple(mark.data for mark in marks)
            plan = await self.pool.plan(original.data, transform.size, negotiated, watermarks)
            rendition = await self.pool.render(original.data, plan, phases, watermarks)
        finally:
            self._in_progress -= 1
        entry = Entry.create(
            rendition.body,
            rendition.media_type,
            original.version,
            original.last_modified,
            phases,
            quality=rendition.quality,
        )
        self._store(key, entry)
        if self._tiers is not None:
            self._tiers.put(transform, negotiated, entry)  # in the background
        return entry

    async def _from_tiers(self, key: RenditionKey) -> Entry | None:
        """The rendition from a result tier, if one has it made from the latest version of
        the original this worker knows of (any version when it knows none)."""
        assert self._tiers is not None
        transform, negotiated = key
        started = time.perf_counter()
        stored = await self._tiers.get(transform, negotiated, self._versions.get(transform.key))
        if stored is None:
            return None
        phases = {stored.tier: time.perf_counter() - started}
        entry = Entry.create(
            stored.body,
            stored.media_type,
            stored.version,
            stored.last_modified,
            phases,
            etag=stored.etag,
            quality=stored.quality,
        )
        self._store(key, entry)
        return entry

    def _store(self, key: RenditionKey, entry: Entry) -> None:
        self._results.put(key, entry)
        self._metrics.cache_bytes.labels("result").set(self._results.bytes)
        self._metrics.cache_entries.labels("result").set(len(self._results))

    async def _original(self, key: str) -> Original:
        original = self._originals.get(key)
        if original is not None:
            self._hit["original"]()
            return original
        self._miss["original"]()
        original, joined = await self._fetches.run(key, lambda: self._fetch(key))
        if joined:
            self._metrics.coalesced.labels("fetch").inc()
        return original

    async def _watermark(self, key: str) -> Original:
        """A watermark's original; its absence named as such (the rendition's 404)."""
        if self._not_found is not None and key in self._not_found:
            self._hit["not_found"]()
            raise NotFound(f"no watermark image at {key!r}")
        try:
            return await self._original(key)
        except NotFound:
            raise NotFound(f"no watermark image at {key!r}") from None

    async def _fetch(self, key: str) -> Original:
        """One fetch from the origin (whose own metrics count its errors, per origin)."""
        started = time.perf_counter()
        self._metrics.origin_fetches.inc()
        try:
            original = await self._origin.fetch(key)
        except NotFound:
            if self._not_found is not None:
                self._not_found[key] = sys.getsizeof(key) + _NOT_FOUND_ENTRY_OVERHEAD
                self._metrics.cache_bytes.labels("not_found").set(self._not_found.currsize)
                self._metrics.cache_entries.labels("not_found").set(len(self._not_found))
            raise
        finally:
            self._metrics.phase_seconds.labels("fetch").observe(time.perf_counter() - started)
        self._versions[key] = original.version
        self._originals.put(key, original)
        self._metrics.cache_bytes.labels("original").set(self._originals.bytes)
        self._metrics.cache_entries.labels("original").set(len(self._originals))
        return original

    def stalled(self) -> bool:
        return self.pool.stalled()

    async def close(self) -> None:
        if self._tiers is not None:
            await self._tiers.close()
        await self._origin.close()
        self.pool.close()


class _Flight:
    """The deadline (loop time) of one render under way: the latest of its waiters'."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.scope: asyncio.Timeout | None = None  # set once the work runs

    def extend(self, deadline: float) -> None:
        if deadline > self.deadline:
            self.deadline = deadline
            if self.scope is not None:
                self.scope.reschedule(deadline)
