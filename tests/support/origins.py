"""Origins for in-process tests: real ones, instrumented."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tofu.origins import Original
from tofu.origins.disk import DiskOrigin


class CountingOrigin:
    """A real disk origin that records each key fetched (``fetches``) and can be slowed down
    (``delay`` seconds per fetch, changeable), so that overlap is certain."""

    def __init__(self, root: Path, delay: float = 0.0, max_bytes: int = 64 << 20) -> None:
        self._disk = DiskOrigin(str(root), max_bytes=max_bytes)
        self.delay = delay
        self.fetches: list[str] = []

    async def fetch(self, key: str) -> Original:
        self.fetches.append(key)
        await asyncio.sleep(self.delay)
        return await self._disk.fetch(key)

    async def check(self) -> None:
        await self._disk.check()

    async def close(self) -> None:
        await self._disk.close()
