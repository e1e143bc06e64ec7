"""Starting and stopping the servers under test, each as its own process group on a free port.

tofu and the ceiling run from this virtualenv; thumbor from its own (``bench/.venv-thumbor``,
created on first use); sharp with Node from ``bench/.sharp`` (npm, on first use); nginx from
Debian with a generated configuration in a temporary prefix.
Every server binds 127.0.0.1 and is stopped through its process group (``os.killpg``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from bench.targets import Kind
from tofu.config import default_workers
from tofu.formats import FORMATS, PROGRESSIVE_MIN_PIXELS, ImageFormat
from tofu.render import RenderSettings

ROOT = Path(__file__).resolve().parents[1]
THUMBOR_VENV = ROOT / "bench" / ".venv-thumbor"
THUMBOR_REQUIREMENT = "thumbor>=7,<8"
SHARP_DIR = ROOT / "bench" / ".sharp"
SHARP_REQUIREMENT = "sharp@0.35"
SHARP_SERVER = ROOT / "bench" / "sharp_server.js"
NGINX = "/usr/sbin/nginx"
IMAGE_FILTER_MODULE = "/usr/lib/nginx/modules/ngx_http_image_filter_module.so"


def cores() -> int:
    return len(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, process: subprocess.Popen, log: Path) -> None:
    """Wait until ``url`` answers with any HTTP status below 500; fail early if the process
    exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode} before answering", log)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServerError(f"{url} did not answer within {timeout:g}s", log)


