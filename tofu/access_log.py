"""The access log: one line per request, as text or JSON, on stdout.

It is hot (one line per request, tens of thousands a second on the hit path), so it bypasses
``logging``: lines are formatted directly and written in batches, at most ``FLUSH_SECONDS``
late.
"""

from __future__ import annotations

import asyncio
import json
import re
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


# Anything but printable ASCII without space, '"' and '\\': request data with any of these is
# quoted, so that it can end neither a field nor a line of the text log.
_UNSAFE = re.compile(r"[^!#-\[\]-~]")


def _field(text: str) -> str:
    """``text`` as one text-log field: as it is when safe, else a JSON string (quoted, with
    control characters, quotes, backslashes and non-ASCII escaped)."""
    return text if _UNSAFE.search(text) is None else json.dumps(text)


def format_text(request: web.BaseRequest, response: web.StreamResponse, seconds: float) -> str:
    # One f-string, not a dict and a join: this runs for every request.
    method, path = request.method, request.raw_path
    entry = request.get(REQUEST_LOG)
    key = "-" if entry is None else entry.key
    # The usual, clean case in a few C-speed scans (a third of the regex's time). The method
    # needs none: the parser accepts only token characters there.
    both = path + key
    if not both.isascii() or not both.isprintable() or " " in both or '"' in both or "\\" in both:
        path, key = _field(path), _field(key)
    line = (
        f"{method} {path} status={response.status} "
        f"bytes={response.body_length} ms={seconds * 1000:.2f}"
    )
    if entry is None:
        return line
    line = f"{line} cache={entry.cache} key={key}"
    if entry.phases:
        line += "".join(f" {k}_ms={v * 1000:.2f}" for k, v in entry.phases.items())
    if entry.error:
        line += f" error={json.dumps(entry.error)}"
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
