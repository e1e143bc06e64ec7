"""One server process: the aiohttp app on uvloop, with a graceful stop.

Graceful stop, for a node behind a load balancer: on SIGTERM ``/readyz`` turns 503 at once,
the node keeps serving for ``drain_seconds`` (so the balancer notices and routes elsewhere),
then stops accepting and gives in-flight requests ``shutdown_timeout`` to finish, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web

from tofu import access_log, logs, protocol
from tofu.config import Config
from tofu.peers import Peers
from tofu.render import configure_libvips
from tofu.server import create_app

log = logging.getLogger("tofu")


async def _serve(config: Config, index: int, peer_sockets: Sequence[str]) -> None:
    peers = Peers(index, peer_sockets) if len(peer_sockets) > 1 else None
    app = create_app(config, peers=peers)
    sink = access_log.AccessLogSink(sys.stdout)
    server = protocol.Server(
        app.handle,
        idle_timeout=config.idle_timeout,
        max_path_length=config.max_path_length,
        access_log_class=access_log.access_logger_class(config.log_format, sink),
    )
    runner = web.ServerRunner(server, shutdown_timeout=config.shutdown_timeout)
    await runner.setup()
    # Sibling workers reach this one on its own Unix socket (tofu.peers); not access-logged,
    # their client's request is.
    runners = [runner]
    if peers is not None:
        peer_runner = web.ServerRunner(
            web.Server(app.handle, access_log=None), shutdown_timeout=config.shutdown_timeout
        )
        await peer_runner.setup()
        await web.UnixSite(peer_runner, peer_sockets[index]).start()
        runners.append(peer_runner)
    ops = config.ops_address
    if ops is not None and index == 0:
        # One process owns the ops port; its /metrics aggregates every worker's.
        ops_server = protocol.Server(
            app.handle_ops,
            idle_timeout=config.idle_timeout,
            max_path_length=config.max_path_length,
            access_log=None,
        )
        ops_runner = web.ServerRunner(ops_server, shutdown_timeout=config.shutdown_timeout)
        await ops_runner.setup()
        await web.TCPSite(ops_runner, ops[0] or None, ops[1]).start()
        runners.append(ops_runner)
        log.info("operations endpoints on http://%s:%d", ops[0] or "*", ops[1])
    # Public traffic last: by then siblings can already reach this worker.
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

    app.health.draining = True
    log.info("draining for %gs before closing", config.drain_seconds)
    await asyncio.sleep(config.drain_seconds)
    for each in runners:
        await each.cleanup()
    await app.close()
    sink.flush()
    log.info("stopped")


def run_worker(config: Config, index: int = 0, peer_sockets: Sequence[str] = ()) -> None:
    """Server process ``index`` of ``len(peer_sockets)`` (one: no routing between workers),
    with libvips threads sized to this process's share of the cores."""
    logs.configure(config.log_level, config.log_format)
    configure_libvips(config.render_threads)
    uvloop.run(_serve(config, index, peer_sockets))
