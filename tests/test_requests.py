"""Requests at the protocol level (issue 8, findings 7 and 8): malformed requests get a plain,
non-echoing 4xx and one concise log line, absolute-form targets are served, over-long paths are
refused before parsing, slow header tricklers are closed, and the verified-path memo is bounded
in bytes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from tests.support.servers import SAMPLES, TofuProcess, start_tofu
from tofu import server as tofu_server

PHOTO = "/recipes/1203423/280x194c/5366e857.jpg"
MakeClient = Callable[..., Awaitable[TestClient]]


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def split(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture(scope="module")
def tofu_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TofuProcess]:
    args = ["--origin", str(SAMPLES), "--dev", "--workers", "1", "--drain-seconds", "0"]
    args += ["--log-format", "json", "--idle-timeout", "1", "--max-path-length", "1024"]
    process = start_tofu(args, tmp_path_factory.mktemp("requests"))
    yield process
    process.stop()


MALFORMED = [
    # (request, status, reason in the body, what must not be echoed)
    (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request method", b"get /"),
    (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "too long", b"aaaa"),
    (b"GET /a\x00b/280/c.jpg HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request target", b"/a"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20_000 + b"\r\n\r\n", 431, "header", b"vvv"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400, "bad request", b"\x16"),
]


def test_malformed_requests_get_a_plain_4xx_and_one_concise_log_line(
    tofu_serve: TofuProcess,
) -> None:
    before = tofu_serve.log()
    for request, status, reason, secret in MALFORMED:
        got, body = split(exchange(tofu_serve.port, request))
        assert got == status, (request[:40], body)
        text = body.decode()
        assert text.endswith("\n") and text.count("\n") == 1 and reason in text, text
        assert secret not in body
    time.sleep(0.5)  # access-log lines are flushed in batches
    new = tofu_serve.log()[len(before) :]
    assert "Traceback" not in new and "ERROR" not in new.upper().replace('"ERROR":', "")
    lines = [json.loads(line) for line in new.splitlines()]
    lines = [line for line in lines if line.get("path") != "/healthz"]  # the start-up probe
    assert [line["status"] for line in lines] == [status for _, status, _, _ in MALFORMED]
    assert all(line.get("error") for line in lines)


def test_absolute_form_targets_are_served_as_their_path(tofu_serve: TofuProcess) -> None:
    plain = get(tofu_serve.port, PHOTO)
    absolute = get(tofu_serve.port, f"http://img.example.com{PHOTO}?u=1")
    assert absolute[0] == 200 and absolute == plain


def get(port: int, target: str) -> tuple[int, bytes]:
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    return split(exchange(port, request.encode()))


def read_answer(connection: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """One answer on a connection that may stay open: status line, headers, Content-Length
    bytes of body."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    return status_line.encode(), headers, body


def test_the_status_line_is_http_1_1_whatever_the_client_sent(tofu_serve: TofuProcess) -> None:
    """tofu speaks HTTP/1.1 (RFC 9110 section 6.2): a 1.0 client gets an HTTP/1.1 answer with a
    length (never chunked) and keep-alive as it asked; the parser's refusals say HTTP/1.1 too."""
    _, plain = get(tofu_serve.port, PHOTO)
    with socket.create_connection(("127.0.0.1", tofu_serve.port), timeout=30) as connection:
        connection.sendall(f"GET {PHOTO} HTTP/1.0\r\n\r\n".encode())
        status, headers, body = read_answer(connection)
        assert status == b"HTTP/1.1 200 OK" and body == plain
        assert "transfer-encoding" not in headers and headers["connection"] == "close"
        assert connection.recv(65536) == b""  # closed after the answer, as 1.0 expects
    with socket.create_connection(("127.0.0.1", tofu_serve.port), timeout=30) as connection:
        for _ in range(2):  # the connection is kept, and says so, as a 1.0 client needs
            connection.sendall(f"GET {PHOTO} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            status, headers, body = read_answer(connection)
            assert status == b"HTTP/1.1 200 OK" and body == plain
            assert headers["connection"] == "keep-alive"
    refused = exchange(tofu_serve.port, b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400 "), refused[:40]


@pytest.mark.parametrize(
    "request_line",
    [f"GET {PHOTO} HTTP/0.9", f"GET {PHOTO}", f"GET {PHOTO} HTTP/2.0", "GET /healthz HTTP/0.9"],
)
def test_other_http_versions_are_refused_with_505(
    tofu_serve: TofuProcess, request_line: str
) -> None:
    answer = exchange(tofu_serve.port, f"{request_line}\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 "), head
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1 and "HTTP/1" in text, text
    assert get(tofu_serve.port, PHOTO)[0] == 200  # and the next request works


def test_over_long_paths_are_414_before_parsing(tofu_serve: TofuProcess) -> None:
    status, body = get(tofu_serve.port, f"/{'k' * 1024}/280/x.jpg")
    assert status == 414 and b"k" * 50 not in body
    # Just under the limit: parsed and looked up (no such original).
    path = f"/{'k' * (1024 - len('//280/x.jpg'))}/280/x.jpg"
    assert len(path) == 1024
    assert get(tofu_serve.port, path)[0] == 404


def test_a_client_trickling_headers_is_closed(tofu_serve: TofuProcess) -> None:
    with socket.create_connection(("127.0.0.1", tofu_serve.port), timeout=30) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for n in range(300):  # 60 s of trickling at most; the server's limit is 1 s
            try:
                connection.sendall(f"X-Slow-{n}: 1\r\n".encode())
                connection.settimeout(0.2)
                closed = connection.recv(1) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
    assert closed


async def test_verified_path_memo_is_bounded_in_bytes(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = 256 << 10
    monkeypatch.setattr(tofu_server, "_VERIFIED_BYTES", budget, raising=False)
    client = await make_client(origin=(str(SAMPLES),), dev=True, not_found_ttl=0)
    memo = client.server._handler.__self__.handlers._verified  # the App's handlers
    for n in range(200):
        response = await client.get(f"/{n:04d}{'k' * 2000}/280/x.jpg")
        assert response.status == 404
    held = sum(len(path) + len(parsed.signed_path) for path, parsed in memo.items())
    assert 0 < held <= budget
