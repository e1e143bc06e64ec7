"""In-process caches and request coalescing.

``BytesLRU`` bounds a cachetools LRU by the bytes its values hold; ``SingleFlight`` makes
concurrent callers with the same key share one piece of work.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _CountingLRU(LRUCache[Any, Any]):
    """An LRUCache that reports each eviction (cachetools evicts through ``popitem``)."""

    def __init__(
        self, maxsize: int, getsizeof: Callable[[Any], int], on_evict: Callable[[], None]
    ) -> None:
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_evict()
        return item


class BytesLRU(Generic[K, V]):
    """Least-recently-used cache bounded in bytes. Values larger than ``max_item`` bytes are not
    stored, so one huge entry cannot flush the cache. ``max_bytes == 0`` disables it."""

    def __init__(
        self,
        max_bytes: int,
        sizeof: Callable[[V], int],
        *,
        max_item_fraction: float = 1.0,
        on_evict: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_bytes = max_bytes
        self._max_item = int(max_bytes * max_item_fraction)
        self._sizeof = sizeof
        self._lru = _CountingLRU(max(max_bytes, 1), sizeof, on_evict)

    def get(self, key: K) -> V | None:
        return self._lru.get(key)

    def put(self, key: K, value: V) -> bool:
        """Store ``value``; False when it is too large to be cached."""
        if self._sizeof(value) > self._max_item:
            return False
        self._lru[key] = value
        return True

    def pop(self, key: K) -> None:
        self._lru.pop(key, None)

    @property
    def bytes(self) -> int:
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)


class Memo(dict[K, V]):
    """A plain dict that forgets everything once it holds ``max_entries``: lookups at C speed
    on the hit path, for memos where a forgotten entry only costs recomputing it."""

    def __init__(self, max_entries: int) -> None:
        super().__init__()
        self.max_entries = max_entries

    def __setitem__(self, key: K, value: V) -> None:
        if len(self) >= self.max_entries and key not in self:
            self.clear()
        super().__setitem__(key, value)


class SizedMemo(Memo[K, V]):
    """A ``Memo`` also bounded in bytes (``sizeof(key, value)`` per entry), for memos keyed by
    request data, where long unique keys would otherwise hold memory."""

    def __init__(self, max_entries: int, max_bytes: int, sizeof: Callable[[K, V], int]) -> None:
        super().__init__(max_entries)
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self.bytes = 0

    def __setitem__(self, key: K, value: V) -> None:
        size = self._sizeof(key, value)
        if key in self:
            self.bytes -= self._sizeof(key, self[key])
        elif len(self) >= self.max_entries or self.bytes + size > self.max_bytes:
            self.clear()
        dict.__setitem__(self, key, value)
        self.bytes += size

    def clear(self) -> None:
        super().clear()
        self.bytes = 0


class BytesMemo(SizedMemo[K, V]):
    """A ``SizedMemo`` bounded in bytes only, counting ``sys.getsizeof`` of each key and value
    plus the dict's own slot: for memos of plain values (strings, numbers)."""

    SLOT_BYTES = 64  # a dict entry (hash, key, value) and its index, amortised over resizes

    def __init__(self, max_bytes: int) -> None:
        super().__init__(sys.maxsize, max_bytes, self._entry_bytes)

    @classmethod
    def _entry_bytes(cls, key: object, value: object) -> int:
        return sys.getsizeof(key) + sys.getsizeof(value) + cls.SLOT_BYTES


class SingleFlight(Generic[K, V]):
    """Concurrent ``run`` calls with one key share one execution of the work.

    The work runs as its own task: a caller that is cancelled (client went away) stops waiting
    but does not cancel the work the others wait for. A failure reaches every waiter and is not
    remembered: the next call starts afresh.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The work's result and whether this caller joined work already under way."""
        task = self._running.get(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task), joined

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all have gone

    def __len__(self) -> int:
        return len(self._running)