def stop_group(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM the process group, SIGKILL it if it is not gone in time."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Workers that outlived their leader (should not happen) go too.
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


class ServerError(RuntimeError):
    def __init__(self, message: str, log: Path | None = None) -> None:
        tail = ""
        if log is not None and log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        super().__init__(message + tail)


@dataclass
class Running:
    """A started server: its leader process (pid == process group id), port and log."""

    name: str
    kind: Kind
    process: subprocess.Popen
    port: int
    log_path: Path
    workdir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pgid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        return stop_group(self.process)


def _spawn(
    name: str, kind: Kind, cmd: list[str], port: int, workdir: Path, env: dict | None = None
) -> Running:
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Running(name, kind, process, port, log_path, workdir)


def _started(running: Running, path: str, timeout: float = 60.0) -> Running:
    try:
        wait_http(running.url + path, timeout, running.process, running.log_path)
    except BaseException:
        running.stop()
        raise
    return running


# --- tofu ---------------------------------------------------------------------------------


def start_tofu(
    name: str,
    origin: Path,
    workdir: Path,
    *,
    workers: int | None = None,
    cache_size: str | None = None,
    extra: list[str] | None = None,
    root: Path = ROOT,
) -> Running:
    """``tofu serve --dev`` over ``origin``, from the checkout at ``root`` (another one: an
    earlier version, for before/after); waits until every worker listens."""
    port = free_port()
    cmd = [sys.executable, "-m", "tofu", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--origin", str(origin), "--dev"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if cache_size is not None:
        cmd += ["--cache-size", cache_size]
    cmd += extra or []
    env = {"PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    running = _started(_spawn(name, Kind.TOFU, cmd, port, workdir, env), "/healthz")
    expected = workers or default_workers()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if running.log_path.read_text(errors="replace").count("tofu listening on") >= expected:
            break
        time.sleep(0.1)
    else:
        running.notes.append(f"not every one of {expected} workers logged 'listening' in 60s")
    return running


# --- the ceiling --------------------------------------------------------------------------


def start_ceiling(name: str, origin: Path, workdir: Path, threads: int | None = None) -> Running:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.ceiling", "--root", str(origin), "--port", str(port)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return _started(_spawn(name, Kind.CEILING, cmd, port, workdir, env), "/healthz")


# --- thumbor ------------------------------------------------------------------------------


def ensure_thumbor(venv: Path = THUMBOR_VENV) -> Path:
    """The thumbor executable, installing thumbor 7.x into its own virtualenv on first use
    (its dependencies must not mix with tofu's)."""
    thumbor = venv / "bin" / "thumbor"
    if thumbor.exists():
        return thumbor
    print(f"installing {THUMBOR_REQUIREMENT} into {venv} (first use only)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, THUMBOR_REQUIREMENT], check=True)
    return thumbor


def thumbor_version(venv: Path = THUMBOR_VENV) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        return "not installed"
    out = subprocess.run(
        [str(python), "-c", "import thumbor, PIL; print(thumbor.__version__, PIL.__version__)"],
        capture_output=True,
        text=True,
    )
    parts = out.stdout.split()
    return f"{parts[0]} (Pillow {parts[1]})" if len(parts) == 2 else "unknown"


def thumbor_config(
    origin: Path, workdir: Path, *, result_storage: bool, extra_config: str = ""
) -> str:
    storage = (
        "thumbor.result_storages.file_storage"
        if result_storage
        else "thumbor.result_storages.no_storage"
    )
    return (
        f"""\
# generated by bench/servers.py
LOADER = "thumbor.loaders.file_loader"
FILE_LOADER_ROOT_PATH = {str(origin)!r}
STORAGE = "thumbor.storages.no_storage"
RESULT_STORAGE = {storage!r}
RESULT_STORAGE_FILE_STORAGE_ROOT_PATH = {str(workdir / "thumbor-results")!r}
RESULT_STORAGE_STORES_UNSAFE = True
RESULT_STORAGE_EXPIRATION_SECONDS = 0
ALLOW_UNSAFE_URL = True
QUALITY = 80
AUTO_WEBP = False
PRESERVE_EXIF_INFO = False
MAX_AGE = 86400
"""
        + extra_config
    )


def start_thumbor(
    name: str,
    origin: Path,
    workdir: Path,
    *,
    result_storage: bool,
    processes: int | None = None,
    extra_config: str = "",
) -> Running:
    """thumbor with the file loader over ``origin``, unsafe URLs, one process per core;
    ``extra_config`` lines are appended to its configuration file."""
    thumbor = ensure_thumbor()
    port = free_port()
    conf = workdir / f"{name}.conf"
    conf.write_text(
        thumbor_config(origin, workdir, result_storage=result_storage, extra_config=extra_config)
    )
    cmd = [str(thumbor), "--ip", "127.0.0.1", "--port", str(port), "--conf", str(conf)]
    cmd += ["--log-level", "warning", "--processes", str(processes or cores())]
    return _started(_spawn(name, Kind.THUMBOR, cmd, port, workdir), "/healthcheck")


# --- sharp --------------------------------------------------------------------------------


def ensure_sharp(prefix: Path = SHARP_DIR) -> Path:
    """The ``node_modules`` folder holding sharp (prebuilt libvips), installed with npm into
    ``prefix`` on first use. Raises ``ServerError`` when node or npm is missing or the install
    fails (no registry)."""
    modules = prefix / "node_modules"
    if (modules / "sharp" / "package.json").exists():
        return modules
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise ServerError(f"{tool} not found: sharp needs Node.js (v18.17 or later) and npm")
    print(f"installing {SHARP_REQUIREMENT} into {prefix} (first use only)", file=sys.stderr)
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    cmd += ["--loglevel=error", SHARP_REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise ServerError("npm install sharp did not finish in 300s") from None
    if done.returncode != 0 or not (modules / "sharp" / "package.json").exists():
        # npm's first lines name the error (code, errno, the registry it could not reach).
        head = (done.stderr or done.stdout).strip().splitlines()[:3]
        raise ServerError("npm install sharp failed: " + " / ".join(head))
    return modules


def sharp_version(prefix: Path = SHARP_DIR) -> str:
    modules = prefix / "node_modules"
    if not (modules / "sharp").exists() or shutil.which("node") is None:
        return "not installed"
    script = "const v = require('sharp').versions; console.log(v.sharp, v.vips, process.version)"
    out = subprocess.run(
        ["node", "-e", script],
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(modules)},
    )
    parts = out.stdout.split()
    return f"{parts[0]} (libvips {parts[1]}, Node {parts[2]})" if len(parts) == 3 else "unknown"


# W5: sharp's output format follows Accept; its encoders at sharp's defaults (AVIF quality 50,
# effort 4, 4:4:4; WebP 80, effort 4), or at tofu's settings (tofu/formats.py): the same
# libvips savers underneath, so the same numbers mean the same encodings.
SHARP_NEGOTIATE = ["--negotiate"]
SHARP_MATCHED = [
    "--negotiate",
    "--avif-quality",
    str(FORMATS[ImageFormat.AVIF].default_quality),
    "--avif-effort",
    str(RenderSettings().avif_effort),
    "--avif-chroma",
    "4:2:0",  # libvips' heifsave "auto" below Q 90, as tofu's
    "--webp-quality",
    str(FORMATS[ImageFormat.WEBP].default_quality),
    "--webp-effort",
    "4",
]
# W5: thumbor 7.8 asks AUTO_WEBP before AUTO_AVIF, so with both on a browser that takes AVIF
# gets WebP. ``thumbor`` turns on AUTO_AVIF alone (AVIF for Chromium, as tofu and sharp; Pillow
# 11.3+ encodes AVIF itself, bench/.venv-thumbor has Pillow 12), ``thumbor-webp`` both (WebP).
# Quality is thumbor's QUALITY (80) for every format (WEBP_QUALITY, AVIF_QUALITY unset), AVIF
# at Pillow's default speed.
THUMBOR_AUTO_AVIF = "AUTO_AVIF = True\n"
THUMBOR_AUTO_WEBP = "AUTO_AVIF = True\nAUTO_WEBP = True\n"


def start_sharp(
    name: str,
    origin: Path,
    workdir: Path,
    workers: int | None = None,
    options: list[str] | None = None,
) -> Running:
    """``bench/sharp_server.js`` over ``origin``: one Node process per core (node:cluster),
    ``sharp.concurrency(1)``, a libuv pool of one thread per core in each; ``options``: the
    server's encoder and negotiation flags."""
    modules = ensure_sharp()
    port = free_port()
    n = workers or cores()
    cmd = ["node", str(SHARP_SERVER), "--root", str(origin), "--port", str(port)]
    cmd += ["--workers", str(n), "--progressive-min-pixels", str(PROGRESSIVE_MIN_PIXELS)]
    cmd += options or []
    env = {"NODE_PATH": str(modules), "UV_THREADPOOL_SIZE": str(cores())}
    return _started(_spawn(name, Kind.SHARP, cmd, port, workdir, env), "/healthz")


# --- nginx --------------------------------------------------------------------------------


def nginx_version() -> str:
    try:
        out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "not found"
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: nginx/")


_NGINX_MAIN = """\
# generated by bench/servers.py
{load_module}
{user}
worker_processes {workers};
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {prefix}/access.log combined buffer=256k flush=1s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    types {{ image/jpeg jpg jpeg; image/png png; image/webp webp; image/gif gif; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{servers}
}}
"""

_IMAGE_FILTER_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 "ok\\n"; }}
        location ~ ^/resize/(?<w>[0-9]+|-)/(?<h>[0-9]+|-)/(?<q>[0-9]+)/(?<key>.+)$ {{
            alias {root}/$key;
            image_filter resize $w $h;
            image_filter_jpeg_quality $q;
            image_filter_buffer 64M;
        }}
        location ~ ^/crop/(?<w>[0-9]+)/(?<h>[0-9]+)/(?<q>[0-9]+)/(?<key>.+)$ {{
            alias {root}/$key;
            image_filter crop $w $h;
            image_filter_jpeg_quality $q;
            image_filter_buffer 64M;
        }}
    }}
