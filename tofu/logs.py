"""Logging set-up and the access log: one line per request, as text or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time as _time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tofu.server import REQUEST_LOG


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def configure(level: str, log_format: str) -> None:
    """Application logs go to stderr; the access log, one line per request, to stdout."""
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("pyvips").setLevel(logging.WARNING)  # it logs every libvips step at INFO
    access = logging.getLogger("aiohttp.access")
    access.handlers.clear()
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(access_handler)
    access.propagate = False


class _AccessLogger(AbstractAccessLogger):
    def fields(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> dict:
        entry = request.get(REQUEST_LOG)
        fields = {
            "ts": round(_time.time(), 3),
            "method": request.method,
            "path": request.raw_path,
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 2),
        }
        if entry is not None:
            fields["cache"] = entry.cache
            fields["key"] = entry.key
            if entry.phases:
                fields.update({f"{k}_ms": round(v * 1000, 2) for k, v in entry.phases.items()})
            if entry.error:
                fields["error"] = entry.error
        return fields

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class JsonAccessLogger(_AccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(json.dumps(self.fields(request, response, time), separators=(",", ":")))


class TextAccessLogger(_AccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        f = self.fields(request, response, time)
        skip = ("ts", "method", "path", "error")
        extra = " ".join(f"{k}={v}" for k, v in f.items() if k not in skip)
        error = f" error={f['error']!r}" if "error" in f else ""
        self.logger.info("%s %s %s%s", f["method"], f["path"], extra, error)


def access_logger_class(log_format: str) -> type[AbstractAccessLogger]:
    return JsonAccessLogger if log_format == "json" else TextAccessLogger
