"""Where renders run: planning on a small pool of its own, then a node-wide slot and memory
(``RenderBudget``), then one render thread, with the deadline's cancellation reaching inside
libvips. Knows nothing of caches or origins (``tofu.service`` orchestrates).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

from tofu.config import Config
from tofu.errors import TofuError
from tofu.metrics import Metrics
from tofu.negotiate import Negotiated
from tofu.render import Cancellation, Plan, RenderSettings, Rendition, execute, prepare
from tofu.render_budget import RenderBudget
from tofu.transform import Size

# Planning reads headers only (a few ms at most); a small pool of its own keeps it from
# queueing behind disk reads in asyncio's default pool, and bounds its threads.
_PLANNING_THREADS = 2


def render_settings(config: Config) -> RenderSettings:
    """The settings rendering takes, read from ``config`` by name."""
    return RenderSettings(**{f.name: getattr(config, f.name) for f in fields(RenderSettings)})


class RenderPool:
    def __init__(self, config: Config, metrics: Metrics, budget: RenderBudget | None) -> None:
        self._settings = render_settings(config)
        self._metrics = metrics
        self._timeout = config.request_timeout
        # Any worker may get every node-wide slot, so it has a thread for each (a render is
        # one thread: libvips' own concurrency is config.vips_concurrency, 1 by default).
        self._threads = config.max_renders
        self._renders = ThreadPoolExecutor(self._threads, thread_name_prefix="render")
        self._planning = ThreadPoolExecutor(_PLANNING_THREADS, thread_name_prefix="plan")
        self._owns_budget = budget is None
        self._budget = budget or RenderBudget(config.max_renders, config.render_memory)
        self._rendering_since: dict[Cancellation, float] = {}  # monotonic start per render

    async def plan(
        self,
        data: bytes,
        size: Size,
        negotiated: Negotiated | None,
        watermarks: Sequence[bytes] = (),
    ) -> Plan:
        """``prepare`` (header only) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._planning, prepare, data, size, self._settings, negotiated, watermarks
        )

    async def render(
        self,
        data: bytes,
        plan: Plan,
        phases: dict[str, float],
        watermarks: Sequence[bytes] = (),
    ) -> Rendition:
        """Wait for a node-wide slot with room for ``plan.memory_bytes``, then render in a
        thread. Fills ``phases`` (queue, render, encode). Cancelling the caller (its deadline)
        kills the render inside libvips; the slot and memory are given back only once its
        thread is free, so they bound real work, not just waiting requests."""
        metrics = self._metrics
        try:
            async with self._slot(plan.memory_bytes, phases):
                rendition = await self._execute(data, plan, watermarks)
        except TofuError as exc:
            metrics.render_errors.labels(str(exc.status)).inc()
            raise
        phases["render"] = rendition.resize_seconds
        phases["encode"] = rendition.encode_seconds
        metrics.phase_seconds.labels("render").observe(rendition.resize_seconds)
        metrics.phase_seconds.labels("encode").observe(rendition.encode_seconds)
        metrics.renders.inc()
        if rendition.quality is not None and rendition.format is not None:
            auto = self._settings.auto_quality and plan.size.quality is None and not plan.animated
            how = "auto" if auto else "fixed"
            metrics.quality.labels(rendition.format.value, how).observe(rendition.quality)
        return rendition

    @contextlib.asynccontextmanager
    async def _slot(self, cost: int, phases: dict[str, float]) -> AsyncIterator[None]:
        metrics = self._metrics
        started = time.perf_counter()
        metrics.render_queue.inc()
        try:
            await self._budget.acquire(cost)
        finally:
            metrics.render_queue.dec()
        try:
            phases["queue"] = time.perf_counter() - started
            metrics.phase_seconds.labels("queue").observe(phases["queue"])
            metrics.render_memory.set(self._budget.held)
            yield
        finally:
            self._budget.release(cost)
            metrics.render_memory.set(self._budget.held)
            metrics.sample_libvips_memory()

    async def _execute(self, data: bytes, plan: Plan, watermarks: Sequence[bytes]) -> Rendition:
        cancellation = Cancellation()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._renders, execute, data, plan, self._settings, cancellation, watermarks
        )
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
            # The render is over: what it computed must not outlive it. A failure's traceback
            # holds this frame, and so the cancellation's image; and the future keeping that
            # failure would make this frame a reference cycle, held until Python's cycle
            # collector ran (a 504's pixels stayed held: 1.1 GB for a 4096x4096 upscale).
            cancellation.forget()
            del work

    def stalled(self) -> bool:
        """Whether every render thread has been held for over twice the request deadline: the
        deadline kills a render within it, so such renders ignored the kill (readiness)."""
        if len(self._rendering_since) < self._threads:
            return False
        limit = time.monotonic() - 2 * self._timeout
        return all(started < limit for started in self._rendering_since.values())

    def close(self) -> None:
        self._renders.shutdown(wait=False, cancel_futures=True)
        self._planning.shutdown(wait=False, cancel_futures=True)
        if self._owns_budget:
            self._budget.close()
