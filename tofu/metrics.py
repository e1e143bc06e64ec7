"""Prometheus metrics of one tofu process, registered on a registry the app owns.

With several worker processes the values live in prometheus-client's multiprocess files
(``PROMETHEUS_MULTIPROC_DIR``) and ``/metrics`` on any worker aggregates all of them. The
process collector does not work across processes, so each worker also exports its own memory
and CPU time as gauges labelled by pid (``sample_process``).
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TIER_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
CACHES = ("result", "original", "not_found")
PHASES = ("fetch", "queue", "render", "encode")
# prometheus-client's multiprocess files: {counter|gauge_<mode>|histogram|summary}_<pid>.db
_MULTIPROCESS_FILE = re.compile(r"(counter|gauge_[a-z]+|histogram|summary)_[0-9]+\.db")


def _libvips_tracked_memory() -> Callable[[], int] | None:
    """libvips' own count of the memory it holds (pyvips does not bind it; ctypes can)."""
    try:
        import _libvips  # the compiled module pyvips uses in API mode

        function = ctypes.CDLL(_libvips.__file__).vips_tracked_get_mem
    except (ImportError, OSError, AttributeError):
        return None
    function.restype = ctypes.c_size_t
    return function


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_*: one process only (not multiprocess-aware)
        self._process = ProcessCollector(registry=None)  # read by sample_process
        self._vips_memory_now = _libvips_tracked_memory()
        self.requests = Counter(
            "tofu_requests", "HTTP requests served", ["status", "cache"], registry=r
        )
        self.request_seconds = Histogram(
            "tofu_request_seconds", "request latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.phase_seconds = Histogram(
            "tofu_phase_seconds",
            "time per phase of a cache miss",
            ["phase"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.origin_fetches = Counter(
            "tofu_origin_fetches", "originals fetched from the origin", registry=r
        )
        self.origin_seconds = Histogram(
            "tofu_origin_fetch_seconds",
            "time to fetch an original, by origin (failover and hedging included)",
            ["origin"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.origin_fetch_errors = Counter(
            "tofu_origin_fetch_errors",
            "failed fetches by origin and kind",
            ["origin", "kind"],
            registry=r,
        )
        self.origin_answers = Counter(
            "tofu_origin_answers",
            "fetches answered, by origin and the source that answered",
            ["origin", "source"],
            registry=r,
        )
        self.origin_failovers = Counter(
            "tofu_origin_failovers",
            "fetches sent past an origin's primary source (failed or skipped)",
            ["origin"],
            registry=r,
        )
        self.origin_hedges = Counter(
            "tofu_origin_hedges",
            "hedged fetches by outcome: won (the hedge answered first), lost, failed, "
            "over_budget (due but not sent)",
            ["origin", "outcome"],
            registry=r,
        )
        self.renders = Counter("tofu_renders", "renditions rendered", registry=r)
        self.quality = Histogram(
            "tofu_render_quality",
            "encoder quality of rendered JPEG, WebP and AVIF, by format and by how it was "
            "chosen: auto (--auto-quality) or fixed (the URL's q or the format's default)",
            ["format", "how"],
            buckets=tuple(range(10, 101, 5)),
            registry=r,
        )
        self.render_errors = Counter(
            "tofu_render_errors", "renders refused or failed, by status", ["status"], registry=r
        )
        self.cache_hits = Counter("tofu_cache_hits", "cache hits", ["cache"], registry=r)
        self.cache_misses = Counter("tofu_cache_misses", "cache misses", ["cache"], registry=r)
        self.cache_evictions = Counter(
            "tofu_cache_evictions", "cache evictions", ["cache"], registry=r
        )
        self.cache_bytes = Gauge(
            "tofu_cache_bytes",
            "bytes held by a cache",
            ["cache"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_entries = Gauge(
            "tofu_cache_entries",
            "entries in a cache",
            ["cache"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.coalesced = Counter(
            "tofu_coalesced",
            "requests that joined work already under way",
            ["stage"],
            registry=r,
        )
        self.peer_fetches = Counter(
            "tofu_peer_fetches", "renditions a sibling worker rendered for this one", registry=r
        )
        self.shed = Counter("tofu_shed", "requests refused by admission control", registry=r)
        self.renders_in_flight = Gauge(
            "tofu_renders_in_flight",
            "renders holding a slot",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.render_queue = Gauge(
            "tofu_render_queue_length",
            "requests waiting for a render slot",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.render_memory = Gauge(
            "tofu_render_memory_bytes",
            "decoding memory held by renders under way (of --render-memory)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.vips_memory = Gauge(
            "tofu_libvips_memory_bytes",
            "memory libvips has allocated",
            multiprocess_mode="livesum",
            registry=r,
        )
        # Probed by one worker (the first), every few seconds and on /status (tofu.health).
        self.origin_up = Gauge(
            "tofu_origin_up",
            "whether a source of an origin answered its last probe (1) or not (0)",
            ["origin", "source"],
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        # "liveall": one series per live worker, labelled by pid; sum them for the node.
        self.worker_memory = Gauge(
            "tofu_worker_resident_memory_bytes",
            "resident memory of a worker process",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.worker_cpu = Gauge(
            "tofu_worker_cpu_seconds",
            "CPU time (user + system) a worker process has used",
            multiprocess_mode="liveall",
            registry=r,
        )
        # Result tiers behind the memory cache (tofu.results): the disk tier, the shared store.
        self.tier_hits = Counter(
            "tofu_tier_hits", "renditions a result tier served", ["tier"], registry=r
        )
        self.tier_misses = Counter(
            "tofu_tier_misses",
            "result tier lookups that found nothing usable (absent, damaged, stale, failed)",
            ["tier"],
            registry=r,
        )
        self.tier_stale = Counter(
            "tofu_tier_stale",
            "result tier entries made from an older version of their original (misses too)",
            ["tier"],
            registry=r,
        )
        self.tier_writes = Counter(
            "tofu_tier_writes", "renditions written to a result tier", ["tier"], registry=r
        )
        self.tier_evictions = Counter(
            "tofu_tier_evictions", "entries a result tier evicted for room", ["tier"], registry=r
        )
        self.tier_errors = Counter(
            "tofu_tier_errors",
            "result tier failures by kind: damaged (an entry or database removed), io, "
            "unavailable, timeout, error, skipped (breaker open), dropped (too many writes)",
            ["tier", "kind"],
            registry=r,
        )
        self.tier_bytes = Gauge(
            "tofu_tier_bytes",
            "bytes a node's result tier holds (the disk tier's database)",
            ["tier"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.tier_hit_seconds = Histogram(
            "tofu_tier_hit_seconds",
            "time to read a rendition from a result tier (hits)",
            ["tier"],
            buckets=_TIER_BUCKETS,
            registry=r,
        )
        for cache in CACHES:
            for counter in (self.cache_hits, self.cache_misses, self.cache_evictions):
                counter.labels(cache)
        for phase in PHASES:
            self.phase_seconds.labels(phase)

    def sample_libvips_memory(self) -> None:
        if self._vips_memory_now is not None:
            self.vips_memory.set(self._vips_memory_now())

    def sample_process(self) -> None:
        """Set this process's memory and CPU gauges (every few seconds and on each scrape)."""
        for family in self._process.collect():
            if family.name == "process_resident_memory_bytes":
                self.worker_memory.set(family.samples[0].value)
            elif family.name == "process_cpu_seconds":
                self.worker_cpu.set(family.samples[0].value)

    def exposition(self) -> bytes:
        """The text exposition: this process's registry, or every worker's in multiprocess mode."""
        self.sample_process()
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)


def clear_multiprocess_dir(directory: str) -> int:
    """Remove a previous run's prometheus-client files from ``directory`` (created if missing),
    so that their counters are not merged into this run's; other files are left alone.
    Returns how many were removed."""
    os.makedirs(directory, exist_ok=True)
    removed = 0
    for name in os.listdir(directory):
        if _MULTIPROCESS_FILE.fullmatch(name):
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed
