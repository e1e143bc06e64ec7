"""One origin's sources: a primary and its replicas, with failover, hedged fetches, a circuit
breaker per source and the per-origin metrics. It is itself an ``Origin``.

- **Failover**: a connection error, timeout or 5xx (what a source's own retries could not cure)
  sends the fetch to the next source, within one deadline (``--fetch-timeout``): each source
  tried gets an equal share of what is left, so a silent primary leaves the replica time. A
  404, or an original refused as too large or not an image, is final: a replica may lag.
- **Circuit breaker**: a source that failed ``_TRIP_AFTER`` fetches in a row is skipped for
  ``_COOLDOWN`` seconds, then tried again (a success closes it, a failure opens it again).
  When every source is open they are all tried anyway: skipping them all would only fail.
- **Hedging** ("The Tail at Scale"): when a GET has not begun to answer (no response headers)
  after the source's recent p95 time to first byte (or a fixed ``--hedge-after``), a second
  GET goes to the next source (or the same one when there is no other); the first answer
  wins, the other is cancelled. Hedges cost tokens
  that each fetch earns ``--hedge-budget`` of, so at most that share of fetches is hedged and a
  slow origin is not hit twice as hard. Only network sources are hedged, not directories.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from tofu.breaker import Breaker
from tofu.errors import NotFound, OriginError, OriginTimeout, TofuError
from tofu.metrics import Metrics
from tofu.origins import Original, SourceOrigin
from tofu.origins.policy import FirstByte

_TRIP_AFTER = 5  # failures in a row that open a source's breaker
_COOLDOWN = 5.0  # seconds an open source is skipped before it is tried again
_LATENCY_WINDOW = 200  # recent GET latencies the adaptive hedge delay is the p95 of
_MIN_SAMPLES = 20  # no adaptive hedging before this many
_MIN_HEDGE_DELAY = 0.005
_TOKEN_CAP = 10  # hedges that may be saved up for a burst
# Tokens are counted in millionths of a hedge, exactly: 0.1 added ten times in floats is
# 0.9999999999999999, and the tenth fetch at a 10 % budget would not earn its hedge.
_HEDGE = 1_000_000


@dataclass(frozen=True, slots=True)
class Hedging:
    after: float | None  # seconds; None: the recent p95; 0: never hedge
    budget: float  # the share of fetches that may be hedged, 0-1


@dataclass(slots=True)
class _Source:
    label: str
    origin: SourceOrigin
    breaker: Breaker

    def available(self, now: float) -> bool:
        return self.breaker.available(now)

    def succeeded(self) -> None:
        self.breaker.succeeded()

    def failed(self, now: float) -> None:
        self.breaker.failed(now)


@dataclass(slots=True)
class _Latencies:
    """Recent GET latencies, for the adaptive hedge delay."""

    window: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    def add(self, seconds: float) -> None:
        self.window.append(seconds)

    def p95(self) -> float | None:
        if len(self.window) < _MIN_SAMPLES:
            return None
        ordered = sorted(self.window)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class Replicas:
    """The sources of one origin (``name``: its routing prefix or ``default``), in order."""

    def __init__(
        self,
        name: str,
        sources: Sequence[tuple[str, SourceOrigin]],
        *,
        deadline: float,
        hedging: Hedging,
        metrics: Metrics,
        remote: bool = True,
    ) -> None:
        self._name = name
        self._sources = [
            _Source(label, origin, Breaker(_TRIP_AFTER, _COOLDOWN)) for label, origin in sources
        ]
        self._deadline = deadline
        self._hedging = hedging if remote else Hedging(0, 0)
        self._latencies = _Latencies()
        self._tokens = 0  # in _HEDGE units
        self._earned = round(self._hedging.budget * _HEDGE)  # per fetch
        self._seconds = metrics.origin_seconds.labels(name)
        self._errors = metrics.origin_fetch_errors
        self._answers = metrics.origin_answers
        self._failovers = metrics.origin_failovers.labels(name)
        self._hedges = metrics.origin_hedges
        for outcome in ("won", "lost", "failed", "over_budget"):
            self._hedges.labels(name, outcome)

    @property
    def name(self) -> str:
        return self._name

    @property
    def sources(self) -> list[tuple[str, SourceOrigin]]:
        """Each source's label and backend, in order (for the origin probe, ``tofu.health``)."""
        return [(source.label, source.origin) for source in self._sources]

    async def fetch(self, key: str) -> Original:
        started = time.perf_counter()
        try:
            original, source = await self._fetch(key)
        except TofuError as exc:
            kind = {404: "not_found", 502: "error", 504: "timeout"}.get(exc.status, "refused")
            self._errors.labels(self._name, kind).inc()
            raise
        finally:
            self._seconds.observe(time.perf_counter() - started)
        self._answers.labels(self._name, source.label).inc()
        return original

    async def _fetch(self, key: str) -> tuple[Original, _Source]:
        tried: list[_Source] = []
        if len(self._sources) == 1:  # no failover: the source's own deadline is the deadline
            return await self._attempt(self._sources[0], self._sources[0], key, tried)
        loop = asyncio.get_running_loop()
        end = loop.time() + self._deadline
        now = time.monotonic()
        order = [s for s in self._sources if s.available(now)] or self._sources
        failure: TofuError | None = None
        for i, source in enumerate(order):
            if source in tried:  # a hedge went there already
                continue
            remaining = end - loop.time()
            if remaining <= 0:
                break
            if source is not self._sources[0]:
                self._failovers.inc()
            alternate = order[i + 1] if i + 1 < len(order) else source
            try:
                async with asyncio.timeout(remaining / (len(order) - i)):
                    return await self._attempt(source, alternate, key, tried)
            except TimeoutError:
                source.failed(time.monotonic())
                failure = OriginTimeout(f"origin {self._name} did not answer in time")
            except (OriginError, OriginTimeout) as exc:
                failure = exc
        raise failure or OriginTimeout(f"origin {self._name} did not answer in time")

    async def _one(self, source: _Source, key: str, mark: FirstByte | None = None) -> Original:
        """One fetch from one source, with its breaker and latency kept (to the first byte
        when the backend tells it, else to the whole answer)."""
        mark = mark or FirstByte()
        mark.watch()
        started = time.perf_counter()
        try:
            original = await source.origin.fetch(key)
        except NotFound:
            source.succeeded()  # it answered
            raise
        except (OriginError, OriginTimeout):
            source.failed(time.monotonic())
            raise
        source.succeeded()
        self._latencies.add((mark.at or time.perf_counter()) - started)
        return original

    def _hedge_delay(self) -> float | None:
        if self._hedging.after is not None:
            return self._hedging.after or None
        p95 = self._latencies.p95()
        return None if p95 is None else max(p95, _MIN_HEDGE_DELAY)

    async def _attempt(
        self, source: _Source, alternate: _Source, key: str, tried: list[_Source]
    ) -> tuple[Original, _Source]:
        """A fetch from ``source``, hedged to ``alternate`` if it is slow and the budget
        allows; ``tried`` gets each source a GET went to."""
        tried.append(source)
        delay = self._hedge_delay()
        if delay is None:
            return await self._one(source, key), source
        self._tokens = min(_TOKEN_CAP * _HEDGE, self._tokens + self._earned)
        mark = FirstByte()
        first = asyncio.ensure_future(self._one(source, key, mark))
        tasks: dict[asyncio.Future[Original], _Source] = {first: source}
        began = asyncio.ensure_future(mark.event.wait())
        try:
            await asyncio.wait({first, began}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            if first.done() or mark.at is not None:  # answered, or answering: no hedge
                return await first, source
            if self._tokens < _HEDGE:
                self._hedges.labels(self._name, "over_budget").inc()
                return await first, source
            self._tokens -= _HEDGE
            tried.append(alternate)
            second = asyncio.ensure_future(self._one(alternate, key))
            tasks[second] = alternate
            pending: set[asyncio.Future[Original]] = {first, second}
            failures: dict[asyncio.Future[Original], BaseException] = {}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        outcome = "won" if task is second else "lost"
                        self._hedges.labels(self._name, outcome).inc()
                        return task.result(), tasks[task]
                    if isinstance(exc, NotFound) and task is first:
                        self._hedges.labels(self._name, "lost").inc()
                        raise exc  # the primary's 404 is final
                    if not isinstance(exc, (OriginError, OriginTimeout, NotFound)):
                        raise exc
                    failures[task] = exc
            self._hedges.labels(self._name, "failed").inc()
            errors = [failures[first], failures[second]]
            raise next((e for e in errors if isinstance(e, NotFound)), errors[0])
        finally:
            began.cancel()
            for task in tasks:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: a loser's failure is not "never retrieved"

    async def close(self) -> None:
        for source in self._sources:
            await source.origin.close()
