"""The ceiling: the thinnest aiohttp + uvloop server around libvips, the upper bound for tofu.

``GET /W/H/CROP/Q/KEY`` reads ``ROOT/KEY``, calls ``pyvips.Image.thumbnail_buffer`` (0 for an
open side, CROP 1 for a centre crop) and encodes a baseline JPEG at quality Q, metadata stripped,
in a thread pool sized to the cores, one process; libvips' own concurrency is 1, as tofu's
default ``vips_concurrency``. No validation, no signature, no cache, no metrics, no logging.

This is libvips' ``thumbnail``, the path of tofu's ``--exact-shrink``: tofu's default JPEG path
(``tofu.render.jpeg``, libjpeg-turbo at a smaller DCT scale) does less work and can beat it, so on
the miss path the ceiling bounds libvips' bare throughput, not tofu's. The lower bound on a
miss's cost is ``bench.floor`` (decoding alone).

    python -m bench.ceiling --root DIR --port 8090 [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pyvips
import uvloop
from aiohttp import web

_OPEN = 10_000_000  # libvips' "no limit" for a thumbnail side


def render(path: str, width: int, height: int, crop: bool, quality: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    options: dict[str, object] = {"height": height or _OPEN, "size": "down"}
    if crop:
        options["crop"] = "centre"
    image = pyvips.Image.thumbnail_buffer(data, width or _OPEN, **options)
    return image.jpegsave_buffer(Q=quality, keep="none")  # metadata stripped, as tofu does


def create_app(root: str, threads: int) -> web.Application:
    pool = ThreadPoolExecutor(threads, thread_name_prefix="ceiling")

    async def handle(request: web.Request) -> web.Response:
        m = request.match_info
        path = os.path.join(root, m["key"])
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(
                pool, render, path, int(m["w"]), int(m["h"]), m["c"] == "1", int(m["q"])
            )
        except (OSError, pyvips.Error) as exc:
            return web.Response(status=500, text=f"{type(exc).__name__}\n")
        return web.Response(body=body, content_type="image/jpeg")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get(r"/{w:\d+}/{h:\d+}/{c:[01]}/{q:\d+}/{key:.+}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--root", required=True, help="directory of originals")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="render threads"
    )
    args = parser.parse_args(argv)
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)  # parallelism comes from the pool, as tofu's vips_concurrency 1
    app = create_app(os.path.realpath(args.root), args.threads)
    uvloop.run(_serve(app, args.host, args.port))


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    main()
