"""The cache -> origin -> render stage: turns a ``Transform`` into a cached ``Entry``.

Hits are answered from memory on the event loop. Misses are coalesced (one fetch per original,
one render per rendition), admitted through a bounded number of render slots with a bounded
queue (beyond it: 503), and rendered in a thread pool so the event loop never blocks.

Result-cache metrics count each client request once per node: a hit where a cached rendition
answered it (the receiving worker's, or the owner worker's for a routed miss), a miss where it
was produced (counted by the worker that produced it or joined its production).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from cachetools import TTLCache

from tofu.cache import BytesLRU, BytesMemo, SingleFlight
from tofu.config import Config
from tofu.errors import NotFound, OriginError, OriginTimeout, Overloaded, TofuError
from tofu.metrics import PHASES, Metrics
from tofu.negotiate import Negotiated
from tofu.origins import Origin, Original
from tofu.render import Cancellation, Plan, RenderSettings, Rendition, execute, prepare
from tofu.render_memory import RenderMemory
from tofu.transform import Transform

_ENTRY_OVERHEAD = 300  # bytes of bookkeeping per cached entry beyond its body
# Per-key state is bounded in bytes, keys included: unsigned clients choose keys (404s).
NOT_FOUND_CACHE_BYTES = 16 << 20  # missing keys remembered (a few KB of path each at most)
VERSIONS_BYTES = 16 << 20  # latest version per origin key (~64k typical keys)
_NOT_FOUND_ENTRY_OVERHEAD = 256  # a TTLCache entry's links and dict slots, measured: ~200


# What the result cache did for a request (also the access log's and metrics' label).
# coalesced: joined a render under way; peer: a sibling worker rendered it (tofu.peers).
CacheResult = Literal["hit", "miss", "coalesced", "peer"]


@dataclass(frozen=True, slots=True)
class Entry:
    """A rendered response body and what HTTP needs to say about it."""

    body: bytes
    media_type: str
    etag: str
    version: str  # of the original it was rendered from
    last_modified: float | None  # POSIX time of the original
    last_modified_http: str | None  # the same as an HTTP date, formatted once
    phases: dict[str, float]  # seconds spent producing it here: fetch, queue, render, encode


# Asks the sibling worker that owns a rendition for it (``tofu.peers``), given the seconds left
# of the request's deadline: its Entry, its error raised, or None when it cannot be reached.
FetchFromOwner = Callable[[float], Awaitable[Entry | None]]


class ImageService:
    def __init__(
        self,
        config: Config,
        origin: Origin,
        metrics: Metrics,
        render_memory: RenderMemory | None = None,
    ) -> None:
        self._origin = origin
        self._metrics = metrics
        self._settings = RenderSettings(
            max_source_pixels=config.max_source_pixels,
            max_frames=config.max_frames,
            max_animation_pixels=config.max_animation_pixels,
            max_output_side=config.max_output_side,
            avif_effort=config.avif_effort,
            exact_shrink=config.exact_shrink,
        )
        self._timeout = config.request_timeout
        # One thread per render slot: a render is one thread (libvips' own concurrency is
        # config.vips_concurrency, 1 by default), so a worker never runs more threads than that.
        self._pool = ThreadPoolExecutor(config.max_renders, thread_name_prefix="render")
        self._slots = asyncio.Semaphore(config.max_renders)
        self._owns_memory = render_memory is None
        self._memory = render_memory or RenderMemory(config.render_memory)
        self._max_in_progress = config.max_renders + config.max_queue
        self._in_progress = 0
        self._threads = config.max_renders
        self._rendering_since: dict[Cancellation, float] = {}  # monotonic start per render

        self._results: BytesLRU[tuple[Transform, Negotiated | None], Entry] = BytesLRU(
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
        self._renders: SingleFlight[tuple[Transform, Negotiated | None], Entry] = SingleFlight()
        self._fetches: SingleFlight[str, Original] = SingleFlight()

        m = metrics
        self._hit = {c: m.cache_hits.labels(c).inc for c in ("result", "original", "not_found")}
        self._miss = {c: m.cache_misses.labels(c).inc for c in ("result", "original")}
        self._phase = {p: m.phase_seconds.labels(p).observe for p in PHASES}

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
        One deadline covers it all: ``--request-timeout`` from now, or ``seconds_left`` when
        shorter (what is left of a sibling worker's client request)."""
        seconds = self._timeout if seconds_left is None else min(seconds_left, self._timeout)
        deadline = asyncio.get_running_loop().time() + seconds
        work = (
            functools.partial(self._produce, transform, negotiated, deadline)
            if owner is None
            else functools.partial(self._from_owner, transform, negotiated, owner, deadline)
        )
        entry, joined = await self._renders.run((transform, negotiated), work)
        if joined:
            self._miss["result"]()
            self._metrics.coalesced.labels("render").inc()
            return entry, "coalesced"
        return entry, "peer" if "peer" in entry.phases else "miss"

    async def _from_owner(
        self,
        transform: Transform,
        negotiated: Negotiated | None,
        owner: FetchFromOwner,
        deadline: float,
    ) -> Entry:
        # The owner counts this request's result-cache lookup (hit or miss), not this worker.
        async with self._deadline(deadline):
            entry = await owner(deadline - asyncio.get_running_loop().time())
        if entry is None:  # the owner is restarting: render here, within the same deadline
            return await self._produce(transform, negotiated, deadline)
        self._metrics.peer_fetches.inc()
        self._versions[transform.key] = entry.version
        self._store((transform, negotiated), entry)
        return entry

    async def _produce(
        self, transform: Transform, negotiated: Negotiated | None, deadline: float
    ) -> Entry:
        self._miss["result"]()
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
            async with self._deadline(deadline):
                started = time.perf_counter()
                # No render slot is held while fetching: a slow origin must not idle the CPU.
                original = await self._original(transform.key)
                phases["fetch"] = time.perf_counter() - started
                return await self._render_in_slot(transform, negotiated, original, phases)
        finally:
            self._in_progress -= 1

    @contextlib.asynccontextmanager
    async def _deadline(self, deadline: float) -> AsyncIterator[None]:
        """The request's deadline (loop time) on fetch + render, here or by a sibling: 504."""
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError:
            raise OriginTimeout(f"rendering did not finish within {self._timeout:g}s") from None

    async def _render_in_slot(
        self,
        transform: Transform,
        negotiated: Negotiated | None,
        original: Original,
        phases: dict[str, float],
    ) -> Entry:
        started = time.perf_counter()
        try:
            # The header says how much memory the render needs; read off the event loop.
            plan = await asyncio.to_thread(
                prepare, original.data, transform.size, self._settings, negotiated
            )
            self._metrics.render_queue.inc()
            try:
                await self._slots.acquire()
            finally:
                self._metrics.render_queue.dec()
            try:
                async with self._memory.hold(plan.memory_bytes):
                    phases["queue"] = time.perf_counter() - started
                    self._phase["queue"](phases["queue"])
                    self._metrics.render_memory.set(self._memory.held)
                    rendition = await self._execute(original.data, plan)
            finally:
                self._slots.release()
                self._metrics.render_memory.set(self._memory.held)
                self._metrics.sample_libvips_memory()
        except TofuError as exc:
            self._metrics.render_errors.labels(str(exc.status)).inc()
            raise
        phases["render"] = rendition.resize_seconds
        phases["encode"] = rendition.encode_seconds
        self._phase["render"](rendition.resize_seconds)
        self._phase["encode"](rendition.encode_seconds)
        self._metrics.renders.inc()
        entry = Entry(
            body=rendition.body,
            media_type=rendition.format.media_type,
            etag='"' + hashlib.blake2b(rendition.body, digest_size=16).hexdigest() + '"',
            version=original.version,
            last_modified=original.last_modified,
            last_modified_http=(
                formatdate(original.last_modified, usegmt=True)
                if original.last_modified is not None
                else None
            ),
            phases=phases,
        )
        self._store((transform, negotiated), entry)
        return entry

    async def _execute(self, data: bytes, plan: Plan) -> Rendition:
        """``execute`` in a render thread. When the deadline cancels the request, the render is
        killed too (inside libvips), and this waits for its thread to be free before the slot
        and the memory are given back: they bound real work, not just waiting requests."""
        cancellation = Cancellation()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pool, execute, data, plan, self._settings, cancellation)
        self._metrics.renders_in_flight.inc()
        self._rendering_since[cancellation] = time.monotonic()
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancellation.cancel()
            with contextlib.suppress(Exception):
                await work
            raise
        finally:
            del self._rendering_since[cancellation]
            self._metrics.renders_in_flight.dec()

    def stalled(self) -> bool:
        """Whether every render thread has been held for over twice the request deadline: the
        deadline kills a render within it, so such renders ignored the kill (readiness)."""
        if len(self._rendering_since) < self._threads:
            return False
        limit = time.monotonic() - 2 * self._timeout
        return all(started < limit for started in self._rendering_since.values())

    def _store(self, key: tuple[Transform, Negotiated | None], entry: Entry) -> None:
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

    async def _fetch(self, key: str) -> Original:
        started = time.perf_counter()
        self._metrics.origin_fetches.inc()
        try:
            original = await self._origin.fetch(key)
        except NotFound:
            self._metrics.origin_errors.labels("not_found").inc()
            if self._not_found is not None:
                self._not_found[key] = sys.getsizeof(key) + _NOT_FOUND_ENTRY_OVERHEAD
                self._metrics.cache_bytes.labels("not_found").set(self._not_found.currsize)
                self._metrics.cache_entries.labels("not_found").set(len(self._not_found))
            raise
        except OriginTimeout:
            self._metrics.origin_errors.labels("timeout").inc()
            raise
        except OriginError:
            self._metrics.origin_errors.labels("error").inc()
            raise
        finally:
            self._phase["fetch"](time.perf_counter() - started)
        self._versions[key] = original.version
        self._originals.put(key, original)
        self._metrics.cache_bytes.labels("original").set(self._originals.bytes)
        self._metrics.cache_entries.labels("original").set(len(self._originals))
        return original

    async def close(self) -> None:
        await self._origin.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._owns_memory:
            self._memory.close()
