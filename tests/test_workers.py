"""One node with several worker processes: routing misses to the owner worker, the internal
peer socket, what each worker counts, and process metrics.

These run a real ``tofu serve --workers 2``. The kernel spreads connections over the workers
(SO_REUSEPORT), so each request goes over a new connection and a few repeats reach both.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.metrics import metric_sum, samples, scrape
from tests.support.servers import SAMPLES, TofuProcess, start_tofu
from tofu.signing import signed_path

SECRET = "workers-test-secret-0123456789-abcdefghijklmnop"
PHOTO = "recipes/1203423/5366e857.jpg"
REPEATS = 12  # per URL: both workers receive some (each a new connection) but for 2**-11


def worker_args(origin: Path) -> list[str]:
    return [
        "--origin",
        str(origin),
        "--secret",
        SECRET,
        "--sizes",
        "280,280x194s",
        "--workers",
        "2",
        "--drain-seconds",
        "0",
    ]


def wait_for_workers(node: TofuProcess, count: int = 2) -> None:
    """Until every worker listens (each logs it once its peer socket and the port are open):
    a worker that asks a sibling still starting renders around it, right but not tested here."""
    deadline = time.monotonic() + 30
    while node.log().count("tofu listening") < count:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TofuProcess]:
    """A 2-worker node in signed + allowlist mode over a copy of samples/ with one more photo,
    ``recipes/1/wood.jpg`` (the issue's reproduction)."""
    tmp = tmp_path_factory.mktemp("workers")
    origin = tmp / "origin"
    shutil.copytree(SAMPLES, origin)
    shutil.copy(SAMPLES / "recipes" / "1" / "cups.jpg", origin / "recipes" / "1" / "wood.jpg")
    tofu = start_tofu(worker_args(origin), tmp)
    try:
        wait_for_workers(tofu)
        yield tofu
    finally:
        tofu.stop()


def get(node: TofuProcess, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """``GET target`` sent byte for byte on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def signed(key: str, token: str) -> str:
    folder, name = key.rsplit("/", 1)
    return signed_path(f"/{folder}/{token}/{name}", SECRET)


def test_raw_fragment_in_the_target_cannot_poison_the_cache(node: TofuProcess) -> None:
    """Issue 8, finding 2: ``#p`` sent raw used to reach the owner worker as ``wood.jpg`` (its
    HTTP client dropped the fragment), and the asking worker cached that image under the key
    ``wood.jpg#p``, which ``%23p`` then served. Every path must treat it as the key it is."""
    assert get(node, "/recipes/1/280/wood.jpg")[0] == 200
    raw = [get(node, "/recipes/1/280/wood.jpg#p") for _ in range(REPEATS)]
    assert [status for status, _, _ in raw] == [404] * REPEATS
    encoded = [get(node, "/recipes/1/280/wood.jpg%23p") for _ in range(REPEATS)]
    assert [status for status, _, _ in encoded] == [404] * REPEATS
    assert encoded[0][2] == b"no original at 'recipes/1/wood.jpg#p'\n"


def test_every_spelling_of_a_rendition_has_one_owner(node: TofuProcess) -> None:
    """Finding 10: routing hashed the raw path, so the signature and the spelling of a size
    (``280x194`` / ``280x194s`` / ``140x97@2x``) picked different owners and one rendition was
    rendered by both workers. Routing is on the canonical rendition: one render per node."""
    before = scrape(node.url)
    targets = [
        "/recipes/2/280x194s/autumn.jpg",  # unsigned, an allowed size, canonically spelt
        signed("recipes/2/autumn.jpg", "280x194"),
        signed("recipes/2/autumn.jpg", "280x194s"),
        signed("recipes/2/autumn.jpg", "140x97@2x"),
        signed("recipes/2/autumn.jpg", "140x97s@2x"),
    ]
    bodies = set()
    for _ in range(REPEATS // 2):
        for target in targets:
            status, _, body = get(node, target)
            assert status == 200, (target, body)
            bodies.add(body)
    assert len(bodies) == 1
    after = scrape(node.url)
    assert metric_sum(after, "tofu_renders_total") - metric_sum(before, "tofu_renders_total") == 1


def test_peer_header_from_a_client_changes_nothing(node: TofuProcess) -> None:
    """Finding 5: ``X-Tofu-Peer: 1`` on the public port used to skip routing, leave the
    request out of tofu_requests_total and leak the internal X-Tofu-Version header. Peer
    requests now exist only on the internal Unix socket."""
    before = scrape(node.url)
    target = signed(PHOTO, "300x200c")
    statuses = []
    for _ in range(REPEATS):
        status, headers, body = get(node, target, **{"X-Tofu-Peer": "1"})
        statuses.append(status)
        assert not any("tofu" in name.lower() for name in headers), headers
        assert headers["Content-Type"] == "image/jpeg" and body
    assert statuses == [200] * REPEATS
    after = scrape(node.url)

    def delta(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    assert delta("tofu_requests_total") == REPEATS  # counted like any client request
    assert delta("tofu_renders_total") == 1  # and routed to its owner like any other


def test_a_routed_miss_is_counted_once(node: TofuProcess) -> None:
    """Finding 13: a miss routed to the owner was counted by both workers, which skewed the
    hit ratio. Each client request counts once in the result cache: a hit when a cached
    rendition answered it (its worker's or the owner's), a miss when it had to be produced."""
    before = scrape(node.url)
    renditions = [signed(PHOTO, f"{width}x{width // 2}c") for width in (210, 220, 230, 240)]
    repeats = 5
    for target in renditions:
        for _ in range(repeats):
            assert get(node, target)[0] == 200
    after = scrape(node.url)

    def delta(name: str, **labels: str) -> float:
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    requests = len(renditions) * repeats
    hits = delta("tofu_cache_hits_total", cache="result")
    misses = delta("tofu_cache_misses_total", cache="result")
    assert (hits, misses) == (requests - len(renditions), len(renditions))
    assert delta("tofu_renders_total") == len(renditions)
    assert delta("tofu_requests_total") == requests


def worker_pids(master: int) -> set[int]:
    """The child processes of ``master`` (its workers), from /proc."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{master}\n" in status:
            children.add(int(entry))
    return children


def test_each_worker_exports_its_memory_and_cpu(node: TofuProcess) -> None:
    """Finding 12: in multiprocess mode the process collector's output was dropped, so with
    several workers /metrics had no memory figure at all. Each worker exports its RSS and
    CPU time labelled by pid; summed, they are the node's."""
    pids = worker_pids(node.process.pid)
    assert len(pids) == 2
    text = scrape(node.url)
    for name in ("tofu_worker_resident_memory_bytes", "tofu_worker_cpu_seconds"):
        found = {int(labels["pid"]): value for n, labels, value in samples(text) if n == name}
        assert set(found) == pids, (name, found)
        assert all(value > 0 for value in found.values()), found
    rss = metric_sum(text, "tofu_worker_resident_memory_bytes")
    assert rss > 2 * 20e6  # two Python processes with libvips and aiohttp loaded


def test_stale_multiprocess_metrics_are_wiped_at_start(tmp_path: Path) -> None:
    """Finding 12: an operator-set PROMETHEUS_MULTIPROC_DIR kept the previous run's files, and
    their counters were merged into the new run's. The master removes prometheus-client's
    files (and only those) before it starts the workers."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    previous_run = (
        "from prometheus_client import Counter\n"
        "Counter('tofu_renders', 'renditions rendered').inc(1000)\n"
    )
    subprocess.run([sys.executable, "-c", previous_run], env={**os.environ, **env}, check=True)
    assert any(p.name.startswith("counter_") for p in directory.iterdir())
    (directory / "operator-notes.txt").write_text("not prometheus-client's\n")

    tofu = start_tofu(worker_args(SAMPLES), tmp_path, env=env)
    try:
        wait_for_workers(tofu)
        assert get(tofu, "/recipes/1/280/cups.jpg")[0] == 200
        text = scrape(tofu.url)
        assert metric_sum(text, "tofu_renders_total") == 1
        assert (directory / "operator-notes.txt").exists()
    finally:
        assert tofu.stop() == 0
