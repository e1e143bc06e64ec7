"""The node's render budget: how many renders may run at once and how much decoding memory
they may hold, shared by the worker processes of one node.

Counting renders bounds CPU but not memory: one 18 MP progressive JPEG holds ~100 MB of DCT
coefficients while it decodes, a 2 MP baseline one almost nothing. So each render declares
what it will hold (``Plan.memory_bytes``) and waits until the node has both a free slot
(``--max-renders``, node-wide: several workers do not oversubscribe the cores) and that much
room (``--render-memory``); it takes both at once, so a render waiting for memory holds no
slot. Peak memory is then the workers' base size plus this budget, whatever the number of
workers or concurrent requests. A render larger than the whole memory budget still runs, alone.

The workers' usage lives in a small shared file, two counters per worker (renders, bytes),
updated under an ``flock``: the kernel drops the lock of a process that dies, and the master
clears a dead worker's counters before restarting it, so a crash cannot leak budget. A worker
waiting for room is woken at once by its own releases and polls for its siblings'.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import struct
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO

_COUNTERS = struct.Struct("=qq")  # renders, bytes: one record per worker
_POLL_FIRST = 0.002  # seconds between looks at the siblings' use; doubles up to _POLL_MAX
_POLL_MAX = 0.02


def create_shared_file(path: str, workers: int) -> None:
    """The master's part: zeroed counters for each worker."""
    with open(path, "wb") as file:
        file.write(bytes(_COUNTERS.size * workers))


def clear_worker(path: str, index: int) -> None:
    """Forget what a dead worker held (the master, before restarting it)."""
    with open(path, "r+b") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(_COUNTERS.size * index)
        file.write(_COUNTERS.pack(0, 0))


class RenderBudget:
    """This worker's view of the node's budget. ``shared_path`` None: a single-process node."""

    def __init__(
        self, slots: int, memory: int, shared_path: str | None = None, index: int = 0
    ) -> None:
        self.slots = slots
        self.memory = memory
        self._index = index
        self._renders = 0  # this worker's renders under way
        self._bytes = 0  # and the bytes they hold
        self._queue = asyncio.Lock()  # FIFO: a large render is not overtaken forever
        self._freed = asyncio.Event()
        self._file: BinaryIO | None = None
        self._map: mmap.mmap | None = None
        if shared_path is not None:
            self._file = open(shared_path, "r+b")  # noqa: SIM115 -- lives as long as the worker
            self._map = mmap.mmap(self._file.fileno(), 0)

    @contextlib.asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """One render slot and ``cost`` bytes for the duration of the block."""
        await self.acquire(cost)
        try:
            yield
        finally:
            self.release(cost)

    async def acquire(self, cost: int) -> None:
        """Wait for a slot and ``cost`` bytes, then take both; ``release`` gives them back."""
        async with self._queue:
            pause = _POLL_FIRST
            while not self._try(cost):
                # No await between the failed try and clear(): a local release cannot be missed.
                self._freed.clear()
                if self._map is None:
                    await self._freed.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._freed.wait()
                pause = min(pause * 2, _POLL_MAX)

    def release(self, cost: int) -> None:
        self._update(-1, -cost)
        self._freed.set()

    def _try(self, cost: int) -> bool:
        with self._locked():
            renders, used = self._node_totals()
            if renders >= self.slots or (used and used + cost > self.memory):
                return False
            self._write(self._renders + 1, self._bytes + cost)
            return True

    def _update(self, renders: int, cost: int) -> None:
        with self._locked():
            self._write(self._renders + renders, self._bytes + cost)

    def _write(self, renders: int, used: int) -> None:
        self._renders, self._bytes = renders, used
        if self._map is not None:
            _COUNTERS.pack_into(self._map, _COUNTERS.size * self._index, renders, used)

    def _node_totals(self) -> tuple[int, int]:
        if self._map is None:
            return self._renders, self._bytes
        renders = used = 0
        for each_renders, each_bytes in _COUNTERS.iter_unpack(self._map):
            renders += each_renders
            used += each_bytes
        return renders, used

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
        """The bytes this worker's renders hold now."""
        return self._bytes

    @property
    def node_totals(self) -> tuple[int, int]:
        """Renders under way and bytes they hold on the whole node (for metrics and tests)."""
        with self._locked():
            return self._node_totals()

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()
        self._map = self._file = None
