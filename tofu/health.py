"""What a node says about itself: readiness, and the reachability of its origins.

Readiness (``/readyz``) is about this node only: not draining, and its render pool still
finishing renders. It never depends on the origins: when an origin blips, every node would
turn unready at once and the balancer would have no backend left, not even for renditions that
are cached and need no origin. An origin's state goes to operators instead: the
``tofu_origin_up`` gauge and the ``/status`` page on the ops port, from a probe of every source.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tofu.metrics import Metrics
from tofu.origins import Origin, SourceOrigin
from tofu.origins.replicas import Replicas
from tofu.origins.routing import RoutedOrigin

PROBE_SECONDS = 10.0  # between probes of every source
PROBE_TIMEOUT = 2.0  # one source's check


@dataclass(frozen=True, slots=True)
class SourceState:
    origin: str  # the routing prefix, or "default"
    source: str  # its label, as --origin wrote it
    up: bool | None  # None: not probed yet
    detail: str  # why it is down, or how long the check took
    checked_at: float  # POSIX time of the probe (0: never)


def sources_of(origin: Origin) -> list[tuple[str, str, SourceOrigin]]:
    """Every source behind ``origin`` as (origin name, source label, source)."""
    if isinstance(origin, RoutedOrigin):
        return [source for each in origin.origins for source in sources_of(each)]
    if isinstance(origin, Replicas):
        return [(origin.name, label, source) for label, source in origin.sources]
    if isinstance(origin, SourceOrigin):
        return [("default", type(origin).__name__, origin)]
    return []


class OriginProbe:
    """Checks every source at once, each within ``PROBE_TIMEOUT``; keeps the last states and
    sets ``tofu_origin_up``. Run by one worker of a node (``run``) and on ``/status``."""

    def __init__(self, origin: Origin, metrics: Metrics) -> None:
        self._sources = sources_of(origin)
        self._gauge = metrics.origin_up
        self._states = [SourceState(o, s, None, "not probed yet", 0.0) for o, s, _ in self._sources]
        self._probed_at = float("-inf")  # monotonic

    @property
    def states(self) -> Sequence[SourceState]:
        return self._states

    async def fresh_states(self) -> Sequence[SourceState]:
        """The states, probed now unless the last probe is recent."""
        if time.monotonic() - self._probed_at >= PROBE_SECONDS:
            await self.probe()
        return self._states

    async def probe(self) -> None:
        self._probed_at = time.monotonic()
        self._states = list(
            await asyncio.gather(*(self._check(o, s, src) for o, s, src in self._sources))
        )
        for state in self._states:
            self._gauge.labels(state.origin, state.source).set(1 if state.up else 0)

    async def run(self) -> None:
        """Probe every ``PROBE_SECONDS`` until cancelled."""
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_SECONDS)

    @staticmethod
    async def _check(origin: str, label: str, source: SourceOrigin) -> SourceState:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await source.check()
        except TimeoutError:
            return SourceState(
                origin, label, False, f"no answer within {PROBE_TIMEOUT:g}s", time.time()
            )
        except Exception as exc:  # any failure is "down", with what it was
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]
            return SourceState(origin, label, False, reason, time.time())
        took = time.perf_counter() - started
        return SourceState(origin, label, True, f"answered in {took * 1000:.0f} ms", time.time())


class Readiness:
    """``/readyz``: this node can serve. ``stalled`` says whether the render pool has stopped
    finishing renders (a render that ignored its deadline's kill holds its thread)."""

    def __init__(self, stalled: Callable[[], bool]) -> None:
        self.draining = False
        self._stalled = stalled

    def problem(self) -> str | None:
        """None when ready, else the reason why not."""
        if self.draining:
            return "draining"
        if self._stalled():
            return "render pool stalled: every render slot held past twice the request deadline"
        return None


def status_text(readiness: Readiness, states: Sequence[SourceState]) -> str:
    """The human-readable ``/status`` page: readiness first, then one line per source."""
    problem = readiness.problem()
    lines = [f"node: {'ready' if problem is None else 'not ready: ' + problem}", "origins:"]
    for state in states:
        word = "unknown" if state.up is None else "up" if state.up else "down"
        when = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.checked_at))
            if state.checked_at
            else "-"
        )
        lines.append(f"  {state.origin}  {state.source}  {word}  {state.detail}  (checked {when})")
    if not states:
        lines.append("  (none probed)")
    return "\n".join(lines) + "\n"
