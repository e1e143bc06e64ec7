"""Originals from a directory. No key can reach outside the root: not with ``..``, not through
a symlink that points out."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

from tofu.errors import NotFound, OriginError, Unprocessable
from tofu.keys import origin_key
from tofu.origins import Original
from tofu.origins.sources import Source

if TYPE_CHECKING:
    from tofu.config import Config


def parse_source(text: str) -> Source:
    if not os.path.isdir(text):
        raise ValueError(f"{text!r} is not a directory")
    return Source("", text, remote=False)


def open_source(source: Source, config: Config) -> DiskOrigin:
    return DiskOrigin(source.location, max_bytes=config.max_source_bytes)


class DiskOrigin:
    def __init__(self, root: str, *, max_bytes: int) -> None:
        self._root = os.path.realpath(root)
        self._max_bytes = max_bytes

    def _resolve(self, key: str) -> str:
        # The key rule keeps ".." and absolute paths out; the real path keeps symlinks in.
        path = os.path.realpath(os.path.join(self._root, origin_key(key)))
        if os.path.commonpath([self._root, path]) != self._root or path == self._root:
            # Reported as missing: whether something exists outside the root is not the
            # client's business.
            raise NotFound(f"no original at {key!r}")
        return path

    def _read(self, key: str) -> Original:
        path = self._resolve(key)
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                if stat.st_size > self._max_bytes:
                    raise Unprocessable(
                        f"original is {stat.st_size} bytes, over the {self._max_bytes} limit"
                    )
                data = file.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no original at {key!r}") from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # the client's key, not the origin, is at fault
                raise NotFound(f"no original at {key!r}") from None
            raise OriginError(f"cannot read the original: {exc.strerror}") from None
        version = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
        return Original(data, version, stat.st_mtime)

    async def fetch(self, key: str) -> Original:
        return await asyncio.to_thread(self._read, key)

    async def check(self) -> None:
        if not await asyncio.to_thread(os.path.isdir, self._root):
            raise OSError(f"origin root {self._root} is gone")

    async def close(self) -> None:
        return None
