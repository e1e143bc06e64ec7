"""Admission control, deadlines and source limits over HTTP; several workers on one port."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pyvips
from aiohttp.test_utils import RawTestServer, TestClient

from tests.support.images import png_claiming
from tests.support.metrics import metric
from tests.support.origins import CountingOrigin
from tests.support.servers import SAMPLES
from tofu.config import Config
from tofu.peers import Peers
from tofu.server import create_app
from tofu.transform import Size, Transform


async def test_overload_sheds_with_503_and_retry_after(make_client, tmp_path):
    origin = CountingOrigin(SAMPLES, delay=0.5)
    client = await make_client(origin, origin=(str(SAMPLES),), dev=True, max_renders=1, max_queue=1)
    urls = [f"/recipes/1203423/{width}/5366e857.jpg" for width in range(100, 110)]
    responses = await asyncio.gather(*(client.get(url) for url in urls))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) == 2  # one rendering, one queued
    assert statuses.count(503) == 8
    shed = next(r for r in responses if r.status == 503)
    assert shed.headers["Retry-After"] == "1"
    assert shed.headers["Cache-Control"] == "no-store"
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_shed_total") == 8
    # Not stuck afterwards: the next request renders.
    assert (await client.get("/recipes/1203423/120/5366e857.jpg")).status == 200


async def test_cache_hits_are_served_while_renders_are_saturated(make_client):
    origin = CountingOrigin(SAMPLES, delay=0.0)
    client = await make_client(
        origin, origin=(str(SAMPLES),), dev=True, max_renders=1, max_queue=0, originals_cache_size=0
    )
    hot = "/recipes/1203423/280x194c/5366e857.jpg"
    assert (await client.get(hot)).status == 200
    origin.delay = 1.0
    slow = asyncio.create_task(client.get("/recipes/1203423/300/5366e857.jpg"))
    await asyncio.sleep(0.2)
    assert (await client.get("/recipes/1203423/301/5366e857.jpg")).status == 503
    assert (await client.get(hot)).status == 200  # the hit path is never shed
    assert (await slow).status == 200


async def test_request_deadline_gives_504(make_client):
    origin = CountingOrigin(SAMPLES, delay=3.0)
    client = await make_client(origin, origin=(str(SAMPLES),), dev=True, request_timeout=0.3)
    response = await client.get("/recipes/1203423/280/5366e857.jpg")
    assert response.status == 504
    assert "0.3" in await response.text()


async def test_png_bomb_is_refused_from_its_header(make_client, tmp_path: Path):
    bomb = png_claiming(30000, 30000)
    assert len(bomb) < 100_000
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bomb.png").write_bytes(bomb)
    client = await make_client(origin=(str(tmp_path),), dev=True)
    response = await client.get("/b/280/bomb.png")
    assert response.status == 422
    assert "30000x30000" in await response.text()
    text = await (await client.get("/metrics")).text()
    # libvips never allocated the 900 MP image (it would need ~900 MB).
    assert metric(text, "process_resident_memory_bytes") < 500e6


async def test_oversized_original_is_refused(make_client, tmp_path: Path):
    (tmp_path / "b").mkdir()
    pyvips.Image.black(64, 64).jpegsave(str(tmp_path / "b" / "small.jpg"))
    client = await make_client(origin=(str(tmp_path),), dev=True, max_source_bytes=100)
    response = await client.get("/b/32/small.jpg")
    assert response.status == 422
    assert "limit" in await response.text()


def test_workers_share_one_port_and_metrics_cover_all(tofu_process):
    tofu = tofu_process(
        ["--origin", str(SAMPLES), "--dev", "--workers", "2", "--drain-seconds", "0"]
    )
    for width in range(100, 140):
        with urllib.request.urlopen(f"{tofu.url}/recipes/1203423/{width}/5366e857.jpg") as r:
            assert r.status == 200
    with urllib.request.urlopen(f"{tofu.url}/metrics") as r:
        text = r.read().decode()
    # Each worker renders what it receives; /metrics on any worker sums both.
    assert metric(text, "tofu_renders_total") == 40
    # Each miss was rendered by its owner: here, or by the sibling it was routed to ("peer").
    assert (
        metric(text, "tofu_requests_total", 'cache="miss",status="200"')
        + metric(text, "tofu_requests_total", 'cache="peer",status="200"')
        == 40
    )
    assert tofu.stop() == 0


def test_workers_render_each_rendition_once_by_routing_misses_to_its_owner(tofu_process):
    tofu = tofu_process(
        ["--origin", str(SAMPLES), "--dev", "--workers", "2", "--drain-seconds", "0"]
    )
    # Both workers up (each logs this once its sibling socket and the port are open); a worker
    # that asked a sibling still starting would render around it, which is right but not this.
    deadline = time.monotonic() + 20
    while tofu.log().count("tofu listening") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    urls = [f"{tofu.url}/recipes/1203423/{width}/5366e857.jpg" for width in (150, 151, 152)]
    bodies: dict[str, set[bytes]] = {url: set() for url in urls}
    for _ in range(10):  # a new connection each time: SO_REUSEPORT spreads them over workers
        for url in urls:
            with urllib.request.urlopen(url) as response:
                bodies[url].add(response.read())
    assert all(len(found) == 1 for found in bodies.values())
    with urllib.request.urlopen(f"{tofu.url}/metrics") as r:
        text = r.read().decode()
    assert metric(text, "tofu_renders_total") == 3  # not once per worker
    assert metric(text, "tofu_origin_fetches_total") <= 2  # one per worker at most
    served = sum(
        metric(text, "tofu_requests_total", f'cache="{cache}",status="200"')
        for cache in ("hit", "miss", "peer")
        if f'cache="{cache}",status="200"' in text
    )
    assert served == 30  # sibling requests are not counted as client requests
    for _ in range(6):  # errors come back from the owner as they are
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{tofu.url}/nope/150/missing.jpg")
        assert missing.value.code == 404
        assert missing.value.read() == b"no original at 'nope/missing.jpg'\n"
    assert tofu.stop() == 0


async def test_unreachable_owner_is_rendered_around(tmp_path):
    peers = Peers(0, [str(tmp_path / "me.sock"), str(tmp_path / "gone.sock")])
    app = create_app(Config(origin=(str(SAMPLES),), dev=True, workers=2), peers=peers)
    client = TestClient(RawTestServer(app.handle))
    await client.start_server()
    try:
        key = "recipes/1203423/5366e857.jpg"
        widths = [w for w in range(100, 110) if peers.owner(Transform(key, Size(w, None)), None)]
        owned_elsewhere = [f"/recipes/1203423/{width}/5366e857.jpg" for width in widths]
        assert owned_elsewhere  # the hash sends some of them to the missing worker
        for path in owned_elsewhere:
            response = await client.get(path, headers={"Accept": "*/*"})
            assert response.status == 200
        text = await (await client.get("/metrics")).text()
        assert metric(text, "tofu_renders_total") == len(owned_elsewhere)
        assert metric(text, "tofu_peer_fetches_total") == 0
    finally:
        await client.close()
        await app.close()
