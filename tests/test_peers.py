"""The worker-to-worker protocol (tofu.peers), in process: the canonical wire form of a
rendition, owner choice, the owner's handler on a real Unix socket, and the one deadline of a
client request when the owner cannot help."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from tests.support.origins import CountingOrigin
from tests.support.servers import SAMPLES
from tofu.config import Config
from tofu.errors import NotFound
from tofu.negotiate import Negotiated, Negotiator
from tofu.peers import (
    RENDER_PATH,
    TIMEOUT_HEADER,
    PeerHandler,
    Peers,
    decode_rendition,
    encode_rendition,
    owner_of,
)
from tofu.server import App, create_app
from tofu.transform import ImageFormat, Transform
from tofu.urls import parse_path

PHOTO_KEY = "recipes/1203423/5366e857.jpg"
TOKENS = ["280", "x200", "650s", "280x194c", "280x194a", "280x194f30-60", "750x500cq60u",
          "140@2x.webp", "40c.png", "100x100cq1.avif", "x90@1.5x.jpg"]  # fmt: skip
KEYS = [PHOTO_KEY, "a/b#frag.jpg", "ünï/çødé.png", "x/" + "long" * 500 + ".jpg"]


def transform(key: str, token: str) -> Transform:
    folder, name = key.rsplit("/", 1)
    path = "/".join(["", folder, token, name]).replace("#", "%23")
    return parse_path(path, max_side=4096, expect_signature=False).transform


# --- the wire form -------------------------------------------------------------------------


NEGOTIATED = [
    None,
    Negotiated(None, ImageFormat.GIF),
    *(Negotiated(still, ImageFormat.WEBP) for still in ImageFormat),
]
WEBP = Negotiated(ImageFormat.WEBP, ImageFormat.WEBP)


@pytest.mark.parametrize("negotiated", NEGOTIATED)
def test_every_rendition_round_trips_exactly(negotiated: Negotiated | None) -> None:
    for key in KEYS:
        for token in TOKENS:
            original = transform(key, token)
            encoded = encode_rendition(original, negotiated)
            decoded, decoded_format = decode_rendition(encoded)
            assert (decoded, decoded_format) == (original, negotiated)
            assert hash(decoded) == hash(original)  # usable as the same cache key
            assert encode_rendition(decoded, decoded_format) == encoded


def test_spellings_of_one_rendition_encode_and_route_alike() -> None:
    spellings = ["280x194", "280x194s", "140x97@2x", "140x97s@2x"]
    encoded = {encode_rendition(transform(PHOTO_KEY, t), None) for t in spellings}
    assert len(encoded) == 1
    assert encode_rendition(transform(PHOTO_KEY, "280x194"), WEBP) not in encoded


def test_owner_is_stable_across_processes() -> None:
    """Not Python's hash(), which is randomised per process: every worker must agree."""
    encoded = [encode_rendition(transform(PHOTO_KEY, f"{w}"), None) for w in range(100, 140)]
    owners = [owner_of(e, 4) for e in encoded]
    assert set(owners) == {0, 1, 2, 3}  # and the hash spreads them
    program = (
        "import sys, json\nfrom tofu.peers import owner_of\n"
        "print(json.dumps([owner_of(e.encode(), 4) for e in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", program],
            input=json.dumps([e.decode() for e in encoded]),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(result.stdout) == owners


def _valid() -> dict:
    return json.loads(encode_rendition(transform(PHOTO_KEY, "280x194f30-60q70u"), None))


def _with(path: tuple[str, ...], value: object) -> bytes:
    document = _valid()
    target = document
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"transform": {}, "negotiated": null}',
        _with(("extra",), 1),
        _with(("negotiated",), KeyError),
        _with(("negotiated",), "gif"),
        _with(("negotiated",), {"still": "gif"}),
        _with(("negotiated",), {"still": None, "animated": "bmp"}),
        _with(("transform", "size", "width"), True),  # a bool is no int
        _with(("transform", "size", "width"), "280"),
        _with(("transform", "size", "width"), 280.0),
        _with(("transform", "size", "width"), KeyError),
        _with(("transform", "size", "upscale"), 1),
        _with(("transform", "size", "fit"), "stretch"),
        _with(("transform", "size", "focal"), [30]),
        _with(("transform", "size", "focal"), [30, 60, 90]),
        _with(("transform", "size", "_hash"), 1),  # derived fields are not on the wire
        _with(("transform", "key"), None),
        _with(("transform", "key"), ["a"]),
        b'{"transform": 1, "negotiated": null, "negotiated": null}',
        json.dumps(_valid()).replace("70", "NaN").encode(),
    ],
)
def test_malformed_renditions_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_rendition(payload)


