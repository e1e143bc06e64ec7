"""Where originals come from. A backend is one file implementing the ``Origin`` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tofu.config import Config


@dataclass(frozen=True, slots=True)
class Original:
    """The bytes of one original and what identifies this version of it."""

    data: bytes
    version: str  # changes whenever the content may have: S3 ETag, file mtime + size
    last_modified: float | None = None  # POSIX timestamp, for Last-Modified


class Origin(Protocol):
    """A store of originals, addressed by the key a ``Transform`` carries."""

    async def fetch(self, key: str) -> Original:
        """The original at ``key``; raises ``NotFound``, ``OriginError``, ``OriginTimeout`` or
        ``Unprocessable`` (over the byte limit)."""
        ...

    async def check(self) -> None:
        """Raise if the origin is unreachable (used by the readiness probe)."""
        ...

    async def close(self) -> None: ...


def open_origin(config: Config) -> Origin:
    """The origin ``config.origin`` names: ``s3://BUCKET[/PREFIX]`` or a directory."""
    if config.origin.startswith("s3://"):
        from tofu.origins.s3 import S3Origin

        bucket, _, prefix = config.origin[5:].partition("/")
        return S3Origin(
            bucket,
            prefix,
            endpoint_url=config.s3_endpoint_url,
            timeout=config.fetch_timeout,
            retries=config.fetch_retries,
            max_bytes=config.max_source_bytes,
            pool_size=max(10, config.max_renders + config.max_queue),
        )
    from tofu.origins.disk import DiskOrigin

    return DiskOrigin(config.origin, max_bytes=config.max_source_bytes)
