"""A node-wide budget of decoding memory, shared by the worker processes of one node.

Counting renders bounds CPU but not memory: one 18 MP progressive JPEG holds ~100 MB of DCT
coefficients while it decodes, a 2 MP baseline one almost nothing. So each render declares
what it will hold (``Plan.memory_bytes``) and waits until the node has that much room; peak
memory is then the workers' base size plus this budget, whatever the number of workers or
concurrent requests. A render larger than the whole budget still runs, alone on the node.

The workers' usage lives in a small shared file, one counter per worker, updated under an
``flock``: the kernel drops the lock of a process that dies, and the master clears a dead
worker's counter before restarting it, so a crash cannot leak budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import struct
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

_COUNTER = struct.Struct("=q")
_POLL_FIRST = 0.002  # seconds between tries while the node is full; doubles up to _POLL_MAX
_POLL_MAX = 0.02


def create_shared_file(path: str, workers: int) -> None:
    """The master's part: a zeroed counter for each worker."""
    with open(path, "wb") as file:
        file.write(bytes(_COUNTER.size * workers))


def clear_worker(path: str, index: int) -> None:
    """Forget what a dead worker held (the master, before restarting it)."""
    with open(path, "r+b") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(_COUNTER.size * index)
        file.write(_COUNTER.pack(0))


class RenderMemory:
    """This worker's view of the node's budget. ``shared_path`` None: a single-process node."""

    def __init__(self, limit: int, shared_path: str | None = None, index: int = 0) -> None:
        self.limit = limit
        self._index = index
        self._local = 0  # bytes this worker's renders hold
        self._queue = asyncio.Lock()  # FIFO: a large render is not overtaken forever
        self._file: BinaryIO | None = None
        self._map: mmap.mmap | None = None
        if shared_path is not None:
            self._file = open(shared_path, "r+b")  # noqa: SIM115 -- lives as long as the worker
            self._map = mmap.mmap(self._file.fileno(), 0)

    @contextlib.asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Hold ``cost`` bytes of the budget for the duration of the block."""
        await self._acquire(cost)
        try:
            yield
        finally:
            self._update(-cost)

    async def _acquire(self, cost: int) -> None:
        async with self._queue:
            pause = _POLL_FIRST
            while not self._try(cost):
                await asyncio.sleep(pause)
                pause = min(pause * 2, _POLL_MAX)

    def _try(self, cost: int) -> bool:
        with self._locked():
            used = self._node_total()
            if used and used + cost > self.limit:
                return False
            self._write(self._local + cost)
            return True

    def _update(self, delta: int) -> None:
        with self._locked():
            self._write(self._local + delta)

    def _write(self, value: int) -> None:
        self._local = value
        if self._map is not None:
            _COUNTER.pack_into(self._map, _COUNTER.size * self._index, value)

    def _node_total(self) -> int:
        if self._map is None:
            return self._local
        return sum(count for (count,) in _COUNTER.iter_unpack(self._map))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._file is None:
            yield
            return
        fcntl.flock(self._file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    @property
    def held(self) -> int:
        """What this worker's renders hold now."""
        return self._local

    @property
    def node_bytes(self) -> int:
        """What all workers' renders hold now (for metrics)."""
        with self._locked():
            return self._node_total()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()
        self._map = self._file = None
