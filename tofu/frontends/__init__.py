"""URL grammars ("front ends"): each turns a raw request path into a ``ParsedPath`` (whose
``Transform`` is the cache key) and decides whether the request may be served.

tofu's own grammar (``frontends.tofu``) answers every path no other front end claims; thumbor's
(``frontends.thumbor``) claims paths that start with ``/unsafe/`` or a thumbor signature, when
it is enabled. Both produce the same canonical ``Transform``, so one rendition is one cache
entry whichever grammar asked for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from tofu.config import Config
from tofu.frontends.thumbor import ThumborFrontend
from tofu.frontends.tofu import TofuFrontend
from tofu.transform import Watermark
from tofu.urls import ParsedPath


class Frontend(Protocol):
    """One URL grammar and its signing scheme."""

    def claims(self, raw_path: str) -> bool:
        """Whether ``raw_path`` (still percent-encoded, no query) is in this grammar's shape."""
        ...

    def parse(self, raw_path: str) -> ParsedPath:
        """The parsed request; ``BadRequest`` with the reason when it is malformed."""
        ...

    def verify(self, parsed: ParsedPath) -> ParsedPath:
        """The reading of ``parsed`` to serve; ``Forbidden`` unless it may be served
        (signature, allowlist...)."""
        ...


class Frontends:
    """The configured grammars, in order: the first that claims a path parses and verifies
    it; the last one is the fallback for every path."""

    def __init__(self, frontends: Sequence[Frontend]) -> None:
        if not frontends:
            raise ValueError("at least one front end is needed")
        self._claimants = tuple(frontends[:-1])
        self._fallback = frontends[-1]

    def select(self, raw_path: str) -> Frontend:
        """The front end for ``raw_path``: the first that claims it, else the fallback."""
        return next((f for f in self._claimants if f.claims(raw_path)), self._fallback)


class DefaultWatermarks:
    """A front end whose verified renditions get the configured watermark of the longest
    ``--watermark`` prefix their key starts with, after any the URL asks for. Added after
    verification (signatures and allowlists cover what the URL says), before the cache key is
    taken: the watermark is part of the ``Transform``."""

    def __init__(self, inner: Frontend, defaults: Sequence[tuple[str, Watermark]]) -> None:
        self._inner = inner
        self._defaults = tuple(defaults)

    def claims(self, raw_path: str) -> bool:
        return self._inner.claims(raw_path)

    def parse(self, raw_path: str) -> ParsedPath:
        return self._inner.parse(raw_path)

    def verify(self, parsed: ParsedPath) -> ParsedPath:
        parsed = self._inner.verify(parsed)
        transform = parsed.transform
        mark = next((m for prefix, m in self._defaults if transform.key.startswith(prefix)), None)
        if mark is None:
            return parsed
        ops = transform.size.operations
        ops = dataclasses.replace(ops, watermarks=(*ops.watermarks, mark))
        size = dataclasses.replace(transform.size, operations=ops)
        return dataclasses.replace(parsed, transform=dataclasses.replace(transform, size=size))


def build_frontends(config: Config) -> Frontends:
    """The front ends ``config`` enables: thumbor's (with ``--thumbor-key``, ``--thumbor-unsafe``
    or an open ``--dev``) before tofu's own; with ``--watermark``, both add its watermarks."""
    frontends: list[Frontend] = []
    if config.thumbor_key or config.thumbor_unsafe or config.dev_open:
        frontends.append(
            ThumborFrontend(
                config.thumbor_key,
                allow_unsafe=config.thumbor_unsafe or config.dev_open,
                max_side=config.max_output_side,
                lenient=config.thumbor_lenient,
            )
        )
    frontends.append(TofuFrontend(config))
    defaults = config.default_watermarks
    if defaults:
        frontends = [DefaultWatermarks(f, defaults) for f in frontends]
    return Frontends(frontends)