"""

_CACHE_SERVER = """\
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=images:32m max_size=2g inactive=1h
                     use_temp_path=off;
    upstream image_filter {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 "ok\\n"; }}
        location / {{
            proxy_pass http://image_filter;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache images;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
        }}
    }}
"""

_STATIC_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 "ok\\n"; }}
        location / {{ root {root}; }}
    }}
"""


def nginx_config(
    mode: str, root: Path, prefix: Path, port: int, backend: int = 0, workers: int = 0
) -> str:
    """``mode``: ``image_filter``, ``cache`` (proxy_cache in front of image_filter, one nginx)
    or ``static``. Running as root, workers stay root so they can read temporary dirs."""
    if mode == "static":
        servers = _STATIC_SERVER.format(port=port, root=root)
    elif mode == "image_filter":
        servers = _IMAGE_FILTER_SERVER.format(port=port, root=root)
    elif mode == "cache":
        servers = _CACHE_SERVER.format(prefix=prefix, port=port, backend=backend)
        servers += _IMAGE_FILTER_SERVER.format(port=backend, root=root)
    else:
        raise ValueError(f"unknown nginx mode {mode!r}")
    return _NGINX_MAIN.format(
        load_module=f"load_module {IMAGE_FILTER_MODULE};" if mode != "static" else "",
        user="user root;" if os.geteuid() == 0 else "",
        workers=workers or "auto",
        prefix=prefix,
        servers=servers,
    )


def start_nginx(name: str, mode: str, root: Path, workdir: Path, workers: int = 0) -> Running:
    if not os.path.exists(NGINX):
        raise ServerError(f"{NGINX} not found: `make system-deps` installs nginx")
    if mode != "static" and not os.path.exists(IMAGE_FILTER_MODULE):
        raise ServerError(f"{IMAGE_FILTER_MODULE} not found: `make system-deps` installs it")
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = free_port() if mode == "cache" else 0
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(mode, root, prefix, port, backend, workers))
    cmd = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    cmd += ["-g", f"daemon off; pid {prefix / 'nginx.pid'};"]
    kind = Kind.STATIC if mode == "static" else Kind.NGINX
    return _started(_spawn(name, kind, cmd, port, workdir), "/healthz")
