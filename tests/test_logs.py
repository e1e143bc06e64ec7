"""The access log: one line per request with the fields operators grep for."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.support.servers import SAMPLES


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _access_lines(log: str) -> list[dict]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if "method" in line]


def test_json_access_log_has_one_line_per_request_with_phases(tofu_process):
    tofu = tofu_process(
        [
            "--origin",
            str(SAMPLES),
            "--dev",
            "--workers",
            "1",
            "--log-format",
            "json",
            "--drain-seconds",
            "0",
        ]
    )
    assert _get(f"{tofu.url}/recipes/1203423/280/5366e857.jpg") == 200
    assert _get(f"{tofu.url}/recipes/1203423/280/5366e857.jpg?u=1") == 200
    assert _get(f"{tofu.url}/recipes/1203423/0/5366e857.jpg") == 400
    assert _get(f"{tofu.url}/nope/280/missing.jpg") == 404
    time.sleep(0.5)  # lines are flushed in batches
    assert tofu.stop() == 0
    lines = [line for line in _access_lines(tofu.log()) if line["path"] != "/healthz"]
    assert [line["status"] for line in lines] == [200, 200, 400, 404]
    miss, hit, bad, missing = lines
    assert miss["cache"] == "miss" and hit["cache"] == "hit"
    assert miss["key"] == "recipes/1203423/5366e857.jpg"
    assert {"fetch_ms", "render_ms", "queue_ms"} <= miss.keys()
    assert "render_ms" not in hit
    assert miss["bytes"] > 1000 and miss["method"] == "GET"
    assert hit["path"].endswith("?u=1")
    assert "must be at least 1" in bad["error"]
    assert missing["error"] == "no original at 'nope/missing.jpg'"
    # Application logs are JSON too, on the other stream.
    app_lines = [json.loads(line) for line in tofu.log().splitlines() if '"level"' in line]
    assert any(line["msg"] == "stopped" for line in app_lines)


def test_text_access_log_names_the_error_once(tofu_process):
    tofu = tofu_process(
        ["--origin", str(SAMPLES), "--dev", "--workers", "1", "--drain-seconds", "0"]
    )
    assert _get(f"{tofu.url}/recipes/1203423/280q0/5366e857.jpg") == 400
    time.sleep(0.5)
    tofu.stop()
    error_lines = [line for line in tofu.log().splitlines() if "280q0" in line]
    assert len(error_lines) == 1
    assert "status=400" in error_lines[0] and "quality must be 1-100" in error_lines[0]


# --- injection (issue 8, finding 4) -----------------------------------------------------------

# Each target decodes into a key (and path) holding a forged access-log line.
FORGED = "GET admin.php status=200 bytes=1 ms=0.1 cache=hit key=admin.php"
INJECTIONS = [
    "/x%0A" + FORGED.replace(" ", "%20") + "/280/y.jpg",
    "/x%0D%0A" + FORGED.replace(" ", "%20") + "/280/y.jpg",
    '/x"%20status=200%20cache="hit/280/y.jpg',
    "/x%22%20status=200/280/y%27.jpg",
]


def _raw_get(port: int, target: str) -> int:
    """Send ``target`` byte for byte (no client-side normalisation); the status."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_request_fields_cannot_forge_or_split_access_log_lines(tofu_process, log_format: str):
    args = ["--origin", str(SAMPLES), "--dev", "--workers", "1", "--drain-seconds", "0"]
    tofu = tofu_process([*args, "--log-format", log_format])
    for target in INJECTIONS:
        assert _raw_get(tofu.port, target) == 404
    time.sleep(0.5)  # lines are flushed in batches
    assert tofu.stop() == 0
    log = tofu.log()
    lines = [line for line in log.splitlines() if "/280/y" in line]
    assert len(lines) == len(INJECTIONS), log
    if log_format == "json":
        entries = [json.loads(line) for line in lines]
        assert [e["status"] for e in entries] == [404] * len(INJECTIONS)
        assert "\n" + FORGED in entries[0]["key"] and "\r\n" + FORGED in entries[1]["key"]
        return
    assert not any(line.startswith("GET admin.php") for line in log.splitlines())
    for line in lines:
        method, path, fields = _parse_text_line(line)
        assert path.startswith(("/x", '"/x'))
        assert method == "GET" and fields["status"] == "404" and "\r" not in line
        assert fields.keys() == {"status", "bytes", "ms", "cache", "key", "error"}, line
        assert fields["key"].startswith('"x') and fields["key"].endswith('.jpg"')  # quoted
    keys = [json.loads(_parse_text_line(line)[2]["key"]) for line in lines]
    assert keys[0] == f"x\n{FORGED}/y.jpg" and keys[1] == f"x\r\n{FORGED}/y.jpg"
    assert keys[2] == 'x" status=200 cache="hit/y.jpg'


_TEXT_FIELD = re.compile(r'(?:(\w+)=)?("(?:[^"\\]|\\.)*"|[^ "]+)(?: |$)')


def _parse_text_line(line: str) -> tuple[str, str, dict[str, str]]:
    """Method, path and name=value fields of a text access-log line, checking that every field
    is bare or one whole JSON string."""
    tokens = []
    pos = 0
    while pos < len(line):
        match = _TEXT_FIELD.match(line, pos)
        assert match, f"unparseable at {pos}: {line}"
        tokens.append(match.groups())
        pos = match.end()
    (_, method), (_, path), *rest = tokens
    fields: dict[str, str] = {}
    for name, value in rest:
        assert name and name not in fields, line
        fields[name] = value
    return method, path, fields
