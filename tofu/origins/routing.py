"""Several origins side by side, chosen by the key's prefix (longest wins).

As nginx's ``proxy_pass`` with a URI: the matched prefix is cut off the key and the origin
adds its own location, so ``recipes/=s3://photos/originals`` reads ``recipes/1/x.jpg`` from
``originals/1/x.jpg``. The default origin (no prefix) gets the key whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from tofu.errors import NotFound
from tofu.keys import Key, origin_key
from tofu.origins import Origin, Original


class RoutedOrigin:
    def __init__(self, routes: Sequence[tuple[str, Origin]]) -> None:
        # Longest prefix first, so the first match is the longest.
        self._routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)

    @property
    def origins(self) -> list[Origin]:
        return [origin for _, origin in self._routes]

    def route(self, key: str) -> tuple[Origin, Key]:
        """The origin serving ``key`` and the key within it (a prefix is whole names, each
        ending with "/", so what follows it is a key too)."""
        for prefix, origin in self._routes:
            if key.startswith(prefix):
                return origin, origin_key(key[len(prefix) :])
        raise NotFound(f"no origin serves {key!r}")

    async def fetch(self, key: str) -> Original:
        origin, rest = self.route(key)
        return await origin.fetch(rest)

    async def close(self) -> None:
        for _, origin in self._routes:
            await origin.close()
