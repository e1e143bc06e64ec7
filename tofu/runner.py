"""Process lifecycle: one server process, or a master with N workers sharing the port.

The master only supervises: it forks the workers before importing libvips, aiohttp or
botocore (so it stays small), restarts a worker that dies, and passes SIGTERM/SIGINT on;
each worker then drains and stops by itself (``tofu.worker``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from tofu import logs, render_budget
from tofu.config import Config

log = logging.getLogger("tofu")
_RESPAWN_PAUSE = 1.0


def run(config: Config) -> None:
    """Serve ``config``: in this process with one worker, else as a master of N workers."""
    logs.configure(config.log_level, config.log_format)
    _check_port(config.host, config.port)
    for warning in config.start_warnings():
        log.warning("%s", warning)
    _clear_operator_metrics_dir()
    if config.workers == 1:
        _worker_main(config)
        return
    with (
        tempfile.TemporaryDirectory(prefix="tofu-metrics-") as metrics_dir,
        tempfile.TemporaryDirectory(prefix="tofu-peers-") as peers_dir,
    ):
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        sockets = [os.path.join(peers_dir, f"worker-{i}.sock") for i in range(config.workers)]
        budget_path = os.path.join(peers_dir, "render-budget")
        render_budget.create_shared_file(budget_path, config.workers)
        _supervise(config, sockets, budget_path)


def _supervise(config: Config, sockets: list[str], budget_path: str) -> None:
    """Start the workers, restart any that dies (under the same index, so on the same peer
    socket), and pass SIGTERM/SIGINT on to them."""
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker_main, args=(config, index, sockets, budget_path), daemon=False
        )
        process.start()
        return process

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in workers:
            if process.pid and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    workers = [start(i) for i in range(config.workers)]
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
                    render_budget.clear_worker(budget_path, i)
                    time.sleep(_RESPAWN_PAUSE)
                    workers[i] = start(i)
        time.sleep(0.2)
    for process in workers:
        process.join()
    log.info("all workers stopped")


def _clear_operator_metrics_dir() -> None:
    """A PROMETHEUS_MULTIPROC_DIR the operator set may hold a previous run's files (a
    container restarted over the same volume): merged in, they would inflate every counter."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from tofu.metrics import clear_multiprocess_dir

        removed = clear_multiprocess_dir(directory)
        if removed:
            log.info("removed %d metrics files of a previous run from %s", removed, directory)


def _check_port(host: str, port: int) -> None:
    """Exit with one line when the port is taken, before any worker starts (each would fail
    with a traceback, and the master would restart them forever)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            print(
                f"tofu: {where} is in use ({exc.strerror}); choose another port with --port "
                "(or TOFU_PORT; `make serve PORT=8090`)",
                file=sys.stderr,
            )
            raise SystemExit(2) from None


def _mark_dead(process: multiprocessing.process.BaseProcess) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and process.pid:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid, directory)


def _worker_main(
    config: Config, index: int = 0, sockets: Sequence[str] = (), budget_path: str | None = None
) -> None:
    # Imported here, in the worker, so that the master never loads libvips or aiohttp.
    from tofu.worker import run_worker

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the master's handlers are not ours
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    run_worker(config, index, sockets, budget_path)
