"""What every network origin shares: one deadline per fetch covering bounded retries with
exponential backoff and full jitter, and a body read that never holds more than the limit.

A backend raises ``Retryable`` for a failure worth another attempt (a reset, a timeout, a 5xx
or throttling answer); ``NotFound``, ``Unprocessable`` and the like end the fetch at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from tofu.errors import OriginError, OriginTimeout, Unprocessable

T = TypeVar("T")

# HTTP statuses worth another attempt: timeouts, throttling, server errors.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
CHUNK = 1 << 16  # bytes per read of a body

_BACKOFF_BASE = 0.05  # seconds; attempt n sleeps up to base * 2**n
_BACKOFF_CAP = 1.0


class FirstByte:
    """When a fetch's answer began (its headers arrived): hedging waits for this, not for the
    whole body. A backend reports it with ``first_byte()``; ``watch`` is set by the caller in
    the task that fetches, so concurrent fetches each have their own."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.at: float | None = None  # time.perf_counter()

    def watch(self) -> None:
        _watching.set(self)


_watching: ContextVar[FirstByte | None] = ContextVar("tofu_first_byte", default=None)


def first_byte() -> None:
    """The answer to the current fetch has begun (called by backends that can tell)."""
    mark = _watching.get()
    if mark is not None and mark.at is None:
        mark.at = time.perf_counter()
        mark.event.set()


class Retryable(Exception):
    """A failure worth another attempt; carries a short description of the cause."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout: float  # one deadline for all attempts
    retries: int  # attempts after the first

    async def run(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()`` until it succeeds, raises something else than ``Retryable``, or the
        attempts or the deadline run out (``OriginError``, ``OriginTimeout``)."""
        try:
            async with asyncio.timeout(self.timeout):
                cause = ""
                for n in range(self.retries + 1):
                    if n:
                        await asyncio.sleep(
                            random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**n))
                        )
                    try:
                        return await attempt()
                    except Retryable as exc:
                        cause = str(exc)
        except TimeoutError:
            raise OriginTimeout(f"{what} did not answer within {self.timeout:g}s") from None
        raise OriginError(f"{what} failed after {self.retries + 1} attempts: {cause}")


async def read_bounded(chunks: AsyncIterator[bytes], length: int | None, max_bytes: int) -> bytes:
    """The whole body, never more than ``max_bytes`` of it: an announced length over the limit
    is refused before reading, an unannounced one as soon as the limit is passed; a body
    shorter than announced is ``Retryable``."""
    if length is not None and length > max_bytes:
        raise Unprocessable(f"original is {length} bytes, over the {max_bytes} limit")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise Unprocessable(f"original is over the {max_bytes} byte limit")
        parts.append(chunk)
    if length is not None and size != length:
        raise Retryable(f"short read: {size} of {length} bytes")
    return b"".join(parts)
