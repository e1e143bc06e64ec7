"""The table of origins and the HTTP origin, in process: parsing and validating ``--origin``,
routing keys by prefix (the prefix replaced by the source's location, as nginx's proxy_pass),
and the HTTP origin against a real HTTP server on the loopback (``FileServer``, which serves
any path it is asked for, so a key escaping BASE would be seen reaching a file outside it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.faults import FileServer
from tests.support.metrics import metric
from tests.support.servers import SAMPLES
from tofu.cli import main
from tofu.config import Config, ConfigError
from tofu.errors import NotFound, OriginError, Unprocessable, UnsupportedMediaType
from tofu.origins.http import HttpOrigin, key_path
from tofu.origins.sources import parse_table

JPEG = (SAMPLES / "recipes/1203423/5366e857.jpg").read_bytes()


# --- the table -----------------------------------------------------------------------------


def test_table_is_parsed() -> None:
    table = parse_table(
        (
            str(SAMPLES),
            "recipes/=s3://photos/originals",
            "recipes/big/=s3://photos|s3://photos-replica?region=us-west-2",
            "static/=https://old-images.example.com/files",
        )
    )
    assert [route.prefix for route in table] == ["", "recipes/", "recipes/big/", "static/"]
    big = table[2]
    assert [s.location for s in big.sources] == ["s3://photos", "s3://photos-replica"]
    assert big.sources[1].option("region") == "us-west-2"
    assert table[3].sources[0].location == "https://old-images.example.com/files/"
    assert table[0].sources[0].remote is False


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("ftp://host/x/", "unknown scheme"),
        ("s3://", "names no bucket"),
        ("s3://b?endpoint=http://x", "unknown option"),
        ("s3://b?endpoint_url=file:///etc", "endpoint_url must be an http(s):// URL"),
        ("s3://b?region=a&region=b", "given twice"),
        ("http://user:pw@host/x/", "credentials"),
        ("http://host/x/?a=1", "no query"),
        ("http:///x/", "names no host"),
        ("http://host/a/../b/", "plain /path/"),
        ("a/../=s3://b", "no . or .. segments"),
        ("recipes/=", "names no source"),
        ("recipes/=/definitely/not/here", "is not a directory"),
    ],
)
def test_bad_origins_are_refused_with_the_reason(entry: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Config.load({"origin": [entry], "dev": True}, {})


def test_two_origins_for_one_prefix_are_refused() -> None:
    with pytest.raises(ConfigError, match="two origins for 'a/'"):
        Config.load({"origin": ["a/=s3://x", "a/=s3://y"], "dev": True}, {})


def test_variable_separates_origins_by_semicolons_or_lines() -> None:
    environ = {
        "TOFU_ORIGIN": f"recipes/=s3://photos/originals; static/=http://h/f/\n{SAMPLES}\n",
        "TOFU_DEV": "1",
    }
    config = Config.load({}, environ)
    assert config.origin == ("recipes/=s3://photos/originals", "static/=http://h/f/", str(SAMPLES))


def test_tofu_config_shows_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["config", "--dev", "--origin", "recipes/=s3://photos/originals"]
    args += ["--origin", "avatars/=s3://users?endpoint_url=http://10.0.0.5:9000"]
    args += ["--origin", "static/=https://old-images.example.com/files/"]
    args += ["--origin", "r/=s3://photos|s3://photos-replica?region=us-west-2"]
    args += ["--origin", str(SAMPLES)]
    assert main(args) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["origins"] == [
        {"prefix": "recipes/", "sources": ["s3://photos/originals"]},
        {"prefix": "avatars/", "sources": ["s3://users?endpoint_url=http://10.0.0.5:9000"]},
        {"prefix": "static/", "sources": ["https://old-images.example.com/files/"]},
        {"prefix": "r/", "sources": ["s3://photos", "s3://photos-replica?region=us-west-2"]},
        {"prefix": "(default)", "sources": [str(SAMPLES)]},
    ]


# --- routing -------------------------------------------------------------------------------


async def test_each_prefix_is_served_from_its_own_source(
    tmp_path: Path, make_client: Callable[..., Any]
) -> None:
    recipes = tmp_path / "recipes-root"
    (recipes / "1").mkdir(parents=True)
    (recipes / "1" / "x.jpg").write_bytes(JPEG)
    nested = tmp_path / "nested-root"
    (nested / "7").mkdir(parents=True)
    (nested / "7" / "y.jpg").write_bytes(JPEG)
    client = await make_client(
        origin=(f"recipes/={recipes}", f"recipes/deep/={nested}", str(SAMPLES)), dev=True
    )
    # recipes/1/x.jpg -> {recipes}/1/x.jpg: the routing prefix is replaced
    assert (await client.get("/recipes/1/280/x.jpg")).status == 200
    # the longest prefix wins
    assert (await client.get("/recipes/deep/7/280/y.jpg")).status == 200
    # the default origin keeps today's mapping: the whole key under its root
    assert (await client.get("/logos/64x64c/rgba.png")).status == 200
    # a key of the samples under recipes/ is not looked for in the default origin
    assert (await client.get("/recipes/1203423/280/5366e857.jpg")).status == 404
    text = await (await client.get("/metrics")).text()
    assert metric(text, "tofu_origin_answers_total", f'origin="recipes/",source="{recipes}"') == 1
    assert metric(text, "tofu_origin_fetch_errors_total", 'origin="recipes/",kind="not_found"') == 1


async def test_no_default_origin_is_404_outside_the_prefixes(
    tmp_path: Path, make_client: Callable[..., Any]
) -> None:
    client = await make_client(origin=(f"recipes/={SAMPLES / 'recipes'}",), dev=True)
    assert (await client.get("/recipes/1203423/280/5366e857.jpg")).status == 200
    response = await client.get("/logos/64x64c/rgba.png")
    assert response.status == 404
    assert "no origin serves" in await response.text()


# --- the HTTP origin -----------------------------------------------------------------------


@pytest.fixture
async def http_origin(file_server: FileServer) -> AsyncIterator[HttpOrigin]:
    (file_server.root / "files" / "a").mkdir(parents=True)
    (file_server.root / "files" / "a" / "y.jpg").write_bytes(JPEG)
    (file_server.root / "secret.jpg").write_bytes(b"secret outside BASE")
    origin = HttpOrigin(
        f"{file_server.url}/files/", timeout=5.0, retries=2, max_bytes=1 << 20, pool_size=4
    )
    yield origin
    await origin.close()


async def test_http_origin_serves_under_base(
    http_origin: HttpOrigin, file_server: FileServer
) -> None:
    async def tagged(request: web.Request) -> web.Response:
        headers = {"ETag": 'W/"v42"', "Last-Modified": "Tue, 14 Nov 2023 22:13:20 GMT"}
        return web.Response(body=JPEG, content_type="image/jpeg", headers=headers)

    file_server.special["/files/tagged.jpg"] = tagged
    original = await http_origin.fetch("a/y.jpg")
    assert original.data == JPEG
    assert file_server.paths == ["/files/a/y.jpg"]
    tagged_original = await http_origin.fetch("tagged.jpg")
    assert tagged_original.version == "v42"
    assert tagged_original.last_modified == 1_700_000_000


@pytest.mark.parametrize("status", [404, 410])
async def test_http_missing_is_not_found(
    http_origin: HttpOrigin, file_server: FileServer, status: int
) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=status)

    file_server.special["/files/gone.jpg"] = gone
    with pytest.raises(NotFound):
        await http_origin.fetch("gone.jpg")
    assert file_server.paths == ["/files/gone.jpg"]  # final: not retried


async def test_http_5xx_is_retried(http_origin: HttpOrigin, file_server: FileServer) -> None:
    answers = [503, 502, 200]

    async def flaky(request: web.Request) -> web.Response:
        status = answers.pop(0)
        return web.Response(status=status, body=JPEG, content_type="image/jpeg")

    file_server.special["/files/flaky.jpg"] = flaky
    assert (await http_origin.fetch("flaky.jpg")).data == JPEG
    assert len(file_server.paths) == 3


async def test_http_redirects_stay_on_the_host(
    http_origin: HttpOrigin, file_server: FileServer
) -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/a/y.jpg")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/files/loop.jpg")

    file_server.special |= {"/files/moved.jpg": moved, "/files/away.jpg": away}
    file_server.special["/files/loop.jpg"] = loop
    assert (await http_origin.fetch("moved.jpg")).data == JPEG
    with pytest.raises(OriginError, match="another host"):
        await http_origin.fetch("away.jpg")
    with pytest.raises(OriginError, match="redirects"):
        await http_origin.fetch("loop.jpg")
    assert file_server.paths.count("/files/loop.jpg") == 4  # the first and 3 redirects


# Each is the Location of a redirect from /files/esc.jpg; the naive server would serve
# /secret.jpg (or /files-private/p.jpg) for every one of them. "{origin}" is the server's own
# scheme, host and port.
REDIRECT_ESCAPES = [
    "/secret.jpg",  # an absolute path outside BASE
    "../secret.jpg",  # dot segments, resolved against /files/esc.jpg
    "/files/../secret.jpg",
    "/files/%2e%2e/secret.jpg",  # encoded dots, decoded by the server
    "/files/%2E%2E%2Fsecret.jpg",  # an encoded slash as well
    "/files/..%2fsecret.jpg",
    "/files/a\\..\\..\\secret.jpg",  # backslashes
    "/files//secret.jpg",  # an empty segment
    "/files-private/p.jpg",  # BASE without its slash is a prefix of this
    "{origin}/secret.jpg",  # an absolute URL on the same host
    "//{host}/secret.jpg",  # a network-path reference to the same host
]


@pytest.mark.parametrize("location", REDIRECT_ESCAPES)
async def test_http_redirects_stay_below_base(
    http_origin: HttpOrigin, file_server: FileServer, location: str
) -> None:
    (file_server.root / "files-private").mkdir()
    (file_server.root / "files-private" / "p.jpg").write_bytes(b"private outside BASE")
    target = location.format(origin=file_server.url, host=file_server.url.split("://")[1])

    async def escape(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": target})

    file_server.special["/files/esc.jpg"] = escape
    with pytest.raises(OriginError, match="outside BASE"):
        await http_origin.fetch("esc.jpg")
    assert file_server.paths == ["/files/esc.jpg"]  # the escape is never requested


async def test_http_redirects_below_base_are_followed_with_their_query(
    http_origin: HttpOrigin, file_server: FileServer
) -> None:
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "a/y.jpg?v=2"})

    file_server.special["/files/moved.jpg"] = moved
    assert (await http_origin.fetch("moved.jpg")).data == JPEG
    assert file_server.paths == ["/files/moved.jpg", "/files/a/y.jpg"]


MALFORMED_LOCATIONS = [
    "file:///etc/passwd",
    "data:image/jpeg;base64,/9j/4AAQ",
    "ftp://127.0.0.1/files/a/y.jpg",
    "javascript:alert(1)",
    "http://[::1",
    "http://a:b:c/",
    "http://127.0.0.1:99999/files/a/y.jpg",
    "http://user:pw@{host}/files/a/y.jpg",
    "http://%zz/files/a/y.jpg",
    "\\evil.example.com\\x.jpg",
]


@pytest.mark.parametrize("location", MALFORMED_LOCATIONS)
async def test_http_malformed_redirects_are_origin_errors(
    http_origin: HttpOrigin, file_server: FileServer, location: str
) -> None:
    target = location.format(host=file_server.url.split("://")[1])

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": target})

    file_server.special["/files/bad.jpg"] = bad
    with pytest.raises(OriginError):
        await http_origin.fetch("bad.jpg")
    assert file_server.paths == ["/files/bad.jpg"]


async def test_http_redirect_escapes_are_502_end_to_end(
    file_server: FileServer, make_client: Callable[..., Any]
) -> None:
    (file_server.root / "secret.jpg").write_bytes(JPEG)  # would render, were it reached

    def redirect_to(location: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=302, headers={"Location": location})

        return handler

    file_server.special |= {
        "/files/up.jpg": redirect_to("/secret.jpg"),
        "/files/file.jpg": redirect_to("file:///etc/passwd"),
        "/files/v6.jpg": redirect_to("http://[::1"),
    }
    client = await make_client(origin=(f"static/={file_server.url}/files/",), dev=True)
    for path in ("/static/280/up.jpg", "/static/280/file.jpg", "/static/280/v6.jpg"):
        response = await client.get(path)
        text = (await response.read()).decode(errors="replace")
        assert response.status == 502, (path, response.status, text[:200])
        assert text.count("\n") == 1 and "redirect" in text, text
    assert "/secret.jpg" not in file_server.paths


async def test_http_not_an_image_is_415(http_origin: HttpOrigin, file_server: FileServer) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    file_server.special["/files/page.jpg"] = html
    with pytest.raises(UnsupportedMediaType):
        await http_origin.fetch("page.jpg")


async def test_http_over_the_limit_is_refused_before_the_body(
    http_origin: HttpOrigin, file_server: FileServer
) -> None:
    sent: list[int] = []

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = 64 << 20
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\0" * (1 << 20))
            sent.append(1)
        return response

    async def unannounced(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"\0" * (1 << 20))
        return response

    file_server.special["/files/huge.jpg"] = huge
    file_server.special["/files/chunked.jpg"] = unannounced
    with pytest.raises(Unprocessable, match="67108864 bytes"):
        await http_origin.fetch("huge.jpg")
    with pytest.raises(Unprocessable, match="over the 1048576 byte limit"):
        await http_origin.fetch("chunked.jpg")


ESCAPES = [
    "../secret.jpg",  # dot segments
    "a/../../secret.jpg",
    "./a/y.jpg",
    "a/%2e%2e/%2e%2e/secret.jpg",  # already-encoded dots, sent as data
    "..%2Fsecret.jpg",  # an encoded slash
    "..%252Fsecret.jpg",
    "http://169.254.169.254/latest",  # an absolute URL
    "//evil.example.com/x.jpg",  # a network-path reference
    "@evil.example.com/x.jpg",  # userinfo
    "a@evil.example.com:80/x.jpg",
    "..\\secret.jpg",  # backslashes
    "a\\..\\..\\secret.jpg",
    "a/y.jpg\r\nHost: evil",  # header injection
    "a/y.jpg?x=/../../secret.jpg",  # a query
    "a/y.jpg#/../../secret.jpg",
    "",
]


@pytest.mark.parametrize("key", ESCAPES)
async def test_http_keys_cannot_leave_base(
    http_origin: HttpOrigin, file_server: FileServer, key: str
) -> None:
    with pytest.raises(NotFound):
        await http_origin.fetch(key)
    assert all(path.startswith("/files/") for path in file_server.paths), file_server.paths
    assert "/secret.jpg" not in file_server.paths


def test_key_path_encodes_everything_but_names() -> None:
    assert key_path("a b/ü@x:1?.jpg") == "a%20b/%C3%BC%40x%3A1%3F.jpg"
    for key in ("..", "a/./b", "a//b", "a\\b", "a\x00b", "/a"):
        with pytest.raises(NotFound):
            key_path(key)


async def test_http_origin_escapes_end_to_end(
    file_server: FileServer, make_client: Callable[..., Any]
) -> None:
    (file_server.root / "files" / "a").mkdir(parents=True)
    (file_server.root / "files" / "a" / "y.jpg").write_bytes(JPEG)
    (file_server.root / "secret.jpg").write_bytes(JPEG)  # would render, were it reached
    client = await make_client(origin=(f"static/={file_server.url}/files/",), dev=True)
    assert (await client.get("/static/a/280/y.jpg")).status == 200
    assert file_server.paths == ["/files/a/y.jpg"]
    for path in (
        "/static/../280/secret.jpg",
        "/static/%2e%2e/280/secret.jpg",
        "/static/..%2F280/secret.jpg",
        "/static/a%5C..%5C..%5Csecret.jpg/280/x.jpg",
        "/static/@127.0.0.1/280/secret.jpg",
        "/static/http:%2F%2F127.0.0.1/280/secret.jpg",
        "/unsafe/300x200/static%2F..%2Fsecret.jpg",
        "/unsafe/300x200/static%2F%2E%2E%2Fsecret.jpg",
        "/unsafe/300x200/http%3A%2F%2F127.0.0.1%2Fsecret.jpg",
    ):
        response = await client.get(path)
        assert 400 <= response.status < 500, (path, response.status)
    assert all(path.startswith("/files/") for path in file_server.paths), file_server.paths
