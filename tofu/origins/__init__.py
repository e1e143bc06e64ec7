"""Where originals come from. A backend is one file implementing the ``Origin`` protocol and
validating its own sources (``sources.SCHEMES``); routing by key prefix (``routing``) and
failover and hedging between a source's replicas (``replicas``) are ``Origin``s wrapping
other ``Origin``s, so the service and the health check see one origin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tofu.config import Config
    from tofu.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Original:
    """The bytes of one original and what identifies this version of it."""

    data: bytes
    version: str  # changes whenever the content may have: S3 ETag, file mtime + size
    last_modified: float | None = None  # POSIX timestamp, for Last-Modified


class Origin(Protocol):
    """A store of originals, addressed by the key a ``Transform`` carries (a ``tofu.keys.Key``,
    validated where the URL was parsed; a backend turning it into a path or URL checks it
    again with ``tofu.keys.origin_key``, the same rule)."""

    async def fetch(self, key: str) -> Original:
        """The original at ``key``; raises ``NotFound``, ``OriginError``, ``OriginTimeout``,
        ``Unprocessable`` (over the byte limit) or ``UnsupportedMediaType`` (served as
        something else than an image)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SourceOrigin(Origin, Protocol):
    """One source, as a backend opens it (a directory, a bucket, an HTTP base)."""

    async def check(self) -> None:
        """Raise if the source is unreachable. Probed for operators (``tofu.health``: the
        ``tofu_origin_up`` gauge and ``/status``), never for readiness."""
        ...


def open_origin(config: Config, metrics: Metrics) -> Origin:
    """The origins ``config.origin`` names, one ``Replicas`` per route, behind a
    ``RoutedOrigin`` when there are prefixes."""
    from tofu.origins.replicas import Hedging, Replicas
    from tofu.origins.routing import RoutedOrigin
    from tofu.origins.sources import backend, parse_table

    hedging = Hedging(
        after=None if config.hedge_after is None else config.hedge_after / 1000,
        budget=config.hedge_budget / 100,
    )
    routes: list[tuple[str, Origin]] = []
    for route in parse_table(config.origin):
        sources = [
            (source.label, backend(source.scheme).open_source(source, config))
            for source in route.sources
        ]
        replicas = Replicas(
            route.name,
            sources,
            deadline=config.fetch_timeout,
            hedging=hedging,
            metrics=metrics,
            remote=all(source.remote for source in route.sources),
        )
        routes.append((route.prefix, replicas))
    if len(routes) == 1 and not routes[0][0]:
        return routes[0][1]
    return RoutedOrigin(routes)
