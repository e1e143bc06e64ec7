"""Two real ``tofu serve`` nodes behind real nginx running deploy/nginx/nginx.conf (upstream hosts
replaced by 127.0.0.1 ports), and Varnish running deploy/varnish/default.vcl in front of it.

Checks what the deploy config promises: consistent hashing of the URI (each rendition lives on
one node), zero failed client requests while the nodes are restarted one after the other
(SIGTERM -> drain -> exit 0 -> start again), and Varnish answering repeats from its cache.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.metrics import metric_sum, scrape
from tests.support.proxies import VARNISHD, nginx_command, render_nginx_conf, render_vcl
from tests.support.servers import (
    SAMPLES,
    TofuProcess,
    free_port,
    start_tofu,
    stop_process,
    wait_http,
)

DRAIN_SECONDS = 1.5


def node_args(workers: int = 1) -> list[str]:
    return [
        "--origin",
        str(SAMPLES),
        "--dev",
        "--workers",
        str(workers),
        "--drain-seconds",
        str(DRAIN_SECONDS),
        "--shutdown-timeout",
        "5",
        "--cache-size",
        "32MB",
    ]


_IMAGES = ("recipes/1/cups.jpg", "recipes/2/autumn.jpg", "recipes/1203423/5366e857.jpg")
_ACCESS = re.compile(r'"GET (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d+) .*?upstream=(?P<up>[^ ]+)')


def distinct_uris(count: int) -> list[str]:
    """``count`` different small renditions (cheap to render, distinct cache keys)."""
    uris = []
    for i in range(count):
        folder, name = _IMAGES[i % len(_IMAGES)].rsplit("/", 1)
        uris.append(f"/{folder}/{24 + i}x{16 + i}c/{name}")
    return uris


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@dataclass
class Cluster:
    tmp_path: Path
    nodes: list[TofuProcess]
    nginx: subprocess.Popen | None
    port: int
    retired: list[TofuProcess] = field(default_factory=list)
    others: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.tmp_path / "nginx" / "access.log"

    def access_entries(self, start: int = 0) -> list[tuple[str, int, str]]:
        """(uri, status, upstream addresses) for each request nginx logged after byte ``start``."""
        with self.access_log.open("rb") as log:
            log.seek(start)
            text = log.read().decode()
        return [
            (m["uri"], int(m["status"]), m["up"])
            for m in (_ACCESS.search(line) for line in text.splitlines())
            if m
        ]

    def upstream(self, node: TofuProcess) -> str:
        return f"127.0.0.1:{node.port}"

    def logs(self) -> str:
        parts = [f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self._logs()]
        return "\n".join(parts)

    def _logs(self) -> list[Path]:
        return [*sorted(self.tmp_path.glob("tofu-*.log")), self.tmp_path / "nginx" / "error.log"]


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(workers=[1, 1])``: one tofu node per entry (with that many worker
    processes) behind nginx running deploy/nginx/nginx.conf; everything is stopped after."""
    clusters: list[Cluster] = []

    def make(workers: Sequence[int] = (1, 1)) -> Cluster:
        cluster = Cluster(tmp_path, nodes=[], nginx=None, port=free_port())
        clusters.append(cluster)  # registered first: whatever starts below gets stopped
        for count in workers:
            cluster.nodes.append(start_tofu(node_args(count), tmp_path, wait=False))
        conf = render_nginx_conf(tmp_path / "nginx", cluster.port, [n.port for n in cluster.nodes])
        with open(tmp_path / "nginx" / "stdout.log", "wb") as out:
            cluster.nginx = nginx = subprocess.Popen(
                nginx_command(conf, "-g", "daemon off;"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for node in cluster.nodes:
            wait_http(f"{node.url}/readyz", process=node.process)
        wait_http(f"{cluster.url}/nginx-health", process=nginx)
        return cluster

    yield make
    for cluster in clusters:
        for process in [*cluster.others, cluster.nginx]:
            if process is not None:
                stop_process(process)
        for node in cluster.nodes + cluster.retired:
            node.stop()


def node_metric(node: TofuProcess, name: str) -> float:
    """Sum of all samples of ``name`` on one node's /metrics."""
    return metric_sum(scrape(node.url), name)


async def test_uri_hashing_spreads_keys_and_pins_each_uri_to_one_node(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    uris = distinct_uris(48)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # each URI three times: the first renders, the rest must hit
            for uri in uris:
                async with session.get(cluster.url + uri) as response:
                    assert response.status == 200, (uri, await response.text())
                    await response.read()

    served_by: dict[str, set[str]] = defaultdict(set)
    for uri, status, upstream in cluster.access_entries():
        assert status == 200
        served_by[uri].add(upstream)
    assert set(served_by) == set(uris)
    split = {uri: upstreams for uri, upstreams in served_by.items() if len(upstreams) != 1}
    assert not split, f"URIs served by more than one node: {split}"

    per_node = Counter(next(iter(upstreams)) for upstreams in served_by.values())
    assert set(per_node) == {cluster.upstream(n) for n in cluster.nodes}, per_node
    # Consistent hashing is not a perfect split, but 48 keys must not all land on one side.
    assert min(per_node.values()) >= 8, per_node

    # The nodes agree with nginx: each rendered exactly its own URIs once, all repeats were hits.
    for node in cluster.nodes:
        mine = per_node[cluster.upstream(node)]
        assert node_metric(node, "tofu_renders_total") == mine
        assert node_metric(node, "tofu_requests_total") == 3 * mine


@dataclass
class Load:
    """Client traffic through the balancer: ``concurrency`` loops, bounded in time and count."""

    url: str
    uris: list[str]
    concurrency: int = 8
    max_seconds: float = 45.0
    max_requests: int = 20_000
    pause: float = 0.02  # per loop between requests: keeps the shared machine usable
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    async def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def loop(worker: int) -> None:
                i = worker
                while not self.stop.is_set() and time.monotonic() < deadline:
                    if self.sent >= self.max_requests:
                        return
                    uri = self.uris[i % len(self.uris)]
                    i += self.concurrency
                    try:
                        async with session.get(self.url + uri) as response:
                            body = await response.read()
                            self.statuses[response.status] += 1
                            if response.status != 200:
                                self.failures.append(f"{uri}: {response.status} {body[:200]!r}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.failures.append(f"{uri}: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(self.pause)

            await asyncio.gather(*(loop(w) for w in range(self.concurrency)))


@dataclass
class Drain:
    """What a node did between SIGTERM and its exit."""

    exit_code: int
    readyz: list[int] = field(default_factory=list)  # /readyz statuses, polled while draining
    images: list[tuple[int, str]] = field(default_factory=list)  # (status, Connection header)


def terminate(node: TofuProcess, probe_uri: str, timeout: float = 20.0) -> Drain:
    """SIGTERM the node's main process (as Docker or the kubelet would: one signal to PID 1,
    not the process group), watch it drain, and wait for its exit."""
    os.kill(node.process.pid, signal.SIGTERM)
    drain = Drain(exit_code=-1)
    deadline = time.monotonic() + timeout
    while node.process.poll() is None and time.monotonic() < deadline:
        drain.readyz.append(status_of(f"{node.url}/readyz"))
        # http.client asks for keep-alive (urllib would send Connection: close itself).
        connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=2)
        try:
            connection.request("GET", probe_uri)
            response = connection.getresponse()
            response.read()
            drain.images.append((response.status, response.headers.get("Connection", "")))
        except OSError:
            pass  # not accepting any more: the drain is over
        finally:
            connection.close()
        time.sleep(0.1)
    try:
        drain.exit_code = node.process.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"node on port {node.port} did not exit within {timeout}s after SIGTERM")
    return drain


async def _wait_routed_to(cluster: Cluster, node: TofuProcess, start: int) -> None:
    """Wait until nginx has sent the restarted node traffic again (its passive fail_timeout
    has expired), so that stopping the next node cannot leave nginx with no live upstream."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(
            status == 200 and up == cluster.upstream(node)
            for _, status, up in cluster.access_entries(start)
        ):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"nginx did not route to the restarted node on port {node.port}")


async def test_rolling_restart_loses_no_request(make_cluster: Callable[..., Cluster]) -> None:
    """Node A runs a master with two workers (the image's default shape), node B one process.
    Each in turn: SIGTERM -> drains (readyz 503, still serving, Connection: close) -> exit 0 ->
    started again on the same port -> ready -> back in nginx's rotation. Meanwhile 8 clients
    keep requesting through nginx, and every request must succeed."""
    workers = [2, 1]
    cluster = make_cluster(workers)
    uris = distinct_uris(24)
    load = Load(cluster.url, uris)
    traffic = asyncio.create_task(load.run())
    drains: list[Drain] = []
    try:
        await asyncio.sleep(1.0)
        for index, node in enumerate(list(cluster.nodes)):
            drain = await asyncio.to_thread(terminate, node, uris[0])
            drains.append(drain)
            cluster.retired.append(node)
            mark = cluster.access_log.stat().st_size
            restarted = await asyncio.to_thread(
                start_tofu, node_args(workers[index]), cluster.tmp_path, port=node.port
            )
            cluster.nodes[index] = restarted
            await asyncio.to_thread(wait_http, f"{restarted.url}/readyz", 20, restarted.process)
            await _wait_routed_to(cluster, restarted, mark)
        await asyncio.sleep(1.0)
    finally:
        load.stop.set()
        await traffic

    exits = [d.exit_code for d in drains]
    summary = f"{load.sent} requests, statuses {dict(load.statuses)}, exits {exits}"
    print(summary)
    assert exits == [0, 0], f"{summary}\n{cluster.logs()}"
    for drain in drains:
        assert 503 in drain.readyz, f"/readyz never said 503 while draining: {drain.readyz}"
        # Still serving while draining, but closing each connection after its response.
        assert drain.images, "no image was served during the drain"
        assert all(image == (200, "close") for image in drain.images), drain.images
    assert load.sent >= 200, summary
    assert not load.failures, f"{summary}; failures:\n" + "\n".join(load.failures[:20])
    assert set(load.statuses) == {200}, summary


def start_varnish(cluster: Cluster) -> tuple[subprocess.Popen, str]:
    """varnishd in the foreground (stopped by PID like the rest), in front of the cluster."""
    port = free_port()
    directory = cluster.tmp_path / "varnish"
    vcl = render_vcl(directory, cluster.port)
    command = [VARNISHD, "-F", "-a", f"127.0.0.1:{port}", "-f", str(vcl)]
    # -j none: no privilege separation, so it runs as (and reads files as) this user.
    command += ["-j", "none", "-n", str(directory / "work"), "-s", "malloc,64m"]
    with open(directory / "varnishd.log", "wb") as out:
        varnish = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return varnish, f"http://127.0.0.1:{port}"


async def test_varnish_in_front_caches_renditions(make_cluster: Callable[..., Cluster]) -> None:
    """deploy/varnish/default.vcl in front of the balancer: a repeat is a hit (two ids in
    X-Varnish, an Age header), health is never cached, the query string and the browser's
    exact Accept header do not split the cache."""
    cluster = make_cluster()
    varnish, url = await asyncio.to_thread(start_varnish, cluster)
    cluster.others.append(varnish)
    await asyncio.to_thread(wait_http, f"{url}/healthz", 30, varnish)

    async with aiohttp.ClientSession() as session:

        async def get(path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
            async with session.get(url + path, headers=headers) as response:
                return response.status, dict(response.headers), await response.read()

        path = "/recipes/1/280x194c/cups.jpg"
        status, first, body = await get(path)
        assert status == 200 and first["X-Cache"] == "MISS"
        assert len(first["X-Varnish"].split()) == 1
        status, second, again = await get(path + "?cache-buster=1")
        assert status == 200 and second["X-Cache"] == "HIT", second
        assert len(second["X-Varnish"].split()) == 2  # this request's id and the object's
        assert "Age" in second and again == body
        assert second["Cache-Control"] == first["Cache-Control"]

        # Negotiated (no format in the URL): browsers' different Accept strings share a variant.
        negotiated = "/recipes/2/200x100c/autumn.jpg"
        chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
        firefox = "image/avif,image/webp,*/*"
        status, avif, _ = await get(negotiated, Accept=chrome)
        assert status == 200 and avif["Content-Type"] == "image/avif" and avif["X-Cache"] == "MISS"
        status, hit, _ = await get(negotiated, Accept=firefox)
        assert hit["X-Cache"] == "HIT" and hit["Content-Type"] == "image/avif"
        status, plain, _ = await get(negotiated, Accept="image/*")
        assert plain["Content-Type"] == "image/jpeg" and plain["X-Cache"] == "MISS"

        for _ in range(2):
            status, ready, _ = await get("/readyz")
            assert status == 200 and ready["X-Cache"] == "MISS"

    # Each rendition variant reached the nodes once: the repeats were answered by Varnish.
    images = [uri for uri, _, _ in cluster.access_entries() if uri not in ("/healthz", "/readyz")]
    assert sorted(images) == sorted([path, negotiated, negotiated])
