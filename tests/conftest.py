"""Shared fixtures. Servers that tests start bind 127.0.0.1 on free ports and are stopped by
PID (process group), never by name."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.servers",
    "tests.support.s3",
    "tests.support.faults",
    "tests.support.fuzz",
]
