"""The access log: one line per request with the fields operators grep for."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

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
