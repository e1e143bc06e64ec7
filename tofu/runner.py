"""Process lifecycle: run one server on uvloop, or a master with N workers on one port.

Graceful stop, for a node behind a load balancer: on SIGTERM ``/readyz`` turns 503 at once,
the node keeps serving for ``drain_seconds`` (so the balancer notices and routes elsewhere),
then stops accepting and gives in-flight requests ``shutdown_timeout`` to finish, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time

import pyvips
import uvloop
from aiohttp import web

from tofu import logs
from tofu.config import Config
from tofu.server import HEALTH, create_app

log = logging.getLogger("tofu")
_RESPAWN_PAUSE = 1.0


async def _serve(config: Config) -> None:
    app = create_app(config)
    access_log = logs.AccessLogSink(sys.stdout)
    runner = web.AppRunner(
        app,
        access_log_class=logs.access_logger_class(config.log_format, access_log),
        shutdown_timeout=config.shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, config.host, config.port, reuse_port=config.workers > 1, backlog=2048
    )
    await site.start()
    log.info("tofu listening on http://%s:%d (pid %d)", config.host, config.port, os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    app[HEALTH].draining = True
    log.info("draining for %gs before closing", config.drain_seconds)
    await asyncio.sleep(config.drain_seconds)
    await runner.cleanup()
    access_log.flush()
    log.info("stopped")


def run_worker(config: Config) -> None:
    """One server process: libvips threads sized to this process's share of the cores."""
    logs.configure(config.log_level, config.log_format)
    pyvips.cache_set_max(0)  # renders never repeat an operation; the result cache is ours
    pyvips.concurrency_set(config.render_threads)
    uvloop.run(_serve(config))


def run(config: Config) -> None:
    """Serve ``config``: in this process with one worker, else as a master of N workers."""
    if config.workers == 1:
        run_worker(config)
        return
    logs.configure(config.log_level, config.log_format)
    with tempfile.TemporaryDirectory(prefix="tofu-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        _supervise(config)


def _supervise(config: Config) -> None:
    """Start the workers, restart any that dies, and pass SIGTERM/SIGINT on to them."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=run_worker, args=(config,), daemon=False)
        process.start()
        return process

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.pid and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    workers = [start() for _ in range(config.workers)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("master %d started %d workers", os.getpid(), config.workers)
    while True:
        alive = [p for p in workers if p.is_alive()]
        if stopping and not alive:
            break
        if not stopping:
            for i, process in enumerate(workers):
                if not process.is_alive():
                    log.error("worker %s exited with %s; restarting", process.pid, process.exitcode)
                    _mark_dead(process)
                    time.sleep(_RESPAWN_PAUSE)
                    workers[i] = start()
        time.sleep(0.2)
    for process in workers:
        process.join()
    log.info("all workers stopped")


def _mark_dead(process: multiprocessing.process.BaseProcess) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and process.pid:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid, directory)
