"""A circuit breaker: a dependency that failed several times in a row is skipped for a
cooldown, then tried again; a success closes it, a failed probe opens it for another cooldown.
Origin sources (``tofu.origins.replicas``) and the shared result store (``tofu.results.s3``)
each have one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    trip_after: int  # failures in a row that open it
    cooldown: float  # seconds it stays open before a probe
    failures: int = 0  # in a row
    opened_at: float | None = None  # open since (monotonic)

    def available(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.cooldown

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.trip_after:
            self.opened_at = now  # (re)opened: a failed probe waits a whole cooldown again
