"""The shared result store (``--result-store s3://BUCKET[/PREFIX]``): renditions any node
rendered, for every node of the fleet (a new node, another region, a node after a deploy).

It is read through the S3 origin's client and policy (``tofu.origins.s3``): one GET per
memory and disk miss, bounded by ``--result-store-timeout`` (no retries: the render is the
fallback); one PUT per render, in the background. A circuit breaker skips the store after
``_TRIP_AFTER`` failures in a row for ``_COOLDOWN`` seconds, so a store that is down costs a
request nothing, and one that is slow at most the budget until the breaker opens (reads
and writes each have one).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tofu.breaker import Breaker
from tofu.errors import NotFound, TofuError
from tofu.origins.s3 import S3Origin, parse_source
from tofu.results import Damaged, OnceLog, Rendered, Stored, decode_entry, encode_entry

if TYPE_CHECKING:
    from tofu.config import Config
    from tofu.metrics import Metrics

_TRIP_AFTER = 3
_COOLDOWN = 10.0
_PUT_SECONDS_MIN = 2.0  # a write is off the request path: it may take longer than a read


def open_store(url: str, config: Config, metrics: Metrics) -> S3Store:
    source = parse_source(url)
    bucket, _, prefix = source.location.removeprefix("s3://").partition("/")
    budget = config.result_store_timeout / 1000
    put_seconds = max(_PUT_SECONDS_MIN, 4 * budget)
    client = S3Origin(
        bucket,
        prefix,
        endpoint_url=source.option("endpoint_url") or config.s3_endpoint_url,
        region=source.option("region"),
        timeout=put_seconds,  # the client's connect and read timeouts; reads have `budget`
        retries=0,
        max_bytes=config.max_source_bytes,
        pool_size=max(10, config.max_renders + config.max_queue),
    )
    return S3Store(client, budget, put_seconds, metrics)


class S3Store:
    name = "store"

    def __init__(self, client: S3Origin, budget: float, put_seconds: float, metrics: Metrics):
        self._client = client
        self._budget = budget
        self._put_seconds = put_seconds
        # Reads and writes each have a breaker: reads that time out must be skipped even while
        # writes (off the request path) still succeed, and the other way round.
        self._read_breaker = Breaker(_TRIP_AFTER, _COOLDOWN)
        self._write_breaker = Breaker(_TRIP_AFTER, _COOLDOWN)
        self._log = OnceLog(self.name)
        self._errors = metrics.tier_errors
        self._writes = metrics.tier_writes.labels(self.name)

    @staticmethod
    def _path(key: str) -> str:
        return f"{key[:2]}/{key}"  # spread over prefixes: S3 scales request rates per prefix

    async def get(self, key: str) -> Stored | None:
        if not self._read_breaker.available(time.monotonic()):
            self._errors.labels(self.name, "skipped").inc()
            return None
        await self._client.connect()  # once per process, outside the budget
        try:
            async with asyncio.timeout(self._budget):
                original = await self._client.fetch(self._path(key))
        except NotFound:
            self._read_breaker.succeeded()
            return None
        except TimeoutError:
            self._failed(self._read_breaker, "timeout", f"no answer within {self._budget:g}s")
            return None
        except TofuError as exc:
            self._failed(self._read_breaker, "error", exc.reason)
            return None
        self._read_breaker.succeeded()
        try:
            return decode_entry(key, original.data, self.name)
        except Damaged as exc:
            self._errors.labels(self.name, "damaged").inc()
            self._log("damaged", exc)  # the next render of it overwrites it
            return None

    async def put(self, key: str, entry: Rendered) -> None:
        if not self._write_breaker.available(time.monotonic()):
            self._errors.labels(self.name, "skipped").inc()
            return
        await self._client.connect()
        try:
            async with asyncio.timeout(self._put_seconds):
                await self._client.put(self._path(key), encode_entry(key, entry))
        except TimeoutError:
            self._failed(self._write_breaker, "timeout", f"no write within {self._put_seconds:g}s")
            return
        except TofuError as exc:
            self._failed(self._write_breaker, "error", exc.reason)
            return
        self._write_breaker.succeeded()
        self._writes.inc()

    def _failed(self, breaker: Breaker, kind: str, cause: BaseException | str) -> None:
        breaker.failed(time.monotonic())
        self._errors.labels(self.name, kind).inc()
        self._log(kind, cause)

    async def close(self) -> None:
        await self._client.close()
