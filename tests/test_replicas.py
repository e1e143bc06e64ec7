"""Several origins on one node, replica failover and hedged fetches, end to end: ``tofu
serve`` against two real SeaweedFS servers (primary and replica), an HTTP origin and a disk
origin, with faults injected on the loopback by an HTTP proxy in front of the primary
(``FaultProxy``: down, 503s, or every other GET held 2 s).

Assertions are on statuses, counts and which source answered, never on wall-clock times; the
hedging test prints the p50/p99 it measured (``pytest -s``), which docs/origins.md quotes.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.faults import FaultProxy, FileServer
from tests.support.metrics import metric, metric_sum, scrape
from tests.support.s3 import SeaweedFS, s3_env, start_seaweedfs, stop_seaweedfs
from tests.support.servers import ROOT, SAMPLES, TofuProcess

BUCKET = "tofu-replicated"
JPEG = (SAMPLES / "recipes/1203423/5366e857.jpg").read_bytes()
PRIMARY = "primary"
REPLICA = "replica"


@pytest.fixture(scope="module")
def replica() -> Iterator[SeaweedFS]:
    """A second SeaweedFS, the replica (the session's server is the primary)."""
    with tempfile.TemporaryDirectory(prefix="tofu-replica-") as directory:
        server = start_seaweedfs(Path(directory))
        try:
            yield server
        finally:
            stop_seaweedfs(server)


@pytest.fixture(scope="module")
def buckets(seaweedfs: SeaweedFS, replica: SeaweedFS) -> Callable[[str, bool], None]:
    """``put(key, on_primary=True)``: a JPEG at ``key`` on the replica, and on the primary
    too unless ``on_primary`` is False."""
    clients = {PRIMARY: seaweedfs.client(), REPLICA: replica.client()}
    for client in clients.values():
        client.create_bucket(Bucket=BUCKET)

    def put(key: str, on_primary: bool = True) -> None:
        clients[REPLICA].put_object(Bucket=BUCKET, Key=key, Body=JPEG)
        if on_primary:
            clients[PRIMARY].put_object(Bucket=BUCKET, Key=key, Body=JPEG)

    return put


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    server = FaultProxy(seaweedfs.endpoint_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def photos_origin(proxy: FaultProxy, replica: SeaweedFS) -> str:
    return (
        f"photos/=s3://{BUCKET}/photos?endpoint_url={proxy.url}"
        f"|s3://{BUCKET}/photos?endpoint_url={replica.endpoint_url}"
    )


def source_label(endpoint_url: str) -> str:
    return f"s3://{BUCKET}/photos at {endpoint_url.removeprefix('http://')}"


@pytest.fixture
def start(
    tofu_process: Callable[..., TofuProcess], proxy: FaultProxy, replica: SeaweedFS
) -> Callable[..., TofuProcess]:
    def run(*extra: str) -> TofuProcess:
        args = ["--origin", photos_origin(proxy, replica), "--dev", "--workers", "1"]
        args += ["--not-found-ttl", "0", "--drain-seconds", "0", *extra]
        return tofu_process(args, env=s3_env())

    return run


def get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def answers(text: str, endpoint_url: str) -> float:
    return metric_sum(
        text, "tofu_origin_answers_total", origin="photos/", source=source_label(endpoint_url)
    )


# --- several origins side by side ----------------------------------------------------------


def test_each_prefix_from_its_own_source(
    start: Callable[..., TofuProcess],
    buckets: Callable[..., None],
    proxy: FaultProxy,
    replica: SeaweedFS,
    s3_bucket: str,
    seaweedfs: SeaweedFS,
    file_server: FileServer,
) -> None:
    buckets("photos/side/1.jpg")
    (file_server.root / "files" / "a").mkdir(parents=True)
    (file_server.root / "files" / "a" / "y.jpg").write_bytes(JPEG)
    avatars = f"avatars/=s3://{s3_bucket}/recipes?endpoint_url={seaweedfs.endpoint_url}"
    static = f"static/={file_server.url}/files/"
    tofu = start("--origin", avatars, "--origin", static, "--origin", str(SAMPLES))
    for path in (
        "/photos/side/280/1.jpg",  # photos/side/1.jpg -> s3://tofu-replicated/photos/side/1.jpg
        "/avatars/1203423/280/5366e857.jpg",  # -> s3://tofu-samples/recipes/1203423/...
        "/static/a/280/y.jpg",  # -> {file server}/files/a/y.jpg
        "/logos/64x64c/rgba.png",  # the default: samples/logos/rgba.png
    ):
        assert get(tofu.url + path)[0] == 200, path
    text = scrape(tofu.url)
    assert answers(text, proxy.url) == 1 and proxy.gets == 1
    assert metric_sum(text, "tofu_origin_answers_total", origin="avatars/") == 1
    assert metric_sum(text, "tofu_origin_answers_total", origin="static/") == 1
    assert metric_sum(text, "tofu_origin_answers_total", origin="default") == 1
    assert file_server.paths == ["/files/a/y.jpg"]
    assert metric(text, "tofu_origin_fetch_seconds_count", 'origin="static/"') == 1
    with urllib.request.urlopen(tofu.url + "/readyz", timeout=10) as response:
        assert response.status == 200

    described = subprocess.run(
        [
            sys.executable,
            "-m",
            "tofu",
            "config",
            "--dev",
            *tofu.args[tofu.args.index("--origin") :],
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    table = json.loads(described.stdout)["origins"]
    assert [(o["prefix"], len(o["sources"])) for o in table] == [
        ("photos/", 2),
        ("avatars/", 1),
        ("static/", 1),
        ("(default)", 1),
    ]


# --- failover ------------------------------------------------------------------------------


def test_primary_stopped_is_served_by_the_replica(
    start: Callable[..., TofuProcess],
    buckets: Callable[..., None],
    proxy: FaultProxy,
    replica: SeaweedFS,
) -> None:
    buckets("photos/down/1.jpg")
    tofu = start()
    proxy.down()  # connections to the primary are refused
    assert get(tofu.url + "/photos/down/280/1.jpg")[0] == 200
    text = scrape(tofu.url)
    assert answers(text, replica.endpoint_url) == 1
    assert metric(text, "tofu_origin_failovers_total", 'origin="photos/"') == 1
    with urllib.request.urlopen(tofu.url + "/readyz", timeout=10) as response:
        assert response.status == 200  # one source of each origin answers


def test_primary_503s_are_served_by_the_replica(
    start: Callable[..., TofuProcess],
    buckets: Callable[..., None],
    proxy: FaultProxy,
    replica: SeaweedFS,
) -> None:
    buckets("photos/503/1.jpg")
    tofu = start("--fetch-retries", "1")
    proxy.status = 503
    assert get(tofu.url + "/photos/503/280/1.jpg")[0] == 200
    assert proxy.gets == 2  # the primary's own retry, then the replica
    text = scrape(tofu.url)
    assert answers(text, replica.endpoint_url) == 1
    assert answers(text, proxy.url) == 0


def test_primary_404_is_final(
    start: Callable[..., TofuProcess],
    buckets: Callable[..., None],
    proxy: FaultProxy,
    replica: SeaweedFS,
) -> None:
    buckets("photos/lagging/1.jpg", on_primary=False)  # only the replica has it
    tofu = start()
    assert get(tofu.url + "/photos/lagging/280/1.jpg")[0] == 404
    assert proxy.gets == 1
    text = scrape(tofu.url)
    assert answers(text, replica.endpoint_url) == 0
    assert metric(text, "tofu_origin_failovers_total", 'origin="photos/"') == 0
    assert metric(text, "tofu_origin_fetch_errors_total", 'origin="photos/",kind="not_found"') == 1


def test_a_failing_primary_is_skipped_for_a_while(
    start: Callable[..., TofuProcess],
    buckets: Callable[..., None],
    proxy: FaultProxy,
    replica: SeaweedFS,
) -> None:
    for n in range(8):
        buckets(f"photos/breaker/{n}.jpg")
    tofu = start("--fetch-retries", "0")
    proxy.status = 503
    for n in range(8):
        assert get(f"{tofu.url}/photos/breaker/280/{n}.jpg")[0] == 200
    # Five failures in a row open the breaker: the next fetches go straight to the replica.
    assert proxy.gets == 5
    text = scrape(tofu.url)
    assert answers(text, replica.endpoint_url) == 8
    assert metric(text, "tofu_origin_failovers_total", 'origin="photos/"') == 8


# --- hedging -------------------------------------------------------------------------------

FRESH = 20  # fresh keys per run
DELAY = 2.0


def _run(tofu: TofuProcess, proxy: FaultProxy, name: str) -> tuple[list[float], str]:
    """``FRESH`` fresh fetches, 4 at a time, while the proxy holds every other GET 2 s."""
    proxy.reset()
    proxy.delay_every = (2, DELAY)
    paths = [f"{tofu.url}/photos/hedge/{name}/280/{n}.jpg" for n in range(FRESH)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(get, paths))
    assert [status for status, _ in results] == [200] * FRESH
    seconds = sorted(s for _, s in results)
    p50, p99 = statistics.median(seconds), seconds[min(FRESH - 1, int(0.99 * FRESH))]
    text = scrape(tofu.url)
    outcomes = {o: hedges(text, o) for o in ("won", "lost", "failed", "over_budget")}
    print(
        f"\nhedging {name}: {FRESH} fresh fetches, p50 {p50:.3f} s, p99 {p99:.3f} s, "
        f"{proxy.delayed} GETs held, hedges {outcomes}"
    )
    return seconds, text


def hedges(text: str, outcome: str) -> float:
    return metric(text, "tofu_origin_hedges_total", f'origin="photos/",outcome="{outcome}"')


@pytest.fixture(scope="module")
def hedge_keys(buckets: Callable[..., None]) -> None:
    for name in ("off", "on", "budget"):
        for n in range(FRESH):
            buckets(f"photos/hedge/{name}/{n}.jpg")


def test_without_hedging_every_other_fetch_waits(
    start: Callable[..., TofuProcess], proxy: FaultProxy, hedge_keys: None
) -> None:
    tofu = start("--hedge-after", "0")
    seconds, text = _run(tofu, proxy, "off")
    assert proxy.delayed == FRESH // 2
    assert answers(text, proxy.url) == FRESH  # every fetch waited for the primary
    assert sum(hedges(text, o) for o in ("won", "lost", "failed", "over_budget")) == 0
    assert sum(s >= DELAY for s in seconds) == FRESH // 2


def test_hedging_sends_the_slow_half_to_the_replica(
    start: Callable[..., TofuProcess], proxy: FaultProxy, replica: SeaweedFS, hedge_keys: None
) -> None:
    tofu = start("--hedge-after", "100", "--hedge-budget", "100")
    seconds, text = _run(tofu, proxy, "on")
    assert proxy.delayed == FRESH // 2
    won = hedges(text, "won")
    # Every held GET was hedged and the replica answered first (a GET that merely took over
    # 100 ms on a busy machine may have been hedged too, won or lost).
    assert won >= FRESH // 2
    assert answers(text, replica.endpoint_url) == won
    assert answers(text, proxy.url) == FRESH - won
    assert hedges(text, "over_budget") == 0
    assert sum(s >= DELAY for s in seconds) < FRESH // 2


def test_hedges_stay_within_the_default_budget(
    start: Callable[..., TofuProcess], proxy: FaultProxy, hedge_keys: None
) -> None:
    """20 fetches at 10 % earn exactly 2 hedges, and both are sent: the 10th fetch earns the
    first (a held GET starts after it, the 12th GET at the latest, and finds it), the 20th GET
    is held and starts after every fetch has earned its share, so it finds the second. Every
    other held GET is refused for the budget."""
    tofu = start("--hedge-after", "100")  # --hedge-budget 10
    _, text = _run(tofu, proxy, "budget")
    assert proxy.delayed == FRESH // 2
    sent = hedges(text, "won") + hedges(text, "lost") + hedges(text, "failed")
    assert sent == FRESH // 10
    # (A GET that merely took over 100 ms on a busy machine may have asked for a hedge too.)
    assert hedges(text, "over_budget") >= FRESH // 2 - sent


def test_adaptive_delay_waits_for_enough_samples(
    start: Callable[..., TofuProcess], proxy: FaultProxy, buckets: Callable[..., None]
) -> None:
    """By default the delay is the recent p95, and nothing is hedged before there are 20
    samples to take it from."""
    for n in range(5):
        buckets(f"photos/adaptive/{n}.jpg")
    tofu = start("--hedge-budget", "100")
    proxy.delay_every = (2, 0.5)
    for n in range(5):
        assert get(f"{tofu.url}/photos/adaptive/280/{n}.jpg")[0] == 200
    text = scrape(tofu.url)
    assert sum(hedges(text, o) for o in ("won", "lost", "failed", "over_budget")) == 0
