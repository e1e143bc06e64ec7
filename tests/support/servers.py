"""Starting real processes (tofu, nginx, ...) and in-process apps for tests."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from bench.servers import stop_group as stop_process
from tofu.config import Config
from tofu.server import App, create_app

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"


def get_fresh(node: TofuProcess, target: str, timeout: float = 60) -> tuple[int, bytes]:
    """GET ``target`` on a new connection each time (so that every worker receives some)."""
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=timeout)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def width_target(key: str, width: int) -> str:
    """The unsigned tofu path of ``key`` at ``width``."""
    folder, name = key.rsplit("/", 1)
    return f"/{folder}/{width}/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        with suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status < 300:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class TofuProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process)


def start_tofu(
    args: list[str],
    tmp_path: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> TofuProcess:
    """``tofu serve`` as a real process in its own process group."""
    port = port or free_port()
    log_path = tmp_path / f"tofu-{port}.log"
    full = [
        sys.executable,
        "-m",
        "tofu",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            full,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    tofu = TofuProcess(process, port, log_path, full)
    if wait:
        try:
            wait_http(f"{tofu.url}/healthz", process=process)
        except Exception:
            tofu.stop()
            raise RuntimeError(f"tofu did not start:\n{tofu.log()}") from None
    return tofu


@pytest.fixture
def nodes() -> Iterator[list[TofuProcess]]:
    """A list the test appends the ``TofuProcess``es it starts to; each is stopped after."""
    started: list[TofuProcess] = []
    yield started
    for node in started:
        node.stop()


@pytest.fixture
def tofu_process(tmp_path: Path) -> Iterator[Callable[..., TofuProcess]]:
    """Factory: ``tofu_process(["--origin", dir, "--dev"])``; every process is stopped after."""
    started: list[TofuProcess] = []

    def start(args: list[str], **kwargs: Any) -> TofuProcess:
        tofu = start_tofu(args, tmp_path, **kwargs)
        started.append(tofu)
        return tofu

    yield start
    for tofu in started:
        tofu.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """Factory for an in-process tofu app: ``await make_client(origin=..., dev=True)``.
    Keyword arguments are ``Config`` fields."""
    started: list[tuple[TestClient, App]] = []

    async def make(origin_impl: Any = None, **settings: Any) -> TestClient:
        settings.setdefault("workers", 1)
        app = create_app(Config(**settings), origin_impl)
        client = TestClient(RawTestServer(app.handle))
        await client.start_server()
        started.append((client, app))
        return client

    yield make
    for client, app in started:
        await client.close()
        await app.close()
