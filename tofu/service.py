"""The cache -> origin -> render stage: turns a ``Transform`` into a cached ``Entry``.

Hits are answered from memory on the event loop. Misses are coalesced (one fetch per original,
one render per rendition), admitted through a bounded number of render slots with a bounded
queue (beyond it: 503), and rendered in a thread pool so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from cachetools import TTLCache

from tofu.cache import BytesLRU, Memo, SingleFlight
from tofu.config import Config
from tofu.errors import NotFound, OriginError, OriginTimeout, Overloaded, TofuError
from tofu.metrics import PHASES, Metrics
from tofu.negotiate import Negotiated
from tofu.origins import Origin, Original
from tofu.render import RenderSettings, render
from tofu.transform import Transform

_ENTRY_OVERHEAD = 300  # bytes of bookkeeping per cached entry beyond its body
_VERSIONS_KEPT = 200_000  # origin keys whose latest version is remembered


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


class ImageService:
    def __init__(self, config: Config, origin: Origin, metrics: Metrics) -> None:
        self._origin = origin
        self._metrics = metrics
        self._settings = RenderSettings(
            max_source_pixels=config.max_source_pixels,
            max_frames=config.max_frames,
            max_animation_pixels=config.max_animation_pixels,
            max_output_side=config.max_output_side,
            avif_effort=config.avif_effort,
        )
        self._timeout = config.request_timeout
        self._pool = ThreadPoolExecutor(config.render_threads, thread_name_prefix="render")
        self._slots = asyncio.Semaphore(config.max_renders)
        self._max_in_progress = config.max_renders + config.max_queue
        self._in_progress = 0

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
        self._not_found: TTLCache[str, bool] | None = (
            TTLCache(maxsize=100_000, ttl=config.not_found_ttl) if config.not_found_ttl else None
        )
        # Latest version seen per origin key: a rendition made from an older version is stale.
        self._versions: Memo[str, str] = Memo(_VERSIONS_KEPT)
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
        self._miss["result"]()
        return None

    async def produce(
        self,
        transform: Transform,
        negotiated: Negotiated | None,
        owner: Callable[[], Awaitable[Entry | None]] | None = None,
    ) -> tuple[Entry, CacheResult]:
        """After a miss: the rendition from the worker that ``owner`` asks, or, without one or
        when it cannot be reached, fetched and rendered here. Concurrent calls share the work."""
        work = (
            functools.partial(self._produce, transform, negotiated)
            if owner is None
            else functools.partial(self._from_owner, transform, negotiated, owner)
        )
        entry, joined = await self._renders.run((transform, negotiated), work)
        if joined:
            self._metrics.coalesced.labels("render").inc()
            return entry, "coalesced"
        return entry, "peer" if "peer" in entry.phases else "miss"

    async def _from_owner(
        self,
        transform: Transform,
        negotiated: Negotiated | None,
        owner: Callable[[], Awaitable[Entry | None]],
    ) -> Entry:
        async with self._deadline():
            entry = await owner()
        if entry is None:  # the owner is restarting: render here
            return await self._produce(transform, negotiated)
        self._metrics.peer_fetches.inc()
        self._versions[transform.key] = entry.version
        self._store((transform, negotiated), entry)
        return entry

    async def _produce(self, transform: Transform, negotiated: Negotiated | None) -> Entry:
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
            async with self._deadline():
                started = time.perf_counter()
                # No render slot is held while fetching: a slow origin must not idle the CPU.
                original = await self._original(transform.key)
                phases["fetch"] = time.perf_counter() - started
                return await self._render_in_slot(transform, negotiated, original, phases)
        finally:
            self._in_progress -= 1

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[None]:
        """The per-request deadline on fetch + render (here or by a sibling worker): 504."""
        try:
            async with asyncio.timeout(self._timeout):
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
        self._metrics.render_queue.inc()
        try:
            await self._slots.acquire()
        finally:
            self._metrics.render_queue.dec()
        phases["queue"] = time.perf_counter() - started
        self._phase["queue"](phases["queue"])
        self._metrics.renders_in_flight.inc()
        loop = asyncio.get_running_loop()
        try:
            rendition = await loop.run_in_executor(
                self._pool, render, original.data, transform.size, self._settings, negotiated
            )
        except TofuError as exc:
            self._metrics.render_errors.labels(str(exc.status)).inc()
            raise
        finally:
            self._slots.release()
            self._metrics.renders_in_flight.dec()
            self._metrics.sample_libvips_memory()
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
                self._not_found[key] = True
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
