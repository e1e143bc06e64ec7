"""The access log: one line per request, as text or JSON, on stdout.

It is hot (one line per request, tens of thousands a second on the hit path), so it bypasses
``logging``: lines are formatted directly and written in batches, at most ``FLUSH_SECONDS``
late.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tofu.server import REQUEST_LOG

FLUSH_SECONDS = 0.2
_MAX_BUFFERED = 512


class AccessLogSink:
    """Collects access-log lines and writes them in batches."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) == 1:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        elif len(self._lines) >= _MAX_BUFFERED:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._stream.write("\n".join(self._lines) + "\n")
            self._stream.flush()
            self._lines.clear()


def format_json(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> str:
    fields = {
        "ts": round(time.time(), 3),
        "method": request.method,
        "path": request.raw_path,
        "status": response.status,
        "bytes": response.body_length,
        "ms": round(seconds * 1000, 2),
    }
    entry = request.get(REQUEST_LOG)
    if entry is not None:
        fields["cache"] = entry.cache
        fields["key"] = entry.key
        if entry.phases:
            for phase, spent in entry.phases.items():
                fields[phase + "_ms"] = round(spent * 1000, 2)
        if entry.error:
            fields["error"] = entry.error
    return json.dumps(fields, separators=(",", ":"))


def format_text(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> str:
    # One f-string, not a dict and a join: this runs for every request.
    line = (
        f"{request.method} {request.raw_path} status={response.status} "
        f"bytes={response.body_length} ms={seconds * 1000:.2f}"
    )
    entry = request.get(REQUEST_LOG)
    if entry is None:
        return line
    line = f"{line} cache={entry.cache} key={entry.key}"
    if entry.phases:
        line += "".join(f" {k}_ms={v * 1000:.2f}" for k, v in entry.phases.items())
    if entry.error:
        line += f" error={entry.error!r}"
    return line


def access_logger_class(log_format: str, sink: AccessLogSink) -> type[AbstractAccessLogger]:
    """An aiohttp access-logger class writing ``log_format`` lines into ``sink``. (aiohttp
    makes one logger per connection, so the sink is shared through the class.)"""
    render = format_json if log_format == "json" else format_text

    class AccessLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            sink.add(render(request, response, time))

        @property
        def enabled(self) -> bool:
            return True

    return AccessLogger
