"""Readiness is about this node only (issue 16): an origin that is down, from the start or
mid-run, never makes a node unready. Cached renditions keep being served, uncached ones fail
fast with a clear 502/504, and the origin's state goes to ``tofu_origin_up`` and ``/status``
on the ops port. A render pool that no longer finishes renders does make the node unready.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.metrics import metric, scrape
from tests.support.s3 import SeaweedFS, start_seaweedfs, stop_seaweedfs
from tests.support.servers import SAMPLES, TofuProcess, free_port
from tofu import render_pool
from tofu.signing import signed_path

SECRET = "readiness-secret-0123456789abcdefghij"
PHOTO = SAMPLES / "recipes/1203423/5366e857.jpg"
FETCH_TIMEOUT = 2.0
MARGIN = 3.0  # seconds of slack on a loaded machine


def get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def image(width: int, recipe: int = 1) -> str:
    return signed_path(f"/recipes/{recipe}/{width}x194c/photo.jpg", SECRET)


@pytest.fixture
def weed(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, so that the test can stop it."""
    server = start_seaweedfs(tmp_path / "weed")
    server.client().create_bucket(Bucket="photos")
    for key in ("recipes/1/photo.jpg", "recipes/2/photo.jpg"):
        server.client().put_object(Bucket="photos", Key=key, Body=PHOTO.read_bytes())
    yield server
    if server.process.poll() is None:
        stop_seaweedfs(server)


def wait_for(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_origin_stopped_mid_run_keeps_the_node_ready(
    weed: SeaweedFS, tofu_process, tmp_path: Path
) -> None:
    ops = f"127.0.0.1:{free_port()}"
    tofu: TofuProcess = tofu_process(
        [
            "--origin",
            f"s3://photos?endpoint_url={weed.endpoint_url}",
            "--secret",
            SECRET,
            "--ops-listen",
            ops,
            "--fetch-timeout",
            str(FETCH_TIMEOUT),
            "--workers",
            "1",
        ],
        env=weed.env(),
    )
    ops_url = f"http://{ops}"
    assert get(tofu.url + image(280))[0] == 200
    wait_for(
        lambda: 'tofu_origin_up{origin="default"' in scrape(ops_url) and metric_up(ops_url) == 1,
        10 + MARGIN,
        "tofu_origin_up never said the origin is up",
    )
    stop_seaweedfs(weed)

    # Uncached: a fast, clear 502 or 504; cached: served; the node stays ready throughout.
    started = time.monotonic()
    status, body = get(tofu.url + image(280, recipe=2))
    assert status in (502, 504), body
    assert body.strip() and b"\n" not in body.strip()
    assert time.monotonic() - started < FETCH_TIMEOUT + MARGIN
    assert get(tofu.url + image(280))[0] == 200
    deadline = time.monotonic() + 12  # longer than a probe period: the probe ran meanwhile
    while time.monotonic() < deadline:
        assert get(tofu.url + "/readyz")[0] == 200, "unready because the origin is down"
        assert get(ops_url + "/readyz")[0] == 200
        time.sleep(0.5)
    wait_for(lambda: metric_up(ops_url) == 0, 10 + MARGIN, "tofu_origin_up still 1")
    status, body = get(ops_url + "/status")
    text = body.decode()
    assert status == 200 and "default" in text and "down" in text, text
    assert "ready" in text.splitlines()[0]
    status, body = get(tofu.url + "/status")  # detail for operators: the ops port only
    assert status >= 400 and b"origins" not in body


def metric_up(ops_url: str) -> float:
    text = scrape(ops_url)
    return sum(
        value
        for line in text.splitlines()
        if line.startswith("tofu_origin_up{")
        for value in [float(line.rsplit(" ", 1)[1])]
    )


def test_one_origin_unreachable_from_the_start(tofu_process) -> None:
    dead = f"http://127.0.0.1:{free_port()}/base/"
    ops = f"127.0.0.1:{free_port()}"
    tofu: TofuProcess = tofu_process(
        [
            "--origin",
            str(SAMPLES),
            "--origin",
            f"dead/={dead}",
            "--sizes",
            "280",
            "--ops-listen",
            ops,
            "--workers",
            "1",
        ],
    )
    assert get(tofu.url + "/readyz")[0] == 200
    assert get(tofu.url + "/recipes/1203423/280/5366e857.jpg")[0] == 200
    status, body = get(tofu.url + "/dead/280/x.jpg")
    assert status == 502, body
    ops_url = f"http://{ops}"
    wait_for(
        lambda: metric(scrape(ops_url), "tofu_origin_up", f'origin="dead/",source="{dead}"') == 0,
        10 + MARGIN,
        "the dead origin is not reported down",
    )
    assert (
        metric(scrape(ops_url), "tofu_origin_up", 'origin="default",source="' + str(SAMPLES) + '"')
        == 1
    )
    assert get(tofu.url + "/readyz")[0] == 200


async def test_a_wedged_render_pool_makes_the_node_unready(
    make_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render that ignores the deadline's kill keeps its slot: once every slot has been
    held for longer than two deadlines with nothing finishing, the node is not ready."""
    release = threading.Event()

    def stuck(*args: object, **kwargs: object) -> object:
        release.wait(30)
        raise RuntimeError("released")

    monkeypatch.setattr(render_pool, "execute", stuck)
    client = await make_client(origin=(str(SAMPLES),), dev=True, max_renders=1, request_timeout=0.5)
    async with client.get("/readyz") as response:
        assert response.status == 200
    try:
        async with client.get("/recipes/1203423/280/5366e857.jpg") as response:
            assert response.status == 504  # at the request's deadline, the thread still held
        await asyncio.sleep(2 * 0.5 + 0.5)
        async with client.get("/readyz") as response:
            assert response.status == 503
            assert "render pool stalled" in (await response.text())
    finally:
        release.set()
    for _ in range(50):  # the thread lets go: ready again
        async with client.get("/readyz") as response:
            if response.status == 200:
                break
        await asyncio.sleep(0.1)
    assert response.status == 200
