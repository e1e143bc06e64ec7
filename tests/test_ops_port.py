"""The operations port (issue 8, finding 6): with ``--ops-listen``, ``/metrics`` (and health) are
served on their own address and ``/metrics`` is no longer served on the public port."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from tofu.config import Config, ConfigError

from .support.servers import SAMPLES, free_port, wait_http

PHOTO = "/recipes/1203423/280x194c/5366e857.jpg"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_move_to_the_ops_port(tofu_process, workers: int) -> None:
    ops_port = free_port()
    args = ["--origin", str(SAMPLES), "--dev", "--workers", str(workers)]
    tofu = tofu_process([*args, "--ops-listen", f"127.0.0.1:{ops_port}", "--drain-seconds", "0"])
    ops = f"http://127.0.0.1:{ops_port}"
    wait_http(f"{ops}/healthz", process=tofu.process)
    requests = 12  # new connections: with two workers, both serve some
    for _ in range(requests):
        assert get(tofu.url + PHOTO)[0] == 200
    status, body = get(f"{tofu.url}/metrics")
    assert status == 404 and "tofu_" not in body
    assert get(f"{tofu.url}/healthz")[0] == 200  # balancers may still probe the public port
    assert get(f"{tofu.url}/readyz")[0] == 200
    status, body = get(f"{ops}/metrics")
    assert status == 200
    served = re.findall(r'^tofu_requests_total\{cache="[a-z]+",status="200"\} (\S+)$', body, re.M)
    assert sum(float(n) for n in served) >= requests
    assert get(f"{ops}/healthz")[0] == 200 and get(f"{ops}/readyz")[0] == 200
    assert get(ops + PHOTO)[0] == 404  # no images on the ops port


def test_without_ops_listen_metrics_stay_on_the_public_port(tofu_process) -> None:
    tofu = tofu_process(["--origin", str(SAMPLES), "--dev", "--workers", "1"])
    status, body = get(f"{tofu.url}/metrics")
    assert status == 200 and "tofu_requests_total" in body


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9090", "HOST:PORT"),
        ("127.0.0.1:http", "HOST:PORT"),
        ("127.0.0.1:0", "1-65535"),
        ("127.0.0.1:70000", "1-65535"),
        ("127.0.0.1:8080", "the public port"),
    ],
)
def test_bad_ops_listen_values_are_refused(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.load({"origin": str(SAMPLES), "dev": True, "ops_listen": value, "port": "8080"}, {})
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("value", "address"),
    [(":9090", ("", 9090)), ("10.0.0.1:9090", ("10.0.0.1", 9090)), ("[::1]:9090", ("::1", 9090))],
)
def test_ops_listen_forms(value: str, address: tuple[str, int]) -> None:
    config = Config.load({"origin": str(SAMPLES), "dev": True, "ops_listen": value}, {})
    assert config.ops_address == address
