"""The table of origins (``--origin``): which sources serve which keys.

One entry is ``[PREFIX/=]SOURCE[|SOURCE...]``: a routing prefix (longest wins; an entry without
one is the default), then the source and its replicas, tried in order. A source is a directory,
``s3://BUCKET[/PREFIX][?endpoint_url=URL&region=NAME]`` or ``http(s)://HOST[:PORT]/BASE/``. Each
backend validates its own sources; ``SCHEMES`` says which backend a scheme belongs to.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tofu.config import Config
    from tofu.origins import SourceOrigin

# backend module by URL scheme ("" is a directory); imported when a source needs it
SCHEMES = {
    "": "tofu.origins.disk",
    "s3": "tofu.origins.s3",
    "http": "tofu.origins.http",
    "https": "tofu.origins.http",
}
# A routing prefix is key segments, each ending with "/": "recipes/", "users/avatars/".
_ROUTE = re.compile(r"((?:[A-Za-z0-9._~-]+/)+)=(.*)", re.S)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True)
class Source:
    """One place originals are read from, as its backend understood it."""

    scheme: str  # a key of SCHEMES
    location: str  # what is shown and labelled: the source without its options
    options: tuple[tuple[str, str], ...] = ()  # per-source settings (s3: endpoint_url, region)
    remote: bool = True  # over the network: worth hedging

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)

    @property
    def label(self) -> str:
        """The ``source`` label of its metrics: the location, and the endpoint's host when
        one is set (two replicas may have one bucket name on two endpoints)."""
        endpoint = self.option("endpoint_url")
        return f"{self.location} at {urlsplit(endpoint).netloc}" if endpoint else self.location

    def describe(self) -> str:
        """As ``tofu config`` shows it."""
        options = "&".join(f"{name}={value}" for name, value in self.options)
        return self.location + (f"?{options}" if options else "")


@dataclass(frozen=True, slots=True)
class Route:
    prefix: str  # "" for the default origin
    sources: tuple[Source, ...]  # primary first, then its replicas

    @property
    def name(self) -> str:
        """The ``origin`` label of its metrics."""
        return self.prefix or "default"


class Backend(Protocol):
    """What a backend module provides."""

    def parse_source(self, text: str) -> Source:
        """The source ``text`` names; ``ValueError`` with the reason if it is not one."""
        ...

    def open_source(self, source: Source, config: Config) -> SourceOrigin: ...


def backend(scheme: str) -> Backend:
    return cast(Backend, importlib.import_module(SCHEMES[scheme]))


def parse_source(text: str) -> Source:
    match = _SCHEME.match(text)
    scheme = match[1].lower() if match else ""
    if scheme not in SCHEMES:
        raise ValueError(
            f"{text!r}: unknown scheme {scheme!r} (a directory, s3://, http:// or https://)"
        )
    return backend(scheme).parse_source(text)


def parse_route(text: str) -> Route:
    """One ``--origin`` value; ``ValueError`` says what is wrong with it."""
    match = _ROUTE.fullmatch(text)
    prefix, rest = (match[1], match[2]) if match else ("", text)
    if any(segment in (".", "..") for segment in prefix.split("/")):
        raise ValueError(f"{text!r}: a routing prefix has no . or .. segments")
    if not rest:
        raise ValueError(f"{text!r} names no source")
    return Route(prefix, tuple(parse_source(part) for part in rest.split("|")))


def parse_table(routes: tuple[str, ...]) -> tuple[Route, ...]:
    """Every entry parsed, in order; two entries for one prefix are an error."""
    parsed = [parse_route(text) for text in routes]
    seen: set[str] = set()
    for route in parsed:
        if route.prefix in seen:
            raise ValueError(f"two origins for {route.prefix or 'the default'!r}")
        seen.add(route.prefix)
    return tuple(parsed)
