"""The shared result store (``--result-store s3://...``) on a real SeaweedFS: what one node
rendered, another serves with the originals gone; a store that is down or holds every request
costs a render no more than the store's budget."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from pathlib import Path

import pytest

from tests.support.faults import FaultProxy
from tests.support.metrics import metric_sum, scrape
from tests.support.s3 import SeaweedFS
from tests.support.servers import (
    SAMPLES,
    TofuProcess,
    free_port,
    get_fresh,
    start_tofu,
    width_target,
)
from tofu.config import Config, ConfigError
from tofu.metrics import Metrics
from tofu.render import RenderSettings
from tofu.results import MAX_PENDING_WRITES, Rendered, Stored, Tiers
from tofu.transform import Size, Transform

RESULTS_BUCKET = "tofu-results"
IMAGES = sorted(p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*.jpg"))
BUDGET_MS = 200


get = get_fresh
target = width_target


def node_args(origin: str, store: str) -> list[str]:
    return [
        "--origin",
        origin,
        "--result-store",
        store,
        "--result-store-timeout",
        str(BUDGET_MS),
        "--dev",
        "--workers",
        "1",
        "--drain-seconds",
        "0",
        "--negotiate",
        "none",
    ]


def test_the_store_url_is_checked_like_an_s3_origin() -> None:
    for bad in ("http://store/", "s3://", "s3://b?endpoint_url=ftp://x", "s3://b?colour=red"):
        with pytest.raises(ConfigError, match="--result-store"):
            Config.load({"origin": ["samples"], "dev": True, "result_store": bad})
    config = Config.load(
        {"origin": ["samples"], "dev": True, "result_store": "s3://b/p?region=eu-west-1"},
        {"TOFU_RESULT_STORE_TIMEOUT": "150", "TOFU_DISK_CACHE_SIZE": "2G"},
    )
    assert config.result_store_timeout == 150.0 and config.disk_cache_size == 2 << 30
    # --s3-endpoint-url serves the store too, with originals on disk
    Config.load(
        {
            "origin": ["samples"],
            "dev": True,
            "result_store": "s3://b",
            "s3_endpoint_url": "http://h",
        }
    )


def test_a_node_serves_what_another_rendered_with_the_originals_gone(
    seaweedfs: SeaweedFS, s3_env_vars: dict[str, str], tmp_path: Path, nodes: list[TofuProcess]
) -> None:
    client = seaweedfs.client()
    with suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=RESULTS_BUCKET)
    with suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="tofu-store-originals")
    run = uuid.uuid4().hex[:8]  # a fresh prefix per run: no earlier run's entries
    keys = [f"{run}/{image}" for image in IMAGES]
    for key, image in zip(keys, IMAGES, strict=True):
        client.put_object(
            Bucket="tofu-store-originals", Key=key, Body=(SAMPLES / image).read_bytes()
        )
    endpoint = seaweedfs.endpoint_url
    origin = f"s3://tofu-store-originals?endpoint_url={endpoint}"
    store = f"s3://{RESULTS_BUCKET}/{run}?endpoint_url={endpoint}"
    targets = [target(key, width) for key in keys for width in (140, 260)]

    node_a = start_tofu(node_args(origin, store), tmp_path, env=s3_env_vars)
    nodes.append(node_a)
    rendered = {each: get(node_a, each) for each in targets}
    assert all(status == 200 for status, _ in rendered.values())
    deadline = time.monotonic() + 20
    while metric_sum(scrape(node_a.url), "tofu_tier_writes_total", tier="store") < len(targets):
        assert time.monotonic() < deadline, node_a.log()
        time.sleep(0.05)
    for key in keys:
        client.delete_object(Bucket="tofu-store-originals", Key=key)

    # Node B has a disk tier too: what the store gives it is copied there (in the background).
    disk = ["--disk-cache", str(tmp_path / "disk-b")]
    node_b = start_tofu([*node_args(origin, store), *disk], tmp_path, env=s3_env_vars)
    nodes.append(node_b)
    for each in targets:
        assert get(node_b, each) == rendered[each]
    metrics = scrape(node_b.url)
    assert metric_sum(metrics, "tofu_renders_total") == 0
    assert metric_sum(metrics, "tofu_tier_hits_total", tier="store") == len(targets)
    assert metric_sum(metrics, "tofu_requests_total", cache="store") == len(targets)
    deadline = time.monotonic() + 20
    while metric_sum(scrape(node_b.url), "tofu_tier_writes_total", tier="disk") < len(targets):
        assert time.monotonic() < deadline, node_b.log()
        time.sleep(0.05)
    assert metric_sum(scrape(node_b.url), "tofu_tier_writes_total", tier="store") == 0
    assert get(node_b, target(keys[0], 333))[0] == 404  # not in the store, original gone


@pytest.mark.parametrize("fault", ["refused", "held"])
def test_a_store_down_or_silent_costs_a_render_at_most_its_budget(
    fault: str,
    seaweedfs: SeaweedFS,
    s3_env_vars: dict[str, str],
    tmp_path: Path,
    nodes: list[TofuProcess],
) -> None:
    """``refused``: a port nothing listens on. ``held``: a proxy before SeaweedFS that holds
    every GET for a minute. Each render answers within the budget plus the render (loosely:
    a few seconds, where a store without a budget would hold it a minute), and after a few
    failures the breaker skips the store altogether."""
    proxy: FaultProxy | None = None
    if fault == "refused":
        endpoint = f"http://127.0.0.1:{free_port()}"
    else:
        proxy = FaultProxy(seaweedfs.endpoint_url).start()
        proxy.delay_every = (1, 60.0)
        endpoint = proxy.url
    try:
        store = f"s3://{RESULTS_BUCKET}/down?endpoint_url={endpoint}"
        node = start_tofu(node_args(str(SAMPLES), store), tmp_path, env=s3_env_vars)
        nodes.append(node)
        for width in range(200, 210):
            started = time.monotonic()
            assert get(node, target(IMAGES[0], width))[0] == 200
            assert time.monotonic() - started < BUDGET_MS / 1000 + 4.0
        metrics = scrape(node.url)
        failed = metric_sum(metrics, "tofu_tier_errors_total", tier="store", kind="timeout")
        failed += metric_sum(metrics, "tofu_tier_errors_total", tier="store", kind="error")
        assert failed >= 3
        assert metric_sum(metrics, "tofu_tier_errors_total", tier="store", kind="skipped") >= 1
        assert metric_sum(metrics, "tofu_renders_total") == 10
        assert node.log().count("result tier store:") <= 2  # timeout and error, once each
    finally:
        if proxy is not None:
            proxy.stop()


class Broken:
    """A tier that breaks its contract and raises."""

    name = "broken"

    async def get(self, key: str) -> Stored | None:
        raise RuntimeError("get")

    async def put(self, key: str, entry: Rendered) -> None:
        raise RuntimeError("put")

    async def close(self) -> None:
        return None


async def test_a_tier_that_raises_is_a_miss_and_a_counted_error() -> None:
    metrics = Metrics()
    tiers = Tiers([Broken()], RenderSettings(), metrics)
    rendition = Transform("recipes/1/cups.jpg", Size(100, None))
    assert await tiers.get(rendition, None, None) is None
    tiers.put(rendition, None, Stored(b"x", "image/jpeg", '"e"', "v", None, None, "memory"))
    await tiers.close()
    assert metrics.tier_errors.labels("broken", "error")._value.get() == 2


class Slow:
    """A tier whose writes take a while (a store that is slow to accept PUTs)."""

    name = "slow"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def get(self, key: str) -> Stored | None:
        return None

    async def put(self, key: str, entry: Rendered) -> None:
        await self.release.wait()

    async def close(self) -> None:
        return None


async def test_background_writes_are_bounded_and_the_excess_is_counted() -> None:
    metrics = Metrics()
    slow = Slow()
    tiers = Tiers([slow], RenderSettings(), metrics)
    entry = Stored(b"x", "image/jpeg", '"e"', "v", None, None, "memory")
    for width in range(100, 100 + MAX_PENDING_WRITES + 10):
        tiers.put(Transform("recipes/1/cups.jpg", Size(width, None)), None, entry)
    assert metrics.tier_errors.labels("slow", "dropped")._value.get() == 10
    slow.release.set()
    await tiers.close()
