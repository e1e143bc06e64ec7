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
from tofu.metrics import Metrics
from tofu.peers import PeerHandler, Peers
from tofu.render import configure_libvips, configure_malloc
from tofu.render_budget import RenderBudget
from tofu.server import create_app

log = logging.getLogger("tofu")
_PROCESS_SAMPLE_SECONDS = 5.0


async def _sample_process_forever(app_metrics: Metrics) -> None:
    """Keep this worker's memory/CPU gauges fresh: a scrape reaches one worker, which reads
    every worker's values from the multiprocess files."""
    while True:
        await asyncio.sleep(_PROCESS_SAMPLE_SECONDS)
        app_metrics.sample_process()


async def _serve(
    config: Config, index: int, peer_sockets: Sequence[str], budget_path: str | None
) -> None:
    peers = Peers(index, peer_sockets) if len(peer_sockets) > 1 else None
    budget = RenderBudget(config.max_renders, config.render_memory, budget_path, index)
    app = create_app(config, peers=peers, budget=budget)
    sink = access_log.AccessLogSink(sys.stdout)
    server = protocol.Server(
        app.handle,
        idle_timeout=config.idle_timeout,
        max_path_length=config.max_path_length,
        access_log_class=access_log.access_logger_class(config.log_format, sink),
    )
    runner = web.ServerRunner(server, shutdown_timeout=config.shutdown_timeout)
    await runner.setup()
    app.metrics.sample_process()  # before the port opens: every live worker has a sample
    background = [asyncio.create_task(_sample_process_forever(app.metrics))]
    if index == 0:  # one worker probes the origins for the node (tofu_origin_up, /status)
        background.append(asyncio.create_task(app.origin_probe.run()))
    # Sibling workers reach this one on its own Unix socket, with their own protocol and
    # handler (tofu.peers): the public handler knows nothing of peers. Not access-logged: the
    # client's request is, by the worker that received it.
    runners = [runner]
    if peers is not None:
        peer_server = web.Server(PeerHandler(app.service).handle, access_log=None)
        peer_runner = web.ServerRunner(peer_server, shutdown_timeout=config.shutdown_timeout)
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
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()

    app.readiness.draining = True
    # Ctrl-C in development: no balancer to leave, stop at once. SIGTERM always drains.
    interactive = config.dev and received[0] == signal.SIGINT
    drain = 0.0 if interactive else config.drain_seconds
    log.info("draining for %gs before closing", drain)
    await asyncio.sleep(drain)
    for each in runners:
        await each.cleanup()
    for task in background:
        task.cancel()
    await app.close()
    budget.close()
    sink.flush()
    log.info("stopped")


def run_worker(
    config: Config,
    index: int = 0,
    peer_sockets: Sequence[str] = (),
    budget_path: str | None = None,
) -> None:
    """Server process ``index`` of ``len(peer_sockets)`` (one: no routing between workers),
    sharing the node's render memory budget through ``budget_path`` (None: a single process)."""
    logs.configure(config.log_level, config.log_format)
    configure_malloc()
    configure_libvips(config.vips_concurrency)
    uvloop.run(_serve(config, index, peer_sockets, budget_path))