def test_route_is_none_exactly_for_the_renditions_this_worker_owns() -> None:
    peers = Peers(1, ["a.sock", "b.sock", "c.sock"])
    for width in range(100, 130):
        wanted = transform(PHOTO_KEY, f"{width}")
        assert (peers.route(wanted, None) is None) == (peers.owner(wanted, None) == 1)


# --- the owner's side, on a real Unix socket ------------------------------------------------


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[tuple[App, str]]:
    """An app (``workers=2``, this is worker 1) with its peer handler on a Unix socket."""
    app = create_app(Config(origin=(str(SAMPLES),), dev=True, workers=2))
    runner = web.ServerRunner(web.Server(PeerHandler(app.service).handle, access_log=None))
    await runner.setup()
    path = str(tmp_path / "owner.sock")
    await web.UnixSite(runner, path).start()
    try:
        yield app, path
    finally:
        await runner.cleanup()
        await app.close()


async def test_owner_answers_the_rendition_it_is_sent(owner: tuple[App, str]) -> None:
    app, path = owner
    peers = Peers(0, ["/nonexistent/me.sock", path])
    wanted = transform(PHOTO_KEY, "120x80c")
    encoded = encode_rendition(wanted, WEBP)
    try:
        entry = await peers.fetch(1, encoded, 5.0)
        assert entry is not None
        mine = app.service.cached(wanted, WEBP)  # the owner cached it
        assert mine is not None
        assert (entry.body, entry.etag, entry.media_type) == (mine.body, mine.etag, "image/webp")
        assert (entry.version, entry.last_modified) == (mine.version, mine.last_modified)
        assert entry.last_modified_http == mine.last_modified_http
        with pytest.raises(NotFound, match=r"no original at 'nope/x\.jpg'"):
            await peers.fetch(1, encode_rendition(transform("nope/x.jpg", "100"), None), 5.0)
    finally:
        await peers.close()


@pytest.mark.parametrize(
    ("method", "target", "body", "headers", "status"),
    [
        ("GET", RENDER_PATH, b"", {}, 404),
        ("POST", "/recipes/1203423/280/5366e857.jpg", b"", {}, 404),
        ("POST", RENDER_PATH, b'{"transform": 1}', {TIMEOUT_HEADER: "5"}, 400),
        ("POST", RENDER_PATH, b"x" * 70_000, {TIMEOUT_HEADER: "5"}, 400),
        ("POST", RENDER_PATH, encode_rendition(transform(PHOTO_KEY, "90"), None), {}, 400),
        (
            "POST",
            RENDER_PATH,
            encode_rendition(transform(PHOTO_KEY, "90"), None),
            {TIMEOUT_HEADER: "inf"},
            400,
        ),
    ],
)
async def test_owner_refuses_what_is_not_a_peer_request(
    owner: tuple[App, str], method: str, target: str, body: bytes, headers: dict, status: int
) -> None:
    _, path = owner
    connector = aiohttp.UnixConnector(path=path)
    url = f"http://tofu{target}"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url, data=body, headers=headers) as response,
    ):
        assert response.status == status
        assert (await response.text()).count("\n") == 1


# --- one deadline per client request (finding 11) ------------------------------------------


async def test_fallback_render_gets_only_what_is_left_of_the_deadline(tmp_path: Path) -> None:
    """The owner accepts the request, stops listening, and hangs up after 1.5 s of the 2 s
    deadline (it is dying); the fallback render here has the 0.5 s left, not a fresh 2 s, and
    the origin takes 1 s: 504. (Before, the fallback got a new deadline and answered 200.)"""

    async def hang_up_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.close()  # dying: no new connections (a retry is refused)
        await asyncio.sleep(1.5)
        writer.close()

    hanging = str(tmp_path / "hanging.sock")
    server = await asyncio.start_unix_server(hang_up_late, path=hanging)
    peers = Peers(0, [str(tmp_path / "me.sock"), hanging])
    origin = CountingOrigin(SAMPLES, delay=1.0)
    config = Config(origin=(str(SAMPLES),), dev=True, workers=2, request_timeout=2.0)
    app = create_app(config, origin, peers=peers)
    client = TestClient(RawTestServer(app.handle))
    await client.start_server()
    try:
        # The rendition the server routes: negotiated for a request without Accept.
        negotiated = Negotiator(config.negotiate).choose("")
        width = next(
            w for w in range(100, 200) if peers.owner(transform(PHOTO_KEY, f"{w}"), negotiated)
        )
        response = await client.get(f"/recipes/1203423/{width}/5366e857.jpg")
        assert response.status == 504
        assert origin.fetches == [PHOTO_KEY]  # it did fall back to fetching here
    finally:
        await client.close()
        await app.close()
        server.close()
        await server.wait_closed()
